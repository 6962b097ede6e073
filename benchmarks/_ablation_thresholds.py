"""Exploratory threshold policies of the ablation study (not part of the library)."""

from torch.nn.functional import cross_entropy

import dsc_sklearn._net as _net
from dsc_sklearn.discrepancy import (
    decision_statistic,
    memorization_discrepancy,
    reduce_snapshots,
)
from dsc_sklearn.thresholds import AutoThreshold


class MarginThreshold(AutoThreshold):
    """``margin`` times the window quantile: tolerates gradual drift."""

    def __init__(self, margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def current(self, device=None):
        return super().current(device) * self.margin


class PatientThreshold(MarginThreshold):
    """Admit a batch anyway after ``patience`` consecutive exclusions."""

    def __init__(self, patience=10, **kwargs):
        super().__init__(**kwargs)
        self.patience = patience
        self.n_excluded = 0

    def update(self, statistic, flagged):
        excluded = float(flagged.float().mean()) > self.max_flagged_fraction
        self.n_excluded = self.n_excluded + 1 if excluded else 0
        if self.n_excluded < self.patience:
            super().update(statistic, flagged)
            return
        self.n_excluded = 0
        saved, self.max_flagged_fraction = self.max_flagged_fraction, 1.0
        try:
            super().update(statistic, flagged)
        finally:
            self.max_flagged_fraction = saved


class ExcessLossThreshold(AutoThreshold):
    """A loss gate on the *excess* loss ``CE(current) - CE(reference)``.

    A benign shift should raise the loss of the current and of the
    historical model alike, and a poison crafted against the current model
    should raise mostly the current one's. The library's loss gate reads the
    current model's cross-entropy; when the loss policy is of this class,
    the training step below reads the excess instead. The reference is the
    net's ``reference`` snapshot.
    """


_library_statistics = _net.DiscrepancyAwareNet._statistics


def _statistics_with_excess_loss(self, X, y, logits):
    if not isinstance(self.loss_threshold_policy_, ExcessLossThreshold):
        return _library_statistics(self, X, y, logits)
    # One reference pass serves the discrepancy and the excess loss.
    reference = self.snapshots_.reference_logits(self.module_, X, self.reference)
    discrepancy = reduce_snapshots(memorization_discrepancy(reference, logits), self.reference)
    excess = (cross_entropy(logits, y, reduction="none")
              - cross_entropy(reference[0], y, reduction="none"))
    return [decision_statistic(discrepancy), excess]


# Importing this module (as unpickling the policy in a joblib worker does)
# installs the experiment; other policies keep the library's statistics.
_net.DiscrepancyAwareNet._statistics = _statistics_with_excess_loss
