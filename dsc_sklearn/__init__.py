"""Keep online neural-network training safe from accumulative poisoning.

``dsc_sklearn`` compares the current model's predictions with those of
historical snapshots (the *memorization discrepancy*) and corrects the
samples whose discrepancy is too high before training on them
(*Discrepancy-aware Sample Correction*, Zhu et al., ICML 2023), behind
scikit-learn's estimator API.
"""

from ._classifier import DiscrepancyAwareOnlineClassifier
from ._scorer import MemorizationDiscrepancyScorer

__version__ = "0.1.0"

__all__ = [
    "DiscrepancyAwareOnlineClassifier",
    "MemorizationDiscrepancyScorer",
    "__version__",
]
