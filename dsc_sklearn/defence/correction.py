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
need no input change. Every function keeps the module's parameters,
gradients and train/eval mode as they were, and returns rows that turned
non-finite reverted to the original input.

The training step applies a correction through a strategy object, a
:class:`Correction`, named by the estimators' ``correction`` parameter
(:data:`CORRECTIONS`).
"""

import torch
from torch.nn.functional import cross_entropy

from .._pgd import project, signed_steps
from .._torch import eval_mode

__all__ = [
    "CORRECTIONS",
    "AdversarialTraining",
    "Correction",
    "DiscrepancyAwareCorrection",
    "DropFlagged",
    "LossDescent",
    "NoCorrection",
    "adversarial_examples",
    "correct_rows",
    "discrepancy_aware_correction",
    "loss_descent",
    "make_correction",
    "project",
]


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
    >>> from dsc_sklearn.defence.correction import discrepancy_aware_correction
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
    >>> from dsc_sklearn.defence.correction import correct_rows
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


def _loss_steps(module, X_start, X, y, *, ascent, epsilon, step_size, max_steps,
                input_bounds):
    """Signed steps of the summed cross-entropy, with the module in eval mode."""
    def loss(X_moved):
        return cross_entropy(module(X_moved), y, reduction="sum")

    with eval_mode(module):
        X_moved = signed_steps(loss, X_start, X, ascent=ascent, epsilon=epsilon,
                               step_size=step_size, n_steps=max_steps,
                               input_bounds=input_bounds)
    return _revert_non_finite(X_moved, X), max_steps


def loss_descent(module, X, y, *, epsilon, step_size, max_steps,
                 input_bounds=None):
    """The reference code's "AT": ``max_steps`` signed loss-descent steps.

    Parameters are those of :func:`discrepancy_aware_correction`, without
    the gate. Returns ``(X_corrected, n_steps)``.
    """
    return _loss_steps(module, X, X, y, ascent=False, epsilon=epsilon,
                       step_size=step_size, max_steps=max_steps, input_bounds=input_bounds)


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
    return _loss_steps(module, X_start, X, y, ascent=True, epsilon=epsilon,
                       step_size=step_size, max_steps=max_steps, input_bounds=input_bounds)


# ------------------------------------------------------------- strategies

class Correction:
    """What a batch becomes between the gate and the optimizer step.

    A strategy reads the batch and the gate's decisions from the training
    step's :class:`~dsc_sklearn.defence.Step` and writes what the
    optimizer trains on: ``X_train``, ``y_train``, ``n_correction_steps``
    and, when only some rows change, ``splice`` (turns the training logits
    of ``X`` into those of ``X_train`` by recomputing the changed rows
    only); a strategy that keeps a subset of the rows sets
    ``sample_weight_train`` to their weights when ``sample_weight`` is
    given. The net's parameters (``epsilon``, ``step_size``,
    ``max_correction_steps``, ``input_bounds``) configure it; strategies
    hold no state of their own.

    Subclass it and register the subclass in :data:`CORRECTIONS` to add a
    correction.
    """

    #: Whether the gate runs before the correction (``False``: no statistic
    #: is computed and nothing is flagged).
    gated = True

    def correct(self, net, step):
        """Fill in ``step``'s training batch; the base class trains on ``X``."""

    @staticmethod
    def options(net):
        """The net's correction parameters as keywords of the functions above."""
        return dict(epsilon=net.epsilon, step_size=net.step_size,
                    max_steps=net.max_correction_steps, input_bounds=net.input_bounds)


class NoCorrection(Correction):
    """``"none"``: plain training; the gate does not run."""

    gated = False


class DiscrepancyAwareCorrection(Correction):
    """``"dsc"``: :func:`correct_rows` on the flagged rows, the gate re-applied."""

    def correct(self, net, step):
        def still_flagged(X_rows, y_rows, logits):
            # With a gate on the whole batch the rows are the whole batch,
            # whose weighted mean statistic is the unit; a sample's flag
            # does not depend on its weight.
            weight = step.sample_weight if len(X_rows) == len(step.X) else None
            return net.flag_rows(X_rows, y_rows, logits, step.thresholds, weight)

        rows = step.flagged.nonzero().squeeze(1)
        X_new, step.n_correction_steps = correct_rows(
            net.module_, step.X, step.y, rows, still_flagged, **self.options(net))
        step.X_train = X_new

        def splice(logits):
            return logits.index_put((rows,), net.infer_training(X_new[rows]))

        step.splice = splice


class DropFlagged(Correction):
    """``"drop"``: train on the unflagged rows only."""

    def correct(self, net, step):
        # One synchronisation: integer indices, unlike a boolean mask,
        # index X, y and the logits without asking the device again.
        kept = (~step.flagged).nonzero().squeeze(1)
        if len(kept) == len(step.X):
            return
        step.X_train, step.y_train = step.X[kept], step.y[kept]
        if step.sample_weight is not None:
            step.sample_weight_train = step.sample_weight[kept]
        step.splice = lambda logits: logits[kept]


class LossDescent(Correction):
    """``"descent"``: the reference code's "AT", :func:`loss_descent` on every row."""

    def correct(self, net, step):
        step.X_train, step.n_correction_steps = loss_descent(
            net.module_, step.X, step.y, **self.options(net))


class AdversarialTraining(Correction):
    """``"adversarial"``: Madry's PGD, :func:`adversarial_examples` on every row."""

    def correct(self, net, step):
        step.X_train, step.n_correction_steps = adversarial_examples(
            net.module_, step.X, step.y, generator=net.generator_, **self.options(net))


#: The corrections by name: the values of the estimators' ``correction``
#: parameter and the strategy each one names.
CORRECTIONS = {
    "dsc": DiscrepancyAwareCorrection,
    "none": NoCorrection,
    "drop": DropFlagged,
    "descent": LossDescent,
    "adversarial": AdversarialTraining,
}


def make_correction(correction):
    """The strategy named by an estimator's ``correction`` parameter.

    Parameters
    ----------
    correction : str
        A key of :data:`CORRECTIONS`.

    Returns
    -------
    strategy : Correction

    Examples
    --------
    >>> from dsc_sklearn.defence.correction import make_correction
    >>> type(make_correction("dsc")).__name__
    'DiscrepancyAwareCorrection'
    """
    try:
        return CORRECTIONS[correction]()
    except (KeyError, TypeError):
        raise ValueError(
            f"correction must be one of {sorted(CORRECTIONS)}; got {correction!r}."
        ) from None
