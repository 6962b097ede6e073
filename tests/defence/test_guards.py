import copy
import io
import math
import pickle
from numbers import Integral

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import Interval
from torch import nn

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._net import LOG_FIELDS, DiscrepancyAwareNet
from dsc_sklearn.defence.guards import (
    BaseGuard,
    CumulativeGuard,
    GuardChain,
    GuardContext,
    StepGuard,
    _reservoir_slots,
    make_step_guard,
    novelty_of,
)
from dsc_sklearn.defence.modules import MLP

N_FEATURES, N_CLASSES, BATCH = 8, 3, 40


def _data(n, seed=0):
    """Three Gaussian blobs: separable, so a few steps learn them."""
    rng = np.random.RandomState(seed)
    y = rng.randint(N_CLASSES, size=n)
    X = (3 * np.eye(N_CLASSES, N_FEATURES)[y] + rng.randn(n, N_FEATURES)).astype(np.float32)
    return X, y


def _net(guard, optimizer=torch.optim.SGD, **kwargs):
    torch.manual_seed(0)
    params = dict(
        criterion=nn.CrossEntropyLoss, optimizer=optimizer, lr=0.1, batch_size=BATCH,
        max_epochs=1, train_split=None, callbacks="disable", device="cpu",
        classes=list(range(N_CLASSES)), correction="none", step_guard=guard,
    )
    if optimizer is torch.optim.SGD:
        params["optimizer__momentum"] = 0.9
    params.update(kwargs)
    return DiscrepancyAwareNet(module=MLP(N_FEATURES, N_CLASSES, (16,)), **params).initialize()


def _train(net, n_batches, seed=0):
    X, y = _data(n_batches * BATCH, seed)
    steps = []
    for start in range(0, len(X), BATCH):
        batch = (torch.as_tensor(X[start:start + BATCH]), torch.as_tensor(y[start:start + BATCH]))
        steps.append(net.train_step(batch))
    return steps


def _trained_guard(guard, n_batches):
    """``guard`` in a net that took ``n_batches`` training steps."""
    net = _net(guard)
    _train(net, n_batches)
    return net.step_guard_


def _field(step, name):
    return step["record"][LOG_FIELDS.index(name)].item()


def _weights(net):
    return [p.detach().clone() for p in net.module_.parameters()]


def _harmful_batch(seed=5):
    """A batch whose labels are rotated: a step on it unlearns the probe."""
    X, y = _data(BATCH, seed)
    return torch.as_tensor(X), torch.as_tensor((y + 1) % N_CLASSES)


# ------------------------------------------------------------- parameters

def test_step_guard_is_a_scikit_learn_style_object():
    guard = StepGuard(margin=3.0, probe="recent")
    assert guard.get_params()["margin"] == 3.0
    assert clone(guard).get_params() == guard.get_params()
    assert repr(guard) == "StepGuard(margin=3.0, probe='recent')"
    assert make_step_guard(None) is None
    assert make_step_guard("auto").get_params() == StepGuard().get_params()
    assert make_step_guard(guard) is not guard


INVALID_PARAMS = [
    *((StepGuard, params) for params in [{"margin": 0}, {"probe": "all"}, {"rule": "soft"},
                                         {"window": 0}, {"optimizer_state": "reset"}]),
    *((CumulativeGuard, params) for params in [{"k": 0}, {"cumulative_margin": 0.0},
                                               {"min_windows": 0}, {"cumulative_window": 0},
                                               {"step_harm": "trend"}, {"learning_drop": 1.0}]),
]


@pytest.mark.parametrize("guard_class, params", INVALID_PARAMS)
def test_invalid_guard_parameters_are_refused_at_the_first_fit(guard_class, params):
    X, y = _data(BATCH)
    clf = DiscrepancyAwareOnlineClassifier(step_guard=guard_class(**params))
    with pytest.raises(ValueError, match=guard_class.__name__):
        clf.partial_fit(X, y, classes=range(N_CLASSES))


def test_grid_search_tunes_the_guard_margin():
    X, y = _data(240)
    search = GridSearchCV(
        DiscrepancyAwareOnlineClassifier(step_guard=StepGuard(), batch_size=BATCH,
                                         random_state=0),
        {"step_guard__margin": [1.5, 3.0]}, cv=2,
    ).fit(X, y)
    assert search.best_params_["step_guard__margin"] in (1.5, 3.0)
    assert search.best_estimator_.net_.step_guard_.margin == search.best_params_[
        "step_guard__margin"]


# -------------------------------------------------------------- measuring

def test_the_guard_logs_each_step_and_scales_nothing_on_a_clean_stream():
    net = _net(StepGuard(warmup=3, window=10))
    steps = _train(net, 12)
    assert math.isnan(_field(steps[0], "step_discrepancy"))  # empty probe
    discrepancies = [_field(step, "step_discrepancy") for step in steps[1:]]
    assert all(d >= 0 for d in discrepancies)
    assert [_field(step, "step_scale") for step in steps] == [1.0] * 12
    assert net.step_guard_.n_scaled_ == 0 and net.step_guard_.n_steps_ == 12
    assert len(net.step_guard_.probe_.X) == net.step_guard_.probe_size


def test_step_discrepancy_is_the_mean_kl_on_the_probe():
    net = _net(StepGuard(warmup=100))
    _train(net, 2)
    guard = net.step_guard_
    probe = guard.probe_.X.clone()
    with torch.no_grad():
        before = torch.log_softmax(net.module_(probe), 1)
    X, y = _data(BATCH, seed=3)
    step = net.train_step((torch.as_tensor(X), torch.as_tensor(y)))
    with torch.no_grad():
        after = torch.log_softmax(net.module_(probe), 1)
    expected = (before.exp() * (before - after)).sum(1).mean().item()
    assert _field(step, "step_discrepancy") == pytest.approx(expected, rel=1e-4)


def test_a_harmful_oversized_step_is_pulled_back_within_the_bound():
    net = _net(StepGuard(warmup=3, window=10, margin=2.0))
    _train(net, 8)
    guard = net.step_guard_
    bound = guard.margin * np.median(guard.window_)
    before = _weights(net)
    momentum = copy.deepcopy(net.optimizer_.state_dict()["state"])
    net.configure(lr=2.0)  # a rotated batch at a large learning rate
    step = net.train_step(_harmful_batch())
    alpha = _field(step, "step_scale")
    assert 0 < alpha < 1
    assert _field(step, "step_discrepancy") > bound
    assert guard.n_scaled_ == 1
    # SGD: buffer = 0.9 * old buffer + grad; the kept step and the momentum are
    # alpha times the unscaled ones.
    for i, (p, p_old) in enumerate(zip(net.module_.parameters(), before)):
        buffer = 0.9 * momentum[i]["momentum_buffer"] + p.grad
        torch.testing.assert_close(net.optimizer_.state[p]["momentum_buffer"], alpha * buffer)
        torch.testing.assert_close(p.detach(), p_old - 2.0 * alpha * buffer,
                                   rtol=1e-4, atol=1e-6)


def test_the_pulled_back_step_is_within_the_bound():
    net = _net(StepGuard(warmup=3, window=10, margin=2.0))
    _train(net, 8)
    guard = net.step_guard_
    bound = guard.margin * np.median(guard.window_)
    probe, cached = guard.probe_.X.clone(), guard.probe_.logits.clone()
    net.configure(lr=2.0)
    step = net.train_step(_harmful_batch())
    assert 0 < _field(step, "step_scale") < 1
    with torch.no_grad():
        after = net.module_(probe)
    log_before, log_after = torch.log_softmax(cached, 1), torch.log_softmax(after, 1)
    kept = (log_before.exp() * (log_before - log_after)).sum(1).mean().item()
    assert kept <= bound * (1 + 1e-4)


def test_a_step_that_cannot_be_made_acceptable_is_refused_exactly():
    net = _net(StepGuard(warmup=3, window=10, margin=2.0, rule="strict", max_halvings=0))
    _train(net, 8)
    before = _weights(net)
    state = copy.deepcopy(net.optimizer_.state_dict())
    net.configure(lr=5.0)
    step = net.train_step(_harmful_batch())
    if _field(step, "step_scale") != 0.0:
        pytest.skip("the single try was accepted")
    for p, q in zip(net.module_.parameters(), before):
        assert torch.equal(p.detach(), q)
    restored = net.optimizer_.state_dict()["state"]
    for key, value in state["state"].items():
        assert torch.equal(restored[key]["momentum_buffer"], value["momentum_buffer"])
    assert net.step_guard_.n_refused_ == 1


def test_a_refused_first_step_leaves_no_optimizer_state():
    # A trusted probe and a calibrated bound before the first step: a strict
    # guard refuses a first step that unlearns the probe.
    X, y = _data(BATCH)
    net = _net(StepGuard(warmup=0, window=1, margin=1.0, rule="strict", max_halvings=0,
                         probe=(X, y)))
    net.step_guard_.window_.append(1e-12)
    before = _weights(net)
    step = net.train_step(_harmful_batch())
    assert len(net.step_guard_.probe_) == BATCH
    assert _field(step, "step_scale") == 0.0
    assert not net.optimizer_.state
    for p, q in zip(net.module_.parameters(), before):
        assert torch.equal(p.detach(), q)


def test_harmless_large_steps_pass_under_the_harmful_rule_only():
    results = {}
    for rule in ("harmful", "bound"):
        net = _net(StepGuard(warmup=3, window=10, margin=1.01, rule=rule))
        _train(net, 8)
        net.configure(lr=1.0)
        X, y = _data(BATCH, seed=11)  # clean data: the probe loss falls
        results[rule] = [_field(step, "step_scale")
                         for step in [net.train_step((torch.as_tensor(X), torch.as_tensor(y)))]]
    assert results["harmful"] == [1.0]
    assert results["bound"][0] < 1.0


def test_interpolate_moves_the_optimizer_state_between_old_and_new():
    net = _net(StepGuard(warmup=3, window=10, optimizer_state="interpolate"))
    _train(net, 8)
    old = [net.optimizer_.state[p]["momentum_buffer"].clone() for p in net.module_.parameters()]
    net.configure(lr=2.0)
    step = net.train_step(_harmful_batch())
    alpha = _field(step, "step_scale")
    assert 0 < alpha < 1
    for p, buffer in zip(net.module_.parameters(), old):
        new = 0.9 * buffer + p.grad
        torch.testing.assert_close(net.optimizer_.state[p]["momentum_buffer"],
                                   torch.lerp(buffer, new, alpha))


def test_the_guard_works_with_adam_and_keeps_its_step_count():
    net = _net(StepGuard(warmup=3, window=10), optimizer=torch.optim.Adam, lr=0.01)
    _train(net, 8)
    counts = [net.optimizer_.state[p]["step"].item() for p in net.module_.parameters()]
    net.configure(lr=1.0)
    step = net.train_step(_harmful_batch())
    assert _field(step, "step_scale") < 1
    assert [net.optimizer_.state[p]["step"].item()
            for p in net.module_.parameters()] == [c + 1 for c in counts]


def test_the_guard_works_with_batchnorm_and_keeps_train_mode():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(N_FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(),
                           nn.Linear(8, N_CLASSES))
    net = DiscrepancyAwareNet(
        module=module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD, lr=0.1,
        batch_size=BATCH, train_split=None, callbacks="disable", device="cpu",
        classes=list(range(N_CLASSES)), correction="none",
        step_guard=StepGuard(warmup=2, window=5)).initialize()
    steps = _train(net, 6)
    assert net.module_.training
    assert all(math.isfinite(_field(step, "step_discrepancy")) for step in steps[1:])


# ------------------------------------------------------------------ probe

def test_the_reservoir_keeps_every_row_with_equal_chance():
    counts = np.zeros(2000)
    for seed in range(200):
        generator, kept = torch.Generator().manual_seed(seed), {}
        for start in range(0, 2000, 100):
            slots, rows = _reservoir_slots(start, 100, 50, generator)
            for slot, row in zip(slots, rows):
                kept[slot] = start + row
        counts[list(kept.values())] += 1
    # Each row is kept with probability 50 / 2000 = 2.5 %: early and late alike.
    early, late = counts[:1000].mean() / 200, counts[1000:].mean() / 200
    assert early == pytest.approx(0.025, abs=0.004) and late == pytest.approx(0.025, abs=0.004)


def test_the_recent_probe_holds_the_last_rows_trained_on():
    net = _net(StepGuard(probe="recent", probe_size=60))
    X, y = _data(3 * BATCH)
    for start in range(0, len(X), BATCH):
        net.train_step((torch.as_tensor(X[start:start + BATCH]),
                        torch.as_tensor(y[start:start + BATCH])))
    kept = {tuple(row) for row in net.step_guard_.probe_.X.numpy().round(5)}
    assert kept == {tuple(row) for row in X[-60:].round(5)}


@pytest.mark.parametrize("recent_size", [0, 50])
def test_the_probe_caches_equal_the_current_model(recent_size):
    net = _net(StepGuard(warmup=3, window=10, recent_size=recent_size))
    _train(net, 6)
    net.configure(lr=2.0)
    net.train_step(_harmful_batch())  # a scaled step
    guard = net.step_guard_
    assert guard.n_scaled_ == 1
    assert len(guard.recent_) == recent_size
    for probe in (guard.probe_, guard.recent_)[:2 if recent_size else 1]:
        with torch.no_grad():
            torch.testing.assert_close(probe.logits, net.module_(probe.X)[:len(probe)])


def test_recent_rows_enter_even_from_a_scaled_step():
    net = _net(StepGuard(warmup=3, window=10, recent_size=BATCH))
    _train(net, 6)
    net.configure(lr=2.0)
    X, y = _harmful_batch()
    step = net.train_step((X, y))
    assert _field(step, "step_scale") < 1
    assert torch.equal(net.step_guard_.recent_.X, X)


def test_a_step_that_helps_the_recent_rows_is_not_harmful():
    """A sustained shift: once the recent rows are shifted, learning them passes."""
    net = _net(StepGuard(warmup=3, window=10, recent_size=BATCH))
    _train(net, 8)
    X, y = _harmful_batch()
    net.configure(lr=2.0)
    scales = [_field(net.train_step((X, y)), "step_scale") for _ in range(3)]
    assert scales[0] < 1 and scales[-1] == 1.0


def test_a_trusted_probe_is_encoded_and_never_changes():
    X, y = _data(200)
    labels = np.array(["a", "b", "c"])
    X_probe, y_probe = X[:30], labels[y[:30]]
    clf = DiscrepancyAwareOnlineClassifier(
        batch_size=BATCH, random_state=0, step_guard=StepGuard(probe=(X_probe, y_probe)))
    clf.partial_fit(X, labels[y], classes=labels)
    guard = clf.net_.step_guard_
    assert torch.equal(guard.probe_.X, torch.as_tensor(X_probe))
    assert guard.probe_.y.tolist() == y[:30].tolist()
    assert all(math.isfinite(record["step_discrepancy"]) for record in clf.stream_log_)
    with pytest.raises(ValueError,
                       match=r"the step guard's probe y holds labels \['z'\] that are not"):
        DiscrepancyAwareOnlineClassifier(step_guard=StepGuard(probe=(X_probe, ["z"] * 30))
                                         ).partial_fit(X, labels[y], classes=labels)


# -------------------------------------------------------------- estimator

def test_the_estimator_counts_scaled_steps_and_logs_the_guard():
    X, y = _data(400)
    clf = DiscrepancyAwareOnlineClassifier(batch_size=BATCH, random_state=0,
                                           step_guard=StepGuard(warmup=3, window=10))
    clf.partial_fit(X, y, classes=range(N_CLASSES))
    assert clf.n_steps_scaled_ == 0
    assert {"step_discrepancy", "step_scale"} <= set(clf.stream_log_[-1])
    clf.set_params(lr=3.0)
    Xh, yh = _harmful_batch()
    clf.partial_fit(Xh.numpy(), yh.numpy())
    assert clf.n_steps_scaled_ == clf.net_.step_guard_.n_scaled_ >= 1
    assert clf.stream_log_[-1]["step_scale"] < 1


def test_without_a_guard_the_guard_fields_are_nan():
    X, y = _data(80)
    clf = DiscrepancyAwareOnlineClassifier(batch_size=BATCH, step_guard=None).fit(X, y)
    assert math.isnan(clf.stream_log_[-1]["step_discrepancy"])
    assert math.isnan(clf.stream_log_[-1]["step_scale"])
    assert clf.n_steps_scaled_ == 0


def _stream(clf, X, y, start, stop):
    for row in range(start, stop, BATCH):
        clf.partial_fit(X[row:row + BATCH], y[row:row + BATCH], classes=range(N_CLASSES))
    return clf


def _round_trip(clf, how):
    """``clf`` pickled and unpickled, or saved and loaded into a clone."""
    if how == "pickle":
        return pickle.loads(pickle.dumps(clf))
    buffer = io.BytesIO()
    clf.save_params(buffer)
    buffer.seek(0)
    return clone(clf).load_params(buffer)


def _streamed_and_restored(step_guard, round_trip):
    """A classifier guarded by ``step_guard`` after rows 0 to 400 of an 800-row stream.

    Returned with its round-tripped copy and the whole stream ``X, y``.
    """
    X, y = _data(800)
    clf = _stream(DiscrepancyAwareOnlineClassifier(
        batch_size=BATCH, random_state=0, step_guard=step_guard), X, y, 0, 400)
    return clf, _round_trip(clf, round_trip), X, y


def _assert_streams_alike(clf, restored, X, y, field):
    """Both stream rows 400 to 800 alike: the same log ``field`` and predictions."""
    _stream(clf, X, y, 400, 800)
    _stream(restored, X, y, 400, 800)
    np.testing.assert_array_equal([r[field] for r in clf.stream_log_],
                                  [r[field] for r in restored.stream_log_])
    np.testing.assert_array_equal(clf.predict_proba(X), restored.predict_proba(X))


@pytest.mark.parametrize("round_trip", ["pickle", "save_params"])
def test_the_guard_state_round_trips_and_the_stream_continues_exactly(round_trip):
    clf, restored, X, y = _streamed_and_restored(StepGuard(warmup=3, window=10), round_trip)
    saved, loaded = clf.net_.step_guard_.state_dict(), restored.net_.step_guard_.state_dict()
    assert saved["window"] == loaded["window"]
    assert torch.equal(saved["probe"]["X"], loaded["probe"]["X"])
    assert torch.equal(saved["generator"], loaded["generator"])
    _assert_streams_alike(clf, restored, X, y, "step_discrepancy")


def test_load_state_dict_refuses_a_forged_state():
    guard = _trained_guard(StepGuard(warmup=3, window=10), 4)
    state = guard.state_dict()
    with pytest.raises(ValueError, match="entries"):
        guard.load_state_dict({**state, "margin": 100.0})
    with pytest.raises(ValueError, match="counters"):
        guard.load_state_dict({**state, "n_steps": -1})
    with pytest.raises(ValueError, match="window"):
        guard.load_state_dict({**state, "window": [math.nan]})
    with pytest.raises(ValueError, match="probe"):
        guard.load_state_dict({**state, "probe": {**state["probe"], "y": state["probe"]["y"][:3]}})
    assert guard.margin == 2.0 and guard.n_steps_ == 4


def test_set_params_on_the_guard_takes_effect_at_the_next_call():
    X, y = _data(200)
    clf = DiscrepancyAwareOnlineClassifier(batch_size=BATCH, step_guard=StepGuard())
    _stream(clf, X, y, 0, 120)
    clf.set_params(step_guard__margin=5.0)
    _stream(clf, X, y, 120, 200)
    assert clf.net_.step_guard_.margin == 5.0


# --------------------------------------------------------------- protocol

class _CountingGuard(BaseGuard):
    """Counts its hook calls and records what it was handed."""

    _parameter_constraints = {"limit": [Interval(Integral, 0, None, closed="left")]}

    def __init__(self, limit=3):
        self.limit = limit

    def start(self, context):
        super().start(context)
        self.calls_ = {"before": 0, "after": 0}
        self.contexts_ = {type(context)}
        return self

    def before_step(self, context, step):
        self.calls_["before"] += 1
        self.contexts_.add(type(context))

    def after_step(self, context, step):
        self.calls_["after"] += 1
        self.contexts_.add(type(context))
        if self.calls_["after"] > self.limit:  # refuse: back to the weights before the step
            step.step_scale *= 0.0

    def state_dict(self):
        return {"calls": dict(self.calls_)}

    def load_state_dict(self, state):
        self.calls_ = dict(state["calls"])


def test_any_base_guard_is_accepted_and_sees_a_context_never_the_net():
    X, y = _data(240)
    clf = DiscrepancyAwareOnlineClassifier(batch_size=BATCH, step_guard=_CountingGuard(),
                                           random_state=0).fit(X, y)
    guard = clf.step_guard_
    assert guard is clf.net_.step_guard_ and guard is not clf.step_guard
    assert guard.calls_ == {"before": 6, "after": 6}
    assert guard.contexts_ == {GuardContext}
    assert [record["step_scale"] for record in clf.stream_log_] == [1.0] * 3 + [0.0] * 3
    assert clf.n_steps_scaled_ == 3


def test_a_guard_s_parameters_are_validated_and_tuned_like_any_estimator_s():
    X, y = _data(240)
    with pytest.raises(ValueError, match="'limit' parameter of _CountingGuard"):
        DiscrepancyAwareOnlineClassifier(step_guard=_CountingGuard(limit=-1)).fit(X, y)
    search = GridSearchCV(
        DiscrepancyAwareOnlineClassifier(batch_size=BATCH, step_guard=_CountingGuard(),
                                         random_state=0),
        {"step_guard__limit": [0, 100]}, cv=2).fit(X, y)
    assert search.best_estimator_.step_guard_.limit == search.best_params_["step_guard__limit"]


def test_the_estimator_refuses_a_step_guard_that_is_not_a_guard():
    X, y = _data(80)
    with pytest.raises(ValueError, match="step_guard.*BaseGuard"):
        DiscrepancyAwareOnlineClassifier(step_guard=object()).fit(X, y)


def test_an_unfitted_estimator_has_no_step_guard_():
    clf = DiscrepancyAwareOnlineClassifier()
    assert not hasattr(clf, "step_guard_")
    with pytest.raises(NotFittedError):
        clf.step_guard_


@pytest.mark.parametrize("round_trip", ["pickle", "save_params"])
def test_a_custom_guard_s_state_is_persisted(round_trip):
    X, y = _data(240)
    clf = _stream(DiscrepancyAwareOnlineClassifier(
        batch_size=BATCH, step_guard=_CountingGuard(limit=100), random_state=0), X, y, 0, 120)
    restored = _round_trip(clf, round_trip)
    assert restored.step_guard_.calls_ == {"before": 3, "after": 3}


def test_the_step_guard_s_decision_is_its_public_rule():
    guard = StepGuard(margin=2.0, warmup=0).start(_net(None).guard_context())
    assert guard.bound() == math.inf  # nothing calibrated yet
    guard.window_.extend([0.1, 0.2, 0.3])
    guard.n_steps_ = 3
    assert guard.bound() == pytest.approx(0.4)
    harmful = guard.judge(0.5, loss_change=0.1)
    assert harmful.too_large and harmful.harmful and harmful.acts
    assert harmful.bound == pytest.approx(0.4) and harmful.scale == 1.0
    assert not guard.judge(0.5, loss_change=-0.1).acts  # it helps the probe
    assert not guard.judge(0.5, loss_change=0.1, recent_change=-0.1).acts
    assert not guard.judge(0.3, loss_change=0.1).acts  # within the bound
    guard.set_params(rule="bound")
    assert guard.judge(0.5, loss_change=-0.1).acts
    assert guard.accepts(0.4, 1.0, 0.4) and not guard.accepts(0.41, -1.0, 0.4)
    guard.set_params(rule="strict")
    assert not guard.accepts(0.3, 0.01, 0.4) and guard.accepts(0.3, 0.0, 0.4)


def test_the_decision_of_each_step_is_what_the_log_shows():
    net = _net(StepGuard(warmup=3, window=10, margin=2.0))
    steps = _train(net, 8)
    net.configure(lr=2.0)  # a rotated batch at a large learning rate
    steps.append(net.train_step(_harmful_batch()))
    decision, = net.step_guard_.decisions()
    assert decision.guard == "StepGuard" and decision.acts
    assert decision.scale == pytest.approx(_field(steps[-1], "step_scale"))
    assert decision.statistic == pytest.approx(_field(steps[-1], "step_discrepancy"), rel=1e-6)
    assert decision.bound == pytest.approx(2.0 * np.median(list(net.step_guard_.window_)))
    assert 0 < decision.scale < 1


def test_a_chain_runs_its_guards_in_order_and_multiplies_their_scales():
    chain = GuardChain([StepGuard(warmup=3, window=10), _CountingGuard(limit=4)])
    net = _net(chain)
    steps = _train(net, 6)
    first, counting = net.step_guard_.guards_
    assert chain.get_params()["guards"][0] is not first  # the chain runs clones
    assert first.n_steps_ == 6 and counting.calls_ == {"before": 6, "after": 6}
    assert [_field(step, "step_scale") for step in steps] == [1.0] * 4 + [0.0] * 2
    assert len(net.step_guard_.decisions()) == 1  # the counting guard decides nothing


def test_a_chain_s_state_round_trips_and_a_bad_state_changes_nothing():
    net = _net(GuardChain([StepGuard(warmup=3), StepGuard(probe="recent", warmup=3)]))
    _train(net, 5)
    chain = net.step_guard_
    state = copy.deepcopy(chain.state_dict())
    _train(net, 2, seed=1)
    broken = copy.deepcopy(state)
    broken["guards"][1]["n_steps"] = -1
    later = chain.guards_[0].n_steps_
    with pytest.raises(ValueError, match="counters"):
        chain.load_state_dict(broken)
    assert chain.guards_[0].n_steps_ == later  # the first guard's state put back
    with pytest.raises(ValueError, match="one state per guard"):
        chain.load_state_dict({"guards": state["guards"][:1]})
    chain.load_state_dict(state)
    assert [guard.n_steps_ for guard in chain.guards_] == [5, 5]


@pytest.mark.parametrize("guards", [[], [StepGuard(), "auto"]])
def test_a_chain_refuses_what_is_not_a_list_of_guards(guards):
    with pytest.raises(ValueError, match="non-empty list of BaseGuard"):
        _net(GuardChain(guards))


# ------------------------------------------------------- the cumulative bound

def _momenta(net):
    return [net.optimizer_.state[p]["momentum_buffer"].clone()
            for p in net.module_.parameters()]


def _window_kl(cached, after):
    log_before, log_after = torch.log_softmax(cached, 1), torch.log_softmax(after, 1)
    return (log_before.exp() * (log_before - log_after)).sum(1).mean().item()


@pytest.mark.parametrize("k", [3, 5, 10, 20])
def test_the_window_bound_calibrates_for_every_k(k):
    # One overlapping window per step: min_windows clean windows after k + 3
    # accepted steps, whatever k (margin=100 keeps the per-step check quiet).
    net = _net(CumulativeGuard(k=k, warmup=3, min_windows=3, margin=100.0))
    guard = net.step_guard_
    _train(net, k + 2)
    assert len(guard.cumulative_window_) == 2 and guard.cumulative_bound() == math.inf
    _train(net, 1, seed=1)
    assert len(guard.cumulative_window_) == 3
    assert 0 < guard.cumulative_bound() < math.inf
    assert len(guard.ring_) == k + 1
    assert guard.n_pulled_back_ == 0


def test_the_window_decision_reads_the_cached_logits_of_k_steps_ago():
    net = _net(CumulativeGuard(k=3, warmup=3, probe=_data(BATCH, seed=9)))
    guard = net.step_guard_
    probes = []
    for seed in range(6):
        _train(net, 1, seed=seed)
        with torch.no_grad():
            probes.append(net.module_(guard.probe_.X))
    decision = guard.last_cumulative_decision_
    assert decision.guard == "CumulativeGuard.window"
    assert decision.statistic == pytest.approx(_window_kl(probes[-4], probes[-1]), rel=1e-4)
    loss = [nn.functional.cross_entropy(p, guard.probe_.y).item() for p in probes]
    assert decision.loss_change == pytest.approx(loss[-1] - loss[-4], abs=1e-5)


def test_a_slow_harmful_drift_that_each_step_passes_is_pulled_back():
    def drift(guard):
        net = _net(guard)
        _train(net, 12)
        X, y = _data(6 * BATCH, seed=3)
        y = (y + 1) % N_CLASSES  # every batch unlearns the blobs a little
        steps = [net.train_step((torch.as_tensor(X[i:i + BATCH]), torch.as_tensor(y[i:i + BATCH])))
                 for i in range(0, len(X), BATCH)]
        return net, steps

    # The per-step check alone (margin=100) lets every step of the drift pass...
    plain, _ = drift(StepGuard(warmup=3, margin=100.0))
    assert plain.step_guard_.n_scaled_ == 0
    # ...the window check pulls the accumulated displacement back.
    net, steps = drift(CumulativeGuard(k=3, warmup=3, margin=100.0))
    guard = net.step_guard_
    assert guard.n_scaled_ == 0 and guard.n_pulled_back_ >= 1
    assert min(_field(step, "step_scale") for step in steps) < 1
    X, y = _data(400, seed=11)
    with torch.no_grad():
        X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)
        loss = nn.functional.cross_entropy(net.module_(X_t), y_t).item()
        plain_loss = nn.functional.cross_entropy(plain.module_(X_t), y_t).item()
    assert loss < plain_loss


def test_a_pulled_back_window_is_within_its_bound():
    net = _net(CumulativeGuard(k=3, warmup=3, margin=100.0))
    _train(net, 12)
    guard = net.step_guard_
    bound = guard.cumulative_bound()
    base = guard.ring_[1]["logits"].clone()  # the model k steps before the next one
    net.configure(lr=2.0)
    step = net.train_step(_harmful_batch())
    decision = guard.last_cumulative_decision_
    assert decision.acts and 0 < decision.scale < 1
    # The per-step check pulled the step back first; the scales multiply.
    step_scale = guard.last_decision_.scale
    assert _field(step, "step_scale") == pytest.approx(step_scale * decision.scale)
    with torch.no_grad():
        after = net.module_(guard.probe_.X)
    assert _window_kl(base, after) <= bound * (1 + 1e-4)
    assert [entry["scaled"] for entry in guard.ring_] == [False, True]


def test_a_window_that_cannot_be_made_acceptable_is_rewound_exactly():
    guard = CumulativeGuard(k=3, warmup=3, margin=1e6, rule="strict", max_halvings=0)
    net = _net(guard)
    weights, momenta = [], []
    for seed in range(12):
        _train(net, 1, seed=seed)
        weights.append(_weights(net))
        momenta.append(_momenta(net))
    guard = net.step_guard_
    guard.cumulative_window_.extend([1e-9] * 3)  # a bound no harmful window meets
    net.configure(lr=2.0)
    step = net.train_step(_harmful_batch())
    assert _field(step, "step_scale") == 0.0
    assert guard.n_rewinds_ == 1 and guard.last_cumulative_decision_.scale == 0.0
    # Back to the weights and momentum of k = 3 accepted steps before this one.
    for p, q in zip(net.module_.parameters(), weights[-3]):
        assert torch.equal(p.detach(), q)
    for buffer, expected in zip(_momenta(net), momenta[-3]):
        assert torch.equal(buffer, expected)
    assert len(guard.ring_) == 1
    with torch.no_grad():
        torch.testing.assert_close(guard.probe_.logits, net.module_(guard.probe_.X))


def test_the_step_is_marked_rewound():
    X, y = _data(BATCH)
    net = _net(CumulativeGuard(k=2, warmup=2, margin=1e6, rule="strict", max_halvings=0))
    _train(net, 6)
    net.step_guard_.cumulative_window_.extend([1e-9] * 3)
    net.configure(lr=2.0)
    rewound = net.train_step(_harmful_batch())
    net.configure(lr=0.1)
    net.step_guard_.cumulative_window_.clear()
    kept = net.train_step((torch.as_tensor(X), torch.as_tensor(y)))
    assert (_field(rewound, "rewound"), _field(kept, "rewound")) == (1.0, 0.0)


def test_refused_batches_are_not_steps_of_the_window():
    net = _net(CumulativeGuard(k=3, warmup=3, rule="strict", max_halvings=0, margin=1e-6,
                               cumulative_margin=1e6))
    _train(net, 4)  # warm-up: nothing refused yet
    guard = net.step_guard_
    ring = len(guard.ring_)
    net.configure(lr=5.0)
    step = net.train_step(_harmful_batch())
    assert _field(step, "step_scale") == 0.0 and guard.n_refused_ == 1
    assert len(guard.ring_) == ring and guard.last_cumulative_decision_ is None


@pytest.mark.parametrize("round_trip", ["pickle", "save_params"])
def test_the_cumulative_state_round_trips_and_the_stream_continues_exactly(round_trip):
    clf, restored, X, y = _streamed_and_restored(CumulativeGuard(k=4, warmup=3), round_trip)
    saved, loaded = clf.step_guard_.state_dict(), restored.step_guard_.state_dict()
    assert saved["cumulative_window"] == loaded["cumulative_window"]
    assert len(saved["ring"]) == len(loaded["ring"]) == 5
    for a, b in zip(saved["ring"], loaded["ring"]):
        assert torch.equal(a["logits"], b["logits"]) and a["scaled"] == b["scaled"]
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
    _assert_streams_alike(clf, restored, X, y, "step_scale")


def test_a_saved_cumulative_state_is_not_changed_by_later_steps():
    net = _net(CumulativeGuard(k=3, warmup=3))
    _train(net, 6)
    guard = net.step_guard_
    state = guard.state_dict()
    frozen = copy.deepcopy(state)
    _train(net, 4, seed=2)
    for a, b in zip(state["ring"], frozen["ring"]):
        assert torch.equal(a["logits"], b["logits"])
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
    guard.load_state_dict(state)
    assert guard.n_steps_ == 6 and len(guard.ring_) == 4


def test_load_state_dict_refuses_a_forged_ring():
    guard = _trained_guard(CumulativeGuard(k=3, warmup=3), 6)
    state = guard.state_dict()
    too_long = {**state, "ring": state["ring"] * 2}
    with pytest.raises(ValueError, match="ring"):
        guard.load_state_dict(too_long)
    short_logits = [{**entry, "logits": entry["logits"][:3]} for entry in state["ring"]]
    with pytest.raises(ValueError, match="ring"):
        guard.load_state_dict({**state, "ring": short_logits})
    with pytest.raises(ValueError, match="cumulative window"):
        guard.load_state_dict({**state, "cumulative_window": [-1.0]})
    with pytest.raises(ValueError, match="counters"):
        guard.load_state_dict({**state, "n_rewinds": 5})
    with pytest.raises(ValueError, match="entries"):
        guard.load_state_dict({key: v for key, v in state.items() if key != "ring"})
    assert guard.n_steps_ == 6 and len(guard.ring_) == 4


def test_the_cumulative_guard_composes_in_a_chain():
    chain = GuardChain([CumulativeGuard(k=3, warmup=3), StepGuard(probe="recent", margin=4.0)])
    net = _net(chain)
    _train(net, 6)
    cumulative, recent = net.step_guard_.guards_
    assert cumulative.n_steps_ == recent.n_steps_ == 6
    assert [d.guard for d in net.step_guard_.decisions()] == [
        "CumulativeGuard", "CumulativeGuard.window", "StepGuard"]
    state = copy.deepcopy(net.step_guard_.state_dict())
    _train(net, 2, seed=1)
    net.step_guard_.load_state_dict(state)
    assert len(cumulative.ring_) == 4


def test_window_harm_lets_an_overshoot_pass_that_the_step_rule_pulls_back():
    # A step that raises the probe loss but leaves it below its level k
    # steps before is harmless under step_harm="window", harmful otherwise.
    decisions = {}
    for harm in ("step", "window"):
        guard = CumulativeGuard(k=3, warmup=0, step_harm=harm, cumulative_margin=None)
        guard.start(_net(None).guard_context())
        guard.window_.append(1e-6)
        guard.n_steps_ = 1  # past the warm-up
        decisions[harm] = [guard.judge(1.0, 0.1, window_change=change)
                           for change in (-0.2, 0.05)]
    assert [d.acts for d in decisions["step"]] == [True, True]
    assert [d.acts for d in decisions["window"]] == [False, True]
    # learning_drop: only a loss that fell by that fraction exempts the step.
    guard = CumulativeGuard(k=3, warmup=0, step_harm="window", learning_drop=0.3)
    guard.start(_net(None).guard_context())
    guard.window_.append(1e-6)
    guard.n_steps_ = 1
    assert [guard.judge(1.0, 0.1, window_change=change).acts
            for change in (-0.5, -0.2)] == [False, True]


def test_window_harm_still_pulls_back_a_step_that_unlearns_the_probe():
    net = _net(CumulativeGuard(k=3, warmup=3, step_harm="window", cumulative_margin=None,
                               probe=_data(BATCH, seed=9)))
    guard = net.step_guard_
    _train(net, 8)
    assert guard.cumulative_bound() == math.inf and guard.n_pulled_back_ == 0
    # A rotated batch at a large learning rate: the loss rises above its
    # level three steps before, so the step is harmful and pulled back.
    net.configure(lr=2.0)
    net.train_step(_harmful_batch())
    decision = guard.last_decision_
    assert decision.harmful and decision.acts and decision.scale < 1


def test_without_a_window_bound_the_ring_keeps_logits_only():
    net = _net(CumulativeGuard(k=3, warmup=3, step_harm="window", cumulative_margin=None))
    _train(net, 6)
    guard = net.step_guard_
    assert len(guard.ring_) == 4 and guard.cumulative_bound() == math.inf
    assert all(entry["params"] == [] and entry["state"] == [] for entry in guard.ring_)
    assert [d.guard for d in guard.decisions()] == ["CumulativeGuard"]
    restored = pickle.loads(pickle.dumps(guard))
    assert len(restored.ring_) == 4


def test_the_window_rule_waits_for_the_probe_loss_to_pass_its_level():
    # Above the level (a model that knows little) the window rule spares a
    # step that leaves the loss below its level k steps before; below it the
    # step rule judges, so the same step is harmful.
    net = _net(CumulativeGuard(k=3, warmup=3, step_harm="window", cumulative_margin=None,
                               window_harm_level=0.0))
    _train(net, 6)
    guard = net.step_guard_
    current = guard.probe_.logits  # lower loss than 3 steps before: the blobs are learned
    decision = guard._judge_step(1.0, 0.1, math.inf, current)
    assert not decision.harmful
    guard.window_harm_level = 10.0  # far above the loss: the step rule judges
    decision = guard._judge_step(1.0, 0.1, math.inf, current)
    assert decision.harmful and decision.acts


def test_a_guard_of_a_chain_measures_from_the_model_the_later_guards_left():
    net = _net(GuardChain([StepGuard(warmup=3), StepGuard(warmup=3, margin=1.01,
                                                           rule="bound")]))
    first = None
    for seed in range(12):
        step = net.train_step(_harmful_batch(seed) if seed > 6 else
                              tuple(map(torch.as_tensor, _data(BATCH, seed))))
        first, second = net.step_guard_.guards_
        if second.last_decision_ is not None and second.last_decision_.scale < 1:
            break
    assert second.last_decision_.scale < 1 and first.probe_.logits is None
    probe = first.probe_.X
    with torch.no_grad():
        before = torch.log_softmax(net.module_(probe), 1)
    second.set_params(margin=1e9)  # the next step passes both guards
    first.set_params(margin=1e9)
    X, y = _data(BATCH, seed=99)
    step = net.train_step((torch.as_tensor(X), torch.as_tensor(y)))
    assert _field(step, "step_scale") == 1.0
    with torch.no_grad():
        after = torch.log_softmax(net.module_(probe), 1)
    expected = (before.exp() * (before - after)).sum(1).mean().item()
    assert _field(step, "step_discrepancy") == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------- shift test

EPS = 0.5


def test_novelty_is_the_median_distance_to_the_nearest_row_and_moves_by_at_most_epsilon():
    rows = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # L-inf distances to the nearest row: 0.1, 0.5, 2.0, 0.5; the lower median.
    X = torch.tensor([[0.1, 0.0], [1.0, 0.5], [3.0, 1.0], [0.5, 0.5]])
    assert novelty_of(X, rows).item() == 0.5
    # To the second nearest row: 1.0, 1.0, 3.0, 0.5; the lower median.
    assert novelty_of(X, rows, n_neighbours=2).item() == 1.0
    generator = torch.Generator().manual_seed(0)
    X, rows = torch.randn(60, 6, generator=generator), torch.randn(30, 6, generator=generator)
    for _ in range(20):
        delta = (2 * torch.rand(60, 6, generator=generator) - 1) * EPS
        assert abs(novelty_of(X + delta, rows) - novelty_of(X, rows)) <= EPS + 1e-6


def _feed(net, X, y):
    guard = net.step_guard_
    decisions = []
    for start in range(0, len(X), BATCH):
        net.train_step((torch.as_tensor(X[start:start + BATCH]),
                        torch.as_tensor(y[start:start + BATCH])))
        decisions.append(guard.decisions())
    return decisions


def test_a_sustained_shift_is_exempt_and_an_epsilon_perturbation_of_known_rows_is_not():
    net = _net(CumulativeGuard(k=3, warmup=3, shift_epsilon=EPS, shift_steps=4))
    _train(net, 10)
    guard = net.step_guard_
    # Known rows moved by exactly EPS in every feature: never novel.
    X, y = _data(8 * BATCH, seed=7)
    X_poison = (X + EPS * np.sign(np.random.RandomState(0).randn(*X.shape))).astype(np.float32)
    for decisions in _feed(net, X_poison, y):
        shift = decisions[-1]
        assert shift.guard == "CumulativeGuard.shift" and not shift.too_large
    assert guard.n_shift_steps_ == 0
    calibrated = guard.novelty_max_
    # The stream shifts by 4 in every feature, and its labels rotate, so that
    # the guard pulls its first steps back: the third novel batch starts an
    # episode of 4 steps that no bound holds, and their rows enter the probe.
    X, y = _data(6 * BATCH, seed=8)
    decisions = _feed(net, X + np.float32(4.0), (y + 1) % N_CLASSES)
    assert [d[-1].too_large for d in decisions[:3]] == [True] * 3
    assert all(d[0].scale < 1 for d in decisions[:2])
    for d in decisions[2:]:  # the episode
        assert all(not decision.harmful and decision.scale == 1 for decision in d)
    assert guard.n_shift_steps_ == 4 and guard.novelty_max_ == calibrated
    assert (guard.probe_.X.mean(1) > 3.0).any()


def test_without_a_shift_test_no_shift_decision_is_made():
    net = _net(CumulativeGuard(k=3, warmup=3))
    _train(net, 6)
    assert [d.guard for d in net.step_guard_.decisions()] == [
        "CumulativeGuard", "CumulativeGuard.window"]
    assert "novelty_max" not in net.step_guard_.state_dict()


@pytest.mark.parametrize("params", [{"shift_epsilon": 0.0}, {"shift_exempt": "step"},
                                    {"shift_window": 0}, {"shift_allowance": -1.0},
                                    {"shift_steps": 0}, {"shift_neighbours": 0},
                                    {"shift_epsilon": 0.2, "shift_min_novel": 6}])
def test_invalid_shift_parameters_are_refused_at_the_first_fit(params):
    X, y = _data(BATCH)
    clf = DiscrepancyAwareOnlineClassifier(step_guard=CumulativeGuard(**params))
    with pytest.raises(ValueError, match="CumulativeGuard"):
        clf.partial_fit(X, y, classes=range(N_CLASSES))


@pytest.mark.parametrize("round_trip", ["pickle", "save_params"])
def test_the_shift_test_state_round_trips_and_the_stream_continues_exactly(round_trip):
    X, y = _data(800)
    X[240:] += np.float32(4.0)  # a shift (the guard pulls back): saved mid-episode
    y[240:] = (y[240:] + 1) % N_CLASSES
    clf = _stream(DiscrepancyAwareOnlineClassifier(
        batch_size=BATCH, random_state=0,
        step_guard=CumulativeGuard(k=3, warmup=3, probe_size=100, shift_epsilon=EPS)),
        X, y, 0, 400)
    guard = clf.step_guard_
    assert guard.n_shift_steps_ >= 1 and guard.shift_left_ >= 1
    restored = _round_trip(clf, round_trip)
    saved, loaded = guard.state_dict(), restored.step_guard_.state_dict()
    for key in ("novelty_max", "novelty_recent", "n_shift_steps", "shift_left"):
        assert saved[key] == loaded[key]
    _assert_streams_alike(clf, restored, X, y, "step_scale")
    assert clf.step_guard_.n_shift_steps_ == restored.step_guard_.n_shift_steps_


def test_load_state_dict_refuses_a_forged_shift_state():
    net = _net(CumulativeGuard(k=3, warmup=3, shift_epsilon=EPS))
    _train(net, 6)
    guard = net.step_guard_
    state = guard.state_dict()
    for forged in ({"novelty_max": math.nan}, {"novelty_recent": [True] * 6},
                   {"novelty_recent": [1]}, {"n_shift_steps": -1}, {"shift_left": 10}):
        with pytest.raises(ValueError, match="shift test"):
            guard.load_state_dict({**state, **forged})
    with pytest.raises(ValueError, match="entries"):
        guard.load_state_dict({k: v for k, v in state.items() if k != "n_shift_steps"})
    assert guard.n_steps_ == 6 and guard.novelty_max_ == state["novelty_max"]


def test_grid_search_tunes_the_shift_allowance():
    X, y = _data(240)
    guard = CumulativeGuard(k=3, warmup=3, shift_epsilon=EPS)
    assert clone(guard).get_params() == guard.get_params()
    search = GridSearchCV(
        DiscrepancyAwareOnlineClassifier(step_guard=guard, batch_size=BATCH, random_state=0),
        {"step_guard__shift_allowance": [1.0, 2.0]}, cv=2,
    ).fit(X, y)
    assert search.best_estimator_.step_guard_.shift_allowance == search.best_params_[
        "step_guard__shift_allowance"]
# ------------------------------------------------------- harm at first order

def _large_step(harm, lr, batch, **guard_params):
    """A net calibrated on 8 clean steps (plain SGD), then one step at ``lr``."""
    params = {**dict(warmup=3, window=10, margin=2.0, harm=harm), **guard_params}
    net = _net(StepGuard(**params), optimizer__momentum=0.0)
    _train(net, 8)
    net.configure(lr=lr)
    net.train_step(batch)
    return net


def _clean_batch(seed=11):
    return tuple(map(torch.as_tensor, _data(BATCH, seed)))


def test_first_order_harm_spares_an_overshoot_and_keeps_it_whole():
    # A clean step at a large learning rate descends the probe loss at first
    # order and raises it at full length: harmful by the full step only.
    full = _large_step("full", 10.0, _clean_batch()).step_guard_.last_decision_
    assert full.too_large and full.loss_change > 0 and full.harmful and full.scale < 1
    net = _large_step("first_order", 10.0, _clean_batch())
    observer = _large_step("full", 10.0, _clean_batch(), rule="bound", margin=1e9)
    guard = net.step_guard_
    decision = guard.last_decision_
    assert decision.too_large and decision.loss_change > 0
    assert not decision.harmful and not decision.acts and decision.scale == 1.0
    assert guard.decisions() == [decision] and guard.n_scaled_ == 0
    assert guard.window_[-1] == decision.statistic  # it calibrates the bound
    for p, q in zip(net.module_.parameters(), observer.module_.parameters()):
        assert torch.equal(p, q)  # the probe at a tenth of the step left no trace


def test_first_order_harm_still_pulls_back_an_ascent():
    for harm in ("full", "first_order"):
        decision = _large_step(harm, 10.0, _harmful_batch()).step_guard_.last_decision_
        assert decision.too_large and decision.harmful and decision.acts
        assert 0 < decision.scale < 1


def test_first_order_harm_asks_the_recent_rows_too():
    # With recent rows, the step must raise their loss at harm_scale as well.
    net = _large_step("first_order", 10.0, _harmful_batch(), recent_size=BATCH)
    assert net.step_guard_.last_decision_.acts


def test_the_default_judges_harm_on_the_full_step():
    guard = StepGuard()
    assert guard.harm == "full" and guard.harm_scale == 0.1
    assert CumulativeGuard(harm="first_order", harm_scale=0.2).get_params()["harm_scale"] == 0.2
    assert repr(StepGuard(harm="first_order")) == "StepGuard(harm='first_order')"


@pytest.mark.parametrize("params", [{"harm": "second_order"}, {"harm_scale": 0.0},
                                    {"harm_scale": 1.0}, {"harm_scale": -0.1}])
def test_invalid_harm_parameters_are_refused_at_the_first_fit(params):
    X, y = _data(BATCH)
    for guard in (StepGuard(**params), CumulativeGuard(**params)):
        clf = DiscrepancyAwareOnlineClassifier(step_guard=guard)
        with pytest.raises(ValueError, match=type(guard).__name__):
            clf.partial_fit(X, y, classes=range(N_CLASSES))


@pytest.mark.parametrize("round_trip", ["pickle", "save_params"])
def test_a_first_order_guard_round_trips_and_the_stream_continues_exactly(round_trip):
    X, y = _data(800)
    clf = _stream(DiscrepancyAwareOnlineClassifier(
        batch_size=BATCH, random_state=0,
        step_guard=CumulativeGuard(k=3, warmup=3, window=10, harm="first_order")),
        X, y, 0, 400)
    restored = _round_trip(clf, round_trip)
    assert restored.net_.step_guard_.harm == "first_order"
    restored_state = restored.net_.step_guard_.state_dict()
    assert restored_state.keys() == clf.net_.step_guard_.state_dict().keys()
    _assert_streams_alike(clf, restored, X, y, "step_scale")


def test_first_order_descend_keeps_an_overshoot_where_the_probe_loss_stops_rising():
    net = _net(StepGuard(warmup=3, window=10, margin=2.0, harm="first_order_descend"),
               optimizer__momentum=0.0)
    _train(net, 8)
    guard = net.step_guard_
    before, n_window = guard.probe_.logits.clone(), len(guard.window_)
    net.configure(lr=10.0)
    net.train_step(_clean_batch())
    decision = guard.last_decision_
    assert decision.too_large and decision.loss_change > 0 and not decision.harmful
    assert decision.scale in (0.5, 0.25, 0.125, 0.0625, 0.03125)
    assert guard.n_scaled_ == 1 and guard.n_refused_ == 0
    # The kept step does not raise the probe loss (its rows stay out of the
    # probe), and its D_step, smaller than the full step's, calibrates.
    probe = guard.probe_
    with torch.no_grad():
        torch.testing.assert_close(net.module_(probe.X), probe.logits)
    cross_entropy = torch.nn.functional.cross_entropy
    assert cross_entropy(probe.logits, probe.y) <= cross_entropy(before, probe.y)
    assert len(guard.window_) == n_window + 1 and guard.window_[-1] < decision.statistic
    ascent = _large_step("first_order_descend", 10.0, _harmful_batch()).step_guard_
    assert ascent.last_decision_.acts  # an ascent is still held to the bound


def test_an_overshoot_s_momentum_is_interpolated_under_descend_interpolate():
    net = _net(StepGuard(warmup=3, window=10, margin=2.0,
                         harm="first_order_descend_interpolate"))
    _train(net, 8)
    momentum = copy.deepcopy(net.optimizer_.state_dict()["state"])
    net.configure(lr=10.0)
    net.train_step(_clean_batch())
    decision = net.step_guard_.last_decision_
    if decision.harmful or decision.scale == 1.0:
        pytest.skip("the step was no overshoot")
    alpha = decision.scale
    for i, p in enumerate(net.module_.parameters()):
        old = momentum[i]["momentum_buffer"]
        new = 0.9 * old + p.grad
        torch.testing.assert_close(net.optimizer_.state[p]["momentum_buffer"],
                                   torch.lerp(old, new, alpha))
