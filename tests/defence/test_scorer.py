"""Tests for MemorizationDiscrepancyScorer, Pipeline and GridSearchCV use."""

import pickle

import numpy as np
import pytest
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
