"""``sample_weight`` in ``fit`` and ``partial_fit`` (issue 14, item 7).

The loss of a batch is the weighted mean of the per-sample cross-entropy,
so integer weights train as repeated rows within a batch and a weight of 0
as a removed row; ``fit`` leaves zero-weight rows out. The threshold
policies calibrate on weighted quantiles and the step guard's probe keeps
each row's weight. scikit-learn's own sample-weight checks run in
``test_common.py``.
"""

import copy
import math

import numpy as np
import pytest
import torch

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._persistence import estimator_state
from dsc_sklearn.defence.guards import StepGuard
from dsc_sklearn.defence.thresholds import AutoThreshold, weighted_quantile

CLASSES = np.arange(10)
SMALL = dict(hidden_layer_sizes=(16,), random_state=0)


def stream(clf, X, y, weights=None, batch_size=100):
    for start in range(0, len(X), batch_size):
        chunk = slice(start, start + batch_size)
        clf.partial_fit(X[chunk], y[chunk], classes=CLASSES,
                        sample_weight=None if weights is None else weights[chunk])
    return clf


@pytest.mark.parametrize("params", [
    dict(correction="none", step_guard=None),
    dict(),
    dict(correction="dsc", threshold=1e9),
    dict(correction="drop", threshold=1e9),
], ids=["plain", "default", "dsc", "drop"])
def test_integer_weights_train_as_repeated_rows_within_a_batch(digits, params):
    rng = np.random.default_rng(0)
    X, y = digits.X_train[:40], digits.y_train[:40]
    weights = rng.integers(0, 4, size=40)
    weights[0] = 2
    weighted = DiscrepancyAwareOnlineClassifier(**SMALL, batch_size=200, **params)
    repeated = DiscrepancyAwareOnlineClassifier(**SMALL, batch_size=200, **params)
    for _ in range(3):  # one batch per call, whatever the repetitions
        weighted.partial_fit(X, y, classes=CLASSES, sample_weight=weights)
        repeated.partial_fit(X.repeat(weights, axis=0), y.repeat(weights), classes=CLASSES)
    np.testing.assert_allclose(weighted.predict_proba(digits.X_test),
                               repeated.predict_proba(digits.X_test), rtol=1e-5, atol=1e-6)
    losses = [record["loss"] for record in weighted.stream_log_]
    np.testing.assert_allclose(losses, [r["loss"] for r in repeated.stream_log_], rtol=1e-5)


def test_unit_weights_train_as_no_weights(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    unweighted = stream(DiscrepancyAwareOnlineClassifier(**SMALL), X, y)
    ones = stream(DiscrepancyAwareOnlineClassifier(**SMALL), X, y, np.ones(len(y)))
    np.testing.assert_allclose(unweighted.predict_proba(digits.X_test),
                               ones.predict_proba(digits.X_test), rtol=1e-5, atol=1e-6)


def test_weights_are_relative_within_a_call(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    a = stream(DiscrepancyAwareOnlineClassifier(**SMALL), X, y, weights)
    b = stream(DiscrepancyAwareOnlineClassifier(**SMALL), X, y, weights * 1e6)
    np.testing.assert_allclose(a.predict_proba(digits.X_test), b.predict_proba(digits.X_test),
                               rtol=1e-5, atol=1e-6)


def test_fit_leaves_zero_weight_rows_out(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    weights = np.ones(len(y))
    weights[::3] = 0.0
    weights[y == 9] = 0.0  # a class only zero-weight rows carry
    weighted = DiscrepancyAwareOnlineClassifier(**SMALL).fit(X, y, sample_weight=weights)
    kept = weights > 0
    removed = DiscrepancyAwareOnlineClassifier(**SMALL).fit(X[kept], y[kept])
    np.testing.assert_array_equal(weighted.classes_, np.arange(9))
    assert weighted.n_samples_seen_ == kept.sum()
    np.testing.assert_allclose(weighted.predict_proba(digits.X_test),
                               removed.predict_proba(digits.X_test), rtol=1e-5, atol=1e-6)


def test_a_batch_of_zero_weight_takes_no_step(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    clf = stream(DiscrepancyAwareOnlineClassifier(**SMALL, correction="none", step_guard=None),
                 X[:200], y[:200])
    weights = np.ones(200)
    weights[:100] = 0.0  # the call's first batch weighs nothing
    module = copy.deepcopy(clf.module_.state_dict())
    twin = copy.deepcopy(clf)
    clf.partial_fit(X[100:300], y[100:300], sample_weight=weights)
    twin.partial_fit(X[200:300], y[200:300])
    first, second = list(clf.stream_log_)[-2:]
    assert math.isnan(first["loss"]) and math.isfinite(second["loss"])
    assert clf.n_batches_seen_ == 4 and clf.n_samples_seen_ == 400
    # Only the second batch stepped: as the twin that saw it alone.
    np.testing.assert_allclose(clf.predict_proba(digits.X_test),
                               twin.predict_proba(digits.X_test), rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(module[name], tensor)
               for name, tensor in clf.module_.state_dict().items())


@pytest.mark.parametrize("weights, message", [
    (lambda n: -np.ones(n), "Negative values in data passed to `sample_weight`"),
    (lambda n: np.zeros(n), "Sample weights must contain at least one non-zero number"),
    (lambda n: np.ones(n + 1), r"sample_weight.shape == \(101,\), expected \(100,\)"),
    (lambda n: np.full(n, np.nan), "Input sample_weight contains NaN"),
    (lambda n: np.ones((n, 2)), "Sample weights must be 1D array or scalar"),
])
def test_bad_weights_are_refused_and_change_nothing(digits, weights, message):
    clf = stream(DiscrepancyAwareOnlineClassifier(**SMALL), digits.X_train[:200],
                 digits.y_train[:200])
    before = copy.deepcopy(estimator_state(clf))
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(digits.X_train[200:300], digits.y_train[200:300],
                        sample_weight=weights(100))
    after = estimator_state(clf)
    assert after["counters"] == before["counters"]
    for name, tensor in before["net"]["module"].items():
        assert torch.equal(tensor, after["net"]["module"][name])
    with pytest.raises(ValueError, match=message):
        DiscrepancyAwareOnlineClassifier(**SMALL).partial_fit(
            digits.X_train[:100], digits.y_train[:100], classes=CLASSES,
            sample_weight=weights(100))


# ---------------------------------------------------------------- policies

def test_weighted_quantile_matches_torch_quantile_for_equal_weights():
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.lognormal(size=301).astype(np.float32))
    for quantile in (0.0, 0.3, 0.5, 0.99, 1.0):
        for scale in (1.0, 7.0):
            assert torch.equal(weighted_quantile(values, torch.full((301,), scale), quantile),
                               torch.quantile(values, quantile))


def test_weighted_quantile_is_close_to_the_quantile_of_repeated_values():
    rng = np.random.default_rng(1)
    values = torch.from_numpy(rng.normal(size=400).astype(np.float32))
    weights = torch.from_numpy(rng.integers(0, 5, size=400).astype(np.float32))
    repeated = values.repeat_interleave(weights.long())
    for quantile in (0.1, 0.5, 0.9, 0.99):
        assert abs(float(weighted_quantile(values, weights, quantile))
                   - float(torch.quantile(repeated, quantile))) < 0.05
    assert math.isnan(float(weighted_quantile(values, torch.zeros(400), 0.5)))


def test_auto_threshold_counts_a_zero_weight_unit_for_nothing():
    policy, reference = AutoThreshold(warmup=0, quantile=1.0), AutoThreshold(warmup=0,
                                                                            quantile=1.0)
    values = torch.tensor([0.1, 0.2, 50.0])
    policy.update(values, torch.zeros(3, dtype=torch.bool),
                  sample_weight=torch.tensor([1.0, 1.0, 0.0]))
    reference.update(values[:2], torch.zeros(2, dtype=torch.bool))
    assert torch.equal(policy.current(), reference.current())
    # Once the weighted batch leaves the window, the unweighted path again.
    unweighted = AutoThreshold(warmup=0, window=2)
    policy = AutoThreshold(warmup=0, window=2)
    policy.update(values, torch.zeros(3, dtype=torch.bool), sample_weight=torch.ones(3) * 2)
    for _ in range(2):
        batch = torch.rand(10)
        policy.update(batch, torch.zeros(10, dtype=torch.bool))
        unweighted.update(batch, torch.zeros(10, dtype=torch.bool))
    assert torch.equal(policy.current(), unweighted.current())
    assert "weights" not in policy.state_dict()


def test_auto_threshold_weights_survive_a_round_trip_and_are_checked():
    policy = AutoThreshold(warmup=0)
    policy.update(torch.rand(5), torch.zeros(5, dtype=torch.bool))
    policy.update(torch.rand(4), torch.zeros(4, dtype=torch.bool),
                  sample_weight=torch.tensor([1.0, 0.0, 2.0, 3.0]))
    state = policy.state_dict()
    assert state["weights"][0] is None and state["weights"][1].shape == (4,)
    restored = AutoThreshold(warmup=0)
    restored.load_state_dict(state)
    assert torch.equal(restored.current(), policy.current())
    for forged in ([None], [None, torch.tensor([1.0, -1.0, 1.0, 1.0])],
                   [None, torch.ones(3)], [None, torch.ones(4, dtype=torch.float64)]):
        with pytest.raises(ValueError, match="holds weights"):
            AutoThreshold(warmup=0).load_state_dict({**state, "weights": forged})


def test_a_weighted_stream_checkpoints_and_continues_exactly(digits, tmp_path):
    X, y = digits.X_train[:600], digits.y_train[:600]
    weights = np.random.default_rng(2).integers(0, 4, size=len(y)).astype(float)
    params = dict(SMALL, correction="dsc", step_guard=StepGuard(recent_size=16))
    clf = stream(DiscrepancyAwareOnlineClassifier(**params), X[:400], y[:400], weights[:400])
    assert "weights" in clf.net_.threshold_policy_.state_dict()
    path = tmp_path / "weighted.pt"
    clf.save_params(path)
    restored = DiscrepancyAwareOnlineClassifier(**params).load_params(path)
    for estimator in (clf, restored):
        stream(estimator, X[400:], y[400:], weights[400:])
    np.testing.assert_allclose(clf.predict_proba(digits.X_test),
                               restored.predict_proba(digits.X_test), rtol=0, atol=1e-6)


# ------------------------------------------------------------ step guard

def test_the_probe_keeps_weights_and_never_a_zero_weight_row(digits):
    X, y = digits.X_train[:400], digits.y_train[:400]
    weights = np.ones(len(y))
    weights[::2] = 0.0
    weights[1::4] = 3.0
    guard = StepGuard(probe="recent", probe_size=64, recent_size=32)
    clf = stream(DiscrepancyAwareOnlineClassifier(**SMALL, step_guard=guard), X, y, weights)
    probe = clf.net_.step_guard_.probe_
    assert len(probe) == 64 and probe.weight is not None
    # Every probe row is one of the rows of positive weight, and weighs it.
    scaled = weights / weights.mean()
    rows = {tuple(row): w for row, w in zip(X[weights > 0], scaled[weights > 0])}
    for row, weight in zip(probe.X.numpy(), probe.weight.numpy()):
        assert rows[tuple(row)] == pytest.approx(weight)
    assert bool((clf.net_.step_guard_.recent_.weight > 0).all())


def test_weighted_probe_measurements_are_weighted_means():
    from dsc_sklearn.defence.guards import _Probe

    torch.manual_seed(0)
    X, y = torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    before, after = torch.randn(6, 3), torch.randn(6, 3)
    weighted = _Probe(X, y, torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0, 1.0]))
    weighted.logits = before
    repeated = _Probe(X[[0, 2, 2, 3, 5]], y[[0, 2, 2, 3, 5]])
    repeated.logits = before[[0, 2, 2, 3, 5]]
    for a, b in zip(weighted.changes(after), repeated.changes(after[[0, 2, 2, 3, 5]])):
        assert float(a) == pytest.approx(float(b), rel=1e-5)
