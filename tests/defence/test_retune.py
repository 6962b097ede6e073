"""Retuning mid-stream keeps what the step guard and the threshold policies learned."""

import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.guards import CumulativeGuard, StepGuard
from dsc_sklearn.defence.thresholds import AutoThreshold


@pytest.fixture(scope="module")
def data(digits):
    return digits.X_train[:1300], digits.y_train[:1300], digits.X_test, digits.y_test


def streamed(data, n_batches=10, **params):
    X, y = data[:2]
    clf = DiscrepancyAwareOnlineClassifier(random_state=0, **params)
    for start in range(0, 100 * n_batches, 100):
        clf.partial_fit(X[start:start + 100], y[start:start + 100], classes=np.unique(y))
    return clf


def guard_state(clf):
    return clf.net_.step_guard_.state_dict()


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def next_call(clf, data, hostile=False):
    X, y = data[:2]
    X = X[1000:1100].copy()
    if hostile:
        X[0] = 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped: no warning
        return clf.partial_fit(X, y[1000:1100])


def test_retuning_the_margin_keeps_the_probe_window_and_counters(data, caplog):
    # On main, set_params(step_guard__margin=3.0) emptied the probe and the
    # window and restarted the warm-up: a row of 1e6 then took the model
    # from 0.61 to 0.10.
    clf = streamed(data, step_guard=StepGuard())
    before, score = guard_state(clf), clf.score(*data[2:])
    old_guard = clf.net_.step_guard_
    clf.set_params(step_guard__margin=3.0)
    with caplog.at_level(logging.INFO, logger="dsc_sklearn"):
        next_call(clf, data, hostile=True)
    guard = clf.net_.step_guard_
    assert guard is not old_guard and guard.margin == 3.0
    assert "keeps what it had learned" in caplog.text
    after = guard.state_dict()
    assert after["n_steps"] == before["n_steps"] + 1
    assert len(after["probe"]["X"]) == len(before["probe"]["X"]) == 256
    assert after["window"][:len(before["window"])] == before["window"]
    assert clf.score(*data[2:]) > score - 0.05


@pytest.mark.parametrize("replacement", [StepGuard(), "auto"])
def test_an_equal_guard_keeps_everything(data, replacement):
    clf = streamed(data, step_guard="auto" if replacement != "auto" else StepGuard())
    before = guard_state(clf)
    clf.set_params(step_guard=replacement)
    clf.net_.configure(**clf._live_params())
    assert_same_state(guard_state(clf), before)


def test_a_smaller_probe_and_window_keep_what_fits_and_say_so(data):
    clf = streamed(data, step_guard=StepGuard(recent_size=64))
    before = guard_state(clf)
    clf.set_params(step_guard__probe_size=100, step_guard__window=4,
                   step_guard__recent_size=32)
    with pytest.warns(UserWarning, match=r"156 of the 256 probe rows.*32 of the 64 recent "
                                         r"rows.*5 oldest step discrepancies"):
        clf.net_.configure(**clf._live_params())
    after = guard_state(clf)
    assert torch.equal(after["probe"]["X"], before["probe"]["X"][:100])
    assert after["n_seen"] == before["n_seen"]  # the reservoir's count goes on
    # The recent rows keep the newest 32, oldest first.
    n_seen = before["n_seen_recent"]
    newest = [(n_seen - 32 + i) % 64 for i in range(32)]
    assert torch.equal(after["recent"]["X"], before["recent"]["X"][newest])
    assert after["window"] == before["window"][-4:]
    assert after["n_steps"] == before["n_steps"]
    next_call(clf, data)
    assert len(clf.net_.step_guard_.probe_) == 100


def test_a_larger_reservoir_fills_its_new_slots(data):
    clf = streamed(data, step_guard=StepGuard(probe_size=64))
    clf.set_params(step_guard__probe_size=128)
    clf.net_.configure(**clf._live_params())
    assert clf.net_.step_guard_.n_seen_ == 64
    next_call(clf, data)
    probe = clf.net_.step_guard_.probe_
    assert len(probe) == 128 and bool((probe.X.abs().sum(dim=1) > 0).all())


def test_another_kind_of_guard_starts_anew_with_a_warning(data):
    class OtherGuard(StepGuard):
        pass

    clf = streamed(data, step_guard=StepGuard())
    clf.set_params(step_guard=OtherGuard())
    with pytest.warns(UserWarning, match="another kind than the StepGuard.*starts anew"):
        clf.net_.configure(**clf._live_params())
    assert clf.net_.step_guard_.n_steps_ == 0


def test_another_probe_kind_drops_the_probe_only(data):
    clf = streamed(data, step_guard=StepGuard())
    before = guard_state(clf)
    clf.set_params(step_guard__probe="recent")
    with pytest.warns(UserWarning, match="256 probe rows .the probe is now 'recent'"):
        clf.net_.configure(**clf._live_params())
    after = guard_state(clf)
    assert len(after["probe"]["X"]) == 0 and after["window"] == before["window"]


def test_nested_parameters_of_auto_are_refused_with_the_fix():
    # On main: AttributeError: 'str' object has no attribute 'set_params'.
    clf = DiscrepancyAwareOnlineClassifier()
    with pytest.raises(ValueError, match=r"step_guard='auto' has no parameters.*"
                                         r"step_guard=StepGuard\(margin=\.\.\.\)"):
        clf.set_params(step_guard__margin=3)
    with pytest.raises(ValueError, match="step_guard=None has no parameters"):
        DiscrepancyAwareOnlineClassifier(step_guard=None).set_params(step_guard__margin=3)
    # Passing the guard and its parameter in one call works.
    clf.set_params(step_guard=StepGuard(), step_guard__margin=3.0)
    assert clf.step_guard.margin == 3.0


def test_a_threshold_policy_of_the_same_kind_keeps_its_calibration(data):
    clf = streamed(data, n_batches=12, correction="dsc")
    policy = clf.net_.threshold_policy_
    window = [values.clone() for values in policy._history]
    clf.set_params(threshold=AutoThreshold(quantile=0.5))
    next_call(clf, data)
    new = clf.net_.threshold_policy_
    assert new is not policy and new.n_updates_ == 13
    assert len(new._history) == len(window) + 1
    for old, kept in zip(window, new._history):
        assert torch.equal(old, kept)
    assert np.isfinite(clf.threshold_)


def test_a_shorter_calibration_window_says_what_it_dropped(data):
    clf = streamed(data, n_batches=12, correction="dsc")
    clf.set_params(threshold=AutoThreshold(window=5))
    with pytest.warns(UserWarning, match="the 7 oldest batches of the calibration window"):
        clf.net_.configure(**clf._live_params())
    assert len(clf.net_.threshold_policy_._history) == 5


def test_a_fixed_threshold_after_a_calibrated_one_warns(data):
    clf = streamed(data, n_batches=12, correction="dsc")
    clf.set_params(threshold=0.5)
    with pytest.warns(UserWarning, match="FixedThreshold, another kind than the "
                                         "AutoThreshold.*starts anew"):
        clf.net_.configure(**clf._live_params())


def test_a_failed_call_after_retuning_restores_the_old_guard(data):
    clf = streamed(data, step_guard=StepGuard())
    guard, before = clf.net_.step_guard_, guard_state(clf)
    clf.set_params(step_guard__margin=3.0)
    X, y = data[:2]
    bad = X[1000:1100].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError):
        clf.partial_fit(bad, y[1000:1100])
    assert clf.net_.step_guard_ is guard
    assert_same_state(guard.state_dict(), before)


def test_replacing_a_policy_that_only_counts_says_nothing(data):
    from dsc_sklearn.defence.thresholds import linear_schedule

    clf = streamed(data, n_batches=3, correction="dsc", threshold=0.5)
    clf.set_params(threshold=linear_schedule(0.5, 0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.net_.configure(**clf._live_params())


@pytest.mark.parametrize("change", [{"step_guard__k": 2}, {"step_guard__probe_size": 32}])
def test_retuning_a_cumulative_guard_restarts_its_ring_and_the_stream_goes_on(change):
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    clf = DiscrepancyAwareOnlineClassifier(step_guard=CumulativeGuard(k=3), random_state=0)
    for start in range(0, 800, 100):
        clf.partial_fit(X[start:start + 100], y[start:start + 100], classes=range(10))
    n_steps = clf.step_guard_.n_steps_
    with pytest.warns(UserWarning, match="past models"):
        clf.set_params(**change).partial_fit(X[800:900], y[800:900])
    clf.partial_fit(X[900:1000], y[900:1000])
    assert clf.step_guard_.n_steps_ == n_steps + 2
    assert len(clf.step_guard_.ring_) <= clf.step_guard_.k + 1
