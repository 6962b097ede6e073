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
:class:`BaseCorrection`, which the estimators' ``correction`` parameter
names (:data:`CORRECTIONS`) or is; it sees the training step through a
:class:`CorrectionContext`.
"""

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from sklearn.base import BaseEstimator, clone
from torch.nn.functional import cross_entropy

from .._pgd import project, signed_steps
from .._torch import eval_mode
from ._registry import build_registered

__all__ = [
    "CORRECTIONS",
    "AdversarialTraining",
    "BaseCorrection",
    "CorrectionContext",
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

@dataclass(frozen=True)
class CorrectionContext:
    """What a correction may use besides the :class:`~dsc_sklearn.defence.Step`.

    The net builds one for each call of :meth:`BaseCorrection.correct`. It
    is the whole interface between a correction and the training step: a
    correction never needs the net itself.

    Attributes
    ----------
    module : torch.nn.Module
        The current model, in training mode. A correction may evaluate it
        (the functions of this module do so in eval mode) but must leave its
        parameters, their gradients and its train/eval mode as it found
        them.
    epsilon, step_size : float
        The estimator's ``epsilon`` (radius of the L-infinity ball a
        corrected input stays in) and ``step_size`` (one signed step).
    max_steps : int
        The estimator's ``max_correction_steps``.
    input_bounds : tuple of (float, float) or None
        The estimator's ``input_bounds``: clamp corrected inputs to it.
    generator : torch.Generator
        A CPU generator for random draws, seeded from the estimator's
        ``random_state`` and saved and restored with its state, so a call
        that fails and is undone draws the same numbers again.
    flag_rows : callable
        ``flag_rows(X, y, logits, sample_weight=None) -> bool tensor``
        re-applies the step's gates to rows ``X`` with labels ``y`` and
        their eval-mode ``logits``: one flag per row, from the threshold
        policies' :meth:`~dsc_sklearn.defence.thresholds.ThresholdPolicy.flag`
        (with ``granularity="batch"`` every row gets the flag of their mean
        statistic, weighted by ``sample_weight``).
    training_logits : callable
        ``training_logits(X) -> logits``: the training-mode forward pass of
        the net (for a ``splice``, which recomputes the rows it changed).
    """

    module: torch.nn.Module
    epsilon: float
    step_size: float
    max_steps: int
    input_bounds: tuple
    generator: torch.Generator
    flag_rows: Callable
    training_logits: Callable

    @property
    def budget(self):
        """``epsilon``, ``step_size``, ``max_steps`` and ``input_bounds`` as keywords.

        The keywords of :func:`correct_rows`, :func:`loss_descent` and
        :func:`adversarial_examples`.
        """
        return dict(epsilon=self.epsilon, step_size=self.step_size,
                    max_steps=self.max_steps, input_bounds=self.input_bounds)


class BaseCorrection(BaseEstimator):
    """Base class of the corrections: what a batch becomes before the optimizer step.

    The estimators' ``correction`` parameter is a name of
    :data:`CORRECTIONS` or an instance of a subclass. An instance is a
    scikit-learn estimator: its ``__init__`` arguments are its
    configuration, stored under their names (so ``clone``,
    ``get_params`` and nested parameters such as ``correction__scale`` in a
    ``GridSearchCV`` work), and the net trains with a clone of it. The
    built-in corrections take no arguments: the estimator's ``epsilon``,
    ``step_size``, ``max_correction_steps`` and ``input_bounds`` reach them
    through the :class:`CorrectionContext`.

    A subclass overrides :meth:`correct` and may set :attr:`gated`. The
    net's :meth:`~dsc_sklearn.defence.DiscrepancyAwareNet.correct` calls
    :meth:`correct` once per training batch, after the gate and before the
    optimizer step, when :attr:`gated` is true.

    Attributes
    ----------
    gated : bool
        Class attribute. ``True`` (the default): the gate computes the
        statistics and flags the rows, then :meth:`correct` runs.
        ``False``: neither runs, and the batch is trained on as it
        arrived (``"none"``).

    Examples
    --------
    A correction that trains on the flagged rows with added uniform noise:

    >>> import torch
    >>> from dsc_sklearn.defence.correction import BaseCorrection
    >>> class NoisyFlagged(BaseCorrection):
    ...     def __init__(self, scale=0.1):
    ...         self.scale = scale
    ...     def correct(self, context, step):
    ...         noise = torch.rand(step.X.shape, generator=context.generator)
    ...         step.X_train = torch.where(step.flagged[:, None],
    ...                                    step.X + self.scale * noise, step.X)
    >>> NoisyFlagged(scale=0.2)
    NoisyFlagged(scale=0.2)
    """

    gated = True

    def correct(self, context, step):
        """Set what the optimizer trains on; the base class trains on ``step.X``.

        Parameters
        ----------
        context : CorrectionContext
            The current model, the correction budget, a generator and the
            gate; everything a correction may use besides ``step``.
        step : Step
            Read: ``X``, ``y`` (the batch and its encoded labels),
            ``flagged`` (rows flagged by any gate), ``sample_weight``
            (``None`` when unweighted), ``statistic`` and ``thresholds``.
            Write: ``X_train`` and ``y_train`` (what the optimizer trains
            on; they start as ``X`` and ``y``), ``n_correction_steps``
            (logged), ``sample_weight_train`` (the weights of the rows
            kept, when the correction keeps a subset of a weighted batch)
            and ``splice`` (optional: turns the training logits of ``X``
            into those of ``X_train`` by recomputing the changed rows only;
            without it the net recomputes them all). Nothing else.
        """


class NoCorrection(BaseCorrection):
    """``"none"``: plain training; the gate does not run."""

    gated = False


class DiscrepancyAwareCorrection(BaseCorrection):
    """``"dsc"``: :func:`correct_rows` on the flagged rows, the gate re-applied."""

    def correct(self, context, step):
        """Correct the flagged rows until the gates release them (see :class:`BaseCorrection`)."""
        def still_flagged(X_rows, y_rows, logits):
            # With a gate on the whole batch the rows are the whole batch,
            # whose weighted mean statistic is the unit; a sample's flag
            # does not depend on its weight.
            weight = step.sample_weight if len(X_rows) == len(step.X) else None
            return context.flag_rows(X_rows, y_rows, logits, sample_weight=weight)

        rows = step.flagged.nonzero().squeeze(1)
        X_new, step.n_correction_steps = correct_rows(
            context.module, step.X, step.y, rows, still_flagged, **context.budget)
        step.X_train = X_new

        def splice(logits):
            return logits.index_put((rows,), context.training_logits(X_new[rows]))

        step.splice = splice


class DropFlagged(BaseCorrection):
    """``"drop"``: train on the unflagged rows only."""

    def correct(self, context, step):
        """Keep the unflagged rows (see :class:`BaseCorrection`)."""
        # One synchronisation: integer indices, unlike a boolean mask,
        # index X, y and the logits without asking the device again.
        kept = (~step.flagged).nonzero().squeeze(1)
        if len(kept) == len(step.X):
            return
        step.X_train, step.y_train = step.X[kept], step.y[kept]
        if step.sample_weight is not None:
            step.sample_weight_train = step.sample_weight[kept]
        step.splice = lambda logits: logits[kept]


class LossDescent(BaseCorrection):
    """``"descent"``: the reference code's "AT", :func:`loss_descent` on every row."""

    def correct(self, context, step):
        """Descend the loss on every row (see :class:`BaseCorrection`)."""
        step.X_train, step.n_correction_steps = loss_descent(
            context.module, step.X, step.y, **context.budget)


class AdversarialTraining(BaseCorrection):
    """``"adversarial"``: Madry's PGD, :func:`adversarial_examples` on every row."""

    def correct(self, context, step):
        """Replace every row by its adversarial example (see :class:`BaseCorrection`)."""
        step.X_train, step.n_correction_steps = adversarial_examples(
            context.module, step.X, step.y, generator=context.generator,
            **context.budget)


class _NetCorrection(BaseCorrection):
    """The 0.2 protocol, deprecated: ``correct(net, step)`` receives the whole net.

    ``dsc_sklearn.defence.correction.Correction`` names this class until
    0.3.0; subclass :class:`BaseCorrection`, whose :meth:`correct` receives a
    :class:`CorrectionContext`, instead.
    """

    @staticmethod
    def options(net):
        """The net's correction parameters as keywords of the functions above."""
        return dict(epsilon=net.epsilon, step_size=net.step_size,
                    max_steps=net.max_correction_steps, input_bounds=net.input_bounds)


#: The corrections by name: the string values of the estimators'
#: ``correction`` parameter and the :class:`BaseCorrection` subclass each
#: one names. An entry added at any time is accepted from the next
#: parameter validation on.
CORRECTIONS = {
    "dsc": DiscrepancyAwareCorrection,
    "none": NoCorrection,
    "drop": DropFlagged,
    "descent": LossDescent,
    "adversarial": AdversarialTraining,
}


def make_correction(correction):
    """The strategy for an estimator's ``correction`` parameter.

    Parameters
    ----------
    correction : str or BaseCorrection
        A key of :data:`CORRECTIONS` (its class is instantiated without
        arguments), or a configured :class:`BaseCorrection`, which is
        cloned so that the parameter itself is never changed.

    Returns
    -------
    strategy : BaseCorrection

    Examples
    --------
    >>> from dsc_sklearn.defence.correction import DropFlagged, make_correction
    >>> type(make_correction("dsc")).__name__
    'DiscrepancyAwareCorrection'
    >>> make_correction(DropFlagged())
    DropFlagged()
    """
    if isinstance(correction, BaseCorrection):
        return clone(correction)
    if not isinstance(correction, str) or correction not in CORRECTIONS:
        raise ValueError(
            f"correction must be one of {sorted(CORRECTIONS)} or a BaseCorrection "
            f"instance; got {correction!r}. Register a new name in "
            "dsc_sklearn.defence.correction.CORRECTIONS."
        )
    return build_registered(CORRECTIONS, correction, BaseCorrection,
                            "dsc_sklearn.defence.correction.CORRECTIONS")


def __getattr__(name):
    if name == "Correction":
        warnings.warn(
            "dsc_sklearn.defence.correction.Correction is deprecated and will be "
            "removed in 0.3.0: subclass BaseCorrection, whose correct(context, "
            "step) receives a CorrectionContext instead of the net.",
            FutureWarning, stacklevel=2,
        )
        return _NetCorrection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
