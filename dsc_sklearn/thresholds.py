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
from collections import deque

import torch

__all__ = [
    "AutoThreshold",
    "FixedThreshold",
    "ScheduleThreshold",
    "linear_schedule",
    "make_threshold",
]


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
        return torch.tensor(self.value, device=device)

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
            return torch.tensor(math.inf, device=device)
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
        self._value = torch.quantile(torch.cat(tuple(self._history)), self.quantile)


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
