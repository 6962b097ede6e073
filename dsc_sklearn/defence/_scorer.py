"""MemorizationDiscrepancyScorer: discrepancy scores as a transformer."""

import copy
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._classifier import DiscrepancyAwareOnlineClassifier
from ._params import NumberInterval
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

    To score with a classifier that is already trained, wrap it in
    :class:`sklearn.frozen.FrozenEstimator`, scikit-learn's way of keeping
    a fitted estimator as it is: :meth:`fit` then only checks ``X`` (``y``
    may be omitted), :meth:`partial_fit` is refused, and :func:`clone`,
    hence :func:`~sklearn.model_selection.cross_val_score` and
    :class:`~sklearn.model_selection.GridSearchCV`, keep the fitted
    classifier (see the second example). ``prefit=True`` does the same.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier or FrozenEstimator, default=None
        The classifier to score with. ``None`` means
        ``DiscrepancyAwareOnlineClassifier()``. A clone is trained by
        :meth:`fit` and :meth:`partial_fit`, unless ``prefit=True`` or the
        classifier is wrapped in :class:`~sklearn.frozen.FrozenEstimator`:
        it is then used as it is.
    reference : {"oldest", "newest", "mean", "max", "all"}, default="oldest"
        Snapshot(s) to compare with; ``"all"`` outputs one column per
        snapshot, oldest first.
    threshold : float, default=None
        Discrepancy above which :meth:`predict` flags a sample; ``None``
        uses the classifier's threshold in force (``threshold_``).
    prefit : bool, default=False
        Whether ``estimator`` is already fitted. It is then used as it is,
        as with a :class:`~sklearn.frozen.FrozenEstimator`: never trained
        nor copied, so scores follow it as it keeps training elsewhere;
        :meth:`fit` only checks ``X`` against it and :meth:`partial_fit` is
        refused. Cloning the scorer keeps the same classifier, so that
        :func:`~sklearn.model_selection.cross_val_score` works (unlike
        :class:`~sklearn.feature_selection.SelectFromModel`, whose clone
        with ``prefit=True`` holds an unfitted copy and fails to fit).
    random_state : int, RandomState instance or None, default=None
        When not None, sets the ``random_state`` of the clone the scorer
        trains, so that fitting the scorer is reproducible; ignored for a
        classifier used as it is.

    Attributes
    ----------
    estimator_ : DiscrepancyAwareOnlineClassifier
        The fitted classifier.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column
        names; for a classifier used as it is, its own names when it has
        them (as :class:`~sklearn.feature_selection.SelectFromModel` does).

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

    A classifier trained elsewhere, frozen: a detector of scrambled inputs
    built on its scores is cross-validated, and the classifier is left as
    it was.

    >>> import numpy as np
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from sklearn.pipeline import make_pipeline
    >>> clf = DiscrepancyAwareOnlineClassifier(random_state=0).fit(X[:1000] / 16.0,
    ...                                                            y[:1000])
    >>> clean = X[1000:] / 16.0
    >>> scrambled = clean[:, np.random.RandomState(0).permutation(64)]
    >>> is_scrambled = np.repeat([0, 1], len(clean))
    >>> detector = make_pipeline(MemorizationDiscrepancyScorer(FrozenEstimator(clf)),
    ...                          LogisticRegression())
    >>> scores = cross_val_score(detector, np.vstack([clean, scrambled]), is_scrambled,
    ...                          cv=3)
    >>> print(f"{scores.mean():.2f}")
    0.82
    >>> clf.n_batches_seen_  # not retrained by cross_val_score
    10
    """

    _parameter_constraints = {
        "estimator": [None, HasMethods(["partial_fit", "memorization_discrepancy"])],
        "reference": [StrOptions(set(REFERENCES))],
        "threshold": [None, NumberInterval(numbers.Real, 0, None, closed="left")],
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

    def set_params(self, **params):
        """Set the parameters; the classifier's own are refused while ``prefit=True``.

        With ``prefit=True`` the scorer holds the user's classifier itself
        (and so does every clone of it), so a nested parameter
        (``estimator__lr``) would change that classifier, e.g. from a grid
        search over a pipeline; it is refused, as
        :class:`~sklearn.frozen.FrozenEstimator` refuses it.

        Parameters
        ----------
        **params : dict
            Scorer parameters.

        Returns
        -------
        self : MemorizationDiscrepancyScorer
        """
        nested = sorted(key for key in params if key.startswith("estimator__"))
        if nested and params.get("prefit", self.prefit):
            raise ValueError(
                f"Cannot set {nested} with prefit=True: the scorer (and every clone "
                "of it) holds the fitted classifier itself, which it never trains, "
                "and setting its parameters here would change your classifier. Call "
                "set_params on the classifier directly, or pass it with prefit=False "
                "to let the scorer train a clone with these parameters."
            )
        return super().set_params(**params)

    def _used_as_is(self):
        """Whether the classifier is scored with as it is, never trained."""
        return self.prefit or isinstance(self.estimator, FrozenEstimator)

    def _new_estimator(self):
        if self.estimator is None:
            estimator = DiscrepancyAwareOnlineClassifier()
        else:
            estimator = clone(self.estimator)
        if self.random_state is not None:
            estimator.set_params(random_state=self.random_state)
        return estimator

    def fit(self, X, y=None):
        """Fit a clone of the classifier, or check ``X`` against the one used as is.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,), default=None
            Labels; required to train a clone, ignored when the classifier
            is used as it is (``prefit=True`` or a
            :class:`~sklearn.frozen.FrozenEstimator`).

        Returns
        -------
        self : MemorizationDiscrepancyScorer
            The fitted scorer.
        """
        self._validate_params()
        if self._used_as_is():
            self.estimator_ = self._fitted_estimator(X)
            return self
        if y is None:
            raise ValueError(
                "MemorizationDiscrepancyScorer requires y to be passed, but the "
                "target y is None: fit needs y to train its classifier (a clone "
                "of estimator). Pass the labels, or score with a fitted "
                "classifier as it is: MemorizationDiscrepancyScorer("
                "FrozenEstimator(classifier)), or prefit=True."
            )
        X, y = validate_data(self, X, y, reset=True)
        self.estimator_ = self._new_estimator().fit(X, y)
        return self

    def _fitted_estimator(self, X):
        """The classifier used as it is, once ``X`` is checked against it."""
        estimator = self.estimator
        if estimator is None:
            raise ValueError(
                "prefit=True needs a fitted estimator; pass one with estimator=."
            )
        check_is_fitted(estimator)
        validate_data(self, X, reset=True)
        if estimator.n_features_in_ != self.n_features_in_:
            raise ValueError(
                f"X has {self.n_features_in_} features but the prefit estimator "
                f"was fitted with {estimator.n_features_in_}."
            )
        names = getattr(estimator, "feature_names_in_", None)
        if names is not None:
            given = getattr(self, "feature_names_in_", None)
            if given is not None and not np.array_equal(given, names):
                raise ValueError(
                    "The feature names of X differ from those the estimator was "
                    f"fitted with: {list(given)[:5]}... against {list(names)[:5]}...; "
                    "pass the columns the classifier was trained on."
                )
            # As SelectFromModel: the names are the classifier's.
            self.feature_names_in_ = names
        return estimator

    def __sklearn_clone__(self):
        """A clone; with ``prefit=True`` it holds the same fitted classifier.

        A clone of a scorer with ``prefit=True`` shares the classifier, as
        a clone of a :class:`~sklearn.frozen.FrozenEstimator` is the frozen
        estimator itself; every other parameter is cloned as usual.
        """
        if not self.prefit:
            return super().__sklearn_clone__()
        shallow = copy.copy(self)
        shallow.estimator = _Shared(self.estimator)
        cloned = super(MemorizationDiscrepancyScorer, shallow).__sklearn_clone__()
        cloned.estimator = self.estimator
        return cloned

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
        if self._used_as_is():
            raise ValueError(
                "partial_fit is not available with prefit=True or a "
                "FrozenEstimator: the classifier is used as it is. Train it "
                "directly, or pass the classifier itself with prefit=False to let "
                "the scorer train its own clone."
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
        # The scorer checks X's feature names (and warns once, as any
        # scikit-learn estimator does); the classifier then gets the checked
        # array, and its own warning about the missing names would repeat it.
        X = validate_data(self, X, reset=False)
        if isinstance(self.estimator_, DiscrepancyAwareOnlineClassifier):
            # Without catch_warnings, which is not thread-safe (it swaps the
            # process's warning filters), so that transform may run in threads.
            check_is_fitted(self.estimator_)
            X = check_array(X, dtype=np.float32, force_writeable=True)
            scores = self.estimator_._memorization_discrepancy(X, reference=self.reference)
            return scores.reshape(len(X), -1)
        with warnings.catch_warnings():
            if getattr(self.estimator_, "feature_names_in_", None) is not None:
                warnings.filterwarnings(
                    "ignore", message="X does not have valid feature names",
                    category=UserWarning)
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
        tags.target_tags.required = not self._used_as_is()
        return tags


class _Shared:
    """A parameter that :func:`sklearn.base.clone` keeps as it is."""

    def __init__(self, value):
        self.value = value

    def __sklearn_clone__(self):
        return self
