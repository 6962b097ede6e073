"""The fast paths give what the straightforward code gives, and stay on the device.

CPU tests check each shortcut taken for speed against the plain
computation it replaces, and count host synchronisation points by wrapping
the tensor methods that force one. Tests marked ``gpu`` repeat the
device-specific checks on CUDA and are skipped without it.
"""

import collections
import copy
import math
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.defence.discrepancy import memorization_discrepancy
from dsc_sklearn._torch import call_with_state, eval_mode, set_mode
from dsc_sklearn.defence.history import SnapshotBuffer
from dsc_sklearn.defence.modules import MLP, SmallCNN
from dsc_sklearn.defence.thresholds import AutoThreshold, FixedThreshold, ScheduleThreshold

CLASSES = np.arange(10)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def digits():
    return load_stream_dataset("digits", random_state=0)


# ------------------------------------------------------------ AutoThreshold

def _random_batches(rng, n_batches, sizes):
    batches = []
    for size in rng.choice(sizes, n_batches):
        values = torch.from_numpy(rng.lognormal(0.0, 3.0, size=size).astype(np.float32))
        if rng.random() < 0.05:
            values[rng.integers(size)] = math.nan
        if rng.random() < 0.05:
            values[rng.integers(size)] = math.inf
        if rng.random() < 0.1:
            values = torch.zeros(size)
        batches.append(values)
    return batches


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.9, 0.99, 0.995, 1.0, 0.123])
@pytest.mark.parametrize("sizes", [[256], [1, 7, 100, 333]])
def test_auto_threshold_is_torch_quantile_of_the_window_bit_for_bit(quantile, sizes):
    rng = np.random.default_rng(int(quantile * 1000) + len(sizes))
    policy = AutoThreshold(quantile=quantile, window=7, warmup=0)
    window = collections.deque(maxlen=7)
    for i, batch in enumerate(_random_batches(rng, 30, sizes)):
        if i % 9 == 4:
            policy = pickle.loads(pickle.dumps(policy))  # the cache does not travel
        if i % 9 == 7:
            policy = copy.deepcopy(policy)
        policy.update(batch, batch > 1e30)
        window.append(batch)
        expected = torch.quantile(torch.cat(tuple(window)), quantile)
        value = policy.current()
        assert value.dtype == expected.dtype and value.shape == expected.shape
        assert torch.equal(value, expected) or (value.isnan() and expected.isnan())


def test_auto_threshold_keeps_torch_quantile_errors():
    policy = AutoThreshold(quantile=1.5, warmup=0)
    with pytest.raises(RuntimeError, match="q must be in the range"):
        policy.update(torch.rand(10), torch.zeros(10, dtype=torch.bool))


def test_policies_hold_no_cache_in_their_state():
    # Checkpoints save a policy's vars(); the fast paths must not add to them.
    auto = AutoThreshold(warmup=1)
    fixed, schedule = FixedThreshold(0.5), ScheduleThreshold(lambda step: 0.1 * step)
    before = {id(p): set(vars(p)) for p in (auto, fixed, schedule)}
    for policy in (auto, fixed, schedule):
        for _ in range(3):
            statistic = torch.rand(50)
            policy.update(statistic, policy.flag(statistic))
            policy.current("cpu")
        assert set(vars(policy)) == before[id(policy)]


def test_constant_thresholds_are_built_once_per_value():
    fixed = FixedThreshold(0.25)
    assert fixed.current("cpu") is fixed.current("cpu")
    assert fixed.current("cpu").item() == 0.25
    schedule = ScheduleThreshold(lambda step: 0.5 + step)
    first = schedule.current()
    schedule.update(torch.rand(3), torch.zeros(3, dtype=torch.bool))
    assert first.item() == 0.5 and schedule.current().item() == 1.5


# ------------------------------------------------------- module evaluation

class _Counter(nn.Module):
    """A linear layer whose forward pass replaces a buffer, as BatchNorm does."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, X):
        self.calls = self.calls + 1
        return self.linear(X)


def _state(module, scale=1.0):
    torch.manual_seed(3)
    return {name: (tensor + scale * torch.rand_like(tensor)).detach()
            if tensor.is_floating_point() else tensor.clone()
            for name, tensor in module.state_dict().items()}


@pytest.mark.parametrize("make_module", [
    lambda: MLP(3, 2, hidden_layer_sizes=(4,)),
    lambda: SmallCNN(16, 2, channels=(2, 3)),
    lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval(),
    _Counter,
])
def test_call_with_state_matches_functional_call(make_module):
    torch.manual_seed(0)
    module = make_module()
    n_features = 16 if isinstance(module, SmallCNN) else 3
    X = torch.randn(5, n_features)
    own = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    state, expected_state = _state(module), _state(module)
    with torch.no_grad():
        result = call_with_state(module, state, X)
        expected = functional_call(module, expected_state, (X,))
    assert torch.equal(result, expected)
    assert state.keys() == expected_state.keys()
    for name in state:  # the same write-back of replaced tensors
        assert torch.equal(state[name], expected_state[name]), name
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, own[name]), name
    assert all(isinstance(p, nn.Parameter) for p in module.parameters())


def test_call_with_state_restores_the_module_when_forward_fails():
    module = nn.Linear(3, 2)
    weight = module.weight
    with pytest.raises(RuntimeError):
        call_with_state(module, _state(module), torch.randn(4, 5))
    assert module.weight is weight


class _FrozenDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.5)

    def train(self, mode=True):
        super().train(mode)
        self.dropout.train(False)
        return self


@pytest.mark.parametrize("make_module", [
    lambda: MLP(3, 2),
    lambda: nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2))),
    _FrozenDropout,
])
@pytest.mark.parametrize("mode", [True, False])
def test_set_mode_matches_module_train(make_module, mode):
    module, expected = make_module(), make_module()
    for m in (module, expected):
        next(iter(m.modules())).training = not mode
        list(m.modules())[-1].training = not mode
    set_mode(module, mode)
    expected.train(mode)
    assert [m.training for m in module.modules()] == [m.training for m in expected.modules()]
    with eval_mode(module):
        assert not any(m.training for m in module.modules())
    assert module.training is mode


# ------------------------------------------------------------ discrepancy

@pytest.mark.parametrize("n_samples, n_classes", [(64, 10), (300, 3), (1000, 16)])
def test_discrepancy_of_many_samples_matches_float64(n_samples, n_classes):
    torch.manual_seed(n_classes)
    reference = torch.randn(3, n_samples, n_classes) * 4
    current = torch.randn(n_samples, n_classes) * 4
    result = memorization_discrepancy(reference, current)
    expected = memorization_discrepancy(reference.double(), current.double())
    assert result.shape == (3, n_samples) and result.dtype == torch.float32
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(memorization_discrepancy(current, current), torch.zeros(n_samples))
    for i in range(3):
        assert torch.equal(result[i], memorization_discrepancy(reference[i], current))


# -------------------------------------------------------------- estimator

def test_integer_labels_take_the_fast_encoding(digits):
    X, y = digits.X_train[:60], digits.y_train[:60]
    clf = DiscrepancyAwareOnlineClassifier(random_state=0).partial_fit(X, y, classes=CLASSES)
    assert np.array_equal(clf._encode(y.astype(np.int32)), y)
    with pytest.raises(ValueError, match=r"labels \[10, 12\] that are not"):
        clf.partial_fit(X[:3], np.array([12, 3, 10]))
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.partial_fit(X[:3], np.array([0.5, 1.0, 2.0]))


# ---------------------------------------------------- input validation

def _validation_cases(X, y):
    """(X, y) pairs: the plain arrays of the fast path and everything around them."""
    X32 = np.ascontiguousarray(X[:40], dtype=np.float32)
    y = np.ascontiguousarray(y[:40], dtype=np.int64)

    def with_value(value, dtype=np.float32):
        bad = X32.astype(dtype)
        bad[3, 5] = value
        return bad

    read_only, y_read_only = X32.copy(), y.copy()
    read_only.flags.writeable = y_read_only.flags.writeable = False
    overflowing_sum = X32.copy()
    overflowing_sum[:4, :4] = 3e38  # finite values whose float32 sum is inf
    cases = {
        "float32": (X32, y),
        "float64": (X32.astype(np.float64), y),
        "int32 labels": (X32, y.astype(np.int32)),
        "uint8 labels": (X32, y.astype(np.uint8)),
        "bool labels": (X32, y % 2 == 0),
        "one row": (X32[:1], y[:1]),
        "nan": (with_value(np.nan), y),
        "inf": (with_value(-np.inf), y),
        "float64 nan": (with_value(np.nan, np.float64), y),
        "too large for float32": (with_value(1e39, np.float64), y),
        "sum overflows": (overflowing_sum, y),
        "fortran order": (np.asfortranarray(X32), y),
        "strided rows": (X32[::2], y[::2]),
        "read-only": (read_only, y),
        "read-only float64": (read_only.astype(np.float64), y),
        "big-endian": (X32.astype(">f4"), y),
        "float16": (X32.astype(np.float16), y),
        "int64": ((X32 * 16).astype(np.int64), y),
        "complex": (X32.astype(np.complex64), y),
        "strings": (np.full(X32.shape, "a"), y),
        "object": (X32.astype(object), y),
        "list": (X32.tolist(), y.tolist()),
        "matrix": (np.asmatrix(X32), y),
        "memmap-like subclass": (X32.view(type("Sub", (np.ndarray,), {})), y),
        "wrong width": (X32[:, :10].copy(), y),
        "too wide": (np.hstack([X32, X32]), y),
        "no rows": (X32[:0], y[:0]),
        "no columns": (X32[:, :0].copy(), y),
        "1d": (X32[:, 0].copy(), y),
        "3d": (X32.reshape(40, 8, 8), y),
        "scalar": (np.float32(1.0), y[:1]),
        "labels too short": (X32, y[:-1]),
        "labels too long": (X32[:-1], y),
        "float labels": (X32, y.astype(np.float64)),
        "nan labels": (X32, np.where(np.arange(40) == 3, np.nan, y.astype(float))),
        "string labels": (X32, y.astype(str)),
        "column labels": (X32, y[:, None]),
        "2-d labels": (X32, np.stack([y, y], axis=1)),
        "strided labels": (X32, np.repeat(y, 2)[::2]),
        "read-only labels": (X32, y_read_only),
        "no labels": (X32, None),
    }
    pd = pytest.importorskip("pandas")
    columns = [f"pixel_{i}" for i in range(X32.shape[1])]
    cases["frame"] = (pd.DataFrame(X32, columns=columns), y)
    cases["renamed frame"] = (pd.DataFrame(X32, columns=columns[::-1]), y)
    cases["series labels"] = (X32, pd.Series(y))
    return cases


def _outcome(call):
    """What a call returns (arrays and how they are laid out), raises and warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001: the error is the outcome
            result = exc
    caught = [(w.category, str(w.message)) for w in caught]
    if isinstance(result, Exception):
        return ("raises", type(result), str(result)), caught
    arrays = result if isinstance(result, tuple) else (result,)
    return arrays, caught


def _assert_same_outcome(fast, slow, inputs):
    (fast_result, fast_warnings), (slow_result, slow_warnings) = fast, slow
    assert fast_warnings == slow_warnings
    if isinstance(slow_result[0], str) or isinstance(fast_result[0], str):
        assert isinstance(fast_result[0], str) and fast_result == slow_result, fast_result
        return
    assert len(fast_result) == len(slow_result)
    for a, b, given in zip(fast_result, slow_result, inputs):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert a.flags.writeable == b.flags.writeable
        assert a.flags.c_contiguous == b.flags.c_contiguous
        if isinstance(given, np.ndarray):  # copied or not, alike
            assert np.shares_memory(a, given) == np.shares_memory(b, given)


@pytest.fixture(scope="module", params=["numpy", "frame"])
def fitted(request, digits):
    X, y = digits.X_train[:60], digits.y_train[:60]
    if request.param == "frame":
        pd = pytest.importorskip("pandas")
        X = pd.DataFrame(X, columns=[f"pixel_{i}" for i in range(X.shape[1])])
    return DiscrepancyAwareOnlineClassifier(random_state=0).partial_fit(X, y, classes=CLASSES)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_fast_validation_gives_what_validate_data_gives(fitted, digits):
    # The arrays, their dtype and layout, every error and every warning.
    from sklearn.utils.validation import validate_data

    from dsc_sklearn.defence._classifier import _validated_batch

    state = dict(vars(fitted))
    for name, (X, y) in _validation_cases(digits.X_train, digits.y_train).items():
        fast = _outcome(lambda: _validated_batch(fitted, X, y, reset=False))
        slow = _outcome(lambda: validate_data(fitted, X, y, dtype=np.float32,
                                              force_writeable=True, reset=False))
        try:
            _assert_same_outcome(fast, slow, (X, y))
            fast = _outcome(lambda: fitted._validated_input(X))
            slow = _outcome(lambda: validate_data(fitted, X, dtype=np.float32,
                                                  force_writeable=True, reset=False))
            _assert_same_outcome(fast, slow, (X,))
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from exc
        assert vars(fitted).keys() == state.keys()


def test_plain_arrays_skip_validate_data(digits, monkeypatch):
    import dsc_sklearn.defence._classifier as classifier

    X, y = digits.X_train[:200], digits.y_train[:200]
    clf = DiscrepancyAwareOnlineClassifier(random_state=0).partial_fit(X[:100], y[:100],
                                                                       classes=CLASSES)

    def refuse(*args, **kwargs):
        raise AssertionError("validate_data called")

    monkeypatch.setattr(classifier, "validate_data", refuse)
    for dtype, labels in ((np.float32, np.int64), (np.float64, np.int32), (np.float32, np.uint8)):
        clf.partial_fit(X[100:].astype(dtype), y[100:].astype(labels))
        clf.predict(X.astype(dtype))
    with pytest.raises(AssertionError, match="validate_data called"):
        clf.partial_fit(np.asfortranarray(X[100:]), y[100:])
    assert clf.n_batches_seen_ == 4


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_partial_fit_refuses_bad_batches_as_without_the_fast_path(fitted, digits,
                                                                   monkeypatch):
    # The same errors and messages, and nothing trained, with and without it.
    import dsc_sklearn.defence._classifier as classifier

    plain = classifier._plain_float32
    for name, (X, y) in _validation_cases(digits.X_train, digits.y_train).items():
        outcomes = []
        for fast in (True, False):
            clf = copy.deepcopy(fitted)
            monkeypatch.setattr(classifier, "_plain_float32",
                                plain if fast else (lambda estimator, X: (None, X)))
            (result, caught) = _outcome(lambda: clf.partial_fit(X, y))
            outcomes.append((result if isinstance(result[0], str) else "trained", caught,
                             clf.n_batches_seen_))
        assert outcomes[0] == outcomes[1], name


@pytest.fixture
def host_syncs(monkeypatch):
    """Count calls of the tensor methods that copy a value to the host."""
    counts = collections.Counter()
    for name in ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "nonzero"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


#: (parameters, decisions per batch): which rows the gate flagged (or, for
#: "drop", kept), and which are still flagged after each correction step
#: but the last.
#: The step guard's decision (``tolist`` of its two measurements) is one
#: more per batch.
_NO_GUARD = dict(step_guard=None)
SYNC_CASES = [
    (dict(_NO_GUARD, correction="none"), 0),
    (dict(), 1),
    (dict(_NO_GUARD, correction="dsc", threshold=1e9), 1),
    (dict(correction="dsc", threshold=1e9), 2),
    (dict(_NO_GUARD, correction="dsc", threshold=1e9, reference="mean",
          loss_threshold=1e9), 1),
    (dict(_NO_GUARD, correction="drop", threshold=1e9), 1),
    (dict(_NO_GUARD, correction="drop", threshold=0.0), 1),
    (dict(_NO_GUARD, correction="dsc", threshold=0.0, max_correction_steps=2), 2),
    (dict(_NO_GUARD, threshold="auto", correction="descent", max_correction_steps=2), 0),
    (dict(_NO_GUARD, correction="adversarial", max_correction_steps=2), 0),
]


@pytest.mark.parametrize("params, per_batch", SYNC_CASES)
def test_host_syncs_per_batch_are_the_decisions_only(digits, host_syncs, params, per_batch):
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(batch_size=20, random_state=0, **params)
    clf.partial_fit(X[:20], y[:20], classes=CLASSES)
    for n_batches in (2, 6):
        host_syncs.clear()
        clf.partial_fit(X[:20 * n_batches], y[:20 * n_batches])
        decisions = host_syncs["__bool__"] + host_syncs["nonzero"] + host_syncs["tolist"]
        assert decisions == per_batch * n_batches, host_syncs
        assert host_syncs["cpu"] == 1  # the log and the flags, once per call
        for name in ("item", "__float__", "__int__"):
            assert host_syncs[name] == 0, (name, host_syncs)
    assert len(clf.stream_log_) == 9 and clf.last_flagged_.shape == (120,)


@pytest.fixture
def host_copies(monkeypatch):
    """Count tensors built from host data: directly (a synchronising copy onto
    a CUDA device) and through ``_torch.to_device`` (an asynchronous one)."""
    from dsc_sklearn._torch import to_device

    counts = collections.Counter()
    for name in ("as_tensor", "tensor"):
        original = getattr(torch, name)

        def counting(data, *args, _original=original, **kwargs):
            if not isinstance(data, torch.Tensor):
                caller = sys._getframe(1).f_code
                counts["to_device" if caller is to_device.__code__ else "direct"] += 1
            return _original(data, *args, **kwargs)

        monkeypatch.setattr(torch, name, counting)
    return counts


@pytest.mark.parametrize("params, per_batch", SYNC_CASES)
def test_host_data_reaches_the_device_without_a_sync(digits, host_copies, params, per_batch):
    # On CUDA, a tensor built from host data onto the device waits for it;
    # to_device stages the data in page-locked memory and does not.
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(batch_size=20, random_state=0, **params)
    clf.partial_fit(X[:20], y[:20], classes=CLASSES)
    clf.partial_fit(X[20:100], y[20:100])  # constant() builds each value once
    host_copies.clear()
    clf.partial_fit(X[100:220], y[100:220])
    assert host_copies["direct"] == 0, host_copies
    assert host_copies["to_device"] >= 2  # the inputs and the labels


# ------------------------------------------------------------ step guard

def _reservoir_slots_loop(n_seen, n_rows, size, generator):
    """The step guard's reservoir as first written: a Python loop over the rows."""
    seen = n_seen + np.arange(n_rows)
    draws = (torch.rand(n_rows, generator=generator, dtype=torch.float64).numpy()
             * (seen + 1)).astype(np.int64)
    kept = {}
    for row, (count, draw) in enumerate(zip(seen, draws)):
        slot = count if count < size else draw
        if slot < size:
            kept[slot] = row
    slots = sorted(kept)
    return slots, [kept[slot] for slot in slots]


@pytest.mark.parametrize("n_seen, n_rows, size", [
    (0, 256, 256), (0, 10, 256), (100, 256, 256), (250, 20, 256), (5000, 256, 256),
    (10 ** 6, 256, 256), (0, 1, 1), (3, 50, 4), (0, 0, 8),
])
def test_reservoir_slots_are_the_loop_s(n_seen, n_rows, size):
    from dsc_sklearn.defence.guards import _reservoir_slots

    for seed in range(5):
        expected = _reservoir_slots_loop(n_seen, n_rows, size,
                                         torch.Generator().manual_seed(seed))
        generator = torch.Generator().manual_seed(seed)
        assert _reservoir_slots(n_seen, n_rows, size, generator) == expected
        # The same draws, so the stream of draws goes on alike.
        assert torch.equal(generator.get_state(), _advanced(seed, n_rows))


def _advanced(seed, n_rows):
    generator = torch.Generator().manual_seed(seed)
    torch.rand(n_rows, generator=generator, dtype=torch.float64)
    return generator.get_state()


def _plain_guard(monkeypatch):
    """The step guard's shortcuts replaced by the code they replace."""
    from dsc_sklearn.defence import guards
    from dsc_sklearn.defence._net import DiscrepancyAwareNet

    def eval_logits(net, X):
        with torch.no_grad(), eval_mode(net.module_):
            return net.module_(X)

    monkeypatch.setattr(guards, "_reservoir_slots", _reservoir_slots_loop)
    monkeypatch.setattr(guards, "_copies", lambda buffers, tensors: [t.clone() for t in tensors])
    monkeypatch.setattr(DiscrepancyAwareNet, "_eval_logits", eval_logits)
    monkeypatch.setattr(guards._Probe, "_loss_of_logits",
                        lambda probe: torch.nn.functional.cross_entropy(probe.logits, probe.y))


def _guarded_stream(digits, **guard):
    from dsc_sklearn.defence.guards import StepGuard

    clf = DiscrepancyAwareOnlineClassifier(batch_size=20, random_state=0,
                                           step_guard=StepGuard(**guard))
    X, y = digits.X_train, digits.y_train
    for start in range(0, len(X), 200):
        X_call = X[start:start + 200]
        if start >= 600:  # a shift, so that steps are pulled back and refused
            X_call = np.clip(X_call * 1.5 + 0.1, 0.0, 1.0).astype(np.float32)
        clf.partial_fit(X_call, y[start:start + 200], classes=CLASSES)
    return clf


@pytest.mark.parametrize("guard", [
    dict(margin=1.05, warmup=3),
    dict(margin=1.2, probe="recent", recent_size=32, rule="strict", probe_size=64),
    dict(margin=1.1, rule="bound", optimizer_state="interpolate", admit="all"),
])
def test_step_guard_shortcuts_give_the_plain_code_s_numbers(digits, monkeypatch, guard):
    fast = _guarded_stream(digits, **guard)
    with monkeypatch.context() as patch:
        _plain_guard(patch)
        plain = _guarded_stream(digits, **guard)
    assert fast.n_steps_scaled_ == plain.n_steps_scaled_ > 0
    np.testing.assert_equal(list(fast.stream_log_), list(plain.stream_log_))
    for a, b in zip(fast.module_.parameters(), plain.module_.parameters()):
        assert torch.equal(a, b)
    fast_state = fast.net_.step_guard_.state_dict()
    plain_state = plain.net_.step_guard_.state_dict()
    assert fast_state["window"] == plain_state["window"]
    for name in ("probe", "recent"):
        for key, value in fast_state[name].items():
            assert (value is None and plain_state[name][key] is None) or torch.equal(
                value, plain_state[name][key])


def test_step_guard_reuses_its_buffers_and_pickles_without_them(digits):
    clf = DiscrepancyAwareOnlineClassifier(batch_size=50, random_state=0)
    clf.partial_fit(digits.X_train[:100], digits.y_train[:100], classes=CLASSES)
    guard = clf.net_.step_guard_
    params, state = guard._step_buffers
    assert len(params) == len(list(clf.module_.parameters())) == len(state)
    clf.partial_fit(digits.X_train[100:200], digits.y_train[100:200])
    assert all(a is b for a, b in zip(guard._step_buffers[0], params))
    assert all(a is b for a, b in zip(guard._step_buffers[1], state))
    assert guard._params is None and guard._state is None  # nothing kept across steps
    restored = pickle.loads(pickle.dumps(clf))
    assert "_step_buffers" not in vars(restored.net_.step_guard_)
    assert "_step_buffers" not in vars(copy.deepcopy(guard))
    for model in (clf, restored):
        model.partial_fit(digits.X_train[200:300], digits.y_train[200:300])
    np.testing.assert_equal(restored.stream_log_[-1], clf.stream_log_[-1])


# -------------------------------------------------------------------- GPU

@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("params", [
    dict(correction="none"),
    dict(),
    dict(threshold=0.0, reference="mean", history_size=3, snapshot_every=2),
    dict(threshold=0.0, granularity="batch", loss_threshold="auto"),
    dict(threshold=0.0, correction="drop"),
    dict(correction="descent", max_correction_steps=2, clip_value=0.1),
    dict(correction="adversarial", max_correction_steps=2, input_bounds=(0.0, 1.0)),
    dict(threshold=lambda step: 0.01 * step, module=SmallCNN),
])
def test_cuda_every_defence_trains_and_stays_on_the_device(digits, params):
    clf = DiscrepancyAwareOnlineClassifier(device="cuda", batch_size=50, random_state=0,
                                           **params)
    for start in range(0, 600, 200):
        clf.partial_fit(digits.X_train[start:start + 200], digits.y_train[start:start + 200],
                        classes=CLASSES)
    net = clf.net_
    assert all(p.is_cuda for p in clf.module_.parameters())
    assert all(t.is_cuda for s in clf.snapshots_ for t in s.values())
    assert net.threshold_policy_.current(clf.device_).is_cuda
    assert len(clf.stream_log_) == 12 and np.isfinite(clf.stream_log_[-1]["loss"])
    assert clf.last_flagged_.dtype == bool and clf.last_flagged_.shape == (200,)
    X = torch.as_tensor(digits.X_test[:64], device="cuda")
    assert net.discrepancy(X).is_cuda
    assert clf.predict_proba(digits.X_test).shape == (len(digits.X_test), 10)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("params, per_batch", SYNC_CASES)
def test_cuda_synchronises_only_for_the_decisions(digits, params, per_batch):
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(device="cuda", batch_size=20, random_state=0,
                                           **params)
    clf.partial_fit(X[:40], y[:40], classes=CLASSES)
    counts = []
    for n_batches in (2, 6):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                clf.partial_fit(X[:20 * n_batches], y[:20 * n_batches])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    # One wait per call (the log's copy back), one per decision.
    assert counts == [1 + 2 * per_batch, 1 + 6 * per_batch], counts


@pytest.mark.gpu
@requires_cuda
def test_cuda_fast_paths_match_the_plain_computations():
    torch.manual_seed(0)
    window = collections.deque(maxlen=5)
    policy = AutoThreshold(warmup=0, window=5)
    for _ in range(8):
        batch = torch.rand(300, device="cuda") ** 3
        policy.update(batch, batch > 2)
        window.append(batch)
        assert torch.equal(policy.current("cuda"), torch.quantile(torch.cat(tuple(window)), 0.99))
    module = MLP(64, 10).cuda()
    buffer = SnapshotBuffer(history_size=3, snapshot_every=1)
    for _ in range(3):
        buffer.snapshot(module)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))
    X = torch.rand(100, 64, device="cuda")
    for reference in ("oldest", "all"):
        logits = buffer.reference_logits(module, X, reference)
        states = buffer.snapshots[:1] if reference == "oldest" else buffer.snapshots
        with torch.no_grad():
            expected = torch.stack([functional_call(module, s, (X,)) for s in states])
        torch.testing.assert_close(logits, expected)
    current = module(X).detach()
    torch.testing.assert_close(memorization_discrepancy(logits, current).cpu(),
                               memorization_discrepancy(logits.cpu(), current.cpu()),
                               rtol=1e-4, atol=1e-6)
