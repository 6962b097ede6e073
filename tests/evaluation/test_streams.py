"""load_drift_stream: river's concept-drift generators as benign-drift streams."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from dsc_sklearn.evaluation.datasets import (
    DRIFT_STREAMS,
    load_drift_stream,
    load_stream_dataset,
)

pytest.importorskip("river")

# A short stream keeps these tests fast; the defaults are tested below.
SHORT = dict(n_samples=600, n_stream=1000, position=400, width=200)
N_FEATURES = {"sea": 3, "agrawal": 9, "hyperplane": 10, "randomrbf": 10, "led": 24}
N_CLASSES = {"sea": 2, "agrawal": 2, "hyperplane": 2, "randomrbf": 5, "led": 10}
KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "X_stream",
        "y_stream", "X_test_after", "y_test_after", "drift_progress")


@pytest.fixture(params=DRIFT_STREAMS)
def name(request):
    return request.param


def _short(name, **kwargs):
    return load_drift_stream(name, **{**SHORT, "random_state": 0, **kwargs})


def test_arrays_have_expected_types_and_shapes(name):
    data = _short(name)
    n_features = N_FEATURES[name]
    expected_rows = {"train": 390, "val": 60, "test": 150, "stream": 1000, "test_after": 150}
    for key, n_rows in expected_rows.items():
        X, y = data[f"X_{key}"], data[f"y_{key}"]
        assert X.shape == (n_rows, n_features) and X.dtype == np.float32
        assert X.flags.c_contiguous and np.all(np.isfinite(X))
        assert y.shape == (n_rows,) and y.dtype == np.int64
        assert set(np.unique(y)) <= set(range(data.n_classes))
    assert data.n_classes == N_CLASSES[name]
    assert data.name == name
    assert data.image_shape is None and data.input_bounds is None
    assert data.drift_position == 400 and data.drift_width == 200
    assert isinstance(data.drift, str) and data.drift
    assert data.drift_progress.shape == (1000,) and data.drift_progress.dtype == np.float64


def test_default_sizes_match_the_docstring():
    data = load_drift_stream("hyperplane", random_state=0)
    assert [len(data[f"y_{key}"]) for key in ("train", "val", "test", "stream", "test_after")] \
        == [1950, 300, 750, 4000, 750]
    assert (data.drift_position, data.drift_width) == (1000, 500)
    doc = load_drift_stream.__doc__
    for text in ("n_stream : int, default=4000", "position : int, default=1000",
                 "width : int, default=500", "``None`` uses 3000"):
        assert text in doc


def test_before_drift_is_the_stationary_data_set(name):
    """The pre-drift splits are those of load_stream_dataset: form (a) of the same data."""
    data = _short(name, random_state=3)
    stationary = load_stream_dataset(name, n_samples=600, random_state=3)
    for key in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(data[key], stationary[key])
    assert stationary.n_classes == data.n_classes
    assert stationary.description == data.description


def test_everything_is_standardized_with_pre_drift_training_statistics(name, monkeypatch):
    fitted_on = []
    fit = StandardScaler.fit

    def _recording_fit(self, X, *args, **kwargs):
        fitted_on.append(len(X))
        return fit(self, X, *args, **kwargs)

    monkeypatch.setattr(StandardScaler, "fit", _recording_fit)
    data = _short(name)
    assert fitted_on == [len(data.y_train)]
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-5)
    # The stream is not re-standardized: the drift may move its statistics,
    # but its stationary start is on the training scale.
    assert np.abs(data.X_stream[:200].mean(axis=0)).max() < 0.5


def test_same_seed_gives_identical_arrays(name):
    first, second = _short(name, random_state=7), _short(name, random_state=7)
    for key in KEYS:
        np.testing.assert_array_equal(first[key], second[key])


def test_different_seeds_give_different_streams(name):
    first, second = _short(name, random_state=1), _short(name, random_state=2)
    for key in ("X_train", "X_stream", "X_test_after"):
        assert not np.array_equal(first[key], second[key])


# LED's rows are binary and repeat by construction.
@pytest.mark.parametrize("name", [name for name in DRIFT_STREAMS if name != "led"])
def test_stream_rows_are_not_repeats_of_other_rows(name):
    data = _short(name)
    rows = np.concatenate([data.X_train, data.X_val, data.X_test, data.X_stream,
                           data.X_test_after])
    assert len(np.unique(rows, axis=0)) == len(rows)


def test_drift_progress_goes_from_old_to_new_concept(name):
    data = _short(name)
    progress = data.drift_progress
    assert np.all(np.diff(progress) >= 0)
    assert progress[0] < 0.01 and progress[-1] > 0.99
    assert progress[400] == pytest.approx(0.5, abs=0.01)
    assert progress[400 - 100 - 1] < 0.15 and progress[400 + 100] > 0.85
    if name in ("hyperplane", "randomrbf"):  # a moving concept: exactly the window
        assert progress[299] == 0.0 and progress[499] == 1.0


def test_concept_really_changes(name):
    """A model of the old concept fails on the new one, which the stream's end teaches."""
    data = load_drift_stream(name, random_state=1)
    old = KNeighborsClassifier(15).fit(data.X_train, data.y_train)
    accuracy_before = old.score(data.X_test, data.y_test)
    accuracy_after = old.score(data.X_test_after, data.y_test_after)
    assert accuracy_before - accuracy_after > 0.1
    # Stationary around the drift: the stream's start is the old concept ...
    assert abs(old.score(data.X_stream[:500], data.y_stream[:500]) - accuracy_before) < 0.06
    # ... and its end the new one, that of the test set after the drift.
    assert abs(old.score(data.X_stream[-1000:], data.y_stream[-1000:]) - accuracy_after) < 0.06
    new = KNeighborsClassifier(15).fit(data.X_stream[-2000:], data.y_stream[-2000:])
    assert new.score(data.X_test_after, data.y_test_after) > accuracy_after + 0.1


def test_stationary_concept_does_not_drift(name):
    """Form (a): the pre-drift data set is one concept (its splits score alike)."""
    data = load_stream_dataset(name, random_state=1)
    model = KNeighborsClassifier(15).fit(data.X_train, data.y_train)
    assert abs(model.score(data.X_val, data.y_val) - model.score(data.X_test, data.y_test)) < 0.06


def test_unknown_name_lists_the_drift_streams():
    with pytest.raises(
        ValueError,
        match="valid names are 'sea', 'agrawal', 'hyperplane', 'randomrbf', 'led'.",
    ):
        load_drift_stream("digits")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"position": 50, "width": 200}, ValueError, "The drift must lie in the stream"),
        ({"position": 990, "width": 200}, ValueError, "position=990, width=200"),
        ({"width": 0}, ValueError, "width == 0, must be >= 1"),
        ({"n_stream": 0}, ValueError, "n_stream == 0, must be >= 1"),
        ({"position": 400.0}, TypeError, "position must be an instance of int"),
        ({"n_samples": 0}, ValueError, "n_samples == 0, must be >= 1"),
        ({"test_size": 1.0}, ValueError, "test_size == 1.0, must be < 1"),
    ],
)
def test_invalid_parameters_raise(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_drift_stream("sea", **{**SHORT, **kwargs})


def test_transition_may_touch_the_ends_of_the_stream():
    data = load_drift_stream("hyperplane", n_samples=300, n_stream=200, position=100,
                             width=200, random_state=0)
    assert data.drift_progress[0] > 0 and data.drift_progress[-1] == 1.0
