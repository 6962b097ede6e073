"""Threshold policies: when is a discrepancy too high?

A policy sees one decision statistic per unit (a sample, or a whole batch
with ``granularity="batch"``), says which units are flagged, and may learn
from the units it did not flag. Every policy is a :class:`ThresholdPolicy`,
a scikit-learn estimator whose parameters are its configuration and whose
``state_dict`` holds what it learned. Three policies exist:

- :class:`FixedThreshold`: an absolute KL value;
- :class:`ScheduleThreshold`: a callable ``step -> float``, such as the
  paper's :func:`linear_schedule` (``0.5 + 0.02 * step``);
- :class:`AutoThreshold`: calibrated online as a high quantile of the
  discrepancies of recent clean-looking batches, flagging nothing during a
  warm-up.

:func:`make_threshold` turns the estimator's ``threshold`` parameter into a
policy: a number, a name of :data:`THRESHOLDS`, a schedule or a policy
instance. The value in force is a 0-d tensor on the statistic's device, so
flagging does not synchronise with the host.
"""

import math
import numbers
from abc import ABC, abstractmethod
from collections import deque

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from .._torch import constant
from ._registry import build_registered
from ._state import check_count as _check_count
from ._state import check_keys
from .discrepancy import weighted_mean

__all__ = [
    "THRESHOLDS",
    "AutoThreshold",
    "FixedThreshold",
    "ScheduleThreshold",
    "ThresholdPolicy",
    "linear_schedule",
    "make_threshold",
    "weighted_quantile",
]


def _n_largest(n, quantile):
    """How many of ``n`` values ``torch.quantile`` reads at ``quantile``.

    Returns ``(k, below, above, weight)``: the quantile interpolates the
    values of ascending ranks ``below`` and ``above`` with ``weight``, and
    both are among the ``k`` largest. The rank is computed in float32, as
    ``torch.quantile`` does for a float32 input.
    """
    rank = np.float32(quantile) * np.float32(n - 1)
    below = int(rank)
    weight = float(rank - np.float32(below))
    return n - below, below, math.ceil(rank), weight


def _window_quantile(window, largest, quantile):
    """``torch.quantile(torch.cat(window), quantile)``, bit for bit, faster.

    A high quantile of ``n`` values depends on the ``k`` largest only, so
    each batch's largest values (found once, while it stays in the window,
    and kept in ``largest``, aligned with ``window``) replace a sort of the
    whole window at every update.
    """
    n = sum(values.numel() for values in window)
    if (not isinstance(quantile, numbers.Real) or not 0 <= quantile <= 1 or not n
            or any(values.dtype != torch.float32 for values in window)):
        # torch.quantile's own checks and error messages.
        return torch.quantile(torch.cat(tuple(window)), quantile)
    k, _, above, weight = _n_largest(n, quantile)
    for index, values in enumerate(window):
        if len(largest[index]) < min(k, values.numel()):
            largest[index] = _largest(values, k, quantile, window.maxlen)
    top = torch.topk(torch.cat(tuple(largest)), k).values
    value = torch.lerp(top[k - 1], top[n - 1 - above], weight)
    # torch.quantile is NaN when any value is NaN; topk ranks NaN first.
    return torch.where(top[0].isnan(), top[0], value)


def weighted_quantile(values, weight, quantile):
    """The ``quantile`` of ``values`` with ``weight``, as a 0-d float32 tensor.

    ``torch.quantile``'s linear interpolation, with each value counted
    ``weight * n / weight.sum()`` times (``n``: the values of positive
    weight): with equal weights it is ``torch.quantile`` of those values,
    with integer weights close to the quantile of the values repeated
    that many times, and it does not change when every weight is
    multiplied by the same factor. Values of weight 0 do not count; when
    no weight is positive the result is NaN.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.thresholds import weighted_quantile
    >>> values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> float(weighted_quantile(values, torch.ones(4), 0.5))
    2.5
    >>> float(weighted_quantile(values, torch.tensor([0.0, 1.0, 1.0, 0.0]), 1.0))
    3.0
    """
    keep = weight > 0
    values, weight = values[keep].float(), weight[keep].double()
    n = values.numel()
    if not n:
        return torch.tensor(math.nan, device=values.device)
    order = torch.argsort(values)
    values, weight = values[order], weight[order]
    cumulative = torch.cumsum(weight * (n / weight.sum()), 0)
    rank = float(quantile) * (n - 1)
    below, above = math.floor(rank), math.ceil(rank)
    positions = torch.tensor([below, above], dtype=torch.float64, device=values.device)
    index = torch.searchsorted(cumulative, positions, right=True).clamp_max(n - 1)
    ends = values[index]
    value = torch.lerp(ends[0], ends[1], rank - below)
    # As torch.quantile: NaN when any value is NaN (argsort ranks NaN last).
    return torch.where(values[-1].isnan(), values[-1], value)


def _largest(values, k, quantile, window):
    """The largest values of ``values`` in descending order, enough for ``k``.

    Keeps as many as a full window of such batches needs, so that a batch
    is searched once unless the batch sizes change.
    """
    numel = values.numel()
    n_full = numel * (window or 1)
    keep = min(numel, max(k, _n_largest(n_full, quantile)[0]))
    return torch.topk(values.reshape(-1), keep).values


class ThresholdPolicy(BaseEstimator, ABC):
    """Base class of the threshold policies: when is a statistic too high?

    A policy sees one decision statistic per unit (a sample, or a whole
    batch), says which units are flagged (:meth:`flag`) and learns from each
    batch (:meth:`update`). Subclasses implement :meth:`current` and, when
    they learn more than the number of updates, extend :meth:`state_dict`
    and :meth:`load_state_dict`; they may override :meth:`flag` and
    :meth:`update`.

    The net calls the hooks in this order at every training batch that
    runs the gate (``correction`` other than ``"none"``): :meth:`current`
    (the threshold logged for the batch), :meth:`flag` on the batch's
    units (the gate's decision; again on the rows
    ``correction="dsc"`` is still correcting), then :meth:`update` once
    the step is done. The estimator calls :meth:`state_dict` and
    :meth:`load_state_dict` to save, restore and undo.

    A policy is a scikit-learn estimator: the constructor's arguments are
    its configuration, stored under their names (so ``clone``,
    ``get_params`` and nested parameters such as ``threshold__quantile``
    work; name each one, no ``**kwargs``, since ``clone`` rebuilds a
    policy from them), and the estimator trains with a clone. Everything it
    learns is its state. :meth:`state_dict` returns the state only, and
    :meth:`load_state_dict` restores it and never touches the
    configuration, so a checkpoint cannot switch a policy's detection off.

    Attributes
    ----------
    statistic : str or None
        Class attribute: the gate statistic the policy reads, a key of
        :data:`~dsc_sklearn.defence.discrepancy.STATISTICS`; ``None`` reads
        the statistic of the parameter the policy is given to
        (``"discrepancy"`` for ``threshold``, ``"loss"`` for
        ``loss_threshold``).
    n_updates_ : int
        Batches seen by :meth:`update`.
    """

    statistic = None

    def __init__(self):
        self.n_updates_ = 0

    @abstractmethod
    def current(self, device=None):
        """Return the threshold in force as a 0-d float tensor."""

    def flag(self, statistic):
        """Boolean mask of the units whose statistic exceeds the threshold.

        The gate's decision. It must not change the policy (:meth:`update`
        learns), so the net may call it more than once per batch.

        Parameters
        ----------
        statistic : torch.Tensor of shape (n_units,)
            One decision statistic per unit.

        Returns
        -------
        flagged : torch.Tensor of bool, shape (n_units,)
        """
        return statistic > self.current(statistic.device)

    def update(self, statistic, flagged, sample_weight=None):
        """Learn from one batch's statistics and flags.

        Parameters
        ----------
        statistic : torch.Tensor of shape (n_units,)
        flagged : torch.Tensor of bool, shape (n_units,)
        sample_weight : torch.Tensor of shape (n_units,), default=None
            The units' weights (the estimator's ``sample_weight``); ``None``
            weighs every unit alike. The net passes it only when the batch
            has weights, so a policy written without this keyword keeps
            working on unweighted streams.
        """
        self.n_updates_ += 1

    def state_dict(self):
        """The learned state as tensors and plain Python values.

        Returns
        -------
        state : dict
            ``n_updates`` here; subclasses add what they learn.
        """
        return {"n_updates": self.n_updates_}

    def load_state_dict(self, state):
        """Restore the state of :meth:`state_dict`, checking every entry.

        Raises
        ------
        ValueError
            When an entry is missing, unexpected or of the wrong type. The
            policy is then left as it was.
        """
        self._check_keys(state, {"n_updates"})
        self.n_updates_ = _check_count(state["n_updates"], "n_updates", self)

    def to(self, device):
        """Move the state's tensors to ``device`` in place; return ``self``.

        A utility, not a hook of the training step: the net never calls it
        (pickles and ``load_params`` put the state's tensors on the
        estimator's device as they load it). A subclass whose state holds
        tensors extends it so that a policy can be moved by hand.
        """
        return self

    def _check_keys(self, state, expected):
        check_keys(state, expected, self)


class FixedThreshold(ThresholdPolicy):
    """Flag units whose statistic exceeds an absolute value.

    Parameters
    ----------
    value : float
        Non-negative threshold, e.g. a KL value.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.thresholds import FixedThreshold
    >>> FixedThreshold(0.1).flag(torch.tensor([0.05, 0.2]))
    tensor([False,  True])
    """

    def __init__(self, value):
        super().__init__()
        self.value = float(value)

    def current(self, device=None):
        """Return the threshold in force as a 0-d float tensor."""
        return constant(device, self.value, torch.get_default_dtype())


class ScheduleThreshold(FixedThreshold):
    """Threshold that follows a schedule of the online step.

    Parameters
    ----------
    schedule : callable
        ``schedule(step) -> float`` where ``step`` counts the batches seen
        by the policy, starting at 0.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.thresholds import ScheduleThreshold, linear_schedule
    >>> policy = ScheduleThreshold(linear_schedule())
    >>> float(policy.current())
    0.5
    >>> policy.update(torch.tensor([0.1]), torch.tensor([False]))
    >>> round(float(policy.current()), 4)
    0.52
    """

    def __init__(self, schedule):
        ThresholdPolicy.__init__(self)
        self.schedule = schedule

    @property
    def value(self):
        value = float(self.schedule(self.n_updates_))
        if not value >= 0:
            raise ValueError(
                f"The threshold schedule returned {value!r} at step "
                f"{self.n_updates_}; it must return a non-negative float."
            )
        return value


class AutoThreshold(ThresholdPolicy):
    """Threshold calibrated online from the statistics of recent batches.

    The threshold is the ``quantile`` of the decision statistics (one per
    sample, or one per batch with ``granularity="batch"``) of the last
    ``window`` batches admitted for calibration. Batches enter whole, so the
    quantile stays unbiased; a batch with more than ``max_flagged_fraction``
    of its units flagged can be kept out. During the first ``warmup``
    batches the threshold is infinite: nothing is flagged while the
    statistics build up.

    A quantile, rather than ``median + k * MAD``: the discrepancy of a
    model that is still learning spans several orders of magnitude, and on
    scikit-learn's digits ``median + k * MAD`` flagged most clean samples on
    the raw scale and none on the log scale. Every batch is admitted by
    default because keeping flagged batches out froze the threshold while
    the clean discrepancy rose during training: everything was then flagged
    and ``correction="drop"`` stopped learning (digits test accuracy 0.55
    against 0.96 for plain training).

    Parameters
    ----------
    quantile : float, default=0.99
        Quantile of recent clean statistics the threshold sits at; on a
        stationary clean stream about ``1 - quantile`` of the units are
        flagged.
    window : int, default=20
        Number of admitted batches that calibrate the threshold.
    warmup : int, default=10
        Number of batches observed before anything may be flagged.
    max_flagged_fraction : float, default=1.0
        Batches with a larger flagged fraction are kept out of the window.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.thresholds import AutoThreshold
    >>> policy = AutoThreshold(warmup=2)
    >>> policy.flag(torch.tensor([1e6])), policy.current()
    (tensor([False]), tensor(inf))
    >>> clean = torch.linspace(0.0, 1.0, 101)
    >>> for _ in range(2):
    ...     policy.update(clean, policy.flag(clean))
    >>> policy.current()
    tensor(0.9900)
    >>> policy.flag(torch.tensor([0.5, 3.0]))
    tensor([False,  True])
    """

    #: The weights of the window's batches, aligned with ``_history``
    #: (``None`` for an unweighted batch); ``None`` until a weighted batch
    #: arrives, so an unweighted stream keeps the exact unweighted path.
    _weights = None

    def __init__(self, quantile=0.99, window=20, warmup=10,
                 max_flagged_fraction=1.0):
        super().__init__()
        self.quantile = quantile
        self.window = window
        self.warmup = warmup
        self.max_flagged_fraction = max_flagged_fraction
        self._history = deque(maxlen=window)
        # Each admitted batch's largest values, aligned with _history.
        self._largest = deque(maxlen=window)
        self._value = None

    def current(self, device=None):
        """Return the threshold in force as a 0-d float tensor."""
        if self._value is None or self.n_updates_ < self.warmup:
            return constant(device, math.inf, torch.get_default_dtype())
        return self._value.to(device) if device is not None else self._value

    def update(self, statistic, flagged, sample_weight=None):
        """Add the batch to the calibration window and recompute the value.

        With ``sample_weight``, the quantile is weighted (see
        :func:`weighted_quantile`; units of weight 0 do not count) and so is
        the flagged fraction compared with ``max_flagged_fraction``.
        """
        self.n_updates_ += 1
        if self.max_flagged_fraction < 1 and (
                weighted_mean(flagged.float(), sample_weight) > self.max_flagged_fraction):
            return
        if sample_weight is not None and self._weights is None:
            # The first weighted batch: the window's earlier batches weigh 1.
            self._weights = deque([None] * len(self._history), maxlen=self.window)
        self._history.append(statistic.detach().float())
        self._largest.append(torch.empty(0))
        if self._weights is not None:
            self._weights.append(None if sample_weight is None
                                 else sample_weight.detach().float())
        self._value = self._window_value(self._history, self._largest, self._weights)

    def _window_value(self, history, largest, weights):
        """The quantile of a window: weighted when a batch in it has weights."""
        if weights is None or all(weight is None for weight in weights):
            return _window_quantile(history, largest, self.quantile)
        values = torch.cat(tuple(history))
        weight = torch.cat([torch.ones_like(values) if weight is None else weight
                            for values, weight in zip(history, weights)])
        return weighted_quantile(values, weight, self.quantile)

    def state_dict(self):
        """The learned state: ``n_updates``, the ``window`` and its ``value``.

        Returns
        -------
        state : dict
            ``n_updates`` (int), ``window`` (the admitted batches'
            statistics, oldest first, not copied) and ``value`` (the
            threshold computed from them, a 0-d tensor, or ``None``); and,
            only when a batch in the window has sample weights,
            ``weights`` (aligned with ``window``: a 1-D float32 tensor, or
            ``None`` for an unweighted batch).

        Examples
        --------
        >>> import torch
        >>> from dsc_sklearn.defence.thresholds import AutoThreshold
        >>> policy = AutoThreshold(warmup=1)
        >>> policy.update(torch.tensor([0.1, 0.3]), torch.tensor([False, False]))
        >>> restored = AutoThreshold(warmup=1)
        >>> restored.load_state_dict(policy.state_dict())
        >>> torch.equal(restored.current(), policy.current())
        True
        """
        state = {
            "n_updates": self.n_updates_,
            "window": list(self._history),
            "value": self._value,
        }
        if self._weights is not None and any(w is not None for w in self._weights):
            state["weights"] = list(self._weights)
        return state

    def load_state_dict(self, state):
        """Restore the state of :meth:`state_dict`; the configuration stays.

        The window keeps at most ``window`` batches (the newest); the value
        is recomputed from them, so it always matches this policy's
        ``quantile``.

        Raises
        ------
        ValueError
            When an entry is missing or of the wrong type: the policy is
            then left as it was.
        """
        if isinstance(state, dict) and "weights" in state:
            self._check_keys(state, {"n_updates", "window", "value", "weights"})
        else:
            self._check_keys(state, {"n_updates", "window", "value"})
        n_updates = _check_count(state["n_updates"], "n_updates", self)
        window = state["window"]
        if not isinstance(window, (list, tuple)) or not all(
                isinstance(values, torch.Tensor) and values.ndim == 1
                and values.dtype == torch.float32 for values in window):
            raise ValueError(
                f"The state of an {type(self).__name__} holds a window that is not a "
                "list of 1-D float32 tensors; the state is corrupt or was edited."
            )
        if not all(bool(values.isfinite().all()) for values in window):
            # NaN would make the threshold NaN, inf could make it inf: nothing
            # would ever be flagged again.
            raise ValueError(
                f"The state of an {type(self).__name__} holds non-finite statistics "
                "in its window, which would switch detection off; the state is "
                "corrupt or was edited."
            )
        weights = state.get("weights")
        if weights is not None:
            if not isinstance(weights, (list, tuple)) or len(weights) != len(window) or not all(
                    weight is None or (
                        isinstance(weight, torch.Tensor) and weight.dtype == torch.float32
                        and weight.shape == values.shape
                        and bool((weight.isfinite() & (weight >= 0)).all()))
                    for weight, values in zip(weights, window)):
                raise ValueError(
                    f"The state of an {type(self).__name__} holds weights that are not "
                    "one list entry per batch of the window (None, or finite "
                    "non-negative float32 weights, one per statistic); the state is "
                    "corrupt or was edited."
                )
            weights = deque((None if weight is None else weight.detach().clone()
                             for weight in weights[-self.window:]), maxlen=self.window)
        history = deque((values.detach().clone() for values in window), maxlen=self.window)
        largest = deque((torch.empty(0) for _ in history), maxlen=self.window)
        value = self._window_value(history, largest, weights) if history else None
        self.n_updates_, self._history, self._largest, self._value = (
            n_updates, history, largest, value)
        if weights is not None or self._weights is not None:
            self._weights = weights

    def to(self, device):
        """Move the window and the value to ``device`` in place; return ``self``."""
        self._history = deque((values.to(device) for values in self._history),
                              maxlen=self._history.maxlen)
        self._largest = deque((values.to(device) for values in self._largest),
                              maxlen=self._largest.maxlen)
        if self._weights is not None:
            self._weights = deque((None if weight is None else weight.to(device)
                                   for weight in self._weights), maxlen=self._weights.maxlen)
        if self._value is not None:
            self._value = self._value.to(device)
        return self


def linear_schedule(start=0.5, slope=0.02):
    """The reference code's growing threshold ``start + slope * step``.

    Zhu et al. tuned ``0.5 + 0.02 * t`` for ResNet-18 on CIFAR-10; it does
    not transfer to other models or data (see the user guide).

    Parameters
    ----------
    start : float, default=0.5
        Threshold at step 0.
    slope : float, default=0.02
        Increase per online step.

    Returns
    -------
    schedule : callable
        ``schedule(step) -> float``; picklable.

    Examples
    --------
    >>> from dsc_sklearn.defence.thresholds import linear_schedule
    >>> linear_schedule()(10)
    0.7
    """
    return _LinearSchedule(start, slope)


class _LinearSchedule:
    def __init__(self, start, slope):
        self.start = start
        self.slope = slope

    def __call__(self, step):
        return self.start + self.slope * step

    def __repr__(self):
        return f"linear_schedule(start={self.start!r}, slope={self.slope!r})"


#: The threshold policies by name: the string values of the estimators'
#: ``threshold`` and ``loss_threshold`` parameters and the
#: :class:`ThresholdPolicy` subclass each one names (built without
#: arguments). An entry added at any time is accepted from the next
#: parameter validation on.
THRESHOLDS = {"auto": AutoThreshold}


def make_threshold(threshold):
    """Build the policy for an estimator's ``threshold`` parameter.

    Parameters
    ----------
    threshold : float, str, callable or ThresholdPolicy
        A non-negative float, a key of :data:`THRESHOLDS` (``"auto"``),
        ``schedule(step) -> float``, or a configured
        :class:`ThresholdPolicy` such as ``AutoThreshold(quantile=0.995)``,
        which is cloned so that every estimator calibrates its own.

    Returns
    -------
    policy : ThresholdPolicy

    Examples
    --------
    >>> from dsc_sklearn.defence.thresholds import make_threshold
    >>> type(make_threshold("auto")).__name__
    'AutoThreshold'
    """
    if isinstance(threshold, str) and threshold in THRESHOLDS:
        return build_registered(THRESHOLDS, threshold, ThresholdPolicy,
                                "dsc_sklearn.defence.thresholds.THRESHOLDS")
    if isinstance(threshold, ThresholdPolicy):
        # A configured policy: a fresh clone, so every estimator calibrates its own.
        return clone(threshold)
    if callable(threshold):
        return ScheduleThreshold(threshold)
    if (
        isinstance(threshold, numbers.Real)
        and not isinstance(threshold, bool)
        and threshold >= 0
    ):
        return FixedThreshold(threshold)
    raise ValueError(
        "threshold must be a non-negative float (an absolute KL value), one of "
        f"{sorted(THRESHOLDS)}, a callable step -> float or a ThresholdPolicy; got "
        f"{threshold!r}."
    )
