import random
import socket
import sys
import urllib.request

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from dsc_sklearn.evaluation import datasets as datasets_module
from dsc_sklearn.evaluation.datasets import (
    DATASETS,
    DRIFT_STREAMS,
    load_drift_stream,
    load_stream_dataset,
)

SPLITS = ("train", "val", "test")
RIVER_SETS = ("imagesegments", "shuttle", "phishing", "bananas")
# Small sizes keep mnist1d generation (about 1 ms per sample) fast.
SMALL = {"digits": None, "mnist1d": 500, "synthetic": 1000, "imagesegments": None,
         "shuttle": 2000, "phishing": None, "bananas": None,
         **dict.fromkeys(DRIFT_STREAMS, 1000)}
# Rows of the data sets whose SMALL size is None (the whole set).
FULL_SIZE = {"digits": 1797, "imagesegments": 2310, "phishing": 1250, "bananas": 5300}
N_FEATURES = {"digits": 64, "mnist1d": 40, "synthetic": 64, "imagesegments": 18,
              "shuttle": 9, "phishing": 9, "bananas": 2, "sea": 3, "agrawal": 9,
              "hyperplane": 10, "randomrbf": 10, "led": 24}
N_CLASSES = {"digits": 10, "mnist1d": 10, "synthetic": 10, "imagesegments": 7,
             "shuttle": 2, "phishing": 2, "bananas": 2, "sea": 2, "agrawal": 2,
             "hyperplane": 2, "randomrbf": 5, "led": 10}
STANDARDIZED = tuple(name for name in DATASETS if name != "digits")


def _load(name, **kwargs):
    kwargs.setdefault("n_samples", SMALL[name])
    kwargs.setdefault("random_state", 0)
    return load_stream_dataset(name, **kwargs)


def _skip_if_missing(name):
    if name == "mnist1d":
        pytest.importorskip("mnist1d")
    elif name in RIVER_SETS + DRIFT_STREAMS:
        pytest.importorskip("river")


@pytest.fixture(params=DATASETS)
def name(request):
    _skip_if_missing(request.param)
    return request.param


def test_datasets_constant():
    assert DATASETS == ("digits", "mnist1d", "synthetic", *RIVER_SETS, *DRIFT_STREAMS)
    assert DRIFT_STREAMS == ("sea", "agrawal", "hyperplane", "randomrbf", "led")


def test_arrays_have_expected_types_and_shapes(name):
    data = _load(name)
    n_features = N_FEATURES[name]
    for split in SPLITS:
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        assert X.dtype == np.float32 and X.ndim == 2
        assert X.flags.c_contiguous
        assert X.shape == (len(y), n_features)
        assert y.dtype == np.int64 and y.ndim == 1
        assert np.all(np.isfinite(X))
    assert data.name == name
    assert data.n_classes == N_CLASSES[name]
    assert isinstance(data.description, str) and data.description
    if data.image_shape is not None:
        assert np.prod(data.image_shape) == n_features
        data.X_train.reshape(-1, *data.image_shape)


def test_metadata(name):
    expected = {"digits": ((1, 8, 8), (0.0, 1.0)), "mnist1d": ((1, 40), None)}
    image_shape, input_bounds = expected.get(name, (None, None))
    data = _load(name)
    assert data.image_shape == image_shape
    assert data.input_bounds == input_bounds


def test_split_sizes_are_fractions_of_all_samples(name):
    data = _load(name, validation_size=0.2, test_size=0.3)
    n_total = sum(len(data[f"y_{split}"]) for split in SPLITS)
    assert n_total == (SMALL[name] or FULL_SIZE[name])
    assert len(data.y_test) == pytest.approx(0.3 * n_total, abs=1)
    assert len(data.y_val) == pytest.approx(0.2 * n_total, abs=1)


def test_splits_are_stratified(name):
    data = _load(name)
    n_classes = N_CLASSES[name]
    overall = np.bincount(
        np.concatenate([data[f"y_{split}"] for split in SPLITS]), minlength=n_classes
    ) / sum(len(data[f"y_{split}"]) for split in SPLITS)
    for split in SPLITS:
        y = data[f"y_{split}"]
        assert set(np.unique(y)) == set(range(n_classes))
        proportions = np.bincount(y, minlength=n_classes) / len(y)
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


@pytest.mark.parametrize("name", STANDARDIZED)
def test_standardized_with_training_statistics(name, monkeypatch):
    _skip_if_missing(name)
    fitted_on = []
    fit = StandardScaler.fit

    def _recording_fit(self, X, *args, **kwargs):
        fitted_on.append(np.array(X))
        return fit(self, X, *args, **kwargs)

    monkeypatch.setattr(StandardScaler, "fit", _recording_fit)
    data = _load(name)
    # One scaler, fitted on the training split alone (its rows, standardised).
    assert len(fitted_on) == 1 and len(fitted_on[0]) == len(data.y_train)
    scale = fitted_on[0].std(axis=0)
    scale[scale == 0] = 1.0
    np.testing.assert_allclose(
        (fitted_on[0] - fitted_on[0].mean(axis=0)) / scale, data.X_train, atol=1e-4
    )
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.X_train.std(axis=0), 1.0, atol=1e-4)
    assert abs(data.X_test.mean()) < 0.2


def test_mnist1d_n_samples_not_multiple_of_ten():
    pytest.importorskip("mnist1d")
    data = _load("mnist1d", n_samples=203)
    assert sum(len(data[f"y_{split}"]) for split in SPLITS) == 203


def _forbid_network(monkeypatch):
    def _forbidden(*args, **kwargs):
        raise AssertionError("the loader must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", _forbidden)
    monkeypatch.setattr(socket.socket, "connect", _forbidden)
    monkeypatch.setattr(socket, "create_connection", _forbidden)
    try:
        import requests
    except ImportError:
        pass
    else:
        monkeypatch.setattr(requests, "get", _forbidden)
        monkeypatch.setattr(requests.Session, "request", _forbidden)
    return _forbidden


OFFLINE = [
    ("mnist1d", load_stream_dataset),
    *((name, load_stream_dataset) for name in RIVER_SETS + DRIFT_STREAMS),
    *((name, load_drift_stream) for name in DRIFT_STREAMS),
]


@pytest.mark.parametrize(
    "name, loader", OFFLINE, ids=[f"{loader.__name__}-{name}" for name, loader in OFFLINE]
)
def test_loaded_without_network_or_files(name, loader, monkeypatch, tmp_path):
    _skip_if_missing(name)
    forbidden = _forbid_network(monkeypatch)
    if name == "mnist1d":
        import mnist1d.data

        monkeypatch.setattr(mnist1d.data, "get_dataset", forbidden)
    else:
        import river.datasets.base

        monkeypatch.setattr(river.datasets.base.RemoteDataset, "download", forbidden)
        datasets_module._read_river_dataset.cache_clear()  # read the file again
    monkeypatch.chdir(tmp_path)

    if loader is load_drift_stream:
        data = loader(name, n_samples=300, n_stream=200, position=100, width=50,
                      random_state=0)
        assert len(data.y_stream) == 200
    else:
        data = _load(name)

    assert len(data.y_train) > 0
    assert list(tmp_path.iterdir()) == []


def test_mnist1d_missing_raises_helpful_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r'pip install "dsc-sklearn\[mnist1d\]"'):
        load_stream_dataset("mnist1d", n_samples=100)


def test_river_missing_raises_helpful_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "river", None)
    monkeypatch.setitem(sys.modules, "river.datasets", None)
    monkeypatch.setitem(sys.modules, "river.datasets.synth", None)
    datasets_module._read_river_dataset.cache_clear()
    for name in ("phishing", "sea"):
        with pytest.raises(ImportError, match=rf"The '{name}' dataset requires the river"):
            load_stream_dataset(name, n_samples=100)
    with pytest.raises(ImportError, match="pip install"):
        load_drift_stream("sea")
    datasets_module._read_river_dataset.cache_clear()


# Rows and class counts of river's bundled sets, as documented.
RIVER_COUNTS = {
    "imagesegments": [330] * 7,
    "shuttle": [45586, 3511],
    "phishing": [702, 548],
    "bananas": [2924, 2376],
}


@pytest.mark.parametrize("name", RIVER_SETS)
def test_river_sets_have_documented_sizes_and_balance(name):
    pytest.importorskip("river")
    n_total = sum(RIVER_COUNTS[name])
    data = load_stream_dataset(name, n_samples=n_total, random_state=0)
    y = np.concatenate([data[f"y_{split}"] for split in SPLITS])
    assert np.bincount(y).tolist() == RIVER_COUNTS[name]
    assert f"{n_total}" in load_stream_dataset.__doc__.replace(" ", "")
    for count in RIVER_COUNTS[name]:
        assert str(count) in load_stream_dataset.__doc__
    with pytest.raises(ValueError, match=f"exceeds the {n_total} samples of the {name!r}"):
        load_stream_dataset(name, n_samples=n_total + 1)


def test_shuttle_default_is_a_stratified_subsample():
    pytest.importorskip("river")
    data = load_stream_dataset("shuttle", random_state=0)
    y = np.concatenate([data[f"y_{split}"] for split in SPLITS])
    assert np.bincount(y).tolist() == [4642, 358]  # 7.15 % anomalies, as in all 49097
    assert "4642 / 358" in load_stream_dataset.__doc__
    other = load_stream_dataset("shuttle", random_state=1)
    assert not np.array_equal(data.X_train, other.X_train)


def test_river_rows_keep_the_file_order_of_features_and_sorted_labels():
    river_datasets = pytest.importorskip("river.datasets")
    rows = list(river_datasets.ImageSegments())
    X, y = datasets_module._read_river_dataset("imagesegments")
    np.testing.assert_array_equal(X[0], list(rows[0][0].values()))
    names = sorted({label for _, label in rows})
    assert names == ["brickface", "cement", "foliage", "grass", "path", "sky", "window"]
    assert [names[code] for code in y[:50]] == [label for _, label in rows[:50]]
    X, y = datasets_module._read_river_dataset("phishing")  # booleans: False 0, True 1
    assert y.tolist()[:50] == [int(label) for _, label in list(river_datasets.Phishing())[:50]]
    assert not X.flags.writeable  # the cached copy cannot be changed by a caller


@pytest.mark.parametrize("name", ["mnist1d", "sea", "randomrbf"])
def test_generators_leave_global_random_state_untouched(name):
    _skip_if_missing(name)
    np.random.seed(123)
    random.seed(123)
    expected = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    if name == "mnist1d":
        _load("mnist1d", n_samples=100)
    else:
        load_drift_stream(name, n_samples=300, n_stream=200, position=100, width=50,
                          random_state=0)
    assert (np.random.rand(), random.random()) == expected


def test_unknown_name_lists_valid_names():
    valid = ", ".join(repr(name) for name in DATASETS)
    with pytest.raises(ValueError, match=f"valid names are {valid}."):
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
