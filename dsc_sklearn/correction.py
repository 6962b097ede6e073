"""Input corrections applied to a batch before the training step.

Each correction moves the inputs inside the L-infinity ball of radius
``epsilon`` around the batch as it arrived, with signed gradient steps, and
clamps them to ``input_bounds`` when those are given:

- :func:`discrepancy_aware_correction` (``"dsc"``): descend the current
  model's cross-entropy on the flagged units only, and stop moving a unit
  once its discrepancy falls under the threshold (Zhu et al., 2023);
- :func:`loss_descent` (``"descent"``): the reference code's "AT" baseline,
  always the full number of descent steps on every sample, no gate;
- :func:`adversarial_examples` (``"adversarial"``): Madry et al.'s PGD
  *ascent* from a random start, i.e. real adversarial training.

``"drop"`` (train on unflagged samples only) and ``"none"`` (plain training)
need no input change and are handled by the training step. Every function
keeps the module's parameters, gradients and train/eval mode as they were,
and returns rows that turned non-finite reverted to the original input.
"""

import torch
from torch.nn.functional import cross_entropy

from .history import eval_mode

__all__ = [
    "CORRECTIONS",
    "adversarial_examples",
    "correct_rows",
    "discrepancy_aware_correction",
    "loss_descent",
    "project",
]

#: Valid values of the estimators' ``correction`` parameter.
CORRECTIONS = ("dsc", "none", "drop", "descent", "adversarial")


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
    >>> from dsc_sklearn.correction import project
    >>> project(torch.tensor([[0.9, -0.5]]), torch.zeros(1, 2), 0.2, (0.0, 1.0))
    tensor([[0.2000, 0.0000]])
    """
    X = torch.clamp(X, X_clean - epsilon, X_clean + epsilon)
    if input_bounds is not None:
        X = X.clamp(*input_bounds)
    return X


def _loss_gradient(module, X, y):
    """Current logits and the gradient of the summed cross-entropy at ``X``."""
    X = X.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = module(X)
        (grad,) = torch.autograd.grad(cross_entropy(logits, y, reduction="sum"), X)
    return logits.detach(), grad


def _revert_non_finite(X, X_clean):
    finite = torch.isfinite(X).all(dim=1, keepdim=True)
    return torch.where(finite, X, X_clean)


def discrepancy_aware_correction(
    module,
    X,
    y,
    flagged,
    still_flagged,
    *,
    epsilon,
    step_size,
    max_steps,
    input_bounds=None,
):
    """Discrepancy-aware sample correction (DSC).

    Repeats at most ``max_steps`` times: compute the discrepancy of the
    current inputs; units under the threshold stop moving; the others take a
    signed step down the current model's cross-entropy, projected onto the
    ``epsilon`` ball around ``X``.

    Only the rows still being corrected go through the model: the work of a
    step is proportional to the number of rows it moves, not to the batch
    size. Rows are independent in eval mode, so the result is the one of
    stepping the whole batch and freezing the released rows.

    Parameters
    ----------
    module : torch.nn.Module
        The current model; evaluated in eval mode.
    X : torch.Tensor of shape (n_samples, n_features)
        The batch as it arrived.
    y : torch.Tensor of shape (n_samples,)
        Encoded labels.
    flagged : torch.Tensor of bool, shape (n_samples,)
        Units flagged on ``X``.
    still_flagged : callable
        ``still_flagged(X_rows, y_rows, logits) -> bool mask`` re-applies the
        gate to the rows still being corrected (their current inputs, labels
        and eval-mode logits) and returns one flag per row. With a gate on
        the whole batch, every row is corrected or none is, so ``X_rows`` is
        the whole batch.
    epsilon, step_size : float
        Radius of the ball and size of one signed step.
    max_steps : int
        Maximum number of steps.
    input_bounds : tuple of (float, float) or None, default=None
        Clamp the corrected inputs to this range.

    Returns
    -------
    X_corrected : torch.Tensor of shape (n_samples, n_features)
    n_steps : int
        Number of steps taken.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.correction import discrepancy_aware_correction
    >>> module = torch.nn.Linear(4, 3)
    >>> X, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> flagged = torch.tensor([True, False, False, False, True])
    >>> def still_flagged(X_rows, y_rows, logits):  # never released
    ...     return torch.ones(len(X_rows), dtype=torch.bool)
    >>> X_new, n_steps = discrepancy_aware_correction(
    ...     module, X, y, flagged, still_flagged,
    ...     epsilon=0.1, step_size=0.05, max_steps=3)
    >>> n_steps, torch.equal(X_new[1:4], X[1:4])
    (3, True)
    """
    rows = flagged.nonzero().squeeze(1)
    return correct_rows(module, X, y, rows, still_flagged, epsilon=epsilon,
                        step_size=step_size, max_steps=max_steps,
                        input_bounds=input_bounds)


def correct_rows(module, X, y, rows, still_flagged, *, epsilon, step_size,
                 max_steps, input_bounds=None):
    """:func:`discrepancy_aware_correction` of the rows with indices ``rows``.

    For a caller that already holds the indices of the flagged rows (finding
    them is a device-to-host synchronisation on CUDA). Parameters and
    returns are those of :func:`discrepancy_aware_correction`, with
    ``rows`` (an integer tensor) in place of ``flagged``.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.correction import correct_rows
    >>> module = torch.nn.Linear(4, 3)
    >>> X, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> def still_flagged(X_rows, y_rows, logits):  # released after one step
    ...     return torch.zeros(len(X_rows), dtype=torch.bool)
    >>> X_new, n_steps = correct_rows(module, X, y, torch.tensor([0, 4]),
    ...                               still_flagged, epsilon=0.1, step_size=0.05,
    ...                               max_steps=3)
    >>> n_steps, float((X_new - X).abs().max()) <= 0.05 + 1e-6
    (1, True)
    """
    if not len(rows):
        return X, 0
    X_corrected = X.clone()
    X_rows, X_start, y_rows = X[rows], X[rows], y[rows]
    n_steps = 0
    with eval_mode(module):
        for step in range(max_steps):
            logits, grad = _loss_gradient(module, X_rows, y_rows)
            if step:
                kept = still_flagged(X_rows, y_rows, logits).nonzero().squeeze(1)
                if len(kept) < len(rows):
                    X_corrected[rows] = X_rows
                    rows, X_rows, X_start, y_rows, grad = (
                        tensor[kept] for tensor in (rows, X_rows, X_start, y_rows, grad)
                    )
                if not len(rows):
                    break
            X_rows = project(X_rows - step_size * grad.sign(), X_start, epsilon,
                             input_bounds)
            n_steps += 1
    X_corrected[rows] = X_rows
    return _revert_non_finite(X_corrected, X), n_steps


def _signed_steps(module, X_start, X, y, *, direction, epsilon, step_size,
                  max_steps, input_bounds):
    X_corrected = X_start
    with eval_mode(module):
        for _ in range(max_steps):
            _, grad = _loss_gradient(module, X_corrected, y)
            X_corrected = X_corrected + direction * step_size * grad.sign()
            X_corrected = project(X_corrected, X, epsilon, input_bounds)
    return _revert_non_finite(X_corrected, X), max_steps


def loss_descent(module, X, y, *, epsilon, step_size, max_steps,
                 input_bounds=None):
    """The reference code's "AT": ``max_steps`` signed loss-descent steps.

    Parameters are those of :func:`discrepancy_aware_correction`, without
    the gate. Returns ``(X_corrected, n_steps)``.
    """
    return _signed_steps(
        module, X, X, y, direction=-1.0, epsilon=epsilon,
        step_size=step_size, max_steps=max_steps, input_bounds=input_bounds,
    )


def _uniform_like(X, generator):
    """Uniform noise of ``X``'s shape, dtype and device, drawn on the CPU.

    The CPU generator gives the same numbers on every device. On CUDA the
    copy goes through pinned memory, so it does not wait for the device.
    """
    noise = torch.rand(X.shape, generator=generator, device="cpu")
    if X.device.type == "cuda":
        noise = noise.pin_memory().to(X.device, non_blocking=True)
    return noise.to(X)


def adversarial_examples(module, X, y, *, epsilon, step_size, max_steps,
                         input_bounds=None, generator=None):
    """Madry et al.'s PGD: random start, ``max_steps`` signed ascent steps.

    Parameters are those of :func:`loss_descent`; ``generator`` seeds the
    random start. Returns ``(X_adversarial, n_steps)``.
    """
    noise = _uniform_like(X, generator)
    X_start = project(X + epsilon * (2.0 * noise - 1.0), X, epsilon, input_bounds)
    return _signed_steps(
        module, X_start, X, y, direction=1.0, epsilon=epsilon,
        step_size=step_size, max_steps=max_steps, input_bounds=input_bounds,
    )
