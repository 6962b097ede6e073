"""Keep online neural-network training safe from accumulative poisoning.

``dsc_sklearn`` compares the current model's predictions with those of
historical snapshots (the *memorization discrepancy*) and corrects the
samples whose discrepancy is too high before training on them
(*Discrepancy-aware Sample Correction*, Zhu et al., ICML 2023), behind
scikit-learn's estimator API.

The package has two parts:

- :mod:`dsc_sklearn.defence`: what runs inside ``partial_fit`` (the
  estimators, the snapshot buffer, the discrepancy, the threshold policies,
  the corrections);
- :mod:`dsc_sklearn.evaluation`: the toolkit that tests the defence (the
  attacks, the offline data sets, the stream protocol, the benchmark, the
  plots and the ``dsc-sklearn`` command).
"""

from ._lazy import lazy_attributes

__version__ = "0.2.0"

__all__ = [
    "DiscrepancyAwareOnlineClassifier",
    "MemorizationDiscrepancyScorer",
    "__version__",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "DiscrepancyAwareOnlineClassifier": ".defence._classifier",
    "MemorizationDiscrepancyScorer": ".defence._scorer",
})
