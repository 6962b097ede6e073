"""MemorizationDiscrepancyScorer: discrepancy scores as a transformer."""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from ._classifier import DiscrepancyAwareOnlineClassifier
from .discrepancy import REFERENCES

__all__ = ["MemorizationDiscrepancyScorer"]

_FEATURE_NAME = "memorization_discrepancy"


class MemorizationDiscrepancyScorer(TransformerMixin, BaseEstimator):
    """Turn samples into memorization-discrepancy scores.

    The scorer drives (or wraps) a
    :class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier` and transforms
    each sample into its discrepancy ``KL(p_snapshot(x) || p_current(x))``
    against the classifier's historical snapshots. High values mark samples
    the model's memory disagrees on, which is what accumulative poisoning
    produces. Use it inside a :class:`~sklearn.pipeline.Pipeline`, or as a
    detector through :meth:`predict` (``+1`` normal, ``-1`` flagged).

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier, default=None
        The classifier to score with. ``None`` means
        ``DiscrepancyAwareOnlineClassifier()``. Unless ``prefit=True``, a
        clone is trained by :meth:`fit` and :meth:`partial_fit`.
    reference : {"oldest", "newest", "mean", "max", "all"}, default="oldest"
        Snapshot(s) to compare with; ``"all"`` outputs one column per
        snapshot, oldest first.
    threshold : float, default=None
        Discrepancy above which :meth:`predict` flags a sample; ``None``
        uses the classifier's threshold in force (``threshold_``).
    prefit : bool, default=False
        Whether ``estimator`` is already fitted. It is then used as is (not
        cloned), so scores follow it as it keeps training elsewhere;
        :meth:`fit` only checks it and :meth:`partial_fit` is refused.
    random_state : int, RandomState instance or None, default=None
        When not None, sets the ``random_state`` of the clone the scorer
        trains, so that fitting the scorer is reproducible.

    Attributes
    ----------
    estimator_ : DiscrepancyAwareOnlineClassifier
        The fitted classifier.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column
        names.

    See Also
    --------
    DiscrepancyAwareOnlineClassifier : The classifier that trains on the
        corrected stream.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import (DiscrepancyAwareOnlineClassifier,
    ...                          MemorizationDiscrepancyScorer)
    >>> X, y = load_digits(return_X_y=True)
    >>> scorer = MemorizationDiscrepancyScorer(
    ...     DiscrepancyAwareOnlineClassifier(random_state=0), threshold=0.5
    ... ).fit(X / 16.0, y)
    >>> scorer.transform(X[:3] / 16.0).shape
    (3, 1)
    >>> scorer.get_feature_names_out()
    array(['memorization_discrepancy'], dtype=object)
    >>> scorer.predict(X[:3] / 16.0)
    array([-1,  1,  1])
    """

    _parameter_constraints = {
        "estimator": [None, HasMethods(["partial_fit", "memorization_discrepancy"])],
        "reference": [StrOptions(set(REFERENCES))],
        "threshold": [None, Interval(numbers.Real, 0, None, closed="left")],
        "prefit": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator=None, *, reference="oldest", threshold=None,
                 prefit=False, random_state=None):
        self.estimator = estimator
        self.reference = reference
        self.threshold = threshold
        self.prefit = prefit
        self.random_state = random_state

    def _new_estimator(self):
        if self.estimator is None:
            estimator = DiscrepancyAwareOnlineClassifier()
        else:
            estimator = clone(self.estimator)
        if self.random_state is not None:
            estimator.set_params(random_state=self.random_state)
        return estimator

    def fit(self, X, y):
        """Fit a clone of the classifier, or check the prefit one.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Labels.

        Returns
        -------
        self : MemorizationDiscrepancyScorer
            The fitted scorer.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, reset=True)
        if self.prefit:
            self.estimator_ = self._prefit_estimator()
        else:
            self.estimator_ = self._new_estimator().fit(X, y)
        return self

    def _prefit_estimator(self):
        if self.estimator is None:
            raise ValueError(
                "prefit=True needs a fitted estimator; pass one with estimator=."
            )
        check_is_fitted(self.estimator)
        if self.estimator.n_features_in_ != self.n_features_in_:
            raise ValueError(
                f"X has {self.n_features_in_} features but the prefit estimator "
                f"was fitted with {self.estimator.n_features_in_}."
            )
        return self.estimator

    def partial_fit(self, X, y, classes=None):
        """Train the classifier on one more batch of the stream.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All labels of the stream. On the first call ``None`` means the
            labels of this batch; a later batch with another label is then
            refused, so pass them all when the first batch may miss some.

        Returns
        -------
        self : MemorizationDiscrepancyScorer
            The updated scorer.
        """
        if self.prefit:
            raise ValueError(
                "partial_fit is not available with prefit=True: the prefit "
                "estimator is used as is. Train it directly, or use "
                "prefit=False to let the scorer train its own clone."
            )
        first_call = not hasattr(self, "estimator_")
        if first_call:
            self._validate_params()
        X, y = validate_data(self, X, y, reset=first_call)
        if first_call:
            estimator = self._new_estimator()
            if classes is None:
                check_classification_targets(y)
                classes = unique_labels(y)
        else:
            estimator = self.estimator_
        self.estimator_ = estimator.partial_fit(X, y, classes=classes)
        return self

    def transform(self, X):
        """Memorization discrepancy of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, 1) or (n_samples, n_snapshots)
            float64 discrepancies; one column per snapshot with
            ``reference="all"``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        scores = self.estimator_.memorization_discrepancy(X, reference=self.reference)
        return scores.reshape(len(X), -1)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Ignored; present for API consistency.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        if self.reference != "all":
            return np.asarray([_FEATURE_NAME], dtype=object)
        n_snapshots = len(self.estimator_.snapshots_)
        return np.asarray(
            [f"{_FEATURE_NAME}_{index}" for index in range(n_snapshots)], dtype=object
        )

    def _statistic(self, X):
        scores = self.transform(X)
        return scores.max(axis=1)

    def score_samples(self, X):
        """Normality score: the negated discrepancy (higher = more normal).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return -self._statistic(X)

    def decision_function(self, X):
        """Threshold minus discrepancy: negative for flagged samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        threshold = self.threshold
        if threshold is None:
            check_is_fitted(self)
            threshold = self.estimator_.threshold_
        return threshold - self._statistic(X)

    def predict(self, X):
        """``+1`` for normal samples, ``-1`` for flagged ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
