import random
import socket
import sys
import urllib.request

import numpy as np
import pytest

from dsc_sklearn.evaluation.datasets import DATASETS, load_stream_dataset

SPLITS = ("train", "val", "test")
# Small sizes keep mnist1d generation (about 1 ms per sample) fast.
SMALL = {"digits": None, "mnist1d": 500, "synthetic": 1000}


def _load(name, **kwargs):
    kwargs.setdefault("n_samples", SMALL[name])
    kwargs.setdefault("random_state", 0)
    return load_stream_dataset(name, **kwargs)


@pytest.fixture(params=DATASETS)
def name(request):
    if request.param == "mnist1d":
        pytest.importorskip("mnist1d")
    return request.param


def test_datasets_constant():
    assert DATASETS == ("digits", "mnist1d", "synthetic")


def test_arrays_have_expected_types_and_shapes(name):
    data = _load(name)
    n_features = {"digits": 64, "mnist1d": 40, "synthetic": 64}[name]
    for split in SPLITS:
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        assert X.dtype == np.float32 and X.ndim == 2
        assert X.flags.c_contiguous
        assert X.shape == (len(y), n_features)
        assert y.dtype == np.int64 and y.ndim == 1
        assert np.all(np.isfinite(X))
    assert data.name == name
    assert data.n_classes == 10
    assert isinstance(data.description, str) and data.description
    if data.image_shape is not None:
        assert np.prod(data.image_shape) == n_features
        data.X_train.reshape(-1, *data.image_shape)


def test_metadata():
    pytest.importorskip("mnist1d")
    expected = {
        "digits": ((1, 8, 8), (0.0, 1.0)),
        "mnist1d": ((1, 40), None),
        "synthetic": (None, None),
    }
    for name, (image_shape, input_bounds) in expected.items():
        data = _load(name)
        assert data.image_shape == image_shape
        assert data.input_bounds == input_bounds


def test_split_sizes_are_fractions_of_all_samples(name):
    data = _load(name, validation_size=0.2, test_size=0.3)
    n_total = sum(len(data[f"y_{split}"]) for split in SPLITS)
    assert n_total == (SMALL[name] or 1797)
    assert len(data.y_test) == pytest.approx(0.3 * n_total, abs=1)
    assert len(data.y_val) == pytest.approx(0.2 * n_total, abs=1)


def test_splits_are_stratified(name):
    data = _load(name)
    overall = np.bincount(
        np.concatenate([data[f"y_{split}"] for split in SPLITS]), minlength=10
    ) / sum(len(data[f"y_{split}"]) for split in SPLITS)
    for split in SPLITS:
        y = data[f"y_{split}"]
        assert set(np.unique(y)) == set(range(10))
        proportions = np.bincount(y, minlength=10) / len(y)
        np.testing.assert_allclose(proportions, overall, atol=0.03)


def test_same_seed_gives_identical_arrays(name):
    first, second = _load(name, random_state=7), _load(name, random_state=7)
    for key in (f"{kind}_{split}" for kind in "Xy" for split in SPLITS):
        np.testing.assert_array_equal(first[key], second[key])


def test_different_seeds_give_different_splits(name):
    first, second = _load(name, random_state=1), _load(name, random_state=2)
    assert not np.array_equal(first.X_train, second.X_train)


def test_random_state_instance_is_accepted():
    data = load_stream_dataset(random_state=np.random.RandomState(0))
    assert len(data.y_train) > 0


def test_digits_inputs_lie_in_unit_interval():
    data = _load("digits")
    X = np.concatenate([data.X_train, data.X_val, data.X_test])
    assert X.min() == 0.0 and X.max() == 1.0


def test_digits_subsampling():
    data = _load("digits", n_samples=500)
    assert sum(len(data[f"y_{split}"]) for split in SPLITS) == 500
    full = _load("digits", n_samples=1797)
    assert sum(len(full[f"y_{split}"]) for split in SPLITS) == 1797


@pytest.mark.parametrize("name", ["mnist1d", "synthetic"])
def test_standardized_with_training_statistics(name):
    if name == "mnist1d":
        pytest.importorskip("mnist1d")
    data = _load(name)
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.X_train.std(axis=0), 1.0, atol=1e-4)
    assert abs(data.X_test.mean()) < 0.2


def test_mnist1d_n_samples_not_multiple_of_ten():
    pytest.importorskip("mnist1d")
    data = _load("mnist1d", n_samples=203)
    assert sum(len(data[f"y_{split}"]) for split in SPLITS) == 203


def test_mnist1d_is_generated_without_network_or_files(monkeypatch, tmp_path):
    pytest.importorskip("mnist1d")
    import mnist1d.data
    import requests

    def _forbidden(*args, **kwargs):
        raise AssertionError("the loader must not touch the network")

    monkeypatch.setattr(requests, "get", _forbidden)
    monkeypatch.setattr(requests.Session, "request", _forbidden)
    monkeypatch.setattr(urllib.request, "urlopen", _forbidden)
    monkeypatch.setattr(socket.socket, "connect", _forbidden)
    monkeypatch.setattr(socket, "create_connection", _forbidden)
    monkeypatch.setattr(mnist1d.data, "get_dataset", _forbidden)
    monkeypatch.chdir(tmp_path)

    data = _load("mnist1d")

    assert len(data.y_train) > 0
    assert list(tmp_path.iterdir()) == []


def test_mnist1d_leaves_global_random_state_untouched():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(123)
    expected = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    _load("mnist1d", n_samples=100)
    assert (np.random.rand(), random.random()) == expected


def test_mnist1d_missing_raises_helpful_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r'pip install "dsc-sklearn\[mnist1d\]"'):
        load_stream_dataset("mnist1d", n_samples=100)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="'digits', 'mnist1d', 'synthetic'"):
        load_stream_dataset("mnist")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_size": 0.0}, "test_size == 0.0, must be > 0"),
        ({"test_size": 1.0}, "test_size == 1.0, must be < 1"),
        ({"validation_size": -0.1}, "validation_size == -0.1, must be > 0"),
        ({"validation_size": 1.5}, "validation_size == 1.5, must be < 1"),
        (
            {"validation_size": 0.5, "test_size": 0.5},
            r"validation_size \+ test_size must be < 1",
        ),
        ({"n_samples": 0}, "n_samples == 0, must be >= 1"),
        ({"n_samples": 2000}, "n_samples=2000 exceeds the 1797 samples"),
    ],
)
def test_invalid_sizes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_stream_dataset("digits", **kwargs)


def test_non_numeric_size_raises_type_error():
    with pytest.raises(TypeError, match="test_size"):
        load_stream_dataset("digits", test_size="0.2")
