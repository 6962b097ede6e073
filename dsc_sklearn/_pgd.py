"""Projected signed-gradient steps on inputs: the primitive of PGD.

The corrections of the defence and the attacks of the evaluation toolkit
move inputs the same way: a signed gradient step of some objective, then a
projection onto the L-infinity ball around the clean inputs, clamped to the
valid input range.
"""

import torch

__all__ = ["project", "signed_steps"]


def project(X, X_clean, epsilon, input_bounds=None):
    """Project ``X`` onto the L-infinity ball around ``X_clean``, then clamp.

    Parameters
    ----------
    X, X_clean : torch.Tensor of shape (n_samples, n_features)
    epsilon : float
        Radius of the ball.
    input_bounds : tuple of (float, float) or None
        Clamp to ``[low, high]`` after the projection; ``None`` leaves the
        inputs unbounded.

    Returns
    -------
    X_projected : torch.Tensor

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.correction import project
    >>> project(torch.tensor([[0.9, -0.5]]), torch.zeros(1, 2), 0.2, (0.0, 1.0))
    tensor([[0.2000, 0.0000]])
    """
    X = torch.clamp(X, X_clean - epsilon, X_clean + epsilon)
    if input_bounds is not None:
        X = X.clamp(*input_bounds)
    return X


def signed_steps(objective, X_start, X_clean, *, ascent, epsilon, step_size, n_steps,
                 input_bounds=None, mask=None):
    """``n_steps`` projected signed-gradient steps of ``objective`` from ``X_start``.

    Parameters
    ----------
    objective : callable
        ``objective(X) -> scalar tensor``, differentiable in ``X``.
    X_start : torch.Tensor of shape (n_samples, n_features)
        Where the steps start (the clean inputs, or a random start).
    X_clean : torch.Tensor of shape (n_samples, n_features)
        Centre of the ball the steps stay in.
    ascent : bool
        Step up the objective (attacks, adversarial training) or down it
        (loss-descent corrections).
    epsilon, step_size : float
        Radius of the ball and size of one signed step.
    n_steps : int
        Number of steps.
    input_bounds : tuple of (float, float) or None, default=None
        Clamp the inputs to this range after each step.
    mask : torch.Tensor of shape (n_samples, 1), default=None
        Multiplies every step: rows with 0 do not move.

    Returns
    -------
    X : torch.Tensor
        The moved inputs, detached.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn._pgd import signed_steps
    >>> X = torch.zeros(1, 2)
    >>> signed_steps(lambda X: (X * torch.tensor([1.0, -1.0])).sum(), X, X,
    ...              ascent=True, epsilon=0.3, step_size=0.2, n_steps=2)
    tensor([[ 0.3000, -0.3000]])
    """
    X = X_start.detach()
    scale = step_size if ascent else -step_size
    for _ in range(n_steps):
        X = X.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(X), X)
        step = scale * grad.sign()
        if mask is not None:
            step = step * mask
        X = project(X.detach() + step, X_clean, epsilon, input_bounds)
    return X.detach()
