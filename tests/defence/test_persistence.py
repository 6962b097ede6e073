"""Persistence: pickle, joblib and save_params/load_params in mid-stream.

A round trip must continue the stream exactly as the uninterrupted
estimator: same weights, optimizer momentum, snapshots, threshold state,
random generator of ``correction="adversarial"``, counters and log. A model
trained on CUDA must load on a machine without CUDA; without a GPU this is
simulated by making torch tag every stored tensor as living on ``cuda:0``
(loading such a tensor without ``map_location`` fails on a CPU-only
machine), and checked for real by the tests marked ``gpu``.
"""

import copy
import io
import math
import pickle
import warnings
from unittest import mock

import joblib
import numpy as np
import pytest
import torch
import torch.serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from skorch.exceptions import DeviceWarning

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._persistence import FORMAT, FORMAT_VERSION, estimator_state
from dsc_sklearn.defence.modules import SmallCNN
from dsc_sklearn.defence.thresholds import linear_schedule

CLASSES = np.arange(10)
# DSC's gate runs, so the threshold policies calibrate; the step guard is on.
SMALL = dict(hidden_layer_sizes=(32,), batch_size=50, history_size=3, snapshot_every=2,
             correction="dsc")
CONFIGS = {
    # "auto" calibrates after 10 batches: the checkpoint holds a live window.
    "auto": dict(SMALL, input_bounds=(0.0, 1.0), random_state=0),
    # A schedule's value depends on the step counter of the policy.
    "schedule": dict(SMALL, threshold=linear_schedule(0.0, 1e-3), random_state=1),
    # Random starts come from net_.generator_.
    "adversarial": dict(SMALL, correction="adversarial", max_correction_steps=2,
                        input_bounds=(0.0, 1.0), random_state=2),
}
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(),
                                  reason="simulates a machine without CUDA")


def stream(clf, X, y, start, stop, batch_size=100):
    for first in range(start, stop, batch_size):
        clf.partial_fit(X[first:first + batch_size], y[first:first + batch_size],
                        classes=CLASSES)
    return clf


def assert_same(a, b, where="state", atol=0.0):
    """Recursive equality of two checkpoints (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{where}: {m}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]", atol)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, float) and atol:
        assert b == pytest.approx(a, abs=atol), where
    else:
        assert a == b, where


def assert_same_estimator(a, b, atol=0.0):
    assert_same(estimator_state(a), estimator_state(b), atol=atol)


def assert_plain(value, where="payload"):
    """Only what torch.load(weights_only=True) is meant for."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, (str, int)), where
            assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    else:
        assert isinstance(value, (torch.Tensor, bool, int, float, str, type(None))), (
            f"{where} is a {type(value).__name__}"
        )


def continue_both(original, restored, X, y, start=600, stop=1100):
    stream(original, X, y, start, stop)
    stream(restored, X, y, start, stop)
    assert_allclose(restored.predict_proba(X), original.predict_proba(X), atol=1e-6)
    np.testing.assert_equal(list(restored.stream_log_), list(original.stream_log_))
    assert_same_estimator(original, restored, atol=1e-6)


def joblib_round_trip(clf):
    buffer = io.BytesIO()
    joblib.dump(clf, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def save_load_round_trip(clf, **params):
    buffer = io.BytesIO()
    clf.save_params(buffer)
    buffer.seek(0)
    return clone(clf).set_params(**params).load_params(buffer)


ROUND_TRIPS = {
    "pickle": lambda clf: pickle.loads(pickle.dumps(clf)),
    "joblib": joblib_round_trip,
    "save_params": save_load_round_trip,
}


# ------------------------------------------------------------ round trips

@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("method", sorted(ROUND_TRIPS))
def test_round_trip_mid_stream_continues_exactly(digits, method, config):
    X, y = digits.X_train, digits.y_train
    original = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS[config]), X, y, 0, 600)
    if config == "auto":
        assert np.isfinite(original.threshold_)  # the window is calibrated
    restored = ROUND_TRIPS[method](original)
    assert_same_estimator(original, restored)
    assert torch.equal(restored.net_.generator_.get_state(),
                       original.net_.generator_.get_state())
    continue_both(original, restored, X, y)


def test_round_trip_restores_each_piece_of_state(digits):
    X, y = digits.X_train, digits.y_train
    original = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]), X, y, 0, 700)
    restored = save_load_round_trip(original)
    policy, restored_policy = original.net_.threshold_policy_, restored.net_.threshold_policy_
    assert restored_policy.n_updates_ == policy.n_updates_ == 14
    assert len(restored_policy._history) == len(policy._history) > 0
    assert restored_policy._history.maxlen == policy._history.maxlen
    assert restored.threshold_ == original.threshold_
    assert restored.net_.snapshots_.n_steps_ == original.net_.snapshots_.n_steps_
    assert len(restored.snapshots_) == len(original.snapshots_) == 3
    momentum = restored.net_.optimizer_.state_dict()["state"]
    assert momentum and all("momentum_buffer" in s for s in momentum.values())
    assert (restored.n_batches_seen_, restored.n_samples_seen_, restored.n_flagged_) == (
        original.n_batches_seen_, original.n_samples_seen_, original.n_flagged_)
    assert restored.stream_log_.maxlen == original.stream_log_.maxlen
    assert_array_equal(restored.last_flagged_, original.last_flagged_)
    assert restored.last_flagged_.dtype == bool
    assert restored.device_ == original.device_


def test_schedule_step_survives_a_round_trip(digits):
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(threshold=linear_schedule(0.1, 0.5),
                                           correction="dsc", random_state=0)
    stream(clf, X, y, 0, 300)
    for restored in (pickle.loads(pickle.dumps(clf)), save_load_round_trip(clf)):
        assert restored.threshold_ == pytest.approx(1.6)
        stream(restored, X, y, 300, 400)
        assert restored.stream_log_[-1]["threshold"] == pytest.approx(1.6)


def test_fitted_estimator_can_load_a_checkpoint_of_the_same_shape(digits):
    X, y = digits.X_train, digits.y_train
    saved = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["schedule"]), X, y, 0, 600)
    other = stream(clone(saved), X, y, 600, 800)
    buffer = io.BytesIO()
    saved.save_params(buffer)
    buffer.seek(0)
    assert other.load_params(buffer) is other
    assert_same_estimator(saved, other)


# ----------------------------------------------------------- determinism

@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_same_random_state_gives_the_same_results_with_deterministic_algorithms(digits,
                                                                              config):
    """Identical runs, with torch.use_deterministic_algorithms on or off."""
    X, y = digits.X_train, digits.y_train
    default = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS[config]), X, y, 0, 700)
    enabled = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [stream(DiscrepancyAwareOnlineClassifier(**CONFIGS[config]), X, y, 0, 700)
                for _ in range(2)]
        fitted = DiscrepancyAwareOnlineClassifier(**CONFIGS[config]).fit(X[:700], y[:700])
        scores = runs[0].memorization_discrepancy(X[:50], "all")
    finally:
        torch.use_deterministic_algorithms(enabled)  # restore the global flag
    assert torch.are_deterministic_algorithms_enabled() == enabled
    for run in runs:
        assert_same_estimator(default, run)
    np.testing.assert_equal(list(fitted.stream_log_), list(default.stream_log_))  # fit = ordered stream
    assert_array_equal(fitted.predict_proba(X), default.predict_proba(X))
    assert_array_equal(scores, default.memorization_discrepancy(X[:50], "all"))


# ------------------------------------------------------------- file format

def test_save_params_file_loads_with_weights_only(digits, tmp_path):
    clf = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["adversarial"]),
                 digits.X_train, digits.y_train, 0, 300)
    path = tmp_path / "checkpoint.pt"
    clf.save_params(path)
    payload = torch.load(path, weights_only=True)
    assert_plain(payload)
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    assert payload["classes"] == {"values": list(range(10)), "dtype": CLASSES.dtype.str}
    assert payload["n_features_in"] == 64 and payload["feature_names_in"] is None
    assert payload["counters"]["n_batches_seen"] == 6
    assert payload["params"]["correction"] == "adversarial"
    assert payload["params"]["input_bounds"] == [0.0, 1.0]
    restored = DiscrepancyAwareOnlineClassifier(**CONFIGS["adversarial"]).load_params(str(path))
    assert_same_estimator(clf, restored)


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]),
    np.array(["cat", "dog", "emu"], dtype=object),
    np.array([-1.0, 0.0, 2.0]),
    np.array([False, True]),
])
def test_labels_of_any_plain_type_round_trip(digits, labels):
    X = digits.X_train[:200]
    y = labels[digits.y_train[:200] % len(labels)]
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]).fit(X, y)
    restored = save_load_round_trip(clf)
    assert restored.classes_.dtype == clf.classes_.dtype
    assert_array_equal(restored.classes_, clf.classes_)
    assert_array_equal(restored.predict(X), clf.predict(X))


def test_feature_names_round_trip(digits):
    pd = pytest.importorskip("pandas")
    columns = [f"pixel_{i}" for i in range(64)]
    frame = pd.DataFrame(digits.X_train[:300], columns=columns)
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]).fit(frame, digits.y_train[:300])
    restored = save_load_round_trip(clf)
    assert_array_equal(restored.feature_names_in_, columns)
    assert restored.feature_names_in_.dtype == object
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        restored.predict(digits.X_train[:5])


def test_save_params_needs_a_fitted_estimator(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DiscrepancyAwareOnlineClassifier().save_params(tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists()


def test_load_params_does_not_touch_the_global_torch_rng(digits):
    buffer = io.BytesIO()
    stream(DiscrepancyAwareOnlineClassifier(random_state=0), digits.X_train,
           digits.y_train, 0, 100).save_params(buffer)
    buffer.seek(0)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    DiscrepancyAwareOnlineClassifier(random_state=0).load_params(buffer)
    assert_array_equal(torch.rand(3), expected)


# ------------------------------------------------------------- mismatches

@pytest.fixture(scope="module")
def checkpoint(digits):
    clf = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                 digits.X_train, digits.y_train, 0, 300)
    buffer = io.BytesIO()
    clf.save_params(buffer)
    return buffer.getvalue()


def _load(clf, data):
    return clf.load_params(io.BytesIO(data))


@pytest.mark.parametrize("params, message", [
    ({"hidden_layer_sizes": (16,)}, r"different architecture.*hidden_layer_sizes"),
    ({"module": SmallCNN}, "different architecture"),
    ({"module": torch.nn.Linear(32, 10)}, "cannot process one sample of 64 features"),
    ({"threshold": 0.1}, r"AutoThreshold as the net's threshold_policy_.*FixedThreshold"),
])
def test_load_params_refuses_a_different_estimator(checkpoint, params, message):
    clf = DiscrepancyAwareOnlineClassifier(**{**CONFIGS["auto"], **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match=message):
            _load(clf, checkpoint)
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")
    assert not hasattr(clf, "n_features_in_")


def test_fitted_estimator_refuses_other_features_or_classes(digits, checkpoint):
    X, y = digits.X_train, digits.y_train
    fewer_features = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]).fit(X[:200, :32], y[:200])
    other_classes = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]).fit(X[:200], y[:200] % 5)
    for clf, message in [(fewer_features, "64 features.*fitted on 32"),
                         (other_classes, r"classes \[0, 1, .*fitted on \[0, 1, 2, 3, 4\]")]:
        before = estimator_state(clf)
        with pytest.raises(ValueError, match=message):
            _load(clf, checkpoint)
        assert_same(before, estimator_state(clf))


def test_failed_load_leaves_a_fitted_estimator_unchanged(digits, checkpoint):
    clf = DiscrepancyAwareOnlineClassifier(**{**CONFIGS["auto"], "threshold": 0.1})
    stream(clf, digits.X_train, digits.y_train, 0, 200)
    before = estimator_state(clf)
    with pytest.raises(ValueError, match="threshold_policy_"):
        _load(clf, checkpoint)
    assert_same(before, estimator_state(clf))


def _saved(payload):
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_load_params_refuses_files_that_are_not_checkpoints(digits, checkpoint):
    payload = torch.load(io.BytesIO(checkpoint), weights_only=True)
    newer = _saved({**payload, "format_version": FORMAT_VERSION + 1})
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"])
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}"):
        _load(clf, newer)
    incomplete = _saved({k: v for k, v in payload.items() if k != "counters"})
    with pytest.raises(ValueError, match="lacks the entry 'counters'"):
        _load(clf, incomplete)
    with pytest.raises(ValueError, match="not a checkpoint written by"):
        _load(clf, _saved(payload["net"]["module"]))  # a bare state dict
    with pytest.raises(ValueError, match="not a checkpoint written by"):
        _load(clf, b"not a torch file at all")
    fitted = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                    digits.X_train, digits.y_train, 0, 100)
    with pytest.raises(ValueError, match="weights_only.*trust"):
        _load(clf, pickle.dumps(fitted))  # a pickle runs code: refused
    assert not hasattr(clf, "net_")


def test_load_params_warns_about_changed_parameters_and_applies_them(digits, checkpoint):
    clf = DiscrepancyAwareOnlineClassifier(**{**CONFIGS["auto"], "lr": 0.05})
    with pytest.warns(UserWarning, match=r"lr=0\.1 \(now 0\.05\)"):
        _load(clf, checkpoint)
    clf.partial_fit(digits.X_train[300:400], digits.y_train[300:400])
    assert clf.net_.optimizer_.param_groups[0]["lr"] == 0.05


def test_load_params_takes_the_device_from_its_own_parameters(checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"], device="cpu"),
                    checkpoint)
    assert clf.device_ == torch.device("cpu")
    assert all(t.device.type == "cpu" for s in clf.snapshots_ for t in s.values())


@without_cuda
def test_load_params_on_cuda_without_cuda_is_a_clear_error(checkpoint):
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"], device="cuda")
    with pytest.raises(ValueError, match="device='cuda'.*CUDA is not available.*'auto'"):
        _load(clf, checkpoint)
    assert not hasattr(clf, "net_")


# --------------------------------------------------- CUDA -> CPU, simulated

@pytest.fixture
def tagged_as_cuda():
    """Make torch record every tensor it stores as living on cuda:0."""
    with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
        yield


def _as_if_trained_on_cuda(clf):
    clf.device_ = torch.device("cuda")
    clf.net_.device = "cuda"
    return clf


@without_cuda
def test_simulation_really_needs_map_location(tagged_as_cuda):
    data = pickle.dumps(torch.ones(2))
    buffer = io.BytesIO()
    torch.save({"x": torch.ones(2)}, buffer)
    with pytest.raises(RuntimeError, match="CUDA"):
        pickle.loads(data)
    buffer.seek(0)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(buffer, weights_only=True)


@without_cuda
@pytest.mark.parametrize("method", ["pickle", "joblib"])
@pytest.mark.parametrize("config", ["auto", "adversarial"])
def test_pickle_of_a_cuda_model_loads_on_cpu(digits, method, config):
    """Every tensor of the net goes through skorch's map_location path."""
    X, y = digits.X_train, digits.y_train
    original = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS[config]), X, y, 0, 600)
    reference = pickle.loads(pickle.dumps(original))
    _as_if_trained_on_cuda(original)
    buffer = io.BytesIO()
    with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
        if method == "pickle":
            pickle.dump(original, buffer)
        else:
            joblib.dump(original, buffer)
    buffer.seek(0)
    with pytest.warns(DeviceWarning):
        restored = pickle.load(buffer) if method == "pickle" else joblib.load(buffer)
    assert restored.device_ == torch.device("cpu")
    assert torch.device(restored.net_.device) == torch.device("cpu")
    assert_same_estimator(reference, restored)
    continue_both(reference, restored, X, y)


@without_cuda
def test_save_params_of_a_cuda_model_loads_on_cpu(digits):
    X, y = digits.X_train, digits.y_train
    original = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["adversarial"]), X, y, 0, 600)
    buffer = io.BytesIO()
    with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
        original.save_params(buffer)
    buffer.seek(0)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(buffer, weights_only=True)  # the simulation is real
    buffer.seek(0)
    restored = DiscrepancyAwareOnlineClassifier(**CONFIGS["adversarial"]).load_params(buffer)
    assert restored.device_ == torch.device("cpu")
    continue_both(original, restored, X, y)


# ------------------------------------------------------------- real CUDA

@pytest.mark.gpu
@requires_cuda
def test_cuda_checkpoint_loads_on_cpu(digits):
    X, y = digits.X_train, digits.y_train
    params = dict(CONFIGS["adversarial"], device="cuda")
    clf = stream(DiscrepancyAwareOnlineClassifier(**params), X, y, 0, 600)
    assert all(t.is_cuda for s in clf.snapshots_ for t in s.values())
    buffer = io.BytesIO()
    clf.save_params(buffer)
    buffer.seek(0)
    on_cpu = DiscrepancyAwareOnlineClassifier(**dict(params, device="cpu"))
    on_cpu.load_params(buffer)
    assert on_cpu.device_ == torch.device("cpu")
    assert all(t.device.type == "cpu" for s in on_cpu.snapshots_ for t in s.values())
    assert_allclose(on_cpu.predict_proba(X), clf.predict_proba(X), atol=1e-5)
    stream(on_cpu, X, y, 600, 700)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("config", ["auto", "adversarial"])
def test_cuda_pickle_round_trip_continues_on_cuda_and_loads_without_cuda(digits, config):
    X, y = digits.X_train, digits.y_train
    clf = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS[config], device="cuda"),
                 X, y, 0, 600)
    data = pickle.dumps(clf)
    continue_both(clf, pickle.loads(data), X, y)
    with mock.patch("torch.cuda.is_available", lambda: False):
        with pytest.warns(DeviceWarning):
            on_cpu = pickle.loads(data)
    assert on_cpu.device_ == torch.device("cpu")
    assert all(t.device.type == "cpu" for s in on_cpu.snapshots_ for t in s.values())
    stream(on_cpu, X, y, 600, 700)


# ------------------------------------------------- forged checkpoints (#14)

def _forge(data, edit):
    """The checkpoint ``data`` after ``edit(payload)``, saved again."""
    payload = torch.load(io.BytesIO(data), weights_only=True)
    edit(payload)
    return _saved(payload)


def _state(payload, name):
    return payload["net"]["state"][name]["state"]


def _set(path, value):
    """An edit that sets ``payload[path[0]][path[1]]...`` to ``value``."""
    def edit(payload):
        target = payload
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return edit


def _drop(path):
    def edit(payload):
        target = payload
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


SNAPSHOTS = ("net", "state", "snapshots_", "state")
POLICY = ("net", "state", "threshold_policy_", "state")
OPTIMIZER = ("net", "optimizer")
FIRST_RECORD = ("stream_log", 0)

#: Forged or corrupt checkpoints load_params must refuse: (edit, message).
FORGED = {
    # configuration smuggled into a component's state
    "policy warmup=1e9": (_set(POLICY + ("warmup",), 10**9), "has the entries"),
    "policy quantile=1": (_set(POLICY + ("quantile",), 1.0), "has the entries"),
    "policy max_flagged_fraction": (_set(POLICY + ("max_flagged_fraction",), 0.0),
                                    "has the entries"),
    "buffer history_size": (_set(SNAPSHOTS + ("history_size",), 10**6), "has the entries"),
    "policy of another type": (_set(("net", "state", "threshold_policy_", "type"),
                                    "dsc_sklearn.defence.thresholds.FixedThreshold"),
                               "FixedThreshold as the net's threshold_policy_"),
    # the snapshot buffer
    "no snapshot": (_set(SNAPSHOTS + ("snapshots",), []), "holds no snapshot"),
    "float64 snapshots": (_set(SNAPSHOTS + ("snapshots",), lambda snapshots: [
        {k: v.double() for k, v in s.items()} for s in snapshots]), "dtype torch.float64"),
    "snapshot of another shape": (_set(SNAPSHOTS + ("snapshots", 0, "layers.0.bias"),
                                       torch.zeros(5)), r"shape \(5,\)"),
    "snapshot with a missing tensor": (_drop(SNAPSHOTS + ("snapshots", 0, "layers.0.bias")),
                                       "missing"),
    "snapshot with an extra tensor": (_set(SNAPSHOTS + ("snapshots", 0, "extra"),
                                           torch.zeros(1)), "unexpected"),
    "negative snapshot clock": (_set(SNAPSHOTS + ("n_steps",), -1), "n_steps=-1"),
    "float snapshot clock": (_set(SNAPSHOTS + ("n_steps",), 2.5), "n_steps=2.5"),
    "bool snapshot clock": (_set(SNAPSHOTS + ("n_steps",), True), "n_steps=True"),
    # the threshold policy's state
    "NaN in the calibration window": (_set(POLICY + ("window", 0), lambda w: w * math.nan),
                                      "non-finite"),
    "negative update count": (_set(POLICY + ("n_updates",), -3), "n_updates=-3"),
    # the optimizer
    "momentum of another shape": (_set(OPTIMIZER + ("state", 0, "momentum_buffer"),
                                       torch.zeros(3)), "momentum_buffer"),
    "momentum in float64": (_set(OPTIMIZER + ("state", 0, "momentum_buffer"),
                                 lambda m: m.double()), "momentum_buffer"),
    "momentum not a tensor": (_set(OPTIMIZER + ("state", 0, "momentum_buffer"), [0.0]),
                              "momentum_buffer"),
    "optimizer state of an unknown parameter": (_set(OPTIMIZER + ("state", 99),
                                                     {"momentum_buffer": torch.zeros(1)}),
                                                "parameter 99"),
    "optimizer state not a dict": (_set(OPTIMIZER + ("state",), [1, 2]), "optimizer"),
    "two parameter groups": (_set(OPTIMIZER + ("param_groups",), lambda g: g + g),
                             "parameter group"),
    "parameter group of other parameters": (_set(OPTIMIZER + ("param_groups", 0, "params"),
                                                 [0, 1]), "parameter group"),
    "parameter ids as tensors": (_set(OPTIMIZER + ("param_groups", 0, "params", 0),
                                      torch.zeros(2)), "parameter group"),
    "optimizer without param_groups": (_drop(OPTIMIZER + ("param_groups",)), "optimizer"),
    # the generator
    "generator state of another size": (_set(("net", "state", "generator_", "state"),
                                             lambda s: s[:10]), "generator_"),
    "generator state not a tensor": (_set(("net", "state", "generator_", "state"), 7),
                                     "generator_"),
    # the net's state attributes
    "unknown state attribute": (_set(("net", "state", "optimizer_"),
                                     {"type": "torch.optim.sgd.SGD", "state": {}}),
                                "optimizer_"),
    "missing snapshot buffer": (_drop(("net", "state", "snapshots_")), "snapshots_"),
    "state attribute not a dict": (_set(("net", "state", "snapshots_"), [1]), "snapshots_"),
    "skorch history not a list": (_set(("net", "history"), {"epoch": 1}), "history"),
    "skorch history row not a dict": (_set(("net", "history"), [1, 2]), "history"),
    "module weights of another dtype": (_set(("net", "module", "layers.0.bias"),
                                             lambda t: t.double()), "dtype torch.float64"),
    # counters, log and flags
    "negative counter": (_set(("counters", "n_batches_seen"), -1), "n_batches_seen=-1"),
    "float counter": (_set(("counters", "n_samples_seen"), 300.5), "n_samples_seen=300.5"),
    "bool counter": (_set(("counters", "n_flagged"), True), "n_flagged=True"),
    "string counter": (_set(("counters", "n_flagged"), "12"), "n_flagged='12'"),
    "missing counter": (_drop(("counters", "n_flagged")), "counters"),
    "extra counter": (_set(("counters", "n_steps_forged"), 1), "counters"),
    "more flagged than seen": (_set(("counters", "n_flagged"), 10**6), "n_flagged"),
    "stream_log not a list": (_set(("stream_log",), {"step": 1}), "stream_log"),
    "log record not a dict": (_set(FIRST_RECORD, [1, 2]), "stream_log"),
    "log record with an unknown field": (_set(FIRST_RECORD + ("forged",), 1.0), "forged"),
    "log record without a step": (_drop(FIRST_RECORD + ("step",)), "step"),
    "log value a string": (_set(FIRST_RECORD + ("loss",), "low"), "loss"),
    "log value a bool": (_set(FIRST_RECORD + ("n_flagged",), True), "n_flagged"),
    "log value a tensor": (_set(FIRST_RECORD + ("loss",), torch.tensor(1.0)), "loss"),
    "last_flagged of floats": (_set(("last_flagged",), lambda f: f.float()), "last_flagged"),
    "last_flagged 2-D": (_set(("last_flagged",), lambda f: f.reshape(1, -1)), "last_flagged"),
    "last_flagged a list": (_set(("last_flagged",), [True]), "last_flagged"),
    # classes and features
    "one class": (_set(("classes", "values"), [0]), "at least two"),
    "no class": (_set(("classes", "values"), []), "at least two"),
    "duplicated classes": (_set(("classes", "values"), [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
                           "sorted and unique"),
    "unsorted classes": (_set(("classes", "values"), list(range(9, -1, -1))),
                         "sorted and unique"),
    "NaN class": (_set(("classes",), {"values": [0.0, math.nan] + list(range(2, 10)),
                                      "dtype": "<f8"}), "NaN"),
    "nested class values": (_set(("classes", "values"), [[0, 1]] * 10), "classes"),
    "unknown class dtype": (_set(("classes", "dtype"), "no-such-dtype"), "classes"),
    "datetime class dtype": (_set(("classes", "dtype"), "<M8[ns]"), "classes"),
    "classes not a dict": (_set(("classes",), list(range(10))), "classes"),
    "zero features": (_set(("n_features_in",), 0), "n_features_in"),
    "bool features": (_set(("n_features_in",), True), "n_features_in"),
    "string features": (_set(("n_features_in",), "64"), "n_features_in"),
    "other features": (_set(("n_features_in",), 32), "different architecture"),
    "feature names of another length": (_set(("feature_names_in",), ["a", "b"]),
                                        "feature_names_in"),
    "feature names not strings": (_set(("feature_names_in",), list(range(64))),
                                  "feature_names_in"),
    # the header
    "params not a dict": (_set(("params",), [1, 2]), "params"),
    "params holding a tensor": (_set(("params", "lr"), torch.tensor(0.1)), "params"),
    "unexpected entry": (_set(("forged",), 1), "forged"),
    "version a string": (_set(("format_version",), "2"), "format version"),
    "version a bool": (_set(("format_version",), True), "format version"),
}


@pytest.fixture(scope="module")
def fitted(digits):
    return stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                  digits.X_train, digits.y_train, 0, 200)


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_checkpoint_is_refused_and_changes_nothing(checkpoint, fitted, case):
    edit, message = FORGED[case]
    data = _forge(checkpoint, edit)
    unfitted = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match=message):
            _load(unfitted, data)
        assert not hasattr(unfitted, "net_") and not hasattr(unfitted, "classes_")
        clf = copy.deepcopy(fitted)
        before = estimator_state(clf)
        with pytest.raises(ValueError):
            _load(clf, data)
    assert_same(before, estimator_state(clf))


def _configuration(clf):
    """What only the estimator's parameters may decide."""
    net = clf.net_
    policy = net.threshold_policy_
    groups = [{k: v for k, v in group.items() if k != "params"}
              for group in net.optimizer_.param_groups]
    return {
        "params": clf.get_params(),
        "policy": (type(policy), policy.quantile, policy.window, policy.warmup,
                   policy.max_flagged_fraction, policy._history.maxlen),
        "buffer": (net.snapshots_.history_size, net.snapshots_.snapshot_every,
                   net.snapshots_._snapshots.maxlen),
        "optimizer": groups,
        "defence": {param: getattr(net, param) for param in ("epsilon", "reference",
                                                              "granularity", "correction")},
    }


def _after_a_partial_fit(clf, digits):
    clf.partial_fit(digits.X_train[300:400], digits.y_train[300:400])
    return clf


@pytest.mark.parametrize("edit", [
    # The optimizer's hyper-parameters are configuration: a file cannot turn
    # SGD into gradient ascent or add weight decay.
    _set(OPTIMIZER + ("param_groups", 0), lambda group: {
        **group, "maximize": True, "weight_decay": 5.0, "nesterov": True,
        "dampening": 0.5, "lr": 100.0, "momentum": 0.0}),
    # The saved copy of the parameters is informational.
    _set(("params",), lambda params: {**params, "history_size": 10**6, "epsilon": 0.0,
                                      "threshold": 0.0, "correction": "none"}),
    # A policy's value is recomputed with the estimator's own quantile.
    _set(POLICY + ("value",), torch.tensor(1e9)),
], ids=["optimizer hyper-parameters", "saved params", "threshold value"])
def test_a_checkpoint_never_changes_the_configuration(checkpoint, digits, edit):
    reference = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]), checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        forged = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                       _forge(checkpoint, edit))
    assert _configuration(forged) == _configuration(reference)
    assert forged.threshold_ == reference.threshold_
    _after_a_partial_fit(forged, digits)
    _after_a_partial_fit(reference, digits)
    assert _configuration(forged) == _configuration(reference)
    assert_array_equal(forged.predict_proba(digits.X_test),
                       reference.predict_proba(digits.X_test))


def test_more_snapshots_than_history_size_keep_the_newest(checkpoint, digits):
    def tenfold(payload):
        snapshots = _state(payload, "snapshots_")["snapshots"]
        _state(payload, "snapshots_")["snapshots"] = [
            {k: v + index for k, v in snapshots[-1].items()} for index in range(10)]

    clf = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                _forge(checkpoint, tenfold))
    assert len(clf.snapshots_) == clf.history_size == 3
    assert clf.net_.snapshots_._snapshots.maxlen == 3
    assert [float(s["layers.0.bias"][0] - clf.snapshots_[0]["layers.0.bias"][0])
            for s in clf.snapshots_] == [0.0, 1.0, 2.0]
    _after_a_partial_fit(clf, digits)
    assert len(clf.snapshots_) == 3


def test_a_longer_calibration_window_keeps_the_newest_batches(checkpoint):
    forged = []

    def longer(payload):
        window = _state(payload, "threshold_policy_")["window"]
        window[:] = [values + 10.0 * index for index in range(5) for values in window]
        forged[:] = window

    clf = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                _forge(checkpoint, longer))
    policy = clf.net_.threshold_policy_
    assert len(forged) > policy.window == len(policy._history) == 20
    assert all(torch.equal(a, b) for a, b in zip(policy._history, forged[-20:]))
    expected = torch.quantile(torch.cat(forged[-20:]), policy.quantile)
    assert float(policy._value) == pytest.approx(float(expected), rel=1e-6)  # still warming up


WEIRD = [None, True, -1, 0, 2**40, 1.5, math.nan, math.inf, "x", [], {}, [1], {"a": 1},
         torch.tensor(1.0), torch.zeros(0), torch.zeros(2, 3, dtype=torch.float64),
         torch.ones(4, dtype=torch.bool)]


def _paths(value, path=()):
    """Every place in a payload: dict entries, list items and the leaves."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        # Every record of a long list looks alike: the first two will do.
        for index, item in enumerate(value[:2]):
            yield from _paths(item, path + (index,))


def _mutations(data):
    payload = torch.load(io.BytesIO(data), weights_only=True)
    return st.tuples(st.sampled_from(sorted(_paths(payload), key=repr)),
                     st.sampled_from(WEIRD + ["<double>", "<shorter>", "<drop>"]))


@pytest.mark.slow
def test_any_forged_entry_is_refused_or_loads_a_working_estimator(checkpoint, fitted,
                                                                  digits):
    """Whatever the file holds: a ValueError that changes nothing, or a working estimator."""
    reference = _configuration(_load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                                     checkpoint))

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(mutation=_mutations(checkpoint))
    def check(mutation):
        path, value = mutation
        if value == "<drop>":
            edit = _drop(path)
        elif value in ("<double>", "<shorter>"):
            def change(old):
                if not isinstance(old, torch.Tensor):
                    return old
                if value == "<double>":
                    return old.double() if old.is_floating_point() else old.float()
                return old.reshape(-1)[:-1]
            edit = _set(path, change)
        else:
            edit = _set(path, value)
        data = _forge(checkpoint, edit)
        clf = copy.deepcopy(fitted)
        before = estimator_state(clf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                _load(clf, data)
            except ValueError:
                assert_same(before, estimator_state(clf))
                return
        assert _configuration(clf) == reference
        _after_a_partial_fit(clf, digits)
        assert np.isfinite(clf.predict_proba(digits.X_test)).all()
        assert _configuration(clf) == reference

    check()


# ---------------------------------------------- corrupt and truncated files

NOT_A_CHECKPOINT = "not a checkpoint written by save_params"


def _refused(data_or_path, clf=None):
    """The ValueError load_params raises; it must chain the original error."""
    clf = clf or DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"])
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with pytest.raises(ValueError) as info:
        clf.load_params(source)
    assert not hasattr(clf, "net_")
    return info.value


def test_a_truncated_checkpoint_is_a_clear_error_at_every_offset(checkpoint):
    size = len(checkpoint)
    offsets = sorted(set(range(0, size, max(1, size // 150))) | set(range(size - 64, size)))
    for offset in offsets:
        error = _refused(checkpoint[:offset])
        assert NOT_A_CHECKPOINT in str(error), offset
        assert "truncated or corrupt" in str(error), offset
        assert error.__cause__ is not None, offset


def _flipped(data, position, bit):
    flipped = bytearray(data)
    flipped[position] ^= 1 << bit
    return bytes(flipped)


def _assert_refused_or_intact(checkpoint, reference, position, bit):
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _load(clf, _flipped(checkpoint, position, bit))
    except ValueError as error:
        assert error.__cause__ is not None or "corrupt" in str(error), (position, bit)
        assert not hasattr(clf, "net_")
        return "refused"
    # A flipped bit the reader does not depend on (a zip header's time
    # stamp, the padding before a record) changes nothing.
    assert_same(estimator_state(reference), estimator_state(clf))
    return "intact"


def test_byte_flips_are_refused_or_change_nothing(checkpoint):
    reference = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]), checkpoint)
    outcomes = [_assert_refused_or_intact(checkpoint, reference, position, position % 8)
                for position in range(0, len(checkpoint), 97)]
    assert outcomes.count("refused") > 0.8 * len(outcomes)


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_flips_are_refused_or_change_nothing(checkpoint, data):
    reference = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]), checkpoint)
    position = data.draw(st.integers(0, len(checkpoint) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    _assert_refused_or_intact(checkpoint, reference, position, bit)


def _zip_of(name, content):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["empty", "text", "zip of a text file", "deflated copy",
                                  "torch file of a list", "directory", "gzip"])
def test_files_that_are_not_checkpoints_are_a_clear_error(checkpoint, tmp_path, case):
    import gzip
    import zipfile

    if case == "deflated copy":
        # The same records, compressed: not what torch.save writes.
        buffer = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(checkpoint)) as source, \
                zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
            for record in source.infolist():
                target.writestr(record.filename, source.read(record))
        content = buffer.getvalue()
    else:
        content = {
            "empty": b"",
            "text": b"hello, world\n",
            "zip of a text file": _zip_of("notes.txt", "hello"),
            "torch file of a list": _saved([1, 2, 3]),
            "gzip": gzip.compress(checkpoint),
        }.get(case)
    path = tmp_path / "checkpoint.pt"
    if case == "directory":
        path.mkdir()
    else:
        path.write_bytes(content)
    error = _refused(path)
    assert "checkpoint written by" in str(error)
    assert repr(str(path)) in str(error)  # names the file
    error = _refused(str(path))
    assert "checkpoint written by" in str(error)


def test_a_missing_file_stays_a_file_not_found_error(tmp_path):
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"])
    with pytest.raises(FileNotFoundError):
        clf.load_params(tmp_path / "no-such-file.pt")
    assert not hasattr(clf, "net_")


def test_a_text_mode_file_is_a_clear_error(checkpoint, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint)
    with open(path, encoding="latin-1") as text:
        error = _refused(text)
    assert "binary mode" in str(error)


def test_a_checkpoint_in_the_middle_of_a_stream_loads_from_its_position(checkpoint):
    buffer = io.BytesIO(b"header" + checkpoint)
    buffer.seek(6)
    clf = DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]).load_params(buffer)
    assert clf.n_batches_seen_ == 6


def test_a_checkpoint_written_without_crc32_still_loads(digits):
    if not hasattr(torch.serialization, "set_crc32_options"):
        pytest.skip("torch without set_crc32_options")
    clf = stream(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]),
                 digits.X_train, digits.y_train, 0, 100)
    buffer = io.BytesIO()
    enabled = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        clf.save_params(buffer)
    finally:
        torch.serialization.set_crc32_options(enabled)
    restored = _load(DiscrepancyAwareOnlineClassifier(**CONFIGS["auto"]), buffer.getvalue())
    assert_same_estimator(clf, restored)
