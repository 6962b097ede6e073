"""The defence: everything that runs inside ``partial_fit``.

- :mod:`~dsc_sklearn.defence.discrepancy`: the memorization discrepancy and
  the other gate statistics (stateless torch functions);
- :mod:`~dsc_sklearn.defence.history`: the buffer of weight snapshots;
- :mod:`~dsc_sklearn.defence.thresholds`: when a statistic is too high;
- :mod:`~dsc_sklearn.defence.correction`: what happens to flagged samples;
- :mod:`~dsc_sklearn.defence.modules`: default torch modules.

The estimators (:class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier`,
:class:`~dsc_sklearn.MemorizationDiscrepancyScorer`) and the skorch net
whose training step runs the defence (:class:`DiscrepancyAwareNet`, with
its :class:`Step`) are importable from here too.
"""

from .._lazy import lazy_attributes

__all__ = [
    "DiscrepancyAwareNet",
    "DiscrepancyAwareOnlineClassifier",
    "MemorizationDiscrepancyScorer",
    "Step",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "DiscrepancyAwareNet": "._net",
    "DiscrepancyAwareOnlineClassifier": "._classifier",
    "MemorizationDiscrepancyScorer": "._scorer",
    "Step": "._net",
})
