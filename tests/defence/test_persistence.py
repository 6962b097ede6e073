"""Persistence: pickle, joblib and save_params/load_params in mid-stream.

A round trip must continue the stream exactly as the uninterrupted
estimator: same weights, optimizer momentum, snapshots, threshold state,
random generator of ``correction="adversarial"``, counters and log. A model
trained on CUDA must load on a machine without CUDA; without a GPU this is
simulated by making torch tag every stored tensor as living on ``cuda:0``
(loading such a tensor without ``map_location`` fails on a CPU-only
machine), and checked for real by the tests marked ``gpu``.
"""

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
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from skorch.exceptions import DeviceWarning

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._persistence import FORMAT, FORMAT_VERSION, estimator_state
from dsc_sklearn.defence.modules import SmallCNN
from dsc_sklearn.defence.thresholds import linear_schedule

CLASSES = np.arange(10)
SMALL = dict(hidden_layer_sizes=(32,), batch_size=50, history_size=3, snapshot_every=2)
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
    clf = DiscrepancyAwareOnlineClassifier(threshold=linear_schedule(0.1, 0.5), random_state=0)
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
