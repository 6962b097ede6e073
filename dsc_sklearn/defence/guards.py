"""Step guards: bound what one training step may do to what the model knows.

The memorization discrepancy of the paper compares a historical model with
the current one on the incoming batch. :class:`StepGuard` measures the same
KL divergence between the model **before and after one optimizer step**,
on a *probe* of rows the model has already trained on:

    ``D_step = mean_{x in probe} KL(p_before(x) || p_after(x))``

Clean steps move the probe little; a poisoned step, and above all the
trigger of an accumulative attack, moves it by one to two orders of
magnitude more. A step whose ``D_step`` exceeds ``margin`` times the median
of recent unscaled steps, and that raises the probe's loss, is pulled back
towards the weights before the step until it is within the bound, down to
refusing the batch. Clean steps pass untouched, so the guard costs no
accuracy on a clean stream, and no single batch can do more damage than a
clean step does.

Every guard is a :class:`BaseGuard`: hooks that run around each optimizer
step and see the net only through a :class:`GuardContext`. Guards compose
with :class:`GuardChain`, and each says what it decided about the last step
in :class:`GuardDecision` records (:meth:`BaseGuard.decisions`), which the
adaptive attacks read on a copy of the victim.

The guard is this library's extension of Zhu et al. (ICML 2023), not part
of the paper; it is related to Zeno (Xie et al., ICML 2019) and FLTrust
(Cao et al., NDSS 2021), which score an update by its effect on a small
trusted batch, and to trust-region methods that bound the KL divergence
between successive models (TRPO, Schulman et al., ICML 2015).
"""

import dataclasses
import math
import numbers
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_array, column_or_1d
from torch.nn.functional import cross_entropy

from .._torch import to_device
from ._constraints import NumberInterval, SequenceOf, count, size
from .discrepancy import NonFiniteError, memorization_discrepancy, weighted_mean

__all__ = [
    "BaseGuard",
    "CumulativeGuard",
    "GuardChain",
    "GuardContext",
    "GuardDecision",
    "StepGuard",
    "make_step_guard",
    "novelty_of",
]

_PROBES = ("reservoir", "recent")
_RULES = ("harmful", "bound", "strict")


def _is_trusted_probe(probe):
    return isinstance(probe, (tuple, list)) and len(probe) == 2


class _Probe:
    """Rows, their encoded labels and the current model's eval-mode logits of them.

    ``weight`` holds the rows' sample weights, or is ``None`` while every
    row weighs 1 (an unweighted stream keeps the unweighted means). The
    buffers are never written in place (:meth:`place` builds new ones), so
    a :meth:`state_dict` stays valid after later steps: the estimator keeps
    one to restore the guard when a call fails.
    """

    def __init__(self, X, y, weight=None):
        self.X, self.y, self.logits, self.weight = X, y, None, weight

    def __len__(self):
        return len(self.X)

    def changes(self, after):
        """``(mean KL(before || after), loss after - loss before)`` as tensors.

        Means weighted by the rows' sample weights when they have some.
        """
        if self.weight is None:
            loss_after = cross_entropy(after, self.y)
            loss_before = self._loss_of_logits()
            # The loss of ``after``, for when it becomes the probe's logits.
            self._loss = (after, self.y, loss_after)
            return (memorization_discrepancy(self.logits, after).mean(),
                    loss_after - loss_before)
        loss_change = (cross_entropy(after, self.y, reduction="none")
                       - cross_entropy(self.logits, self.y, reduction="none"))
        return (weighted_mean(memorization_discrepancy(self.logits, after), self.weight),
                weighted_mean(loss_change, self.weight))

    def _loss_of_logits(self):
        """``cross_entropy(self.logits, self.y)``, computed once per pair of tensors."""
        cached = self.__dict__.get("_loss")
        if cached is not None and cached[0] is self.logits and cached[1] is self.y:
            return cached[2]
        return cross_entropy(self.logits, self.y)

    def place(self, X, y, logits, slots, weight=None):
        """Write rows at ``slots`` into new buffers, longer when a slot is past their end."""
        self._loss = None  # the rows and logits change
        if not len(self.X):
            self.X, self.y = X.new_empty((0,) + X.shape[1:]), y.new_empty(0)
        if self.logits is None:
            self.logits = logits.new_empty((len(self.X),) + logits.shape[1:])
        if weight is not None and self.weight is None:
            self.weight = X.new_ones(len(self.X))  # the rows so far weigh 1
        elif weight is None and self.weight is not None:
            weight = X.new_ones(len(X))
        index = to_device(slots, X.device)
        n_needed = max(slots) + 1
        pairs = [(self.X, X), (self.y, y), (self.logits, logits)]
        if weight is not None:
            pairs.append((self.weight, weight))
        buffers = []
        for buffer, value in pairs:
            if len(buffer) < n_needed:
                padding = value.new_zeros((n_needed - len(buffer),) + value.shape[1:])
                buffer = torch.cat((buffer, padding))
            buffers.append(buffer.index_put((index,), value))
        self.X, self.y, self.logits = buffers[:3]
        if weight is not None:
            self.weight = buffers[3]

    def state_dict(self):
        state = {"X": self.X, "y": self.y, "logits": self.logits}
        if self.weight is not None:
            state["weights"] = self.weight
        return state

    def load_state_dict(self, state, size, name):
        X, y, logits = state["X"], state["y"], state["logits"]
        weight = state.get("weights")
        if not (isinstance(X, torch.Tensor) and X.ndim == 2 and X.is_floating_point()
                and isinstance(y, torch.Tensor) and y.ndim == 1 and len(y) == len(X)
                and not y.is_floating_point() and len(X) <= size
                and (logits is None or (isinstance(logits, torch.Tensor)
                                        and logits.ndim == 2 and len(logits) == len(X)))
                and (weight is None or (isinstance(weight, torch.Tensor)
                                        and weight.shape == (len(X),)
                                        and weight.dtype == X.dtype
                                        and bool((weight.isfinite() & (weight >= 0)).all()))
                     )):
            raise ValueError(f"A StepGuard state holds a {name} whose rows, labels, "
                             "logits and weights do not match.")
        self.X, self.y, self.logits, self.weight = X, y, logits, weight

    def to(self, device):
        self.X, self.y = self.X.to(device), self.y.to(device)
        if self.logits is not None:
            self.logits = self.logits.to(device)
        if self.weight is not None:
            self.weight = self.weight.to(device)


def _ring_slots(n_seen, n_rows, size):
    """The last ``size`` rows, in a ring buffer of ``size`` slots."""
    rows = list(range(max(0, n_rows - size), n_rows))
    return [(n_seen + row) % size for row in rows], rows


def _reservoir_slots(n_seen, n_rows, size, generator):
    """Algorithm R (Vitter, 1985): each row seen so far is kept with equal chance."""
    seen = n_seen + np.arange(n_rows)
    draws = (torch.rand(n_rows, generator=generator, dtype=torch.float64).numpy()
             * (seen + 1)).astype(np.int64)
    slot = np.where(seen < size, seen, draws)
    rows = np.flatnonzero(slot < size)
    # A later row replaces an earlier one in its slot: the last row per slot.
    slots, last = np.unique(slot[rows][::-1], return_index=True)
    return slots.tolist(), rows[::-1][last].tolist()


@dataclass(frozen=True)
class GuardContext:
    """What a guard may use of the net it watches.

    The net builds one for each hook call (:meth:`BaseGuard.start`,
    :meth:`BaseGuard.before_step`, :meth:`BaseGuard.after_step`); a guard
    sees the training through it and never through the net itself.

    Attributes
    ----------
    module : torch.nn.Module
        The module being trained. A guard may write its parameters in place
        (to pull a step back), nothing else.
    optimizer : torch.optim.Optimizer
        The module's optimizer. A guard may rewrite its per-parameter state
        (to scale the momentum of a step it pulled back).
    device : torch.device
        Where the module and the batches live.
    generator : torch.Generator
        The net's seeded generator: a guard that samples draws its own seed
        from it, so that a seeded estimator is reproducible.
    forward : callable
        ``forward(X)``: the current module's eval-mode logits of the tensor
        ``X``, without gradients.
    encode_labels : callable
        ``encode_labels(y, name="y")``: labels as passed to ``partial_fit``,
        as the training step's integer codes ``0 .. n_classes - 1`` (a
        trusted probe's labels need it); raises ``ValueError`` naming an
        unknown label and ``name``.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.guards import GuardContext
    >>> module = torch.nn.Linear(4, 3)
    >>> context = GuardContext(
    ...     module=module, optimizer=torch.optim.SGD(module.parameters(), lr=0.1),
    ...     device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
    ...     forward=module, encode_labels=lambda y: y)
    >>> [tuple(p.shape) for p in context.parameters]
    [(3, 4), (3,)]
    """

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    generator: torch.Generator
    forward: Callable
    encode_labels: Callable

    @property
    def parameters(self):
        """list of torch.nn.Parameter: the parameters the optimizer steps, in its order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


@dataclass(frozen=True)
class GuardDecision:
    """What a guard decided about one optimizer step.

    Attributes
    ----------
    guard : str
        The class name of the guard that decided.
    statistic : float
        How far the step moved the model by the guard's measure (for
        :class:`StepGuard`, ``D_step`` on its probe), before any pull-back.
    bound : float
        The bound the statistic was held to (``inf`` while the guard
        calibrates).
    loss_change : float
        The change of the guard's probe loss the step caused.
    harmful : bool
        Whether the guard's rule counts the step as harmful (a step that is
        too large and harmful is pulled back; under a rule that bounds every
        step, every step counts as harmful).
    scale : float, default=1.0
        The fraction of the step the guard kept: 1 for a step it let pass,
        0 for a refused batch.

    Examples
    --------
    >>> from dsc_sklearn.defence.guards import GuardDecision
    >>> decision = GuardDecision("StepGuard", statistic=0.3, bound=0.1,
    ...                          loss_change=0.05, harmful=True)
    >>> decision.too_large, decision.acts
    (True, True)
    """

    guard: str
    statistic: float
    bound: float
    loss_change: float
    harmful: bool
    scale: float = 1.0

    @property
    def too_large(self):
        """bool: whether the statistic exceeds the bound."""
        return self.statistic > self.bound

    @property
    def acts(self):
        """bool: whether the guard must pull the step back (too large and harmful)."""
        return self.too_large and self.harmful


class BaseGuard(BaseEstimator):
    """Base class of the guards that watch each optimizer step.

    A guard is a scikit-learn estimator whose parameters are its
    configuration; the estimator's ``step_guard`` parameter takes one, and
    the net trains with a clone of it, its ``step_guard_``. The net calls
    the hooks below, each a no-op here; a subclass overrides those it
    needs. Every hook receives a :class:`GuardContext`, never the net.

    - :meth:`start` once, when the net is initialised (and when the guard
      is replaced mid-stream);
    - :meth:`before_step` before the gradient of each training batch;
    - :meth:`after_step` after the optimizer's step: the guard may pull
      the step back (write the module's parameters and the optimizer's
      state) and must then multiply ``step.step_scale`` by the fraction it
      kept;
    - :meth:`state_dict` and :meth:`load_state_dict` for checkpoints, the
      undo of a failed call and pickling (the configuration is never part
      of the state);
    - :meth:`decisions`: what it decided about the last step, for logs and
      for the adaptive attacks.

    Examples
    --------
    A guard that counts the steps whose training loss exceeds a level:

    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.defence.guards import BaseGuard
    >>> class LossCounter(BaseGuard):
    ...     def __init__(self, level=1.0):
    ...         self.level = level
    ...     def start(self, context):
    ...         self.n_high_ = 0
    ...         return super().start(context)
    ...     def after_step(self, context, step):
    ...         self.n_high_ += float(step.loss) > self.level
    ...     def state_dict(self):
    ...         return {"n_high": self.n_high_}
    ...     def load_state_dict(self, state):
    ...         self.n_high_ = state["n_high"]
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DiscrepancyAwareOnlineClassifier(step_guard=LossCounter(level=0.0),
    ...                                        random_state=0)
    >>> clf = clf.partial_fit(X[:300] / 16, y[:300], classes=range(10))
    >>> clf.step_guard_.n_high_
    3
    """

    _parameter_constraints: dict = {}

    def start(self, context):
        """Start watching a net: validate the parameters, set up the state.

        Parameters
        ----------
        context : GuardContext
            The net's module, optimizer, device, generator and helpers.

        Returns
        -------
        self : BaseGuard
        """
        self._validate_params()
        return self

    def before_step(self, context, step):
        """Called before the gradient of each training batch.

        Parameters
        ----------
        context : GuardContext
        step : dsc_sklearn.defence._net.Step
            The batch as the earlier stages left it (``X_train``,
            ``y_train``, ``sample_weight_train``).
        """

    def after_step(self, context, step):
        """Called after the optimizer's step; may pull the step back.

        Parameters
        ----------
        context : GuardContext
        step : dsc_sklearn.defence._net.Step
            The step, with its ``loss``. A guard that pulls the step back
            multiplies ``step.step_scale`` by the fraction it kept; a guard
            that measures the step may set ``step.step_discrepancy``.
        """

    def decisions(self):
        """What the guard decided about the last step.

        Returns
        -------
        decisions : list of GuardDecision
            Empty when the guard decided nothing (the base class, or a
            guard that could not measure the step yet).
        """
        return []

    def invalidate(self):
        """The model changed after this guard's ``after_step``: forget what it cached of it.

        :class:`GuardChain` calls it on the guards before one that pulled
        the step back, so that none measures the next step from the model
        as it left it.
        """

    def state_dict(self):
        """The guard's learned state (tensors and plain Python values).

        Returns
        -------
        state : dict
            Empty for a guard without state.
        """
        return {}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s state; the configuration stays this guard's.

        Raises
        ------
        ValueError
            When ``state`` does not hold this guard's entries.
        """
        if state != {}:
            raise ValueError(
                f"{type(self).__name__} keeps no state, but the state given has the "
                f"entries {sorted(state) if isinstance(state, dict) else state!r}: it "
                "belongs to another guard."
            )

    def to(self, device):
        """Move the guard's tensors to ``device`` in place; return ``self``."""
        return self


class StepGuard(BaseGuard):
    """Bound the step discrepancy of every optimizer step.

    After each optimizer step of the net, the guard measures on its probe
    the step discrepancy ``D_step`` (mean ``KL(p_before || p_after)``) and
    the change of the probe's cross-entropy ``dL``. A step is *too large*
    when ``D_step`` exceeds the bound, ``margin`` times the median
    ``D_step`` of the last ``window`` unscaled steps (after ``warmup``
    steps; before that nothing is scaled), and *harmful* when ``dL > 0``
    and, with ``recent_size > 0``, the loss of the most recent rows rises
    too (a step that learns a shift the stream sustains lowers it).
    Depending on ``rule``, a step that is too large (and harmful) is pulled
    back: the parameters become ``theta_old + alpha * (theta_new -
    theta_old)`` with ``alpha = sqrt(bound / D_step)`` (the KL grows about
    quadratically with the step), the optimizer's state follows
    (``optimizer_state``), and ``alpha`` is halved until the step is
    acceptable, ``max_halvings`` times at most; then the batch is refused
    (``alpha = 0``: parameters and optimizer state as before the step).

    Scaled steps do not enter the calibration window, so a sustained attack
    cannot ramp the bound up, and, by default, their rows do not enter the
    probe.

    With sample weights (the estimator's ``sample_weight``), the probe and
    the recent rows keep each row's weight and ``D_step`` and ``dL`` are
    weighted means over them; rows of weight 0 never enter either. A
    measurement that is not finite (the step made the model's outputs NaN
    or infinite) raises :class:`~dsc_sklearn.defence.discrepancy.NonFiniteError`
    before it can enter the window, and the estimator undoes the call.

    Parameters
    ----------
    margin : float, default=2.0
        The bound is ``margin`` times the median step discrepancy of recent
        unscaled steps.
    window : int, default=50
        Number of recent unscaled steps the median is taken over.
    warmup : int, default=10
        Steps observed before the bound applies.
    probe : {"reservoir", "recent"} or tuple of (X, y), default="reservoir"
        The rows the step discrepancy is measured on: ``"reservoir"``, a
        uniform sample of ``probe_size`` rows over everything trained on
        since the guard started (so the recent stream, which an attacker
        controls, does not own it); ``"recent"``, the last ``probe_size``
        rows trained on; or trusted rows ``(X, y)`` given by the user, as
        Zeno and FLTrust use (labels as passed to ``partial_fit``).
    probe_size : int, default=256
        Rows in the reservoir or recent probe.
    admit : {"unscaled", "all"}, default="unscaled"
        Which steps' rows enter a reservoir or recent probe: only those of
        unscaled steps (an attacker's rows enter only when their step looked
        normal), or those of every step that was not refused (the probe then
        follows a sustained shift).
    recent_size : int, default=0
        Rows of the most recent batches (scaled or not) whose loss must
        rise too for a step to count as harmful; ``0`` judges on the probe
        alone.
    rule : {"harmful", "bound", "strict"}, default="harmful"
        ``"harmful"``: pull back a step that is too large and harmful, until
        it is within the bound. ``"bound"``: pull back every step that is
        too large. ``"strict"``: pull back a step that is too large and
        harmful until it is within the bound and the probe loss no longer
        rises.
    harm : {"full", "first_order", "first_order_descend", \
"first_order_descend_interpolate"}, default="full"
        How a step that is too large is judged harmful: ``"full"``, when
        the step raised the probe's loss (and the recent rows', as above);
        ``"first_order"``, when it did and also raises it when scaled down
        to ``harm_scale`` of its length (one more probe forward pass, only
        for steps that are too large and raised the loss). An overshoot of a
        model that is still learning descends the probe loss at first order
        and raises it only at full length; it then counts as harmless, is
        kept whole and enters the calibration window, so that the bound
        follows the learning. Measured (docs/ablations.md, fourth round):
        the poisoned batches of the accumulative attack overshoot in the
        same way, so this rule lets them through; it is no default.
        ``"first_order_descend"``: the same,
        but an overshoot is pulled back to the largest of 1/2, 1/4, ... of
        its length (``max_halvings`` halvings, then refused) at which the
        probe loss does not rise, and that kept step enters the window.
        ``"first_order_descend_interpolate"``: the same, with the
        optimizer's state of such an overshoot interpolated (as
        ``optimizer_state="interpolate"``) whatever ``optimizer_state`` says.
        Ignored under ``rule="bound"``.
    harm_scale : float, default=0.1
        With a ``"first_order"`` rule, the fraction of the step at which
        the probe's loss must rise too for the step to count as harmful.
    max_halvings : int, default=4
        Halvings of ``alpha`` tried before the batch is refused.
    optimizer_state : {"scale", "interpolate"}, default="scale"
        What happens to the optimizer's per-parameter state (SGD's momentum
        buffer, Adam's moments) when a step is pulled back: ``"scale"``
        multiplies the new state by ``alpha`` (for SGD, the momentum then
        matches the step actually taken); ``"interpolate"`` moves it to
        ``old + alpha * (new - old)``. Scalar state (Adam's step count) is
        kept; a refused batch restores everything.
    random_state : int or None, default=None
        Seeds the reservoir's sampling; ``None`` draws the seed from the
        net's generator, so a seeded estimator is reproducible.

    Attributes
    ----------
    n_steps_ : int
        Optimizer steps the guard has seen.
    n_scaled_ : int
        Steps it pulled back (refused batches included).
    n_refused_ : int
        Batches it refused.
    window_ : collections.deque of float
        The step discrepancies of recent unscaled steps.
    last_decision_ : GuardDecision or None
        The decision about the last step (:meth:`judge`, with the scale
        kept); ``None`` while the probe was empty.

    See Also
    --------
    DiscrepancyAwareOnlineClassifier : Its ``step_guard`` parameter takes a
        guard.
    GuardChain : Runs several guards around each step.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.defence.guards import StepGuard
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DiscrepancyAwareOnlineClassifier(
    ...     step_guard=StepGuard(margin=3.0), random_state=0)
    >>> for start in range(0, 1000, 100):
    ...     clf = clf.partial_fit(X[start:start + 100] / 16, y[start:start + 100],
    ...                           classes=range(10))
    >>> clf.step_guard_.n_steps_
    10
    >>> record = clf.stream_log_[-1]
    >>> record["step_scale"], record["step_discrepancy"] > 0
    (1.0, True)
    """

    _parameter_constraints = {
        "margin": [Interval(numbers.Real, 0, None, closed="neither")],
        "window": [size()],
        "warmup": [count()],
        "probe": [StrOptions(set(_PROBES)),
                  SequenceOf("a pair (X, y) of trusted rows and their labels", length=2)],
        "probe_size": [size()],
        "admit": [StrOptions({"unscaled", "all"})],
        "recent_size": [count()],
        "rule": [StrOptions(set(_RULES))],
        "harm": [StrOptions({"full", "first_order", "first_order_descend",
                             "first_order_descend_interpolate"})],
        "harm_scale": [Interval(numbers.Real, 0, 1, closed="neither")],
        "max_halvings": [count()],
        "optimizer_state": [StrOptions({"scale", "interpolate"})],
        "random_state": [None, NumberInterval(numbers.Integral, 0, 2**63 - 1, closed="both")],
    }

    def __init__(self, *, margin=2.0, window=50, warmup=10, probe="reservoir",
                 probe_size=256, admit="unscaled", recent_size=0, rule="harmful",
                 harm="full", harm_scale=0.1, max_halvings=4, optimizer_state="scale",
                 random_state=None):
        self.margin = margin
        self.window = window
        self.warmup = warmup
        self.probe = probe
        self.probe_size = probe_size
        self.admit = admit
        self.recent_size = recent_size
        self.rule = rule
        self.harm = harm
        self.harm_scale = harm_scale
        self.max_halvings = max_halvings
        self.optimizer_state = optimizer_state
        self.random_state = random_state

    # ------------------------------------------------------------ set-up

    def start(self, context):
        """Validate the parameters and start with an empty probe and window.

        Parameters
        ----------
        context : GuardContext
            The net's module, optimizer and generator; its ``encode_labels``
            encodes a trusted probe's labels.

        Returns
        -------
        self : StepGuard
        """
        self._validate_params()
        device = torch.device(context.device)
        seed = (int(torch.randint(2**31 - 1, (1,), generator=context.generator))
                if self.random_state is None else self.random_state)
        self.generator_ = torch.Generator().manual_seed(seed)
        self.n_steps_ = self.n_scaled_ = self.n_refused_ = 0
        self.n_seen_ = self.n_seen_recent_ = 0
        self.window_ = deque(maxlen=self.window)
        self.last_decision_ = None
        empty = (torch.empty(0, 0, device=device),
                 torch.empty(0, dtype=torch.long, device=device))
        self.probe_ = _Probe(*empty)
        self.recent_ = _Probe(*empty)
        if _is_trusted_probe(self.probe):
            X, y = self.probe
            X = check_array(X, dtype=np.float32, input_name="step_guard probe X")
            y = column_or_1d(y)
            if len(X) != len(y):
                raise ValueError(
                    "The step guard's trusted probe (X, y) needs as many labels as "
                    f"rows; got {len(X)} rows and {len(y)} labels."
                )
            self.probe_ = _Probe(torch.as_tensor(X, device=device),
                                 torch.as_tensor(context.encode_labels(y, name="the step guard's probe y"),
                                                 device=device))
        return self

    # ------------------------------------------------------- during a step

    def before_step(self, context, step):
        """Keep the weights and optimizer state the step starts from.

        They are copied into the buffers of the previous step (one
        ``torch._foreach_copy_`` each) while the shapes match, rather than
        cloned anew at every step.
        """
        params, state = self.__dict__.get("_step_buffers", (None, None))
        params = _copies(params, [p.detach() for p in context.parameters])
        keys, tensors = _state_items(context.optimizer)
        state = _copies(state, tensors)
        self._step_buffers = params, state
        self._params, self._state = params, dict(zip(keys, state))
        for probe in (self.probe_, self.recent_):
            if probe.logits is None and len(probe):
                probe.logits = context.forward(probe.X)

    def after_step(self, context, step):
        """Measure the step on the probe and pull it back if it must be.

        Sets ``step.step_discrepancy`` (the step's ``D_step`` before any
        pull-back, NaN while the probe is empty) unless a guard before it
        in a :class:`GuardChain` set it, multiplies
        ``step.step_scale`` by ``alpha`` (1 for an unscaled step, 0 for a
        refused batch) and keeps the decision as :attr:`last_decision_`.
        """
        self.n_steps_ += 1
        self.last_decision_ = None
        if len(self.probe_):
            after, after_recent = self._forward(context)
            discrepancy, loss_change, recent_change = self._measure(after, after_recent)
            if not all(map(math.isfinite, (discrepancy, loss_change))) or (
                    after_recent is not None and not math.isfinite(recent_change)):
                # A NaN D_step would pass every bound and poison the median.
                raise NonFiniteError(
                    "The step guard measured a non-finite step (step discrepancy "
                    f"{discrepancy}, probe loss change {loss_change}): the optimizer "
                    "step made the model's outputs NaN or infinite."
                )
            if math.isnan(step.step_discrepancy):  # no guard before it in a chain measured it
                step.step_discrepancy = discrepancy
            decision = self._judge_step(discrepancy, loss_change, recent_change, after)
            overshoot = False
            if decision.acts and self.harm != "full" and self.rule != "bound":
                decision = self._judge_first_order(context, decision)
                overshoot = not decision.harmful and self.harm.startswith("first_order_descend")
            if decision.acts or overshoot:
                if overshoot:
                    # Kept at the largest of 1/2, 1/4, ... of its length that
                    # does not raise the probe loss; that kept step calibrates.
                    pulled = self._pull_back(context, decision, alpha=0.5,
                                             accepts=lambda _, change: change <= 0,
                                             interpolate=self.harm.endswith("interpolate"))
                else:
                    pulled = self._pull_back(context, decision)
                alpha, after, after_recent, kept = pulled
                decision = dataclasses.replace(decision, scale=alpha)
                step.step_scale *= alpha
                self.n_scaled_ += 1
                self.n_refused_ += alpha == 0.0
                if overshoot and alpha > 0:
                    self.window_.append(kept)
            else:
                self.window_.append(discrepancy)
            self.last_decision_ = decision
            self.probe_.logits = after
            if after_recent is not None:
                self.recent_.logits = after_recent
        admitted = step.step_scale == 1.0 or (self.admit == "all" and step.step_scale > 0)
        self._add_rows(context, step.X_train, step.y_train, trained=admitted,
                       weight=step.sample_weight_train)
        self._params = self._state = None

    # ------------------------------------------------------------ decision

    def bound(self):
        """The bound the next step's ``D_step`` is held to.

        Returns
        -------
        bound : float
            ``margin`` times the median of the calibration window, or
            ``inf`` during the first ``warmup`` steps (and while the window
            is empty).
        """
        if self.n_steps_ <= self.warmup or not self.window_:
            return math.inf
        return self.margin * statistics.median(self.window_)

    def judge(self, discrepancy, loss_change, recent_change=math.inf):
        """Decide whether a step is too large and harmful, by this guard's rule.

        Parameters
        ----------
        discrepancy : float
            The step's ``D_step`` on the probe.
        loss_change : float
            The change of the probe's loss the step caused.
        recent_change : float, default=inf
            The change of the recent rows' loss (``recent_size > 0``); the
            default counts only the probe.

        Returns
        -------
        decision : GuardDecision
            Its ``acts`` says whether the step must be pulled back.
        """
        harmful = self.rule == "bound" or (loss_change > 0 and recent_change > 0)
        return GuardDecision(type(self).__name__, discrepancy, self.bound(),
                             loss_change, harmful)

    def _judge_step(self, discrepancy, loss_change, recent_change, after):
        """:meth:`judge` on what :meth:`after_step` measured (``after``: the probe's logits)."""
        return self.judge(discrepancy, loss_change, recent_change)

    def _judge_first_order(self, context, decision):
        """``decision``, harmful only if the step scaled to ``harm_scale`` raises the loss too.

        Evaluates the probe at ``theta_old + harm_scale * (theta_new -
        theta_old)`` and puts the parameters back to ``theta_new``.
        """
        parameters = context.parameters
        new_params = [p.detach().clone() for p in parameters]
        _interpolate_parameters(parameters, self._params, new_params, self.harm_scale)
        _, loss_change, recent_change = self._measure(*self._forward(context))
        _interpolate_parameters(parameters, self._params, new_params, 1.0)  # lerp(a, b, 1) is b
        return dataclasses.replace(decision, harmful=loss_change > 0 and recent_change > 0)

    def accepts(self, discrepancy, loss_change, bound):
        """Whether a pulled-back step is acceptable: within the bound (and harmless under ``"strict"``)."""
        return discrepancy <= bound and (self.rule != "strict" or loss_change <= 0)

    def decisions(self):
        """The decision about the last step (none while the probe was empty)."""
        return [] if self.__dict__.get("last_decision_") is None else [self.last_decision_]

    def invalidate(self):
        """Forget the probe's cached logits; the next step recomputes them."""
        self.probe_.logits = None
        self.recent_.logits = None

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_step_buffers", None)  # scratch space, rebuilt at the next step
        return state

    def _forward(self, context):
        """Eval-mode logits of the probe and of the recent rows, in one pass."""
        if not len(self.recent_):
            return context.forward(self.probe_.X), None
        logits = context.forward(torch.cat((self.probe_.X, self.recent_.X)))
        return logits[:len(self.probe_)], logits[len(self.probe_):]

    def _measure(self, after, after_recent):
        """``(D_step, dL, dL_recent)``; ``dL_recent`` is +inf without recent rows."""
        values = list(self.probe_.changes(after))
        if after_recent is not None:
            values.append(self.recent_.changes(after_recent)[1])
        values = torch.stack(values).tolist()
        return tuple(values) if len(values) == 3 else (*values, math.inf)

    def _pull_back(self, context, decision, alpha=None, accepts=None, interpolate=False):
        """Scale the step down until acceptable.

        Starts at ``alpha`` (default ``sqrt(bound / D_step)``) and halves it
        until ``accepts(D_step, dL)`` (default :meth:`accepts` against the
        bound); ``interpolate`` interpolates the optimizer's state whatever
        ``optimizer_state`` says. Returns ``(alpha, logits, recent logits,
        D_step kept)``.
        """
        parameters, optimizer = context.parameters, context.optimizer
        new_params = [p.detach().clone() for p in parameters]
        new_state = _state_tensors(optimizer)
        bound = decision.bound
        if alpha is None:
            alpha = math.sqrt(bound / decision.statistic)
        if accepts is None:
            def accepts(within, change):
                return self.accepts(within, change, bound)
        for _ in range(self.max_halvings + 1):
            _interpolate_parameters(parameters, self._params, new_params, alpha)
            after, after_recent = self._forward(context)
            within, loss_change, _ = self._measure(after, after_recent)
            if accepts(within, loss_change):
                self._scale_state(optimizer, self._state, new_state, alpha, interpolate)
                return alpha, after, after_recent, within
            alpha /= 2
        _interpolate_parameters(parameters, self._params, new_params, 0.0)
        _restore_state(optimizer, self._state)
        return 0.0, self.probe_.logits, self.recent_.logits, 0.0

    def _scale_state(self, optimizer, old_state, new_state, alpha, interpolate=False):
        """The optimizer's state after a step kept at ``alpha`` (``optimizer_state``)."""
        for (param, name), new in new_state.items():
            current = optimizer.state[param][name]
            if new.ndim == 0:
                continue
            old = old_state.get((param, name))
            if (self.optimizer_state == "scale" and not interpolate) or old is None:
                current.copy_(new * alpha)
            else:
                current.copy_(torch.lerp(old, new, alpha))

    # -------------------------------------------------------------- probe

    def _add_rows(self, context, X, y, trained, weight=None):
        """Let the batch's rows into the recent rows, and into the probe if it trained.

        Rows of weight 0 enter neither (they are not trained on); the others
        enter with their weight. Returns the probe's slots that took a new
        row (a :class:`CumulativeGuard` fills its cached logits there).
        """
        if weight is not None:
            positive = weight.gt(0).nonzero().squeeze(1)
            if len(positive) < len(X):
                X, y, weight = X[positive], y[positive], weight[positive]
        if not len(X):
            return []
        placements = []
        if self.recent_size:
            slots, rows = _ring_slots(self.n_seen_recent_, len(X), self.recent_size)
            placements.append((self.recent_, slots, rows))
            self.n_seen_recent_ += len(X)
        if trained and not _is_trusted_probe(self.probe):
            if self.probe == "recent":
                slots, rows = _ring_slots(self.n_seen_, len(X), self.probe_size)
            else:
                slots, rows = _reservoir_slots(self.n_seen_, len(X), self.probe_size,
                                               self.generator_)
            placements.append((self.probe_, slots, rows))
            self.n_seen_ += len(X)
        placements = [placement for placement in placements if placement[2]]
        if not placements:
            return []
        # One forward pass for the rows of both probes.
        union = sorted({row for *_, rows in placements for row in rows})
        position = {row: i for i, row in enumerate(union)}
        union_index = to_device(union, X.device)
        X_new, y_new = X[union_index].detach(), y[union_index]
        weight_new = None if weight is None else weight[union_index].detach()
        logits_new = context.forward(X_new)
        for probe, slots, rows in placements:
            if rows == union:  # one probe, or both take the same rows
                probe.place(X_new, y_new, logits_new, slots, weight_new)
                continue
            index = to_device([position[row] for row in rows], X.device)
            probe.place(X_new[index], y_new[index], logits_new[index], slots,
                        None if weight_new is None else weight_new[index])
        return next((slots for probe, slots, _ in placements if probe is self.probe_), [])

    # -------------------------------------------------------------- state

    def state_dict(self):
        """The guard's learned state as tensors and plain Python values.

        Returns
        -------
        state : dict
            The counters, the calibration ``window``, the probe's and the
            recent rows' inputs, labels and cached logits, and the
            reservoir's generator state.
        """
        return {
            "n_steps": self.n_steps_,
            "n_scaled": self.n_scaled_,
            "n_refused": self.n_refused_,
            "n_seen": self.n_seen_,
            "n_seen_recent": self.n_seen_recent_,
            "window": list(self.window_),
            "probe": self.probe_.state_dict(),
            "recent": self.recent_.state_dict(),
            "generator": self.generator_.get_state(),
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s state; the configuration stays this guard's.

        Raises
        ------
        ValueError
            When an entry is missing or of the wrong type or shape; the guard
            is then left as it was.
        """
        expected = set(self.state_dict())
        if not isinstance(state, dict) or set(state) != expected:
            raise ValueError(
                f"A StepGuard state has the entries {sorted(expected)}; the one given "
                "does not. It is corrupt, was edited, or belongs to another object."
            )
        names = ("n_steps", "n_scaled", "n_refused", "n_seen", "n_seen_recent")
        counts = {name: state[name] for name in names}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in counts.values()):
            raise ValueError(f"A StepGuard state holds invalid counters {counts}.")
        window = state["window"]
        if not isinstance(window, list) or not all(
                isinstance(v, float) and math.isfinite(v) and v >= 0 for v in window):
            raise ValueError("A StepGuard state holds a window that is not a list of "
                             "finite non-negative floats.")
        probe, recent = _Probe(self.probe_.X, self.probe_.y), _Probe(self.recent_.X,
                                                                      self.recent_.y)
        size = len(self.probe_) if _is_trusted_probe(self.probe) else self.probe_size
        probe.load_state_dict(state["probe"], size, "probe")
        recent.load_state_dict(state["recent"], self.recent_size, "recent rows")
        self.generator_.set_state(state["generator"].cpu())
        (self.n_steps_, self.n_scaled_, self.n_refused_, self.n_seen_,
         self.n_seen_recent_) = (counts[name] for name in names)
        self.window_ = deque(window, maxlen=self.window)
        self.probe_, self.recent_ = probe, recent
        self._params = self._state = None  # what a step interrupted midway left
        self.last_decision_ = None

    def to(self, device):
        """Move the probes to ``device`` in place; return ``self``."""
        self.probe_.to(device)
        self.recent_.to(device)
        return self


class CumulativeGuard(StepGuard):
    """Bound each step, and what the last ``k`` accepted steps did together.

    A per-step bound cannot stop damage that arrives as several steps, each
    just under it. This guard is a :class:`StepGuard` (every parameter of
    which it takes, with the same meaning and defaults) that, after the
    per-step check, also compares the model with the one ``k`` accepted
    steps back, on the same probe and from cached logits (no old model is
    evaluated again):

        ``D_k = mean_{x in probe} KL(p_{t-k}(x) || p_t(x))``

    with the probe-loss change ``dL_k`` over the same steps. ``D_k`` is held
    to ``cumulative_margin`` times the median ``D_k`` of recent clean
    windows: one window per step (overlapping), counted only when none of
    its steps was pulled back, so the calibration works for every ``k``
    and a sustained attack cannot ramp it up. The bound applies after
    ``warmup`` steps and ``min_windows`` clean windows. When ``D_k``
    exceeds it and the probe's loss rose over the window, the accumulated
    displacement is pulled back: the parameters become ``theta_{t-k} +
    alpha * (theta_t - theta_{t-k})`` with ``alpha = sqrt(bound / D_k)``,
    halved until within the bound (``max_halvings`` times at most), the
    optimizer's state follows as in :class:`StepGuard`, and then the model
    is rewound to the weights and optimizer state of ``k`` accepted steps
    ago (``alpha = 0``). The step is marked (``step.rewound``), its
    ``step_scale`` multiplied by ``alpha``, and the window restarts from
    ``theta_{t-k}``.

    A row that entered the probe during the window has no logits from the
    older model: it counts with the logits it had when it entered, so it
    adds only the drift since then (the ring of cached logits is filled at
    its slot). Refused batches do not move the model and are not counted
    as steps of the window.

    **Following an abrupt shift** (``shift_epsilon``). The window bound locks
    out under an abrupt benign shift of the inputs (a translation): the
    adaptation's ``k``-step displacement is large and raises the old probe's
    loss. With ``shift_epsilon`` set, the guard measures before each step how
    far the batch lies from the rows it knows: each row's L-infinity distance
    to its nearest row of the probe, and the batch's *novelty* ``N``, the
    median over its rows. ``N`` is calibrated as the running maximum ``N_max``
    of the batches that were not novel, once the probe is full (a probe still
    filling lies farther from every row); the test applies after ``warmup``
    steps; a batch is *novel* when ``N > N_max + shift_allowance *
    shift_epsilon``. A novel batch when at least ``shift_min_novel`` of the
    last ``shift_window`` batches were novel starts an *episode*: its step and
    the next ``shift_steps - 1`` are *exempt*, whatever their novelty (a few
    new rows in the probe make the next batches look known long before the
    model has followed them), and the calibration waits for its end. An exempt
    step is not held to the window bound (``shift_exempt="window"``), or to
    neither bound (``shift_exempt="all"``), and later windows start from the
    model it left (none pulls it back); it enters the calibrations and its rows
    the probe as any unscaled step's; after the episode the normal checks
    apply, and a stream still novel starts another. A shift decision (guard
    ``"CumulativeGuard.shift"``, statistic ``N``, bound the novelty threshold,
    never harmful) is logged with the others.

    Why an attacker within ``shift_epsilon`` cannot claim the exemption:
    the distance of a row to the probe's nearest row is 1-Lipschitz in the
    L-infinity norm (triangle inequality), so a row ``x + delta`` with
    ``|delta|_inf <= eps`` lies at most ``eps`` farther from the probe than
    the clean row ``x`` it was made from, and the median over a batch (an
    order statistic, monotone in every row) moves by at most ``eps`` too.
    A batch poisoned from clean rows of the known distribution therefore has
    ``N`` at most ``eps`` above the clean batch's, which the calibration
    ``N_max`` already bounds: it is never novel while ``shift_allowance >=
    1``. Two ways around it need more allowance: probe rows that are
    themselves poisoned rows the attacker pushed away from future clean rows
    (each adds at most ``eps`` to a clean row's distance: ``shift_allowance
    >= 2``), and base rows that the attacker picks from the tail of the
    distribution instead of the stream (not bounded). The running maximum
    never decreases, so an attacker cannot lower the calibration; raising it
    only makes the test stricter. Label flips do not move the inputs and
    stay under the normal checks. During a benign shift the attacker's rows
    are novel too, and exempt with it.

    Parameters
    ----------
    k : int, default=5
        Accepted steps per window.
    cumulative_margin : float or None, default=2.0
        The window bound is ``cumulative_margin`` times the median ``D_k``
        of recent clean windows; ``None`` bounds no window: the ring keeps
        only the probe logits of the last ``k`` models, for
        ``step_harm="window"``, and there is no window decision.
    cumulative_window : int, default=50
        Number of recent clean windows the median is taken over.
    min_windows : int, default=3
        Clean windows needed before the window bound applies.
    step_harm : {"step", "window"}, default="step"
        When the per-step check counts a step as harmful: ``"step"``, when
        it raised the probe's loss (as :class:`StepGuard`); ``"window"``,
        when it raised the probe's loss **and** left it above its level
        ``k`` accepted steps before, so that the overshoots of a model that
        is still learning (a step that raises the loss a little after
        steps that lowered it more) pass, and enter the calibration.
    learning_drop : float, default=0.0
        With ``step_harm="window"``, the relative fall of the probe's loss
        over the ``k`` steps up to and including a step, ``(L_{t-k} -
        L_t) / L_{t-k}``, that makes a step harmless: ``0`` exempts every
        step that leaves the loss below its level ``k`` steps before; a
        larger value only the steps of a model that is learning fast.
    window_harm_level : float or None, default=None
        With ``step_harm="window"``, apply the window rule only while the
        probe's loss before the step is above ``window_harm_level`` times
        ``ln(n_classes)`` (the loss of a model that knows nothing): a model
        still far from trained; below it, the step rule. ``None`` applies
        the window rule at every step.
    shift_epsilon : float or None, default=None
        The L-infinity budget of a poisoned row, in input units (the
        attacks' ``epsilon``), that the shift test must stay out of reach
        of; ``None`` runs no shift test.
    shift_allowance : float, default=1.0
        A batch is novel when its novelty exceeds the calibrated maximum by
        ``shift_allowance * shift_epsilon``: ``1`` is out of reach of an
        attacker whose rows are within ``shift_epsilon`` of clean stream
        rows while the probe's rows are clean, ``2`` also when it poisoned
        the probe's rows.
    shift_neighbours : int, default=1
        A row's distance to the probe is to its ``shift_neighbours``-th
        nearest row: with more than one, a few new rows that entered the
        probe do not end a shift at once.
    shift_window : int, default=5
        The recent batches (this one included) the shift test counts.
    shift_min_novel : int, default=3
        Novel batches among the last ``shift_window`` that make a novel
        batch's step exempt (at most ``shift_window``).
    shift_steps : int, default=10
        Steps an episode exempts, its first included, whatever their
        batches' novelty; the calibration waits for its end.
    shift_exempt : {"window", "all"}, default="all"
        What an exempt step is not held to: the window bound only, or the
        per-step bound too.
    margin, window, warmup, probe, probe_size, admit, recent_size, rule, harm, \
harm_scale, max_halvings, optimizer_state, random_state
        As in :class:`StepGuard`; ``warmup``, ``rule`` (``"harmful"``,
        ``"bound"`` or ``"strict"`` on the window's ``D_k`` and ``dL_k``),
        ``max_halvings`` and ``optimizer_state`` apply to the window check
        too. The window's harm is judged on the probe alone.

    Attributes
    ----------
    n_steps_, n_scaled_, n_refused_, window_
        As in :class:`StepGuard` (the per-step check).
    n_pulled_back_ : int
        Windows whose displacement was pulled back (rewinds included).
    n_rewinds_ : int
        Rewinds to the weights and optimizer state of ``k`` steps ago.
    cumulative_window_ : collections.deque of float
        ``D_k`` of recent clean windows.
    last_decision_ : GuardDecision or None
        The per-step decision about the last step.
    last_cumulative_decision_ : GuardDecision or None
        The window decision about the last step (guard
        ``"CumulativeGuard.window"``); ``None`` while no window exists
        (fewer than two accepted steps, or a refused batch).
    novelty_max_ : float or None
        With ``shift_epsilon``, the calibrated novelty: the largest of the
        batches that were not novel (``None`` before the first).
    n_shift_steps_ : int
        With ``shift_epsilon``, the steps the shift test exempted.
    last_shift_decision_ : GuardDecision or None
        With ``shift_epsilon``, the shift decision about the last step
        (guard ``"CumulativeGuard.shift"``).

    See Also
    --------
    StepGuard : The per-step check alone.
    GuardChain : Runs several guards around each step.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.defence.guards import CumulativeGuard
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DiscrepancyAwareOnlineClassifier(
    ...     step_guard=CumulativeGuard(k=3, warmup=3), random_state=0)
    >>> for start in range(0, 1000, 100):
    ...     clf = clf.partial_fit(X[start:start + 100] / 16, y[start:start + 100],
    ...                           classes=range(10))
    >>> guard = clf.step_guard_
    >>> len(guard.cumulative_window_), guard.cumulative_bound() < float("inf")
    (7, True)
    >>> [decision.guard for decision in guard.decisions()]
    ['CumulativeGuard', 'CumulativeGuard.window']
    """

    _parameter_constraints = {
        **StepGuard._parameter_constraints,
        "k": [Interval(numbers.Integral, 1, None, closed="left")],
        "cumulative_margin": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "cumulative_window": [Interval(numbers.Integral, 1, None, closed="left")],
        "min_windows": [Interval(numbers.Integral, 1, None, closed="left")],
        "step_harm": [StrOptions({"step", "window"})],
        "learning_drop": [Interval(numbers.Real, 0, 1, closed="left")],
        "window_harm_level": [None, Interval(numbers.Real, 0, None, closed="left")],
        "shift_epsilon": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "shift_allowance": [Interval(numbers.Real, 0, None, closed="left")],
        "shift_neighbours": [size()],
        "shift_window": [size()],
        "shift_min_novel": [size()],
        "shift_steps": [size()],
        "shift_exempt": [StrOptions({"window", "all"})],
    }

    def __init__(self, *, k=5, cumulative_margin=2.0, cumulative_window=50, min_windows=3,
                 step_harm="step", learning_drop=0.0, window_harm_level=None,
                 shift_epsilon=None, shift_allowance=1.0, shift_neighbours=1, shift_window=5,
                 shift_min_novel=3, shift_steps=10, shift_exempt="all",
                 margin=2.0, window=50, warmup=10, probe="reservoir", probe_size=256,
                 admit="unscaled", recent_size=0, rule="harmful", harm="full",
                 harm_scale=0.1, max_halvings=4, optimizer_state="scale", random_state=None):
        super().__init__(margin=margin, window=window, warmup=warmup, probe=probe,
                         probe_size=probe_size, admit=admit, recent_size=recent_size,
                         rule=rule, harm=harm, harm_scale=harm_scale, max_halvings=max_halvings,
                         optimizer_state=optimizer_state, random_state=random_state)
        self.k = k
        self.cumulative_margin = cumulative_margin
        self.cumulative_window = cumulative_window
        self.min_windows = min_windows
        self.step_harm = step_harm
        self.learning_drop = learning_drop
        self.window_harm_level = window_harm_level
        self.shift_epsilon = shift_epsilon
        self.shift_allowance = shift_allowance
        self.shift_neighbours = shift_neighbours
        self.shift_window = shift_window
        self.shift_min_novel = shift_min_novel
        self.shift_steps = shift_steps
        self.shift_exempt = shift_exempt

    def start(self, context):
        """Start the per-step check, with an empty ring of past models.

        Parameters
        ----------
        context : GuardContext

        Returns
        -------
        self : CumulativeGuard
        """
        super().start(context)
        if self.shift_min_novel > self.shift_window:
            raise ValueError(
                f"CumulativeGuard(shift_min_novel={self.shift_min_novel}) counts novel "
                f"batches among the last shift_window={self.shift_window}: it must be at "
                "most shift_window."
            )
        self.ring_ = deque()
        self.cumulative_window_ = deque(maxlen=self.cumulative_window)
        self.n_pulled_back_ = self.n_rewinds_ = 0
        self.last_cumulative_decision_ = None
        self.novelty_max_ = None
        self.shift_recent_ = deque(maxlen=self.shift_window)
        self.n_shift_steps_ = self.shift_left_ = 0
        self.last_shift_decision_ = None
        return self

    def before_step(self, context, step):
        """Keep the step's starting point; with ``shift_epsilon``, run the shift test."""
        super().before_step(context, step)
        self._exempt = False
        self.last_shift_decision_ = None
        if self.shift_epsilon is None or not len(self.probe_):
            return
        X, weight = step.X_train, step.sample_weight_train
        if weight is not None:
            X = X[weight > 0]
        if not len(X):
            return
        novelty = float(novelty_of(X, self.probe_.X,
                                   min(self.shift_neighbours, len(self.probe_))))
        bound = self.shift_bound()
        novel = novelty > bound
        self.shift_recent_.append(novel)
        if self.shift_left_:  # an episode: exempt, and the calibration waits
            self.shift_left_ -= 1
            self._exempt = True
        else:
            full = _is_trusted_probe(self.probe) or len(self.probe_) >= self.probe_size
            if full and not novel:  # also every batch while calibrating (the bound is inf)
                self.novelty_max_ = (novelty if self.novelty_max_ is None
                                     else max(self.novelty_max_, novelty))
            self._exempt = novel and sum(self.shift_recent_) >= self.shift_min_novel
            if self._exempt:
                self.shift_left_ = self.shift_steps - 1
        self.n_shift_steps_ += self._exempt
        self.last_shift_decision_ = GuardDecision(
            f"{type(self).__name__}.shift", novelty, bound, math.nan, harmful=False)

    def shift_bound(self):
        """The novelty above which a batch is novel.

        Returns
        -------
        bound : float
            ``novelty_max_ + shift_allowance * shift_epsilon``, or ``inf``
            during the first ``warmup`` steps, before any calibration and
            without a shift test.
        """
        if (self.shift_epsilon is None or self.novelty_max_ is None
                or self.n_steps_ < self.warmup):
            return math.inf
        return self.novelty_max_ + self.shift_allowance * self.shift_epsilon

    def after_step(self, context, step):
        """The per-step check, then the window's: pull back or rewind if it must.

        Multiplies ``step.step_scale`` by the fraction of the window's
        displacement kept and sets ``step.rewound`` when it pulls back.
        """
        super().after_step(context, step)
        exempt = self.__dict__.pop("_exempt", False)
        placed = self.__dict__.pop("_placed", [])
        self.last_cumulative_decision_ = None
        if not len(self.probe_) or step.step_scale == 0.0:
            return  # a refused batch: the model did not move
        current = self.probe_.logits
        self._fill(placed, current)
        if len(self.ring_) > self.k:
            self.ring_.popleft()
        self.ring_.append(self._snapshot(context, current, scaled=step.step_scale < 1.0))
        if len(self.ring_) < 2 or self.cumulative_margin is None:
            return  # no window yet, or no window bound
        base = self.ring_[0]
        discrepancy, loss_change = self._window_changes(base["logits"], current)
        if not (math.isfinite(discrepancy) and math.isfinite(loss_change)):
            raise NonFiniteError(
                "The cumulative guard measured a non-finite window (discrepancy "
                f"{discrepancy}, probe loss change {loss_change}): a step made the "
                "model's outputs NaN or infinite."
            )
        decision = self.judge_window(discrepancy, loss_change)
        if exempt:  # a shift the stream sustains: not held to the window bound
            decision = dataclasses.replace(decision, harmful=False)
            # Later windows start from here: none pulls the shift's step back.
            self.ring_ = deque([self.ring_[-1]])
        if decision.acts:
            alpha, after, after_recent = self._pull_back_window(context, decision, base)
            decision = dataclasses.replace(decision, scale=alpha)
            step.step_scale *= alpha
            step.rewound = True
            self.n_pulled_back_ += 1
            self.n_rewinds_ += alpha == 0.0
            self.probe_.logits = after
            if after_recent is not None:
                self.recent_.logits = after_recent
            self.ring_ = deque([base] if alpha == 0.0
                               else [base, self._snapshot(context, after, scaled=True)])
        elif len(self.ring_) == self.k + 1 and not any(
                entry["scaled"] for entry in list(self.ring_)[1:]):
            self.cumulative_window_.append(discrepancy)
        self.last_cumulative_decision_ = decision

    # ------------------------------------------------------------ decision

    def judge(self, discrepancy, loss_change, recent_change=math.inf, window_change=math.inf):
        """Decide about one step, by :meth:`StepGuard.judge`'s rule and ``step_harm``.

        Parameters
        ----------
        discrepancy, loss_change, recent_change
            As in :meth:`StepGuard.judge`.
        window_change : float, default=inf
            The relative probe-loss change since the model ``k`` accepted
            steps before the step, ``(L_t - L_{t-k}) / L_{t-k}``
            (``step_harm="window"`` counts a step as harmless when it is at
            most ``-learning_drop``); the default counts only the step.

        Returns
        -------
        decision : GuardDecision
        """
        decision = super().judge(discrepancy, loss_change, recent_change)
        if (self.step_harm == "window" and self.rule != "bound"
                and window_change <= -self.learning_drop):
            decision = dataclasses.replace(decision, harmful=False)
        return decision

    def _judge_step(self, discrepancy, loss_change, recent_change, after):
        window_change = math.inf
        if self.step_harm == "window" and self.ring_ and self._learning():
            # The step's model against the one k accepted steps before it.
            base = self.ring_[max(0, len(self.ring_) - self.k)]["logits"]
            probe = _Probe(self.probe_.X, self.probe_.y, self.probe_.weight)
            probe.logits = base
            change = probe.changes(after)[1]
            level = (probe._loss_of_logits() if probe.weight is None else weighted_mean(
                cross_entropy(base, probe.y, reduction="none"), probe.weight))
            window_change = float(change / level.clamp_min(1e-12))
        decision = self.judge(discrepancy, loss_change, recent_change, window_change)
        if self.shift_exempt == "all" and self.__dict__.get("_exempt"):
            decision = dataclasses.replace(decision, harmful=False)
        return decision

    def _learning(self):
        """Whether the window rule applies: the probe's loss is above ``window_harm_level``."""
        if self.window_harm_level is None:
            return True
        probe = self.probe_
        # The loss before the step: cached by the per-step check's measurement.
        loss = (probe._loss_of_logits() if probe.weight is None else weighted_mean(
            cross_entropy(probe.logits, probe.y, reduction="none"), probe.weight))
        return float(loss) > self.window_harm_level * math.log(probe.logits.shape[1])

    def cumulative_bound(self):
        """The bound the next window's ``D_k`` is held to.

        Returns
        -------
        bound : float
            ``cumulative_margin`` times the median of the clean windows'
            ``D_k``, or ``inf`` during the first ``warmup`` steps, while
            fewer than ``min_windows`` clean windows were seen and with
            ``cumulative_margin=None``.
        """
        if (self.cumulative_margin is None or self.n_steps_ <= self.warmup
                or len(self.cumulative_window_) < self.min_windows):
            return math.inf
        return self.cumulative_margin * statistics.median(self.cumulative_window_)

    def judge_window(self, discrepancy, loss_change):
        """Decide whether the window is too large and harmful, by this guard's rule.

        Parameters
        ----------
        discrepancy : float
            ``D_k``: the mean KL between the model ``k`` accepted steps back
            and the current one, on the probe.
        loss_change : float
            The probe-loss change over the same steps.

        Returns
        -------
        decision : GuardDecision
            Guard ``"CumulativeGuard.window"``; its ``acts`` says whether
            the window's displacement must be pulled back.
        """
        harmful = self.rule == "bound" or loss_change > 0
        return GuardDecision(f"{type(self).__name__}.window", discrepancy,
                             self.cumulative_bound(), loss_change, harmful)

    def decisions(self):
        """The per-step decision, the window's and the shift test's about the last step."""
        extra = [self.__dict__.get(name) for name in ("last_cumulative_decision_",
                                                      "last_shift_decision_")]
        return super().decisions() + [decision for decision in extra if decision is not None]

    # --------------------------------------------------------------- ring

    def _add_rows(self, context, X, y, trained, weight=None):
        self._placed = super()._add_rows(context, X, y, trained, weight)
        return self._placed

    def _fill(self, slots, current):
        """Give the rows that entered the probe their current logits in every past entry."""
        index = to_device(slots, current.device) if slots else None
        for entry in self.ring_:
            logits = entry["logits"]
            if len(logits) < len(current):
                logits = torch.cat((logits, current[len(logits):]))
            if index is not None:
                logits = logits.index_put((index,), current[index])
            entry["logits"] = logits  # a new tensor: a saved state_dict stays valid

    def _snapshot(self, context, logits, scaled):
        """A ring entry: the weights, the optimizer's state, the probe's logits.

        Without a window bound (``cumulative_margin=None``) nothing is ever
        rewound, so the entry keeps the logits alone.
        """
        if self.cumulative_margin is None:
            return {"params": [], "state": [], "logits": logits, "scaled": bool(scaled)}
        parameters = context.parameters
        position = {id(param): i for i, param in enumerate(parameters)}
        keys, tensors = _state_items(context.optimizer)
        return {
            "params": [param.detach().clone() for param in parameters],
            "state": [[position[id(param)], name, tensor.clone()]
                      for (param, name), tensor in zip(keys, tensors)],
            "logits": logits,
            "scaled": bool(scaled),
        }

    def _window_changes(self, base_logits, after):
        """``(D_k, dL_k)`` from the cached logits of the window's first model."""
        probe = _Probe(self.probe_.X, self.probe_.y, self.probe_.weight)
        probe.logits = base_logits
        return tuple(torch.stack(probe.changes(after)).tolist())

    def _pull_back_window(self, context, decision, base):
        """Pull the window's displacement back; return ``(alpha, logits, recent logits)``."""
        parameters, optimizer = context.parameters, context.optimizer
        new_params = [param.detach().clone() for param in parameters]
        new_state = _state_tensors(optimizer)
        base_state = {(parameters[i], name): tensor for i, name, tensor in base["state"]}
        bound = decision.bound
        alpha = math.sqrt(bound / decision.statistic)
        for _ in range(self.max_halvings + 1):
            _interpolate_parameters(parameters, base["params"], new_params, alpha)
            after, after_recent = self._forward(context)
            within, loss_change = self._window_changes(base["logits"], after)
            if self.accepts(within, loss_change, bound):
                self._scale_state(optimizer, base_state, new_state, alpha)
                return alpha, after, after_recent
            alpha /= 2
        _interpolate_parameters(parameters, base["params"], new_params, 0.0)
        _restore_state(optimizer, base_state)
        return (0.0, *self._forward(context))

    # -------------------------------------------------------------- state

    def state_dict(self):
        """The per-step check's state, the ring of past models and the window calibration.

        Returns
        -------
        state : dict
            :meth:`StepGuard.state_dict`'s entries, and ``ring`` (per past
            model: its parameters, its optimizer state as ``[parameter
            index, name, tensor]``, its cached probe logits and whether its
            step was pulled back), ``cumulative_window``,
            ``n_pulled_back`` and ``n_rewinds``; with ``shift_epsilon``,
            ``novelty_max``, ``novelty_recent`` (whether each of the last
            ``shift_window`` batches was novel), ``n_shift_steps`` and
            ``shift_left`` (steps left in the episode).
        """
        state = {
            **super().state_dict(),
            "ring": [dict(entry) for entry in self.ring_],
            "cumulative_window": list(self.cumulative_window_),
            "n_pulled_back": self.n_pulled_back_,
            "n_rewinds": self.n_rewinds_,
        }
        if self.shift_epsilon is not None:
            state.update(novelty_max=self.novelty_max_,
                         novelty_recent=list(self.shift_recent_),
                         n_shift_steps=self.n_shift_steps_, shift_left=self.shift_left_)
        return state

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s state; the configuration stays this guard's.

        Raises
        ------
        ValueError
            When an entry is missing or of the wrong type or shape; the guard
            is then left as it was.
        """
        if isinstance(state, dict) and set(state) == set(self.state_dict()):
            ring = self._checked_ring(state["ring"], state["probe"])
            window = state["cumulative_window"]
            if not isinstance(window, list) or not all(
                    isinstance(v, float) and math.isfinite(v) and v >= 0 for v in window):
                raise ValueError("A CumulativeGuard state holds a cumulative window that "
                                 "is not a list of finite non-negative floats.")
            counts = (state["n_pulled_back"], state["n_rewinds"])
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in counts) or counts[1] > counts[0]:
                raise ValueError(f"A CumulativeGuard state holds invalid counters {counts}.")
            shift = self._checked_shift(state)
        super().load_state_dict(state)  # refuses a state with other entries
        self.ring_ = deque(ring)
        self.cumulative_window_ = deque(window, maxlen=self.cumulative_window)
        self.n_pulled_back_, self.n_rewinds_ = counts
        self.last_cumulative_decision_ = None
        if shift is not None:
            self.novelty_max_, recent, self.n_shift_steps_, self.shift_left_ = shift
            self.shift_recent_ = deque(recent, maxlen=self.shift_window)
        self.last_shift_decision_ = None

    def _checked_shift(self, state):
        """The shift test's state entries; ``None`` without a shift test, else ``ValueError``."""
        if self.shift_epsilon is None:
            return None
        novelty_max, recent, n_exempt, left = (state["novelty_max"], state["novelty_recent"],
                                               state["n_shift_steps"], state["shift_left"])
        if not ((novelty_max is None or (isinstance(novelty_max, float)
                                         and math.isfinite(novelty_max) and novelty_max >= 0))
                and isinstance(recent, list) and len(recent) <= self.shift_window
                and all(isinstance(v, bool) for v in recent)
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                        for v in (n_exempt, left)) and left < self.shift_steps):
            raise ValueError(
                "A CumulativeGuard state holds an invalid shift test: novelty_max "
                f"{novelty_max!r} (None or a finite float >= 0), novelty_recent {recent!r} "
                f"(at most shift_window={self.shift_window} bools), n_shift_steps "
                f"{n_exempt!r} (an int >= 0), shift_left {left!r} (an int below "
                f"shift_steps={self.shift_steps})."
            )
        return novelty_max, recent, n_exempt, left

    def _checked_ring(self, ring, probe):
        """The ring of a state, checked against its probe; ``ValueError`` if it does not fit."""
        n_rows = len(probe.get("X", ())) if isinstance(probe, dict) else -1

        def valid(entry):
            if not (isinstance(entry, dict)
                    and set(entry) == {"params", "state", "logits", "scaled"}):
                return False
            params, optimizer_state, logits = entry["params"], entry["state"], entry["logits"]
            return (isinstance(entry["scaled"], bool)
                    and isinstance(params, list)
                    and all(isinstance(p, torch.Tensor) for p in params)
                    and isinstance(optimizer_state, list)
                    and all(isinstance(item, list) and len(item) == 3
                            and isinstance(item[0], int) and 0 <= item[0] < len(params)
                            and isinstance(item[1], str) and isinstance(item[2], torch.Tensor)
                            for item in optimizer_state)
                    and isinstance(logits, torch.Tensor) and logits.ndim == 2
                    and len(logits) == n_rows)

        if not (isinstance(ring, list) and len(ring) <= self.k + 1
                and all(valid(entry) for entry in ring)
                and len({tuple(tuple(p.shape) for p in e["params"]) for e in ring}) <= 1):
            raise ValueError(
                f"A CumulativeGuard state holds a ring that is not a list of at most "
                f"k + 1 = {self.k + 1} past models (parameters of one shape, optimizer "
                "state, logits of every probe row, a scaled flag)."
            )
        return [dict(entry) for entry in ring]

    def to(self, device):
        """Move the probes and the ring of past models to ``device``; return ``self``."""
        super().to(device)
        for entry in self.ring_:
            entry["params"] = [param.to(device) for param in entry["params"]]
            entry["state"] = [[i, name, tensor.to(device)] for i, name, tensor in entry["state"]]
            entry["logits"] = entry["logits"].to(device)
        return self


def novelty_of(X, rows, n_neighbours=1):
    """A batch's novelty: the median of its rows' L-inf distances to the nearest of ``rows``.

    1-Lipschitz in the L-infinity norm of a perturbation of the batch's rows
    (see :class:`CumulativeGuard`'s shift test).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    rows : torch.Tensor of shape (n_rows, n_features)
    n_neighbours : int, default=1
        The distance to the ``n_neighbours``-th nearest of ``rows`` (at
        most ``n_rows``); 1-Lipschitz too.

    Returns
    -------
    novelty : torch.Tensor
        A 0-dimensional tensor (the lower median for an even number of rows).

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.guards import novelty_of
    >>> rows = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    >>> float(novelty_of(torch.tensor([[0.1, 0.0], [1.0, 0.5], [3.0, 1.0]]), rows))
    0.5
    """
    distances = torch.cdist(X, rows, p=math.inf)
    if n_neighbours == 1:
        return distances.min(1).values.median()
    return distances.topk(n_neighbours, dim=1, largest=False).values[:, -1].median()


class GuardChain(BaseGuard):
    """Several guards around each step, run in order.

    Each hook calls the same hook of every guard, in the order given; a
    guard's ``after_step`` sees the step as the guards before it left it
    (pulled back or not), and ``step.step_scale`` ends as the product of
    what each kept.

    Parameters
    ----------
    guards : list of BaseGuard
        The guards, at least one. The chain runs clones of them (its
        ``guards_``), so the guards passed keep no state.

    Attributes
    ----------
    guards_ : list of BaseGuard
        The started clones of ``guards``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.defence.guards import GuardChain, StepGuard
    >>> X, y = load_digits(return_X_y=True)
    >>> chain = GuardChain([StepGuard(), StepGuard(probe="recent", margin=4.0)])
    >>> clf = DiscrepancyAwareOnlineClassifier(step_guard=chain, random_state=0)
    >>> clf = clf.partial_fit(X[:500] / 16, y[:500], classes=range(10))
    >>> [guard.n_steps_ for guard in clf.step_guard_.guards_]
    [5, 5]
    >>> [decision.guard for decision in clf.step_guard_.decisions()]
    ['StepGuard', 'StepGuard']
    """

    _parameter_constraints = {"guards": [list, tuple]}

    def __init__(self, guards=()):
        self.guards = guards

    def start(self, context):
        """Validate the guards and start a clone of each.

        Parameters
        ----------
        context : GuardContext

        Returns
        -------
        self : GuardChain
        """
        self._validate_params()
        wrong = [guard for guard in self.guards if not isinstance(guard, BaseGuard)]
        if not self.guards or wrong:
            raise ValueError(
                "GuardChain(guards=...) takes a non-empty list of BaseGuard instances "
                f"(e.g. [StepGuard()]); got {self.guards!r}."
            )
        self.guards_ = [clone(guard).start(context) for guard in self.guards]
        return self

    def before_step(self, context, step):
        """Call every guard's ``before_step``, in order."""
        for guard in self.guards_:
            guard.before_step(context, step)

    def after_step(self, context, step):
        """Call every guard's ``after_step``, in order.

        When a guard pulls the step back, the guards before it
        :meth:`~BaseGuard.invalidate` what they cached of the model.
        """
        for position, guard in enumerate(self.guards_):
            scale, rewound = step.step_scale, step.rewound
            guard.after_step(context, step)
            if step.step_scale != scale or step.rewound != rewound:
                for earlier in self.guards_[:position]:
                    earlier.invalidate()

    def decisions(self):
        """The decisions of every guard about the last step, in order."""
        return [decision for guard in self.guards_ for decision in guard.decisions()]

    def state_dict(self):
        """The state of every guard, in order.

        Returns
        -------
        state : dict
            ``{"guards": [state of each guard]}``.
        """
        return {"guards": [guard.state_dict() for guard in self.guards_]}

    def load_state_dict(self, state):
        """Restore every guard's state; on an error, every guard is left as it was.

        Raises
        ------
        ValueError
            When ``state`` does not hold one state per guard, or a guard
            refuses its state.
        """
        states = state.get("guards") if isinstance(state, dict) else None
        if set(state if isinstance(state, dict) else ()) != {"guards"} or not (
                isinstance(states, list) and len(states) == len(self.guards_)):
            raise ValueError(
                f"A GuardChain state holds one state per guard under 'guards' "
                f"({len(self.guards_)} here); the one given does not. It is corrupt, "
                "was edited, or belongs to another object."
            )
        previous = self.state_dict()
        try:
            for guard, guard_state in zip(self.guards_, states):
                guard.load_state_dict(guard_state)
        except BaseException:
            for guard, guard_state in zip(self.guards_, previous["guards"]):
                guard.load_state_dict(guard_state)
            raise

    def to(self, device):
        """Move every guard's tensors to ``device``; return ``self``."""
        for guard in self.guards_:
            guard.to(device)
        return self


# ------------------------------------------------------------ optimizer

def _state_items(optimizer):
    """``(keys, tensors)``: every floating tensor of the optimizer's per-parameter state."""
    items = [((param, name), value.detach())
             for param, state in optimizer.state.items()
             for name, value in state.items()
             if isinstance(value, torch.Tensor) and value.is_floating_point()]
    return [key for key, _ in items], [value for _, value in items]


def _state_tensors(optimizer):
    """A copy of every floating tensor of the optimizer's per-parameter state."""
    keys, tensors = _state_items(optimizer)
    return dict(zip(keys, (tensor.clone() for tensor in tensors)))


def _copies(buffers, tensors):
    """Copies of ``tensors``: written into ``buffers`` when they match, else clones."""
    if buffers is not None and len(buffers) == len(tensors) and all(
            b.shape == t.shape and b.dtype == t.dtype and b.device == t.device
            for b, t in zip(buffers, tensors)):
        if tensors:
            torch._foreach_copy_(buffers, tensors)
        return buffers
    return [tensor.clone() for tensor in tensors]


def _restore_state(optimizer, saved):
    """Put the optimizer's state back as :func:`_state_tensors` saved it."""
    for param in list(optimizer.state):
        state = optimizer.state[param]
        names = [name for name in state if isinstance(state[name], torch.Tensor)
                 and state[name].is_floating_point()]
        for name in names:
            if (param, name) in saved:
                state[name].copy_(saved[(param, name)])
            else:
                del state[name]
        if not state:
            del optimizer.state[param]


def _interpolate_parameters(parameters, old, new, alpha):
    with torch.no_grad():
        for param, before, after in zip(parameters, old, new):
            param.copy_(torch.lerp(before, after, alpha))


@validate_params(
    {"step_guard": [None, StrOptions({"auto"}), BaseGuard]},
    prefer_skip_nested_validation=True,
)
def make_step_guard(step_guard):
    """The guard for an estimator's ``step_guard`` parameter.

    Parameters
    ----------
    step_guard : "auto", BaseGuard or None
        ``"auto"`` builds ``StepGuard()``; a configured guard is cloned, so
        that every estimator keeps its own state; ``None`` disables it.

    Returns
    -------
    guard : BaseGuard or None

    Examples
    --------
    >>> from dsc_sklearn.defence.guards import StepGuard, make_step_guard
    >>> make_step_guard("auto")
    StepGuard()
    >>> make_step_guard(StepGuard(margin=3.0)).margin
    3.0
    """
    if step_guard is None:
        return None
    return StepGuard() if isinstance(step_guard, str) else clone(step_guard)
