"""Exploratory threshold policies of the ablation study (not part of the library)."""

from dsc_sklearn.defence.thresholds import AutoThreshold


class MarginThreshold(AutoThreshold):
    """``margin`` times the window quantile: tolerates gradual drift.

    Every parameter is named (no ``**kwargs``): a policy is a scikit-learn
    estimator, and ``clone`` rebuilds it from its named parameters.
    """

    def __init__(self, margin=1.0, quantile=0.99, window=20, warmup=10,
                 max_flagged_fraction=1.0):
        super().__init__(quantile=quantile, window=window, warmup=warmup,
                         max_flagged_fraction=max_flagged_fraction)
        self.margin = margin

    def current(self, device=None):
        return super().current(device) * self.margin


class PatientThreshold(MarginThreshold):
    """Admit a batch anyway after ``patience`` consecutive exclusions."""

    def __init__(self, patience=10, margin=1.0, quantile=0.99, window=20, warmup=10,
                 max_flagged_fraction=1.0):
        super().__init__(margin=margin, quantile=quantile, window=window, warmup=warmup,
                         max_flagged_fraction=max_flagged_fraction)
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
    should raise mostly the current one's. The policy reads the library's
    ``"excess_loss"`` statistic (see
    :data:`dsc_sklearn.defence.discrepancy.STATISTICS`); the reference is
    the net's ``reference`` snapshot.
    """

    statistic = "excess_loss"
