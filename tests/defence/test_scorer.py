"""Tests for MemorizationDiscrepancyScorer, Pipeline and GridSearchCV use."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dsc_sklearn import DiscrepancyAwareOnlineClassifier, MemorizationDiscrepancyScorer
from dsc_sklearn.evaluation.datasets import load_stream_dataset


@pytest.fixture(scope="module")
def digits():
    return load_stream_dataset("digits", random_state=0)


@pytest.fixture(scope="module")
def fitted_classifier(digits):
    clf = DiscrepancyAwareOnlineClassifier(snapshot_every=3, random_state=0)
    for start in range(0, 900, 100):
        clf.partial_fit(digits.X_train[start:start + 100], digits.y_train[start:start + 100],
                        classes=np.arange(10))
    return clf


def test_transform_is_the_classifiers_discrepancy(digits, fitted_classifier):
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True)
    scores = scorer.fit(digits.X_train, digits.y_train).transform(digits.X_test)
    assert scores.shape == (len(digits.X_test), 1) and scores.dtype == np.float64
    assert_allclose(scores[:, 0], fitted_classifier.memorization_discrepancy(digits.X_test))
    assert scorer.estimator_ is fitted_classifier


def test_prefit_scores_follow_further_training(digits, fitted_classifier):
    import copy

    clf = copy.deepcopy(fitted_classifier)
    scorer = MemorizationDiscrepancyScorer(clf, prefit=True).fit(digits.X_train, digits.y_train)
    before = scorer.transform(digits.X_test)
    clf.partial_fit(digits.X_train[900:1000], digits.y_train[900:1000])
    assert not np.allclose(before, scorer.transform(digits.X_test))


def test_reference_all_gives_one_named_column_per_snapshot(digits, fitted_classifier):
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, reference="all", prefit=True)
    scores = scorer.fit(digits.X_train, digits.y_train).transform(digits.X_test)
    n_snapshots = len(fitted_classifier.snapshots_)
    assert scores.shape == (len(digits.X_test), n_snapshots) == (len(digits.X_test), 4)
    assert list(scorer.get_feature_names_out()) == [
        f"memorization_discrepancy_{i}" for i in range(4)
    ]
    assert_allclose(scorer.score_samples(digits.X_test), -scores.max(axis=1))


def test_set_output_pandas(digits, fitted_classifier):
    pd = pytest.importorskip("pandas")
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True).set_output(
        transform="pandas"
    )
    frame = scorer.fit(digits.X_train, digits.y_train).transform(digits.X_test[:5])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["memorization_discrepancy"]


def test_predict_and_decision_function_follow_the_threshold(digits, fitted_classifier):
    scores = fitted_classifier.memorization_discrepancy(digits.X_test)
    threshold = float(np.median(scores))
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, threshold=threshold,
                                           prefit=True).fit(digits.X_train, digits.y_train)
    assert_allclose(scorer.decision_function(digits.X_test), threshold - scores)
    assert_array_equal(scorer.predict(digits.X_test), np.where(scores > threshold, -1, 1))
    assert set(scorer.predict(digits.X_test)) == {-1, 1}


def test_predict_defaults_to_the_classifiers_threshold(digits, fitted_classifier):
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True)
    scorer.fit(digits.X_train, digits.y_train)
    expected = fitted_classifier.threshold_ - fitted_classifier.memorization_discrepancy(
        digits.X_test)
    assert_allclose(scorer.decision_function(digits.X_test), expected)


def test_fit_trains_a_clone_and_partial_fit_streams(digits):
    template = DiscrepancyAwareOnlineClassifier(random_state=0)
    scorer = MemorizationDiscrepancyScorer(template).fit(digits.X_train[:300],
                                                         digits.y_train[:300])
    assert not hasattr(template, "classes_")
    assert scorer.estimator_.n_batches_seen_ == 3
    streaming = MemorizationDiscrepancyScorer(template)
    for start in range(0, 300, 100):
        streaming.partial_fit(digits.X_train[start:start + 100],
                              digits.y_train[start:start + 100], classes=np.arange(10))
    assert streaming.estimator_.n_batches_seen_ == 3
    assert_allclose(streaming.transform(digits.X_test), scorer.transform(digits.X_test))


def test_random_state_seeds_the_clone(digits):
    first = MemorizationDiscrepancyScorer(random_state=1).fit(digits.X_train[:200],
                                                               digits.y_train[:200])
    second = MemorizationDiscrepancyScorer(random_state=1).fit(digits.X_train[:200],
                                                                digits.y_train[:200])
    assert_array_equal(first.transform(digits.X_test), second.transform(digits.X_test))
    assert first.estimator_.random_state == 1


def test_prefit_errors(digits, fitted_classifier):
    with pytest.raises(NotFittedError):
        MemorizationDiscrepancyScorer(DiscrepancyAwareOnlineClassifier(), prefit=True).fit(
            digits.X_train, digits.y_train)
    with pytest.raises(ValueError, match="needs a fitted estimator"):
        MemorizationDiscrepancyScorer(prefit=True).fit(digits.X_train, digits.y_train)
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True)
    with pytest.raises(ValueError, match="partial_fit is not available with prefit=True"):
        scorer.partial_fit(digits.X_train[:10], digits.y_train[:10])
    with pytest.raises(ValueError, match="prefit estimator was fitted with 64"):
        scorer.fit(digits.X_train[:, :5], digits.y_train)


def test_transform_checks_features(digits, fitted_classifier):
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True)
    scorer.fit(digits.X_train, digits.y_train)
    with pytest.raises(ValueError, match="features"):
        scorer.transform(digits.X_test[:, :10])


def test_pickle_round_trip(digits, fitted_classifier):
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True)
    scorer.fit(digits.X_train, digits.y_train)
    restored = pickle.loads(pickle.dumps(scorer))
    assert_allclose(restored.transform(digits.X_test), scorer.transform(digits.X_test))


def test_scorer_in_a_pipeline(digits):
    pipeline = make_pipeline(
        MemorizationDiscrepancyScorer(DiscrepancyAwareOnlineClassifier(random_state=0)),
        StandardScaler(),
        LogisticRegression(),
    )
    is_odd = digits.y_train % 2
    pipeline.fit(digits.X_train, is_odd)
    assert pipeline.predict(digits.X_test).shape == (len(digits.X_test),)
    assert list(pipeline[:-1].get_feature_names_out()) == ["memorization_discrepancy"]


def test_classifier_in_a_pipeline(digits):
    pipeline = make_pipeline(StandardScaler(),
                             DiscrepancyAwareOnlineClassifier(max_epochs=3, random_state=0))
    pipeline.fit(digits.X_train, digits.y_train)
    assert pipeline.score(digits.X_test, digits.y_test) > 0.85


@pytest.mark.slow
def test_grid_search_over_threshold_and_history_size(digits):
    search = GridSearchCV(
        DiscrepancyAwareOnlineClassifier(max_epochs=2, input_bounds=(0.0, 1.0),
                                         random_state=0),
        {"threshold": ["auto", 0.05, 1.0], "history_size": [2, 4]},
        cv=2,
        n_jobs=2,
    )
    search.fit(digits.X_train, digits.y_train)
    assert len(search.cv_results_["params"]) == 6
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_params_["threshold"] in ("auto", 0.05, 1.0)
    assert search.best_estimator_.history_size == search.best_params_["history_size"]
    assert search.score(digits.X_test, digits.y_test) > 0.8


def test_grid_search_over_the_scorers_reference(digits):
    pipeline = make_pipeline(
        MemorizationDiscrepancyScorer(DiscrepancyAwareOnlineClassifier(random_state=0)),
        LogisticRegression(),
    )
    search = GridSearchCV(
        pipeline,
        {"memorizationdiscrepancyscorer__reference": ["oldest", "mean"],
         "memorizationdiscrepancyscorer__estimator__history_size": [2, 4]},
        cv=2,
    ).fit(digits.X_train[:600], digits.y_train[:600] % 2)
    assert len(search.cv_results_["params"]) == 4


# --------------------------------------- scikit-learn conventions (#14)

def _pipeline(scorer):
    from sklearn.linear_model import LogisticRegression

    return make_pipeline(scorer, LogisticRegression())


@pytest.fixture
def frozen_copy(fitted_classifier):
    import copy

    return copy.deepcopy(fitted_classifier)


def test_prefit_fit_takes_x_alone(digits, fitted_classifier):
    scorer = MemorizationDiscrepancyScorer(fitted_classifier, prefit=True).fit(digits.X_train)
    assert_allclose(scorer.transform(digits.X_test)[:, 0],
                    fitted_classifier.memorization_discrepancy(digits.X_test))
    assert scorer.n_features_in_ == 64


def test_prefit_scorer_in_a_column_transformer(digits, fitted_classifier):
    from sklearn.compose import ColumnTransformer

    transformer = ColumnTransformer([
        ("dsc", MemorizationDiscrepancyScorer(fitted_classifier, prefit=True), slice(0, 64)),
    ])
    scores = transformer.fit_transform(digits.X_test)  # no y, as in an unsupervised step
    assert_allclose(scores[:, 0], fitted_classifier.memorization_discrepancy(digits.X_test))
    assert list(transformer.get_feature_names_out()) == ["dsc__memorization_discrepancy"]


def test_training_its_own_clone_needs_y(digits):
    scorer = MemorizationDiscrepancyScorer(DiscrepancyAwareOnlineClassifier())
    with pytest.raises(ValueError, match="needs y to train"):
        scorer.fit(digits.X_train[:100])
    assert not hasattr(scorer, "estimator_")


def test_a_cloned_prefit_scorer_keeps_the_fitted_classifier(digits, frozen_copy):
    from sklearn.base import clone

    scorer = MemorizationDiscrepancyScorer(frozen_copy, prefit=True, reference="mean")
    cloned = clone(scorer)
    assert cloned is not scorer and cloned.estimator is frozen_copy
    assert cloned.get_params()["reference"] == "mean"
    assert not hasattr(cloned, "estimator_")
    # set_output survives a clone, as with any estimator
    assert clone(scorer.set_output(transform="pandas"))._sklearn_output_config == {
        "transform": "pandas"}


@pytest.mark.parametrize("wrap", ["prefit", "frozen"])
def test_a_fitted_classifier_serves_in_cross_val_score(digits, frozen_copy, wrap):
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import cross_val_score

    if wrap == "prefit":
        scorer = MemorizationDiscrepancyScorer(frozen_copy, prefit=True)
    else:
        scorer = MemorizationDiscrepancyScorer(FrozenEstimator(frozen_copy))
    n_batches = frozen_copy.n_batches_seen_
    weights = {k: v.clone() for k, v in frozen_copy.module_.state_dict().items()}
    scores = cross_val_score(_pipeline(scorer), digits.X_test, digits.y_test % 2, cv=3,
                             error_score="raise")
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert frozen_copy.n_batches_seen_ == n_batches  # never trained
    for name, tensor in frozen_copy.module_.state_dict().items():
        assert torch.equal(tensor, weights[name])


def test_a_frozen_classifier_is_scored_as_it_is(digits, frozen_copy):
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    frozen = FrozenEstimator(frozen_copy)
    scorer = MemorizationDiscrepancyScorer(frozen, random_state=3).fit(digits.X_train)
    assert clone(scorer).estimator is frozen
    assert frozen_copy.random_state == 0  # not set on a classifier it does not train
    assert_allclose(scorer.transform(digits.X_test)[:, 0],
                    frozen_copy.memorization_discrepancy(digits.X_test))
    assert scorer.predict(digits.X_test).shape == (len(digits.X_test),)
    n_batches = frozen_copy.n_batches_seen_
    with pytest.raises(ValueError, match="partial_fit is not available"):
        scorer.partial_fit(digits.X_train[:10], digits.y_train[:10])
    assert frozen_copy.n_batches_seen_ == n_batches
    with pytest.raises(NotFittedError):
        MemorizationDiscrepancyScorer(
            FrozenEstimator(DiscrepancyAwareOnlineClassifier())).fit(digits.X_train)


@pytest.fixture(scope="module")
def pandas_classifier(digits):
    pd = pytest.importorskip("pandas")
    columns = [f"pixel_{i}" for i in range(64)]
    frame = pd.DataFrame(digits.X_train[:300], columns=columns)
    clf = DiscrepancyAwareOnlineClassifier(random_state=0).fit(frame, digits.y_train[:300])
    return clf, columns


@pytest.mark.parametrize("wrap", ["prefit", "frozen"])
def test_no_feature_name_warnings_over_a_pandas_fitted_classifier(digits, pandas_classifier,
                                                                  wrap):
    import warnings

    pd = pytest.importorskip("pandas")
    from sklearn.frozen import FrozenEstimator

    clf, columns = pandas_classifier
    frame = pd.DataFrame(digits.X_test, columns=columns)
    scorer = (MemorizationDiscrepancyScorer(clf, prefit=True) if wrap == "prefit"
              else MemorizationDiscrepancyScorer(FrozenEstimator(clf)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer.fit(frame)
        scores = scorer.transform(frame)
        scorer.predict(frame)
        scorer.fit(digits.X_train)  # fit with an array: the names are the classifier's
        assert_allclose(scorer.transform(frame), scores)
    assert list(scorer.feature_names_in_) == columns
    # A plain array warns once, as scikit-learn does, naming the scorer.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_allclose(scorer.transform(digits.X_test), scores)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "MemorizationDiscrepancyScorer" in messages[0]
    assert "does not have valid feature names" in messages[0]
    with pytest.raises(ValueError, match="feature names"):
        scorer.transform(frame.rename(columns={"pixel_0": "other"}))


def test_prefit_fit_refuses_other_feature_names(digits, pandas_classifier):
    pd = pytest.importorskip("pandas")
    clf, columns = pandas_classifier
    frame = pd.DataFrame(digits.X_train, columns=[f"f{i}" for i in range(64)])
    with pytest.raises(ValueError, match="feature names"):
        MemorizationDiscrepancyScorer(clf, prefit=True).fit(frame)


@pytest.mark.parametrize("threshold", [True, False])
def test_scorer_threshold_refuses_bools(digits, fitted_classifier, threshold):
    from sklearn.utils._param_validation import InvalidParameterError

    scorer = MemorizationDiscrepancyScorer(fitted_classifier, threshold=threshold,
                                           prefit=True)
    with pytest.raises(InvalidParameterError, match="'threshold' parameter"):
        scorer.fit(digits.X_train)
