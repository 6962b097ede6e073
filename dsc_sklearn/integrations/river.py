"""The defended classifier as a `river <https://riverml.xyz>`_ model.

:class:`RiverClassifier` is a river ``base.MiniBatchClassifier``: it takes
river's feature dicts (``learn_one``, ``predict_proba_one``) and DataFrames
(``learn_many``, ``predict_proba_many``), so it works inside
``river.compose.Pipeline`` and ``river.evaluate.progressive_val_score``
like any river classifier. It needs the ``river`` extra
(``pip install "dsc-sklearn[river]"``).
"""

import numpy as np
from sklearn.base import clone
from sklearn.utils.multiclass import unique_labels

try:
    import pandas as pd
    from river import base
except ImportError as exc:  # pragma: no cover - exercised without river only
    raise ImportError(
        "dsc_sklearn.integrations.river needs river (and pandas): install them "
        'with pip install "dsc-sklearn[river]".'
    ) from exc

from ..defence._classifier import DiscrepancyAwareOnlineClassifier

__all__ = ["RiverClassifier"]


class RiverClassifier(base.MiniBatchClassifier):
    """river's mini-batch classifier API around :class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier`.

    river feeds a model one sample at a time; the defence calibrates its
    threshold and its step guard on training *batches*. ``learn_one``
    therefore buffers the rows, and every ``batch_size`` rows (the
    estimator's ``batch_size``) the estimator takes one optimizer step on
    them. ``learn_many`` feeds the same buffer, so a stream trains on the
    same mini-batches, and ends in the same model, whether it arrives row
    by row or in DataFrames of any size. :meth:`flush` trains on the rows
    still buffered (one smaller batch).

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier, default=None
        The configuration to use: it is cloned (:func:`sklearn.base.clone`),
        so a fitted estimator is not modified and its state is not used.
        ``None`` uses the defaults (step guard, no correction). The
        estimator's ``batch_size`` is the size of the mini-batches.
    classes : list
        Every label the stream can carry, given up front (the network's
        output layer has one unit per class). A label outside them is a
        :class:`ValueError` in ``learn_one`` and ``learn_many``.

    Attributes
    ----------
    estimator_ : DiscrepancyAwareOnlineClassifier
        The clone that learns; once the first mini-batch has trained, its
        fitted attributes (``stream_log_``, ``alarms_``, the counters) say
        what the defence did.
    features_ : tuple or None
        The feature names of the first row learnt, sorted: the order of the
        network's inputs. A later row (learnt or predicted) must hold
        exactly these features, in any order: a missing or a new feature is
        a :class:`ValueError` that names them (put a river imputer or a
        ``compose.Select`` in front of the model for streams whose features
        come and go). ``None`` before the first row.
    n_buffered_ : int
        Rows learnt but not yet trained on.

    Notes
    -----
    Before the first mini-batch has trained, the predicted probabilities
    are uniform over ``classes`` (the model knows nothing yet), so
    ``predict_one`` returns the first class in sorted order. Values must be
    finite numbers; scale them first (``preprocessing.StandardScaler`` in a
    pipeline), since the network trains on them as they are.

    A mini-batch that the estimator refuses (a row outside its
    ``input_bounds``, or a step that made the weights non-finite) leaves the
    estimator as it was, is dropped from the buffer, and the error is
    raised.

    The model pickles mid-stream, buffered rows included, and the unpickled
    copy continues the stream exactly as the original would.

    Examples
    --------
    >>> from river import compose, datasets, evaluate, metrics, preprocessing
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.integrations.river import RiverClassifier
    >>> model = compose.Pipeline(
    ...     preprocessing.StandardScaler(),
    ...     RiverClassifier(
    ...         DiscrepancyAwareOnlineClassifier(batch_size=25, random_state=0),
    ...         classes=[False, True],
    ...     ),
    ... )
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 87.52%
    >>> model["RiverClassifier"].estimator_.n_batches_seen_
    50
    """

    def __init__(self, estimator=None, *, classes):
        self.estimator = estimator
        self.classes = classes
        labels = list(classes) if classes is not None else []
        if len(labels) < 2 or len(set(labels)) < len(labels):
            raise ValueError(
                "classes must list every label the stream can carry, each once "
                f"and at least two; got {classes!r}."
            )
        self._labels = set(labels)
        # The estimator's order of the classes (sorted), known before it is fitted.
        self._sorted_labels = unique_labels(np.asarray(labels)).tolist()
        self.estimator_ = (DiscrepancyAwareOnlineClassifier() if estimator is None
                           else clone(estimator))
        self.features_ = None
        self._rows = []
        self._targets = []

    @classmethod
    def _unit_test_params(cls):
        yield {"estimator": DiscrepancyAwareOnlineClassifier(batch_size=8, random_state=0),
               "classes": [False, True]}

    def _unit_test_skips(self):
        # By design, a row must hold the features of the first one (see features_).
        return {"check_emerging_features", "check_disappearing_features",
                "check_radically_disappearing_features", "check_learn_many_matches_learn_one"}

    @property
    def _multiclass(self):
        return True

    @property
    def n_buffered_(self):
        """int: rows learnt but not yet trained on."""
        return len(self._rows)

    # ----------------------------------------------------------- learning

    def learn_one(self, x, y):
        """Buffer one row; train on a mini-batch once ``batch_size`` rows are buffered.

        Parameters
        ----------
        x : dict
            The row's features.
        y : label
            Its label, one of ``classes``.
        """
        self._check_labels([y])
        if self.features_ is None:
            self._set_features(x)
        row = self._row(x)
        self._rows.append(row.tolist())
        self._targets.append(y)
        self._train_full_batches()

    def learn_many(self, X, y):
        """Buffer the rows of a DataFrame; train on every full mini-batch.

        Parameters
        ----------
        X : pandas.DataFrame
            One row per sample, one column per feature.
        y : pandas.Series
            The labels, each one of ``classes``.
        """
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
        labels = list(y)
        self._check_labels(labels)
        if not len(X):
            return
        if self.features_ is None:
            self._set_features(dict.fromkeys(X.columns))
        values = self._frame(X)
        self._rows.extend(values.tolist())
        self._targets.extend(labels)
        self._train_full_batches()

    def flush(self):
        """Train on the buffered rows now, as one batch smaller than ``batch_size``.

        Useful at the end of a stream, or before a prediction that must see
        the latest rows. Nothing happens when no row is buffered.

        Returns
        -------
        self : RiverClassifier
        """
        if self._rows:
            self._train(len(self._rows))
        return self

    def _train_full_batches(self):
        batch_size = self.estimator_.batch_size
        n_rows = len(self._rows) // batch_size * batch_size
        if n_rows:
            self._train(n_rows)

    def _train(self, n_rows):
        """One ``partial_fit`` on the first ``n_rows`` buffered rows, then drop them."""
        X = np.asarray(self._rows[:n_rows], dtype=np.float64)
        y = np.asarray(self._targets[:n_rows])
        try:
            self.estimator_.partial_fit(X, y, classes=self.classes)
        finally:
            # Trained, or refused with the estimator left as it was: either way
            # the rows are consumed, as a refused partial_fit batch would be.
            del self._rows[:n_rows], self._targets[:n_rows]

    def _check_labels(self, labels):
        unknown = []
        for label in labels:
            try:
                known = label in self._labels
            except TypeError:  # an unhashable label
                known = False
            if not known and label not in unknown:
                unknown.append(label)
        if unknown:
            raise ValueError(
                f"The label(s) {unknown} are not among the classes {list(self.classes)} "
                "given to RiverClassifier. The network has one output per class, "
                "fixed up front: construct the model with every label the stream "
                "can carry."
            )

    # --------------------------------------------------------- prediction

    def predict_proba_one(self, x):
        """The probability of each class (uniform before the first mini-batch trained).

        Parameters
        ----------
        x : dict
            The row's features.

        Returns
        -------
        proba : dict
            ``{label: probability}`` over ``classes``.
        """
        if self.features_ is not None:
            row = self._row(x)
        if not self._fitted():
            return dict.fromkeys(self._sorted_labels, 1.0 / len(self._sorted_labels))
        proba = self.estimator_.predict_proba(row[np.newaxis])[0]
        return dict(zip(self.estimator_.classes_.tolist(), proba.tolist()))

    def predict_one(self, x):
        """The most probable class of one row.

        Parameters
        ----------
        x : dict
            The row's features.

        Returns
        -------
        label
            One of ``classes``; before the first mini-batch trained, the
            first in sorted order.
        """
        proba = self.predict_proba_one(x)
        return max(proba, key=proba.get)

    def predict_proba_many(self, X):
        """The probabilities of the classes for each row of a DataFrame.

        Parameters
        ----------
        X : pandas.DataFrame
            One row per sample, one column per feature.

        Returns
        -------
        proba : pandas.DataFrame
            One column per class (in sorted order), indexed like ``X``.
        """
        return pd.DataFrame(self._proba(X), index=X.index, columns=self._sorted_labels)

    def predict_many(self, X):
        """The most probable class of each row of a DataFrame.

        Parameters
        ----------
        X : pandas.DataFrame
            One row per sample, one column per feature.

        Returns
        -------
        y_pred : pandas.Series
            Indexed like ``X``.
        """
        labels = np.asarray(self._sorted_labels, dtype=object)
        return pd.Series(labels[self._proba(X).argmax(axis=1)].tolist(), index=X.index,
                         dtype=object)

    def _proba(self, X):
        """``predict_proba`` of a DataFrame's rows; uniform before the first batch."""
        n_classes = len(self._sorted_labels)
        values = self._frame(X) if self.features_ is not None and len(X) else None
        if values is None or not self._fitted():
            return np.full((len(X), n_classes), 1.0 / n_classes)
        return self.estimator_.predict_proba(values)

    def _fitted(self):
        return hasattr(self.estimator_, "classes_")

    # ------------------------------------------------------------ features

    def _set_features(self, x):
        if not x:
            raise ValueError("The first row learnt has no features.")
        # Sorted, so that the order the features arrive in does not matter.
        self.features_ = tuple(sorted(x, key=lambda name: (type(name).__name__, str(name))))
        self._feature_set = frozenset(self.features_)

    def _check_features(self, names):
        if names == self._feature_set:
            return
        names = list(names)
        missing = [name for name in self.features_ if name not in names]
        new = [name for name in names if name not in self._feature_set]
        problems = []
        if missing:
            problems.append(f"lacks the feature(s) {missing}")
        if new:
            problems.append(f"holds feature(s) {new} the model was not built for")
        raise ValueError(
            f"The row {' and '.join(problems)}: RiverClassifier's network has one "
            f"input per feature of the first row learnt, {list(self.features_)}. "
            "Give every row these features (e.g. a river imputer or compose.Select "
            "in front of the model)."
        )

    def _row(self, x):
        """The values of ``x`` in the order of ``features_``, checked finite."""
        self._check_features(x.keys())
        return self._finite(np.array([[x[name] for name in self.features_]],
                                     dtype=np.float64))[0]

    def _frame(self, X):
        """The DataFrame's values in the order of ``features_``, checked finite."""
        self._check_features(frozenset(X.columns))
        return self._finite(X[list(self.features_)].to_numpy(dtype=np.float64,
                                                             na_value=np.nan))

    def _finite(self, values):
        if not np.isfinite(values).all():
            columns = np.flatnonzero(~np.isfinite(values).all(axis=0))
            raise ValueError(
                f"The feature(s) {[self.features_[c] for c in columns]} hold missing "
                "(None), NaN or infinite values; RiverClassifier needs finite "
                "numbers. Impute them first (e.g. river.preprocessing.StatImputer)."
            )
        return values
