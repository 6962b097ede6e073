"""Threshold policies: when is a discrepancy too high?

A policy sees one decision statistic per unit (a sample, or a whole batch
with ``granularity="batch"``), says which units are flagged, and may learn
from the units it did not flag. Three policies exist:

- :class:`FixedThreshold`: an absolute KL value;
- :class:`ScheduleThreshold`: a callable ``step -> float``, such as the
  paper's :func:`linear_schedule` (``0.5 + 0.02 * step``);
- :class:`AutoThreshold`: calibrated online as a high quantile of the
  discrepancies of recent clean-looking batches, flagging nothing during a
  warm-up.

:func:`make_threshold` turns the estimator's ``threshold`` parameter into a
policy. The value in force is a 0-d tensor on the statistic's device, so
flagging does not synchronise with the host.
"""

import copy
import math
import numbers
import weakref
from collections import deque

import numpy as np
import torch

__all__ = [
    "AutoThreshold",
    "FixedThreshold",
    "ScheduleThreshold",
    "linear_schedule",
    "make_threshold",
]

# Tensors derived from a policy's state, kept out of its __dict__ so that
# pickles and checkpoints hold exactly the state they held before: the
# threshold as a tensor, and the largest values of each batch in
# AutoThreshold's window.
_CONSTANTS = weakref.WeakKeyDictionary()
_LARGEST = weakref.WeakKeyDictionary()


def _constant(owner, value, device):
    """``torch.tensor(value, device=device)``, built once per value and device.

    ``torch.tensor`` copies from the host, which on CUDA waits for the
    device; ``torch.full`` launches a fill instead, and the tensor is built
    again only when the value changes. The cached tensor is shared: callers
    must not modify it in place.
    """
    dtype = torch.get_default_dtype()
    key = (value, device, dtype)
    try:
        cached = _CONSTANTS.get(owner)
    except TypeError:  # an unhashable subclass: no cache
        cached = None
    if cached is None or cached[0] != key:
        cached = (key, torch.full((), value, dtype=dtype, device=device))
        try:
            _CONSTANTS[owner] = cached
        except TypeError:
            pass
    return cached[1]


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


def _window_quantile(owner, window, quantile):
    """``torch.quantile(torch.cat(window), quantile)``, bit for bit, faster.

    A high quantile of ``n`` values depends on the ``k`` largest only, so
    each batch's largest values (found once, while it stays in the window)
    replace a sort of the whole window at every update.
    """
    n = sum(values.numel() for values in window)
    if (not isinstance(quantile, numbers.Real) or not 0 <= quantile <= 1 or not n
            or any(values.dtype != torch.float32 for values in window)):
        # torch.quantile's own checks and error messages.
        return torch.quantile(torch.cat(tuple(window)), quantile)
    k, _, above, weight = _n_largest(n, quantile)
    try:
        cache = _LARGEST.setdefault(owner, {})
    except TypeError:  # an unhashable subclass: no cache
        cache = {}
    full = getattr(window, "maxlen", None)
    entries = [_largest(cache, values, k, quantile, full) for values in window]
    cache.clear()
    cache.update((id(values), entry) for values, entry in zip(window, entries))
    top = torch.topk(torch.cat([entry[1] for entry in entries]), k).values
    value = torch.lerp(top[k - 1], top[n - 1 - above], weight)
    # torch.quantile is NaN when any value is NaN; topk ranks NaN first.
    return torch.where(top[0].isnan(), top[0], value)


def _largest(cache, values, k, quantile, window):
    """``(values, its largest values in descending order)``, enough for ``k``.

    Keeps as many as a full window of such batches needs, so that a batch
    is searched once unless the batch sizes change.
    """
    entry = cache.get(id(values))
    numel = values.numel()
    if entry is None or entry[0] is not values or len(entry[1]) < min(k, numel):
        n_full = numel * (window or 1)
        keep = min(numel, max(k, _n_largest(n_full, quantile)[0]))
        entry = (values, torch.topk(values.reshape(-1), keep).values)
    return entry


class FixedThreshold:
    """Flag units whose discrepancy exceeds an absolute value.

    Parameters
    ----------
    value : float
        Non-negative KL threshold.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.thresholds import FixedThreshold
    >>> FixedThreshold(0.1).flag(torch.tensor([0.05, 0.2]))
    tensor([False,  True])
    """

    def __init__(self, value):
        self.value = float(value)
        self.n_updates_ = 0

    def current(self, device=None):
        """Return the threshold in force as a 0-d float tensor."""
        return _constant(self, self.value, device)

    def flag(self, statistic):
        """Boolean mask of the units whose statistic exceeds the threshold."""
        return statistic > self.current(statistic.device)

    def update(self, statistic, flagged):
        """Record one batch's statistics (used by the adaptive policies)."""
        self.n_updates_ += 1


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
    >>> from dsc_sklearn.thresholds import ScheduleThreshold, linear_schedule
    >>> policy = ScheduleThreshold(linear_schedule())
    >>> float(policy.current())
    0.5
    >>> policy.update(torch.tensor([0.1]), torch.tensor([False]))
    >>> round(float(policy.current()), 4)
    0.52
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self.n_updates_ = 0

    @property
    def value(self):
        value = float(self.schedule(self.n_updates_))
        if not value >= 0:
            raise ValueError(
                f"The threshold schedule returned {value!r} at step "
                f"{self.n_updates_}; it must return a non-negative float."
            )
        return value


class AutoThreshold:
    """Threshold calibrated online from the discrepancies of recent batches.

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
    >>> from dsc_sklearn.thresholds import AutoThreshold
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

    def __init__(self, quantile=0.99, window=20, warmup=10,
                 max_flagged_fraction=1.0):
        self.quantile = quantile
        self.window = window
        self.warmup = warmup
        self.max_flagged_fraction = max_flagged_fraction
        self.n_updates_ = 0
        self._history = deque(maxlen=window)
        self._value = None

    def current(self, device=None):
        """Return the threshold in force as a 0-d float tensor."""
        if self._value is None or self.n_updates_ < self.warmup:
            return _constant(self, math.inf, device)
        return self._value.to(device) if device is not None else self._value

    def flag(self, statistic):
        """Boolean mask of the units whose statistic exceeds the threshold."""
        return statistic > self.current(statistic.device)

    def update(self, statistic, flagged):
        """Add the batch to the calibration window and recompute the value."""
        self.n_updates_ += 1
        if self.max_flagged_fraction < 1 and flagged.float().mean() > self.max_flagged_fraction:
            return
        self._history.append(statistic.detach().float())
        self._value = _window_quantile(self, self._history, self.quantile)


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
    >>> from dsc_sklearn.thresholds import linear_schedule
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


def make_threshold(threshold):
    """Build the policy for an estimator's ``threshold`` parameter.

    Parameters
    ----------
    threshold : float, "auto", callable or policy
        A non-negative float, ``"auto"``, ``schedule(step) -> float``, or a
        configured policy such as ``AutoThreshold(quantile=0.995)`` (any
        object with ``current``, ``flag`` and ``update`` methods), which is
        deep-copied so that every estimator calibrates its own.

    Returns
    -------
    policy : FixedThreshold, AutoThreshold, ScheduleThreshold or a copy of the policy

    Examples
    --------
    >>> from dsc_sklearn.thresholds import make_threshold
    >>> type(make_threshold("auto")).__name__
    'AutoThreshold'
    """
    if isinstance(threshold, str) and threshold == "auto":
        return AutoThreshold()
    if all(hasattr(threshold, name) for name in ("current", "flag", "update")):
        # A configured policy: copy it so every estimator calibrates its own.
        return copy.deepcopy(threshold)
    if callable(threshold):
        return ScheduleThreshold(threshold)
    if (
        isinstance(threshold, numbers.Real)
        and not isinstance(threshold, bool)
        and threshold >= 0
    ):
        return FixedThreshold(threshold)
    raise ValueError(
        "threshold must be a non-negative float (an absolute KL value), "
        f"'auto', a callable step -> float or a threshold policy; got {threshold!r}."
    )
