"""Fault injection: a call either completes or leaves the estimator as it was.

Issue 14, item 4. Exceptions (``RuntimeError`` and ``KeyboardInterrupt``)
are raised inside each stage of the training step (the module's forward
pass, the backward pass, the optimizer's step, the correction, the step
guard's measurement, pull-back and probe, the snapshot, the threshold
policies' update), in the estimator's bookkeeping and in a skorch callback,
at the first call and at a later one (in its first or its second batch).
After each failure:

- a first call leaves the estimator unfitted, and it then trains as a fresh
  one does;
- a later call leaves ``estimator_state`` (weights, optimizer, snapshots,
  policies, step guard, generator, counters, ``stream_log_``,
  ``last_flagged_``, skorch's history) exactly as before the call, and the
  estimator continues exactly as a copy that never saw the call;
- ``fit`` leaves the previous model (the same ``net_``) or no model.

Every fault is raised after the stage ran, so the state it leaves behind is
half-changed (weights stepped, a snapshot taken, a policy updated), except
the forward pass, which raises before.
"""

import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from sklearn.exceptions import NotFittedError

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._net import DiscrepancyAwareNet
from dsc_sklearn.defence.correction import AdversarialTraining, DiscrepancyAwareCorrection
from dsc_sklearn.defence.guards import StepGuard
from dsc_sklearn.defence.history import SnapshotBuffer
from dsc_sklearn.defence.modules import MLP
from dsc_sklearn.defence.thresholds import AutoThreshold

from _state import assert_same, learned_state

CLASSES = np.arange(10)
BATCH = 20


class Injected(RuntimeError):
    pass


class Fault:
    """Raise ``exception`` once, in batch ``batch`` (1-based) of the armed call."""

    def __init__(self):
        self.armed = False
        self.batch = 0
        self.at_batch = 1
        self.exception = Injected
        self.fired = False

    def arm(self, at_batch, exception):
        self.armed, self.batch, self.at_batch, self.exception = True, 0, at_batch, exception
        self.fired = False

    def maybe_raise(self):
        if self.armed and not self.fired and self.batch >= self.at_batch:
            self.fired = True
            raise self.exception("injected fault")


class RaisingCallback(Callback):
    """A skorch callback that asks the fault at the end of each batch and epoch."""

    def __init__(self, fault=None, where="on_batch_end"):
        self.fault = fault
        self.where = where

    def on_batch_end(self, net, **kwargs):
        if self.where == "on_batch_end":
            self.fault.maybe_raise()

    def on_epoch_end(self, net, **kwargs):
        if self.where == "on_epoch_end":
            self.fault.maybe_raise()


def _after(original, fault):
    def patched(*args, **kwargs):
        result = original(*args, **kwargs)
        fault.maybe_raise()
        return result
    return patched


def _before(original, fault):
    def patched(*args, **kwargs):
        fault.maybe_raise()
        return original(*args, **kwargs)
    return patched


#: Where a fault is raised: (class, method, raise before or after it runs).
POINTS = {
    "forward": (MLP, "forward", _before),
    "backward": (torch.Tensor, "backward", _after),
    "optimizer step": (torch.optim.SGD, "step", _after),
    "correction": (DiscrepancyAwareCorrection, "correct", _after),
    "adversarial correction": (AdversarialTraining, "correct", _after),
    "guard measurement": (StepGuard, "_measure", _after),
    "guard pull-back": (StepGuard, "_pull_back", _after),
    "guard probe": (StepGuard, "_add_rows", _after),
    "snapshot": (SnapshotBuffer, "maybe_snapshot", _after),
    "threshold update": (AutoThreshold, "update", _after),
    "finiteness check": (DiscrepancyAwareNet, "check_finite", _after),
    "log": (DiscrepancyAwareOnlineClassifier, "_log", _after),
    "batch callback": None,
    "epoch callback": None,
}


def _params(point, fault):
    guard = StepGuard(warmup=0, margin=1e-9, recent_size=8, probe_size=32)
    params = dict(
        hidden_layer_sizes=(16,), batch_size=BATCH, history_size=2, snapshot_every=1,
        correction="dsc", threshold=AutoThreshold(warmup=1, quantile=0.5),
        loss_threshold=AutoThreshold(warmup=1, quantile=0.5), step_guard=guard,
        max_correction_steps=2, input_bounds=(0.0, 1.0), random_state=0,
    )
    if point == "adversarial correction":
        params.update(correction="adversarial", loss_threshold=None)
    if point == "guard pull-back":
        # Every step after the first is too large, and judged by the bound alone.
        params["step_guard"] = StepGuard(warmup=0, margin=1e-9, rule="bound", probe_size=32)
    if point in ("batch callback", "epoch callback"):
        where = "on_batch_end" if point == "batch callback" else "on_epoch_end"
        params["callbacks"] = [("raising", RaisingCallback(fault, where))]
    return params


@pytest.fixture
def fault(monkeypatch):
    fault = Fault()
    original_step = DiscrepancyAwareNet.train_step

    def counting_step(self, *args, **kwargs):
        fault.batch += 1
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(DiscrepancyAwareNet, "train_step", counting_step)
    return fault


def _inject(monkeypatch, fault, point):
    if POINTS[point] is None:
        return
    owner, name, wrap = POINTS[point]
    monkeypatch.setattr(owner, name, wrap(getattr(owner, name), fault))


def _chunks(digits, n_calls, rows=2 * BATCH, offset=0):
    X, y = digits.X_train, digits.y_train
    return [(X[offset + i * rows:offset + (i + 1) * rows],
             y[offset + i * rows:offset + (i + 1) * rows]) for i in range(n_calls)]


def _warm(params, digits, n_calls=2):
    clf = DiscrepancyAwareOnlineClassifier(**params)
    for X, y in _chunks(digits, n_calls):
        clf.partial_fit(X, y, classes=CLASSES)
    return clf


# Each point with a KeyboardInterrupt in the call's first batch, and with a
# RuntimeError in its second batch, after the first one trained (the same
# code handles both exceptions).
LATER_CASES = [pytest.param(point, at_batch, exception, id=f"{point}-{name}-batch{at_batch}")
               for point in POINTS
               for at_batch, exception, name in ((1, KeyboardInterrupt, "KeyboardInterrupt"),
                                                 (2, Injected, "RuntimeError"))]


@pytest.mark.parametrize("point, at_batch, exception", LATER_CASES)
def test_a_fault_in_a_later_call_changes_nothing(digits, monkeypatch, fault, point,
                                                  at_batch, exception):
    params = _params(point, fault)
    clf = _warm(params, digits)
    twin = copy.deepcopy(clf)  # never sees the failing call
    before = learned_state(clf)
    net = clf.net_
    _inject(monkeypatch, fault, point)
    X, y = _chunks(digits, 1, offset=600)[0]  # two batches
    fault.arm(at_batch, exception)
    with pytest.raises(exception, match="injected fault"):
        clf.partial_fit(X, y)
    assert fault.fired
    assert clf.net_ is net
    assert_same(before, learned_state(clf))
    # Hidden state too: both continue exactly alike.
    fault.armed = False
    X_next, y_next = _chunks(digits, 1, offset=700)[0]
    clf.partial_fit(X_next, y_next)
    twin.partial_fit(X_next, y_next)
    np.testing.assert_array_equal(clf.predict_proba(X_next), twin.predict_proba(X_next))
    assert_same(learned_state(twin, timings=False), learned_state(clf, timings=False))


@pytest.mark.parametrize("exception", [KeyboardInterrupt], ids=["KeyboardInterrupt"])
@pytest.mark.parametrize("point", list(POINTS))
def test_a_fault_in_the_first_call_leaves_the_estimator_unfitted(digits, monkeypatch, fault,
                                                                 point, exception):
    params = _params(point, fault)
    # The stage's first run in a stream: the probe, the window of the guard
    # and the policies' warm-up fill in the first batches.
    at_batch = {"correction": 2, "adversarial correction": 2, "guard measurement": 2,
                "threshold update": 2, "guard pull-back": 3}.get(point, 1)
    clf = DiscrepancyAwareOnlineClassifier(**params)
    _inject(monkeypatch, fault, point)
    (X, y), (X_next, y_next) = _chunks(digits, 2, rows=3 * BATCH)
    fault.arm(at_batch, exception)
    with pytest.raises(exception, match="injected fault"):
        clf.partial_fit(X, y, classes=CLASSES)
    assert fault.fired
    assert not [name for name in vars(clf) if name.endswith("_") and not name.startswith("_")]
    # The retry is the first call of a fresh estimator (issue 14: every retry
    # raised AttributeError on n_batches_seen_).
    fault.armed = False
    fresh = DiscrepancyAwareOnlineClassifier(**params)
    for estimator in (clf, fresh):
        estimator.partial_fit(X, y, classes=CLASSES)
        estimator.partial_fit(X_next, y_next)
    assert clf.n_batches_seen_ == 6
    np.testing.assert_array_equal(clf.predict_proba(X_next), fresh.predict_proba(X_next))


@pytest.mark.parametrize("point, exception", [
    ("forward", KeyboardInterrupt), ("optimizer step", Injected),
    ("snapshot", KeyboardInterrupt), ("log", Injected),
])
def test_an_interrupted_fit_keeps_the_previous_model(digits, monkeypatch, fault, point,
                                                     exception):
    params = dict(_params(point, fault), max_epochs=2)
    X, y = digits.X_train[:200], digits.y_train[:200]
    clf = DiscrepancyAwareOnlineClassifier(**params).fit(X, y)
    net, before = clf.net_, learned_state(clf)
    expected = clf.predict_proba(X)
    _inject(monkeypatch, fault, point)
    fault.arm(15, exception)  # in the second pass, half-way through
    with pytest.raises(exception, match="injected fault"):
        clf.fit(digits.X_train[200:400], digits.y_train[200:400])
    assert fault.fired
    assert clf.net_ is net
    assert_same(before, learned_state(clf))
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


def test_an_interrupted_fit_of_an_unfitted_estimator_leaves_it_unfitted(digits, monkeypatch,
                                                                        fault):
    clf = DiscrepancyAwareOnlineClassifier(**_params("forward", fault))
    _inject(monkeypatch, fault, "forward")
    fault.arm(3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(digits.X_train[:200], digits.y_train[:200])
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")
    assert not hasattr(clf, "n_batches_seen_")


class _InterruptingMLP(MLP):
    """Issue 14's reproduction: a KeyboardInterrupt in the module's forward.

    The first forward pass is the estimator's check of the output width,
    before the counters existed: the estimator was left with ``classes_``
    and ``net_`` but no ``n_batches_seen_``.
    """

    interrupt = True

    def forward(self, X):
        if type(self).interrupt:
            raise KeyboardInterrupt
        return super().forward(X)


def test_issue_14_an_interrupted_first_call_can_be_retried(digits):
    X, y = digits.X_train[:100], digits.y_train[:100]

    def build(n_features, n_classes):
        return _InterruptingMLP(n_features, n_classes, hidden_layer_sizes=(16,))

    clf = DiscrepancyAwareOnlineClassifier(build, random_state=0)
    _InterruptingMLP.interrupt = True
    try:
        with pytest.raises(KeyboardInterrupt):
            clf.partial_fit(X, y, classes=CLASSES)
        assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")
        with pytest.raises(NotFittedError):
            clf.predict(X)  # no answer from untrained weights
    finally:
        _InterruptingMLP.interrupt = False
    clf.partial_fit(X, y, classes=CLASSES)
    assert clf.n_batches_seen_ == 1


def test_a_failure_after_many_calls_keeps_a_full_log(digits, monkeypatch, fault):
    # stream_log_ is bounded: a failing call that would have pushed records
    # out of it puts them back.
    monkeypatch.setattr("dsc_sklearn.defence._classifier.MAX_LOG_RECORDS", 3)
    params = _params("log", fault)
    clf = _warm(params, digits, n_calls=3)
    assert len(clf.stream_log_) == 3
    before = learned_state(clf)
    _inject(monkeypatch, fault, "log")
    fault.arm(1, Injected)
    with pytest.raises(Injected):
        clf.partial_fit(*_chunks(digits, 1, offset=600)[0])
    assert_same(before, learned_state(clf))
    assert [record["step"] for record in clf.stream_log_] == [4, 5, 6]
