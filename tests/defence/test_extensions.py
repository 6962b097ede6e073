"""Corrections and threshold policies as extension points: names, instances, hooks."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence import correction as correction_module
from dsc_sklearn.defence.correction import (
    CORRECTIONS,
    BaseCorrection,
    CorrectionContext,
    DropFlagged,
)
from dsc_sklearn.defence.thresholds import (
    THRESHOLDS,
    AutoThreshold,
    FixedThreshold,
    ThresholdPolicy,
)

N_FEATURES, N_CLASSES, BATCH = 6, 3, 20


class MarkedCorrection(BaseCorrection):
    """Trains on the batch as it arrived and logs ``steps`` correction steps."""

    def __init__(self, steps=7):
        self.steps = steps

    def correct(self, context, step):
        assert isinstance(context, CorrectionContext)
        step.n_correction_steps = self.steps


class ZeroThreshold(ThresholdPolicy):
    """A threshold of 0: every unit with a positive statistic is flagged."""

    def current(self, device=None):
        return torch.zeros((), device=device)


class FlagEverything(FixedThreshold):
    """Its value would flag nothing; its ``flag`` flags every unit."""

    def flag(self, statistic):
        return torch.ones_like(statistic, dtype=torch.bool)


def _data(n_rows=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n_rows, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] * N_CLASSES).astype(np.int64).clip(0, N_CLASSES - 1)
    return X, y


def _classifier(**params):
    params = dict(dict(hidden_layer_sizes=(8,), batch_size=BATCH, snapshot_every=1,
                       step_guard=None, random_state=0), **params)
    return DiscrepancyAwareOnlineClassifier(**params)


def _n_correction_steps(clf):
    return [record["n_correction_steps"] for record in clf.stream_log_]


# ------------------------------------------------------------ registries

def test_a_correction_registered_after_import_is_accepted(monkeypatch):
    X, y = _data()
    with pytest.raises(InvalidParameterError, match="'correction' parameter"):
        _classifier(correction="marked").fit(X, y)
    monkeypatch.setitem(CORRECTIONS, "marked", MarkedCorrection)
    clf = _classifier(correction="marked").fit(X, y)
    assert type(clf.net_.correction_) is MarkedCorrection
    assert set(_n_correction_steps(clf)) == {7}


def test_a_threshold_registered_after_import_is_accepted(monkeypatch):
    X, y = _data()
    with pytest.raises(InvalidParameterError, match="'threshold' parameter"):
        _classifier(correction="drop", threshold="zero").fit(X, y)
    monkeypatch.setitem(THRESHOLDS, "zero", ZeroThreshold)
    clf = _classifier(correction="drop", threshold="zero",
                      loss_threshold="zero").fit(X, y)
    assert type(clf.net_.threshold_policy_) is ZeroThreshold
    assert type(clf.net_.loss_threshold_policy_) is ZeroThreshold
    assert clf.threshold_ == 0.0
    assert clf.n_flagged_ > len(X) // 2


def test_a_registry_entry_that_builds_something_else_is_refused(monkeypatch):
    monkeypatch.setitem(CORRECTIONS, "wrong", dict)
    monkeypatch.setitem(THRESHOLDS, "wrong", dict)
    X, y = _data()
    with pytest.raises(TypeError, match=r"CORRECTIONS\['wrong'\] built a dict"):
        _classifier(correction="wrong").fit(X, y)
    with pytest.raises(TypeError, match=r"THRESHOLDS\['wrong'\] built a dict"):
        _classifier(correction="drop", threshold="wrong").fit(X, y)


def test_an_unknown_name_is_refused_with_the_registered_ones():
    X, y = _data()
    with pytest.raises(InvalidParameterError, match=(
            r"'correction' parameter .* must be a str among \{'dsc', 'none', 'drop', "
            r"'descent', 'adversarial'\} or an instance of '.*BaseCorrection'")):
        _classifier(correction="clip").fit(X, y)


# ------------------------------------------------------------ instances

@pytest.mark.parametrize("param, value, component", [
    ("correction", MarkedCorrection(steps=3), "correction_"),
    ("threshold", AutoThreshold(quantile=0.9, warmup=2), "threshold_policy_"),
])
def test_an_instance_is_accepted_cloned_and_left_unchanged(param, value, component):
    X, y = _data()
    clf = _classifier(**dict({"correction": "drop"}, **{param: value})).fit(X, y)
    built = getattr(clf.net_, component)
    assert built is not value and type(built) is type(value)
    assert built.get_params() == value.get_params()
    assert getattr(clf, param) is value
    if param == "threshold":
        assert value.n_updates_ == 0 and built.n_updates_ == len(X) // BATCH
    copy = clone(clf)
    assert getattr(copy, param) is not value
    assert getattr(copy, param).get_params() == value.get_params()


def test_a_fitted_estimator_with_instances_pickles_and_goes_on():
    X, y = _data()
    clf = _classifier(correction=MarkedCorrection(steps=5),
                      threshold=AutoThreshold(warmup=2)).fit(X[:100], y[:100])
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert restored.net_.threshold_policy_.state_dict()["n_updates"] == 5
    for estimator in (clf, restored):
        estimator.partial_fit(X[100:], y[100:])
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert _n_correction_steps(restored) == _n_correction_steps(clf) == [5] * 10


def test_instances_and_their_parameters_in_a_grid_search():
    X, y = _data(240)
    search = GridSearchCV(
        _classifier(correction="drop"),
        [{"correction": [MarkedCorrection(), "drop"]},
         {"correction": [MarkedCorrection()], "correction__steps": [2, 4]},
         {"threshold": [AutoThreshold()], "threshold__quantile": [0.5, 0.9]}],
        cv=2,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 6
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    assert type(best.net_.correction_) in (MarkedCorrection, DropFlagged)


def test_a_nested_parameter_reaches_the_built_policy():
    # A policy's state derives from its configuration (the window's length):
    # a deep copy of the parameter would keep the old window.
    X, y = _data()
    clf = _classifier(correction="drop", threshold=AutoThreshold(window=20, warmup=1))
    clf.set_params(threshold__window=3).fit(X, y)
    assert len(clf.net_.threshold_policy_.state_dict()["window"]) == 3


# ------------------------------------------------------------ hooks

@pytest.mark.parametrize("granularity", ["sample", "batch"])
def test_overriding_flag_changes_the_flags(granularity):
    X, y = _data()
    plain = _classifier(correction="drop", granularity=granularity,
                        threshold=FixedThreshold(1e9)).fit(X, y)
    assert plain.n_flagged_ == 0
    flagging = _classifier(correction="drop", granularity=granularity,
                           threshold=FlagEverything(1e9)).fit(X, y)
    assert flagging.n_flagged_ == len(X)
    assert all(record["threshold"] == 1e9 for record in flagging.stream_log_)
    assert all(np.isnan(record["loss"]) for record in flagging.stream_log_)  # all dropped


def test_dsc_re_applies_the_policy_flag_while_correcting():
    X, y = _data()
    clf = _classifier(correction="dsc", threshold=FlagEverything(1e9),
                      max_correction_steps=3).fit(X, y)
    # Never released: every batch takes every step.
    assert set(_n_correction_steps(clf)) == {3}
    released = _classifier(correction="dsc", threshold=FixedThreshold(1e9)).fit(X, y)
    assert set(_n_correction_steps(released)) == {0}


def test_the_context_carries_the_estimator_budget():
    seen = []

    class Recording(BaseCorrection):
        def correct(self, context, step):
            seen.append(context)

    X, y = _data(40)
    clf = _classifier(correction=Recording(), epsilon=0.3, step_size=0.01,
                      max_correction_steps=4, input_bounds=(0.0, 1.0)).fit(X, y)
    context = seen[-1]
    assert context.budget == dict(epsilon=0.3, step_size=0.01, max_steps=4,
                                  input_bounds=(0.0, 1.0))
    assert context.module is clf.module_ and context.generator is clf.net_.generator_
    flags = context.flag_rows(torch.as_tensor(X[:5]), torch.as_tensor(y[:5]),
                              clf.module_(torch.as_tensor(X[:5])))
    assert flags.shape == (5,) and flags.dtype == torch.bool


# ------------------------------------------------------------ the old name

def test_the_old_correction_base_is_deprecated_and_still_receives_the_net():
    with pytest.warns(FutureWarning, match="BaseCorrection"):
        legacy_base = correction_module.Correction
    received = []

    class Legacy(legacy_base):
        def correct(self, net, step):
            received.append(net)
            step.n_correction_steps = len(self.options(net))

    X, y = _data(40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        clf = _classifier(correction=Legacy()).fit(X, y)
    assert received and all(net is clf.net_ for net in received)
    assert set(_n_correction_steps(clf)) == {4}


def test_set_params_with_an_equal_policy_keeps_the_calibration():
    # As for any scikit-learn parameter, an equal value is no change; a
    # policy of another configuration is a new object that keeps what the
    # old one learned (retuning, issue 19).
    X, y = _data()
    clf = _classifier(correction="drop", threshold=AutoThreshold(warmup=2)).fit(X, y)
    calibrated = clf.net_.threshold_policy_
    clf.set_params(threshold=AutoThreshold(warmup=2)).partial_fit(X[:BATCH], y[:BATCH])
    assert clf.net_.threshold_policy_ is calibrated
    assert calibrated.n_updates_ == len(X) // BATCH + 1
    n_updates = calibrated.n_updates_
    clf.set_params(threshold=AutoThreshold(warmup=3)).partial_fit(X[:BATCH], y[:BATCH])
    assert clf.net_.threshold_policy_ is not calibrated
    assert clf.net_.threshold_policy_.warmup == 3
    assert clf.net_.threshold_policy_.n_updates_ == n_updates + 1
