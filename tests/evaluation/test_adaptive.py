"""Adaptive attacks and baselines (issue 13): what they read, what they keep, how they run."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.guards import CumulativeGuard, GuardChain, StepGuard
from dsc_sklearn.evaluation.attacks import (
    AccumulativePoisoningAttack,
    DiscrepancyAwarePoisoningAttack,
    GradientAscentAttack,
    GuardAwarePoisoningAttack,
    LabelFlipAttack,
    MultiBatchTriggerAttack,
    SlowPoisoningAttack,
    WindowAwarePoisoningAttack,
)
from dsc_sklearn.evaluation.attacks._victim import _trial_call, _UnrolledSGD, _Victim
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.evaluation.protocol import ADAPTIVE_ATTACKS, ATTACKS, run_stream_protocol

SMALL = dict(max_steps=3, burn_in_epochs=1, defence_warmup=2, stealth_slack=None)


def _fitted(pixel_digits, n_passes=3, **params):
    """Three passes of plain training on 1000 rows, then the guard on and four batches."""
    X, y = pixel_digits
    params = {"hidden_layer_sizes": (32,), "random_state": 0,
              "step_guard": StepGuard(warmup=3), **params}
    guard = params.pop("step_guard")
    clf = DiscrepancyAwareOnlineClassifier(step_guard=None, **params)
    for _ in range(n_passes):
        for start in range(0, 1000, 100):
            clf.partial_fit(X[start:start + 100], y[start:start + 100], classes=range(10))
    clf.set_params(step_guard=guard)
    for start in range(1000, 1400, 100):
        clf.partial_fit(X[start:start + 100], y[start:start + 100])
    return clf


def digits_batch(pixel_digits):
    X, y = pixel_digits
    return X[1680:1780], y[1680:1780]


def _parts(pixel_digits):
    X, y = pixel_digits
    return {"trigger": (X[1400:1490], y[1400:1490]), "val": (X[1490:1580], y[1490:1580]),
            "batch": (X[1580:1680], y[1580:1680])}


def test_the_unrolled_step_is_the_real_step(pixel_digits):
    """The parameters an undefended call leaves, predicted before the call."""
    for params in ({"step_guard": None}, {"clip_value": 0.01, "step_guard": None},
                   {"momentum": 0.0, "step_guard": None}):
        clf = _fitted(pixel_digits, **params)
        X, y = _parts(pixel_digits)["batch"]
        Xt, yt = _Victim.from_estimator(clf).data(X, y, "X")
        theta = _UnrolledSGD(clf, _Victim.from_estimator(clf)).run(Xt, yt)
        clf.partial_fit(X, y)
        for name, param in clf.module_.named_parameters():
            torch.testing.assert_close(theta[name], param, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("guard", [StepGuard(warmup=3), StepGuard(warmup=3, recent_size=50),
                                   GuardChain([StepGuard(warmup=3), StepGuard(warmup=3,
                                                                              margin=1.5)])])
def test_the_trial_call_is_the_real_call_and_leaves_the_victim_alone(pixel_digits, guard):
    """What the guards decide on the copy is what they decide on the victim."""
    clf = _fitted(pixel_digits, step_guard=guard, batch_size=50)
    X, y = _parts(pixel_digits)["batch"]
    X = np.clip(X + 0.3 * np.sign(np.random.RandomState(0).randn(*X.shape)), 0, 1)
    before = {name: p.detach().clone() for name, p in clf.module_.named_parameters()}
    trial, steps = _trial_call(clf, X.astype(np.float32), y)
    for name, param in clf.module_.named_parameters():
        assert torch.equal(param, before[name])
    assert len(steps) == 2 and all(steps)
    clf.partial_fit(X.astype(np.float32), y)
    records = list(clf.stream_log_)[-2:]
    for decisions, record in zip(steps, records):
        assert np.prod([d.scale for d in decisions]) == pytest.approx(record["step_scale"])
        assert decisions[0].statistic == pytest.approx(record["step_discrepancy"], rel=1e-5)
    for name, param in clf.module_.named_parameters():
        torch.testing.assert_close(dict(trial.module_.named_parameters())[name], param)


def test_guard_aware_poison_passes_the_guard_the_plain_attack_does_not(pixel_digits):
    parts = _parts(pixel_digits)
    (Xt, yt), (Xv, yv), (X, y) = parts["trigger"], parts["val"], parts["batch"]
    scales = {}
    for attack in (AccumulativePoisoningAttack(epsilon=0.3),
                   GuardAwarePoisoningAttack(epsilon=0.3)):
        clf = _fitted(pixel_digits)
        X_trigger = attack.craft_trigger(clf, Xt, yt, Xv, yv)
        X_fed, is_poison = attack.poison_batch(clf, X, y, X_trigger, yt, Xv, yv)
        clf.partial_fit(X_fed, y)
        scales[type(attack).__name__] = clf.stream_log_[-1]["step_scale"]
        assert np.abs(X_fed - X).max() <= 0.3 + 1e-6
    assert scales["AccumulativePoisoningAttack"] < 1.0  # the guard pulls the plain one back
    assert scales["GuardAwarePoisoningAttack"] == 1.0
    assert attack.last_steps_[0][0].scale == 1.0 and 0.0 < attack.last_scale_ <= 1.0


def test_guard_aware_is_the_plain_attack_without_a_guard(pixel_digits):
    parts = _parts(pixel_digits)
    (Xt, yt), (Xv, yv), (X, y) = parts["trigger"], parts["val"], parts["batch"]
    clf = _fitted(pixel_digits, step_guard=None)
    plain, aware = AccumulativePoisoningAttack(), GuardAwarePoisoningAttack()
    X_trigger = plain.craft_trigger(clf, Xt, yt, Xv, yv)
    np.testing.assert_array_equal(aware.craft_trigger(clf, Xt, yt, Xv, yv), X_trigger)
    np.testing.assert_array_equal(
        aware.poison_batch(clf, X, y, X_trigger, yt, Xv, yv)[0],
        plain.poison_batch(clf, X, y, X_trigger, yt, Xv, yv)[0])


def test_window_aware_trigger_batches_pass_both_checks_of_a_cumulative_guard(pixel_digits):
    parts = _parts(pixel_digits)
    (Xt, yt), (Xv, yv) = parts["trigger"], parts["val"]
    clf = _fitted(pixel_digits, step_guard=CumulativeGuard(k=2, warmup=3, min_windows=1))
    assert clf.step_guard_.cumulative_bound() < np.inf
    attack = WindowAwarePoisoningAttack(n_trigger_batches=4, random_state=0)
    for _ in range(attack.n_trigger_batches):  # more batches than the window's k = 2
        X_trigger = attack.craft_trigger(clf, Xt, yt, Xv, yv)
        decisions = attack.last_steps_[0]
        assert [d.guard for d in decisions] == ["CumulativeGuard", "CumulativeGuard.window"]
        assert all(d.scale == 1.0 for d in decisions)
        assert np.abs(X_trigger - Xt).max() <= 0.2 + 1e-6
        clf.partial_fit(X_trigger, yt)
        assert clf.stream_log_[-1]["step_scale"] == 1.0
    assert clf.step_guard_.n_pulled_back_ == 0


def test_window_aware_is_the_plain_trigger_without_a_guard(pixel_digits):
    parts = _parts(pixel_digits)
    (Xt, yt), (Xv, yv) = parts["trigger"], parts["val"]
    clf = _fitted(pixel_digits, step_guard=None)
    np.testing.assert_array_equal(
        WindowAwarePoisoningAttack().craft_trigger(clf, Xt, yt, Xv, yv),
        AccumulativePoisoningAttack().craft_trigger(clf, Xt, yt, Xv, yv))


@pytest.mark.parametrize("granularity", ["sample", "batch"])
def test_discrepancy_aware_poison_stays_under_the_gate(pixel_digits, granularity):
    parts = _parts(pixel_digits)
    (Xt, yt), (Xv, yv), (X, y) = parts["trigger"], parts["val"], parts["batch"]
    clf = DiscrepancyAwareOnlineClassifier(
        hidden_layer_sizes=(32,), random_state=0, step_guard=None, correction="dsc",
        granularity=granularity, snapshot_every=None, history_size=1, threshold=1e6)
    for n_pass in range(3):
        for start in range(0, 1000, 100):
            clf.partial_fit(*(part[start:start + 100] for part in pixel_digits), classes=range(10))
        if n_pass == 0:
            clf.take_snapshot()
    threshold = [1e6]  # a schedule that reads this cell: set below, once the gate is on
    clf.set_params(threshold=lambda step: threshold[0])
    clf.partial_fit(*digits_batch(pixel_digits))  # the new threshold takes over at the next call
    plain = AccumulativePoisoningAttack()
    X_trigger = plain.craft_trigger(clf, Xt, yt, Xv, yv)
    X_plain = plain.poison_batch(clf, X, y, X_trigger, yt, Xv, yv)[0]
    clean, poisoned = clf.memorization_discrepancy(X), clf.memorization_discrepancy(X_plain)
    if granularity == "sample":  # between the clean rows' discrepancy and the poison's
        threshold[0] = float(np.median((clean + poisoned) / 2))
    else:  # the clean batch passes, just
        threshold[0] = float(clean.mean() / 0.9 * 1.001)
    attack = DiscrepancyAwarePoisoningAttack()
    X_fed, is_poison = attack.poison_batch(clf, X, y, X_trigger, yt, Xv, yv)
    discrepancy = clf.memorization_discrepancy(X_fed)
    if granularity == "batch":
        assert discrepancy.mean() <= 0.9 * clf.threshold_
        scale, = set(attack.last_scale_)  # one scale for the whole batch
        assert (scale == 1.0) == (poisoned.mean() <= 0.9 * clf.threshold_)
    else:
        assert (poisoned > clf.threshold_).any()
        assert (discrepancy[is_poison] <= 0.9 * clf.threshold_).all()
    assert is_poison.any() == (np.abs(X_fed - X).max() > 0)
    assert granularity == "batch" or is_poison.any()
    # Without a gate there is nothing to stay under: the plain attack.
    clf = _fitted(pixel_digits, step_guard=None)
    np.testing.assert_array_equal(
        DiscrepancyAwarePoisoningAttack().poison_batch(clf, X, y, X_trigger, yt, Xv, yv)[0],
        plain.poison_batch(clf, X, y, X_trigger, yt, Xv, yv)[0])


def test_gradient_ascent_raises_the_validation_loss_after_the_step(pixel_digits):
    parts = _parts(pixel_digits)
    (Xv, yv), (X, y) = parts["val"], parts["batch"]
    clf = _fitted(pixel_digits, step_guard=None)
    attack = GradientAscentAttack(epsilon=0.1, poison_fraction=0.5, random_state=0)
    X_fed, is_poison = attack.poison_batch(clf, X, y, None, None, Xv, yv)
    assert is_poison.sum() == 50 and np.array_equal(X_fed[~is_poison], X[~is_poison])
    assert (attack.loss_after_step(clf, X_fed, y, Xv, yv)
            > attack.loss_after_step(clf, X, y, Xv, yv))
    with pytest.raises(ValueError, match="validation batch"):
        attack.poison_batch(clf, X, y)


def test_label_flips_change_labels_only():
    from types import SimpleNamespace

    victim = SimpleNamespace(classes_=np.array(["a", "b", "c"]))
    X, y = np.ones((20, 3)), np.array(["a"] * 20)
    X_fed, y_fed, is_poison = LabelFlipAttack(random_state=0).poison_batch(victim, X, y)
    assert is_poison.sum() == 6 and set(y_fed[is_poison]) <= {"b", "c"}
    assert (y_fed[~is_poison] == "a").all() and np.array_equal(X_fed, X)


@pytest.mark.parametrize("attack, params, message", [
    (GuardAwarePoisoningAttack, {"safety": 0.0}, "safety"),
    (GuardAwarePoisoningAttack, {"max_halvings": -1}, "max_halvings"),
    (MultiBatchTriggerAttack, {"n_trigger_batches": 0}, "n_trigger_batches"),
    (SlowPoisoningAttack, {"horizon": 0}, "horizon"),
    (DiscrepancyAwarePoisoningAttack, {"safety": 2.0}, "safety"),
    (GradientAscentAttack, {"epsilon": -1.0}, "epsilon"),
    (LabelFlipAttack, {"flip_fraction": 0.0}, "flip_fraction"),
])
def test_bad_parameters_are_refused(pixel_digits, attack, params, message):
    parts = _parts(pixel_digits)
    (Xt, yt), (Xv, yv), (X, y) = parts["trigger"], parts["val"], parts["batch"]
    clf = _fitted(pixel_digits, n_passes=1)
    attack = attack(**params)
    with pytest.raises(ValueError, match=message):
        attack.poison_batch(clf, X, y, Xt, yt, Xv, yv)
    assert clone(attack).get_params() == attack.get_params()


# ------------------------------------------------------------ the protocol

@pytest.fixture(scope="module")
def data():
    return load_stream_dataset("digits", random_state=0)


def _defence(**params):
    return DiscrepancyAwareOnlineClassifier(hidden_layer_sizes=(32,), input_bounds=(0.0, 1.0),
                                            **params)


def test_every_named_attack_is_known():
    assert set(ADAPTIVE_ATTACKS) <= set(ATTACKS)


@pytest.mark.parametrize("attack", ADAPTIVE_ATTACKS)
def test_every_adaptive_attack_runs_in_the_protocol(data, attack):
    """A smoke run against the library's defaults (the step guard)."""
    params = {"slow": {"horizon": 2}, "multi_trigger": {"n_trigger_batches": 2},
              "window_aware": {"n_trigger_batches": 2}}.get(attack)
    result = run_stream_protocol(_defence(), data, attack=attack, random_state=0,
                                 attack_params=params, **SMALL)
    n_steps = 2 if attack == "slow" else 3
    n_trigger = 2 if attack in ("multi_trigger", "window_aware") else 1
    assert result.n_accumulative_steps == n_steps
    assert result.n_trigger_batches == n_trigger
    assert len(result.accuracy_curve) == n_steps + n_trigger
    assert result.accuracy_trigger == result.accuracy_curve[-1]
    for key in ("scaled_fraction_attack", "scaled_fraction_poison", "trigger_scale"):
        assert 0.0 <= result[key] <= 1.0, key


def test_label_flips_are_fed_and_counted_as_poison(data):
    result = run_stream_protocol(_defence(step_guard=None, correction="none"), data,
                                 attack="label_flip", random_state=0, **SMALL)
    assert result.detection["true_positive"]["denominator"] == 3 * 30
    assert np.isnan(result.scaled_fraction_attack)  # no guard
    assert result.auc_loss_sample > 0.5  # flipped labels cost loss


def test_the_accumulative_attack_is_unchanged_by_the_new_protocol_options(data):
    """One trigger batch and max_steps: the same as passing the attack object."""
    by_name = run_stream_protocol(_defence(), data, attack="accumulative", random_state=3,
                                  **SMALL)
    assert by_name.n_trigger_batches == 1
    assert len(by_name.accuracy_curve) == 4
    again = run_stream_protocol(_defence(), data, attack="accumulative", random_state=3,
                                attack_params={}, **SMALL)
    np.testing.assert_array_equal(by_name.accuracy_curve, again.accuracy_curve)


def test_a_trial_call_leaves_no_trace_outside_the_copy(pixel_digits, caplog):
    # Dropout draws from torch's global generator; a large, harmful step alarms.
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                 torch.nn.Dropout(0.5), torch.nn.Linear(32, 10))
    clf = _fitted(pixel_digits, module=module).set_params(lr=5.0)
    X, y = _parts(pixel_digits)["batch"]
    rng_state = torch.get_rng_state()
    with caplog.at_level("WARNING", logger="dsc_sklearn"):
        trial, steps = _trial_call(clf, X, (y + 1) % 10)
    assert steps[0][0].scale < 1.0 and trial.alarms_  # the copy pulled back and alarmed
    assert not caplog.records  # held back
    assert torch.equal(torch.get_rng_state(), rng_state)
