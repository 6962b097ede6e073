import copy
import pickle

import pytest
import torch
from torch import nn

from dsc_sklearn._torch import cast_floating, eval_mode
from dsc_sklearn.defence.history import SnapshotBuffer


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)
    )


def _perturb(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _train_forward(module, n=3):
    """Update BatchNorm running statistics with a few train-mode passes."""
    module.train()
    with torch.no_grad():
        for _ in range(n):
            module(3.0 * torch.randn(16, 4) + 1.0)


def _filled_buffer(module, n_snapshots=3, history_size=4, bn=False):
    buffer = SnapshotBuffer(history_size=history_size, snapshot_every=1)
    for _ in range(n_snapshots):
        buffer.snapshot(module)
        _perturb(module)
        if bn:
            _train_forward(module)
    return buffer


def _expected_logits(module, state, X):
    clone = copy.deepcopy(module)
    clone.load_state_dict(state)
    clone.eval()
    with torch.no_grad():
        return clone(X)


@pytest.fixture
def X():
    torch.manual_seed(42)
    return torch.randn(5, 4)


def test_maybe_snapshot_takes_one_every_snapshot_every_calls():
    module = _mlp()
    buffer = SnapshotBuffer(history_size=10, snapshot_every=3)
    taken, weights = [], []
    for _ in range(9):
        with torch.no_grad():
            module[0].weight.add_(1.0)
        weights.append(module[0].weight.detach().clone())
        taken.append(buffer.maybe_snapshot(module))
    assert taken == [False, False, True] * 3
    assert buffer.n_steps_ == 9
    assert len(buffer) == 3
    for snap, step in zip(buffer.snapshots, (2, 5, 8)):
        torch.testing.assert_close(snap["0.weight"], weights[step])


def test_snapshot_every_one_snapshots_each_call():
    buffer = SnapshotBuffer(history_size=3, snapshot_every=1)
    assert all(buffer.maybe_snapshot(_mlp()) for _ in range(5))
    assert len(buffer) == 3


def test_history_size_bounds_buffer_and_evicts_oldest_first():
    module = _mlp()
    buffer = SnapshotBuffer(history_size=2, snapshot_every=1)
    for i in range(4):
        with torch.no_grad():
            module[2].bias.fill_(float(i))
        buffer.snapshot(module)
        assert len(buffer) == min(i + 1, 2)
    kept = [snap["2.bias"][0].item() for snap in buffer.snapshots]
    assert kept == [2.0, 3.0]


def test_snapshots_are_detached_copies():
    module = _mlp()
    buffer = SnapshotBuffer(history_size=2, snapshot_every=1)
    buffer.snapshot(module)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(-3.0).add_(1.0)
    (snap,) = buffer.snapshots
    for name, tensor in snap.items():
        torch.testing.assert_close(tensor, before[name])
        assert not tensor.requires_grad
        assert tensor.data_ptr() != module.state_dict()[name].data_ptr()


def test_snapshots_property_returns_a_new_list():
    buffer = _filled_buffer(_mlp(), n_snapshots=2)
    buffer.snapshots.clear()
    assert len(buffer) == 2


@pytest.mark.parametrize("make_module, bn", [(_mlp, False), (_bn_model, True)])
@pytest.mark.parametrize("reference", ["oldest", "newest", "all", "mean", "max"])
def test_reference_logits_equal_a_deep_copy_with_snapshot_weights(make_module, bn, reference, X):
    module = make_module()
    if bn:
        _train_forward(module)
    buffer = _filled_buffer(module, n_snapshots=3, bn=bn)
    states = buffer.snapshots
    logits = buffer.reference_logits(module, X, reference)
    if reference == "oldest":
        states = states[:1]
    elif reference == "newest":
        states = states[-1:]
    expected = torch.stack([_expected_logits(module, s, X) for s in states])
    assert logits.shape == (len(states), 5, 3)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    # The snapshots are really different models.
    if len(states) > 1:
        assert not torch.allclose(logits[0], logits[-1])


@pytest.mark.parametrize("reference", ["oldest", "all"])
@pytest.mark.parametrize("training", [True, False])
def test_reference_logits_leave_live_module_untouched(reference, training, X):
    module = _bn_model()
    _train_forward(module)
    buffer = _filled_buffer(module, n_snapshots=2, bn=True)
    module.train(training)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    first = buffer.reference_logits(module, X, reference)
    second = buffer.reference_logits(module, X, reference)
    torch.testing.assert_close(first, second)  # eval mode: dropout is off
    assert module.training is training
    assert all(m.training is training for m in module.modules())
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_reference_logits_do_not_track_gradients(X):
    module = _mlp()
    buffer = _filled_buffer(module, n_snapshots=2)
    assert not buffer.reference_logits(module, X, "all").requires_grad
    assert not buffer.reference_logits(module, X.requires_grad_(), "oldest").requires_grad


def test_stacked_cache_is_refreshed_after_a_new_snapshot(X):
    module = _mlp()
    buffer = _filled_buffer(module, n_snapshots=2)
    assert buffer.reference_logits(module, X, "all").shape[0] == 2
    buffer.snapshot(module)
    logits = buffer.reference_logits(module, X, "all")
    assert logits.shape[0] == 3
    torch.testing.assert_close(logits[-1], _expected_logits(module, buffer.snapshots[-1], X))


def test_empty_buffer_raises(X):
    buffer = SnapshotBuffer()
    with pytest.raises(ValueError, match="empty"):
        buffer.reference_logits(_mlp(), X)


@pytest.mark.parametrize("reference", ["median", "first", None])
def test_unknown_reference_raises(reference, X):
    module = _mlp()
    buffer = _filled_buffer(module, n_snapshots=1)
    with pytest.raises(ValueError, match="reference must be one of"):
        buffer.reference_logits(module, X, reference)


def test_cast_floating_casts_only_floating_tensors():
    module = _bn_model()
    state = module.state_dict()
    cast = cast_floating(state, torch.float64)
    for name, tensor in cast.items():
        if state[name].is_floating_point():
            assert tensor.dtype == torch.float64
            torch.testing.assert_close(tensor, state[name].double())
        else:
            assert tensor.dtype == state[name].dtype == torch.int64
    assert cast_floating(state, None) is state


@pytest.mark.parametrize("reference", ["oldest", "newest", "all"])
def test_float64_dtype_path(reference, X):
    module = _bn_model()
    _train_forward(module)
    buffer = _filled_buffer(module, n_snapshots=2, bn=True)
    single = buffer.reference_logits(module, X, reference)
    double = buffer.reference_logits(module, X.double(), reference, dtype=torch.float64)
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=1e-4, atol=1e-5)
    # The snapshots themselves keep their dtype; the live module too.
    assert all(t.dtype == torch.float32 for s in buffer.snapshots for n, t in s.items()
               if t.is_floating_point())
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_to_cpu_returns_self_and_keeps_values(X):
    module = _mlp()
    buffer = _filled_buffer(module, n_snapshots=2)
    before = buffer.reference_logits(module, X, "all")
    assert buffer.to("cpu") is buffer
    assert buffer.to(torch.device("cpu")) is buffer
    assert all(t.device.type == "cpu" for s in buffer.snapshots for t in s.values())
    assert buffer._stacked is None
    torch.testing.assert_close(buffer.reference_logits(module, X, "all"), before)


def test_pickle_round_trip_recomputes_the_stacked_cache(X):
    module = _bn_model()
    _train_forward(module)
    buffer = _filled_buffer(module, n_snapshots=3, history_size=3, bn=True)
    buffer.maybe_snapshot(module)
    expected = buffer.reference_logits(module, X, "all")
    assert buffer._stacked is not None
    restored = pickle.loads(pickle.dumps(buffer))
    assert buffer._stacked is not None  # pickling does not clear the original
    assert restored._stacked is None
    assert restored.n_steps_ == buffer.n_steps_ == 1
    assert restored.history_size == 3 and restored.snapshot_every == 1
    assert len(restored) == 3
    torch.testing.assert_close(restored.reference_logits(module, X, "all"), expected)
    torch.testing.assert_close(restored.reference_logits(module, X, "newest"), expected[-1:])
    # The bound survives the round trip.
    restored.snapshot(module)
    assert len(restored) == 3


def test_pickle_does_not_store_the_stacked_cache(X):
    module = _mlp()
    buffer = _filled_buffer(module, n_snapshots=3)
    size_before = len(pickle.dumps(buffer))
    buffer.reference_logits(module, X, "all")
    assert len(pickle.dumps(buffer)) == size_before


def test_eval_mode_restores_mode_even_on_error():
    module = _bn_model()
    module.train()
    with pytest.raises(RuntimeError):
        with eval_mode(module):
            assert not module.training
            raise RuntimeError
    assert module.training
    module.eval()
    with eval_mode(module):
        pass
    assert not module.training


# ------------------------------------------------ load_state_dict checks

def _saved_state(n_snapshots=2):
    module = _mlp()
    buffer = _filled_buffer(module, n_snapshots=n_snapshots)
    buffer.n_steps_ = 7
    return module, buffer.state_dict()


def _forged(state, change):
    snapshots = [dict(snapshot) for snapshot in state["snapshots"]]
    forged = {"n_steps": state["n_steps"], "snapshots": snapshots}
    replaced = change(forged, snapshots)
    return forged if replaced is None else replaced


def _set(key, value):
    def change(state, snapshots):
        state[key] = value
    return change


def _edit_first(edit):
    def change(state, snapshots):
        edit(snapshots[0])
    return change


FORGED_BUFFER_STATES = {
    "not a dict": (lambda state, snapshots: list(state.items()), "has the entries"),
    "missing n_steps": (lambda state, snapshots: state.pop("n_steps"), "has the entries"),
    "extra entry (configuration)": (_set("history_size", 10**6), "has the entries"),
    "negative n_steps": (_set("n_steps", -1), "n_steps=-1"),
    "bool n_steps": (_set("n_steps", True), "n_steps=True"),
    "float n_steps": (_set("n_steps", 2.5), "n_steps=2.5"),
    "tensor n_steps": (_set("n_steps", torch.tensor(3)), "n_steps="),
    "empty buffer": (_set("snapshots", []), "no snapshot"),
    "snapshots not a list": (_set("snapshots", {"0": {}}), "list of snapshots"),
    "snapshot not a dict": (_set("snapshots", [torch.zeros(3)]), "not a dict"),
    "missing tensor": (_edit_first(lambda s: s.pop("0.bias")), r"missing \['0.bias'\]"),
    "unexpected tensor": (_edit_first(lambda s: s.update(extra=torch.zeros(1))),
                          r"unexpected \['extra'\]"),
    "non-tensor value": (_edit_first(lambda s: s.update({"0.bias": [0.0] * 6})),
                         "list as '0.bias'"),
    "wrong shape": (_edit_first(lambda s: s.update({"0.bias": torch.zeros(7)})),
                    r"shape \(7,\)"),
    "float64 snapshot": (_edit_first(lambda s: s.update({"0.bias": s["0.bias"].double()})),
                         "dtype torch.float64"),
    "integer snapshot": (_edit_first(lambda s: s.update({"0.bias": s["0.bias"].long()})),
                         "dtype torch.int64"),
}


@pytest.mark.parametrize("case", sorted(FORGED_BUFFER_STATES))
def test_load_state_dict_refuses_a_forged_state_and_changes_nothing(case, X):
    module, saved = _saved_state()
    change, message = FORGED_BUFFER_STATES[case]
    forged = _forged(saved, change)
    buffer = _filled_buffer(module, n_snapshots=1)
    buffer.n_steps_ = 3
    before = buffer.reference_logits(module, X, "all")
    with pytest.raises(ValueError, match=message):
        buffer.load_state_dict(forged)
    assert buffer.n_steps_ == 3 and len(buffer) == 1
    torch.testing.assert_close(buffer.reference_logits(module, X, "all"), before)


def test_load_state_dict_checks_against_the_given_reference():
    module, saved = _saved_state()
    other = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5))
    empty = SnapshotBuffer(history_size=4, snapshot_every=1)
    with pytest.raises(ValueError, match=r"'2.weight' with shape \(3, 6\)"):
        empty.load_state_dict(saved, reference=other.state_dict())
    assert len(empty) == 0
    empty.load_state_dict(saved, reference=module.state_dict())
    assert len(empty) == 2 and empty.n_steps_ == 7


def test_load_state_dict_into_an_empty_buffer_checks_the_snapshots_agree():
    module, saved = _saved_state()
    mixed = {**saved, "snapshots": [saved["snapshots"][0],
                                    {**saved["snapshots"][1],
                                     "0.weight": torch.zeros(6, 5)}]}
    empty = SnapshotBuffer(history_size=4, snapshot_every=1)
    with pytest.raises(ValueError, match="Snapshot 1 of the state"):
        empty.load_state_dict(mixed)
    assert len(empty) == 0


def test_load_state_dict_keeps_the_newest_history_size_snapshots(X):
    module, saved = _saved_state(n_snapshots=4)
    small = _filled_buffer(module, n_snapshots=1, history_size=2)
    small.load_state_dict(saved)
    assert len(small) == 2 and small.history_size == 2 and small.n_steps_ == 7
    for kept, newest in zip(small.snapshots, saved["snapshots"][-2:]):
        for name in newest:
            assert torch.equal(kept[name], newest[name])
            assert kept[name] is not newest[name]  # copied
    small.snapshot(module)
    assert len(small) == 2  # the bound stays the buffer's own
