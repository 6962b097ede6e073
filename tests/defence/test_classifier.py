"""Tests for DiscrepancyAwareOnlineClassifier."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence import _classifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.defence.modules import MLP, SmallCNN
from dsc_sklearn.defence.thresholds import linear_schedule

CLASSES = np.arange(10)


@pytest.fixture(scope="module")
def digits():
    return load_stream_dataset("digits", random_state=0)


def stream(clf, X, y, batch_size=100, passes=1, classes=CLASSES):
    for _ in range(passes):
        for start in range(0, len(X), batch_size):
            clf.partial_fit(X[start:start + batch_size], y[start:start + batch_size],
                            classes=classes)
    return clf


def fitted_state(clf):
    """Everything a rejected call must leave unchanged."""
    return {
        "weights": {k: v.clone() for k, v in clf.module_.state_dict().items()},
        "snapshots": [{k: v.clone() for k, v in s.items()} for s in clf.snapshots_],
        "counters": (clf.n_batches_seen_, clf.n_samples_seen_, clf.n_flagged_),
        "log": list(clf.stream_log_),
        "threshold": clf.threshold_,
        "momentum": [
            {k: v.clone() for k, v in s.items()}
            for s in clf.net_.optimizer_.state_dict()["state"].values()
        ],
    }


def assert_same_state(before, after):
    assert before["counters"] == after["counters"]
    assert before["log"] == after["log"]
    assert before["threshold"] == after["threshold"] or (
        np.isinf(before["threshold"]) and np.isinf(after["threshold"])
    )
    for key in before["weights"]:
        torch.testing.assert_close(before["weights"][key], after["weights"][key])
    assert len(before["snapshots"]) == len(after["snapshots"])
    for old, new in zip(before["snapshots"], after["snapshots"]):
        for key in old:
            torch.testing.assert_close(old[key], new[key])
    assert len(before["momentum"]) == len(after["momentum"])
    for old, new in zip(before["momentum"], after["momentum"]):
        for key in old:
            torch.testing.assert_close(old[key], new[key])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_digits_reaches_90_percent(digits, seed):
    data = load_stream_dataset("digits", random_state=seed)
    clf = DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0), random_state=seed)
    stream(clf, data.X_train, data.y_train, passes=4)
    assert clf.score(data.X_test, data.y_test) >= 0.90


def test_partial_fit_counts_batches_samples_and_logs(digits):
    clf = DiscrepancyAwareOnlineClassifier(correction="dsc", random_state=0)
    stream(clf, digits.X_train[:450], digits.y_train[:450], batch_size=150)
    assert clf.n_batches_seen_ == 6  # each call of 150 rows is split into 100 + 50
    assert clf.n_samples_seen_ == 450
    assert len(clf.stream_log_) == 6
    record = clf.stream_log_[-1]
    assert set(record) == {"step", "loss", "mean_discrepancy", "max_discrepancy",
                           "threshold", "n_flagged", "n_correction_steps",
                               "step_discrepancy", "step_scale", "step_bound", "rewound"}
    assert record["step"] == 6
    assert clf.n_flagged_ == sum(r["n_flagged"] for r in clf.stream_log_)
    assert clf.last_flagged_.shape == (150,) and clf.last_flagged_.dtype == bool
    assert np.isinf(clf.stream_log_[0]["threshold"])  # auto threshold warms up


def test_stream_log_is_bounded(digits, monkeypatch):
    monkeypatch.setattr(_classifier, "MAX_LOG_RECORDS", 5)
    clf = DiscrepancyAwareOnlineClassifier(batch_size=10, random_state=0)
    stream(clf, digits.X_train[:200], digits.y_train[:200], batch_size=50)
    assert clf.n_batches_seen_ == 20
    assert [r["step"] for r in clf.stream_log_] == [16, 17, 18, 19, 20]


def test_snapshot_buffer_is_bounded_and_follows_the_clock(digits):
    clf = DiscrepancyAwareOnlineClassifier(batch_size=10, history_size=3,
                                           snapshot_every=2, random_state=0)
    clf.partial_fit(digits.X_train[:30], digits.y_train[:30], classes=CLASSES)
    assert len(clf.snapshots_) == 2  # the initial weights, then after step 2
    clf.partial_fit(digits.X_train[30:100], digits.y_train[30:100])
    assert len(clf.snapshots_) == 3


def test_fit_equals_ordered_partial_fit(digits):
    X, y = digits.X_train[:400], digits.y_train[:400]
    fitted = DiscrepancyAwareOnlineClassifier(max_epochs=2, random_state=0).fit(X, y)
    streamed = DiscrepancyAwareOnlineClassifier(random_state=0)
    stream(streamed, X, y, batch_size=400, passes=2, classes=np.unique(y))
    assert_allclose(fitted.predict_proba(X), streamed.predict_proba(X), atol=1e-6)
    assert fitted.n_batches_seen_ == streamed.n_batches_seen_ == 8


def test_fit_resets_a_streamed_model(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    clf = DiscrepancyAwareOnlineClassifier(random_state=0)
    stream(clf, X, y)
    clf.fit(X, y)
    assert clf.n_batches_seen_ == 3
    assert_allclose(clf.predict_proba(X),
                    DiscrepancyAwareOnlineClassifier(random_state=0).fit(X, y).predict_proba(X))


def test_same_random_state_gives_identical_models(digits):
    X, y = digits.X_train[:500], digits.y_train[:500]
    first = stream(DiscrepancyAwareOnlineClassifier(random_state=3), X, y, passes=2)
    second = stream(DiscrepancyAwareOnlineClassifier(random_state=3), X, y, passes=2)
    assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    np.testing.assert_equal(list(first.stream_log_), list(second.stream_log_))
    other = stream(DiscrepancyAwareOnlineClassifier(random_state=4), X, y)
    assert not np.allclose(first.predict_proba(X), other.predict_proba(X))


def test_random_state_does_not_touch_the_global_torch_rng(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DiscrepancyAwareOnlineClassifier(random_state=0).fit(digits.X_train[:200],
                                                         digits.y_train[:200])
    assert_array_equal(torch.rand(3), expected)


def test_labels_of_any_type(digits):
    X = digits.X_train[:300]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                      "eight", "nine"], dtype=object)
    y = names[digits.y_train[:300]]
    clf = DiscrepancyAwareOnlineClassifier(random_state=0)
    clf.partial_fit(X, y, classes=names)
    assert_array_equal(clf.classes_, np.sort(names))
    assert set(clf.predict(X)) <= set(names)
    assert clf.predict_proba(X).shape == (300, 10)


def test_module_class_instance_and_callable(digits):
    X, y = digits.X_train[:200], digits.y_train[:200]
    instance = MLP(64, 10, hidden_layer_sizes=(16,))
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    clf = DiscrepancyAwareOnlineClassifier(instance, random_state=0).fit(X, y)
    for key, value in instance.state_dict().items():  # the user's instance is not trained
        torch.testing.assert_close(value, before[key])
    assert clf.module_ is not instance
    assert isinstance(DiscrepancyAwareOnlineClassifier(SmallCNN, random_state=0)
                      .fit(X, y).module_, SmallCNN)
    cnn = DiscrepancyAwareOnlineClassifier(
        lambda n_features, n_classes: SmallCNN(n_features, n_classes, image_shape=(1, 8, 8)),
        random_state=0,
    ).fit(X, y)
    assert cnn.predict(X).shape == (200,)


def test_hidden_layer_sizes_shape_the_default_mlp(digits):
    clf = DiscrepancyAwareOnlineClassifier(hidden_layer_sizes=(32, 16), random_state=0)
    clf.fit(digits.X_train[:100], digits.y_train[:100])
    widths = [m.out_features for m in clf.module_.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 10]


def test_module_with_wrong_output_width_is_a_clear_error(digits):
    clf = DiscrepancyAwareOnlineClassifier(torch.nn.Linear(64, 3))
    with pytest.raises(ValueError, match=r"output of shape \(1, 3\).*10 classes"):
        clf.partial_fit(digits.X_train[:50], digits.y_train[:50], classes=CLASSES)
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")


@pytest.mark.parametrize("correction", ["dsc", "none", "drop", "descent", "adversarial"])
@pytest.mark.parametrize("granularity", ["sample", "batch"])
def test_every_correction_trains(digits, correction, granularity):
    clf = DiscrepancyAwareOnlineClassifier(
        correction=correction, granularity=granularity, threshold=0.0,
        input_bounds=(0.0, 1.0), random_state=0,
    )
    stream(clf, digits.X_train[:400], digits.y_train[:400])
    log = list(clf.stream_log_)
    assert all(np.isfinite(r["loss"]) or correction == "drop" for r in log)
    if correction == "none":
        assert clf.n_flagged_ == 0
        assert all(np.isnan(r["mean_discrepancy"]) for r in log)
    else:
        assert clf.n_flagged_ > 0  # threshold 0 flags every changed prediction
    assert clf.last_flagged_.sum() == log[-1]["n_flagged"]
    if correction in ("descent", "adversarial"):
        assert all(r["n_correction_steps"] == 10 for r in log)
    if correction == "dsc":
        assert any(r["n_correction_steps"] > 0 for r in log)


def test_schedule_threshold_is_followed(digits):
    clf = DiscrepancyAwareOnlineClassifier(threshold=linear_schedule(0.1, 0.5),
                                           correction="dsc", random_state=0)
    stream(clf, digits.X_train[:300], digits.y_train[:300])
    assert [r["threshold"] for r in clf.stream_log_] == pytest.approx([0.1, 0.6, 1.1])
    assert clf.threshold_ == pytest.approx(1.6)


def test_clip_value_limits_every_update(digits):
    clf = DiscrepancyAwareOnlineClassifier(correction="none", clip_value=1e-3,
                                           lr=0.1, momentum=0.0, random_state=0)
    clf.partial_fit(digits.X_train[:100], digits.y_train[:100], classes=CLASSES)
    before = [p.detach().clone() for p in clf.module_.parameters()]
    clf.partial_fit(digits.X_train[100:200], digits.y_train[100:200])
    change = max((p.detach() - b).abs().max().item()
                 for p, b in zip(clf.module_.parameters(), before))
    assert change <= 0.1 * 1e-3 + 1e-7


@pytest.mark.parametrize("reference", ["oldest", "newest", "mean", "max"])
def test_memorization_discrepancy_per_sample(digits, reference):
    clf = DiscrepancyAwareOnlineClassifier(reference=reference, random_state=0)
    stream(clf, digits.X_train[:600], digits.y_train[:600])
    scores = clf.memorization_discrepancy(digits.X_test[:7])
    assert scores.shape == (7,) and scores.dtype == np.float64
    assert np.all(scores >= 0)
    assert clf.n_batches_seen_ == 6  # scoring does not train


def test_memorization_discrepancy_all_has_a_column_per_snapshot(digits):
    clf = DiscrepancyAwareOnlineClassifier(reference="all", snapshot_every=2,
                                           random_state=0)
    stream(clf, digits.X_train[:600], digits.y_train[:600])
    scores = clf.memorization_discrepancy(digits.X_test[:7])
    assert scores.shape == (7, len(clf.snapshots_)) == (7, 4)
    assert_allclose(scores[:, 0], clf.memorization_discrepancy(digits.X_test[:7], "oldest"))
    assert_allclose(scores[:, -1], clf.memorization_discrepancy(digits.X_test[:7], "newest"))
    assert_allclose(scores.max(axis=1), clf.memorization_discrepancy(digits.X_test[:7], "max"))


def test_discrepancy_is_zero_against_the_current_weights(digits):
    clf = DiscrepancyAwareOnlineClassifier(snapshot_every=1, random_state=0)
    clf.partial_fit(digits.X_train[:100], digits.y_train[:100], classes=CLASSES)
    assert_allclose(clf.memorization_discrepancy(digits.X_test, "newest"), 0.0, atol=1e-12)
    assert clf.memorization_discrepancy(digits.X_test, "oldest").max() > 0


def test_pickle_round_trip_mid_stream_continues_identically(digits):
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(random_state=0)
    stream(clf, X[:600], y[:600])
    restored = pickle.loads(pickle.dumps(clf))
    stream(clf, X[600:], y[600:])
    stream(restored, X[600:], y[600:])
    assert_allclose(clf.predict_proba(X), restored.predict_proba(X), atol=1e-6)
    np.testing.assert_equal(list(clf.stream_log_), list(restored.stream_log_))


def test_clone_is_unfitted(digits):
    clf = DiscrepancyAwareOnlineClassifier(random_state=0).fit(digits.X_train[:100],
                                                               digits.y_train[:100])
    assert not hasattr(clone(clf), "net_")


def test_verbose_prints_one_line_per_call(digits, capsys):
    clf = DiscrepancyAwareOnlineClassifier(verbose=1, random_state=0)
    stream(clf, digits.X_train[:200], digits.y_train[:200])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "batches=2" in lines[-1]


# --------------------------------------------------------------- bad input

@pytest.fixture
def streamed(digits):
    clf = DiscrepancyAwareOnlineClassifier(random_state=0)
    return stream(clf, digits.X_train[:300], digits.y_train[:300])


def with_nan(X):
    X = X.copy()
    X[3, 5] = np.nan
    return X


def with_inf(X):
    X = X.copy()
    X[0, 0] = np.inf
    return X


BAD_BATCHES = {
    "nan": (lambda X, y: (with_nan(X), y), "NaN"),
    "inf": (lambda X, y: (with_inf(X), y), "infinity"),
    "n_features": (lambda X, y: (X[:, :10], y), "10 features"),
    "unknown_label": (lambda X, y: (X, np.where(y == 3, 42, y)), r"labels \[42\].*classes"),
    "empty": (lambda X, y: (X[:0], y[:0]), "0 sample"),
    "length_mismatch": (lambda X, y: (X, y[:-1]), "inconsistent numbers of samples"),
    "continuous_labels": (lambda X, y: (X, y + 0.5), "Unknown label type"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batches_raise_and_leave_the_model_unchanged(streamed, digits, case):
    make_bad, message = BAD_BATCHES[case]
    X, y = make_bad(digits.X_train[300:400], digits.y_train[300:400])
    before = fitted_state(streamed)
    with pytest.raises(ValueError, match=message):
        streamed.partial_fit(X, y)
    assert_same_state(before, fitted_state(streamed))


def test_first_partial_fit_needs_classes(digits):
    clf = DiscrepancyAwareOnlineClassifier()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(digits.X_train[:100], digits.y_train[:100])
    assert not hasattr(clf, "classes_") and not hasattr(clf, "n_features_in_")


def test_first_partial_fit_with_labels_outside_classes(digits):
    clf = DiscrepancyAwareOnlineClassifier()
    with pytest.raises(ValueError, match=r"labels \[5, 6, 7, 8, 9\]"):
        clf.partial_fit(digits.X_train[:100], digits.y_train[:100], classes=range(5))
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")


def test_changed_classes_are_refused(streamed, digits):
    with pytest.raises(ValueError, match="is not the same as on last call"):
        streamed.partial_fit(digits.X_train[:10], digits.y_train[:10], classes=range(11))


def test_single_class_is_refused(digits):
    with pytest.raises(ValueError, match="only one class"):
        DiscrepancyAwareOnlineClassifier().fit(digits.X_train[:10], np.zeros(10))


@pytest.mark.parametrize("params, message", [
    ({"threshold": -1.0}, "threshold"),
    ({"threshold": "median"}, "threshold"),
    ({"correction": "magic"}, "correction"),
    ({"reference": "first"}, "reference"),
    ({"batch_size": 0}, "batch_size"),
    ({"granularity": "pixel"}, "granularity"),
])
def test_invalid_parameters_are_reported_at_fit(digits, params, message):
    with pytest.raises(ValueError, match=message):
        DiscrepancyAwareOnlineClassifier(**params).fit(digits.X_train[:50],
                                                       digits.y_train[:50])


def test_predict_before_fit_raises_not_fitted(digits):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DiscrepancyAwareOnlineClassifier().predict(digits.X_test)
    with pytest.raises(NotFittedError):
        DiscrepancyAwareOnlineClassifier().module_


# --------------------------------------------------------------------- GPU

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@requires_cuda
def test_cuda_end_to_end(digits):
    clf = DiscrepancyAwareOnlineClassifier(device="cuda", threshold=0.0, random_state=0)
    stream(clf, digits.X_train[:400], digits.y_train[:400])
    assert next(clf.module_.parameters()).is_cuda
    assert all(t.is_cuda for s in clf.snapshots_ for t in s.values())
    assert clf.n_flagged_ > 0
    assert clf.memorization_discrepancy(digits.X_test[:5]).shape == (5,)
    restored = pickle.loads(pickle.dumps(clf))
    assert_allclose(restored.predict_proba(digits.X_test), clf.predict_proba(digits.X_test),
                    atol=1e-6)


@pytest.mark.gpu
@requires_cuda
def test_auto_device_picks_cuda(digits):
    clf = DiscrepancyAwareOnlineClassifier().fit(digits.X_train[:100], digits.y_train[:100])
    assert clf.device_.type == "cuda"


def test_set_params_mid_stream_switches_the_defence(digits):
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(correction="none", random_state=0)
    stream(clf, X[:300], y[:300])
    snapshots = len(clf.snapshots_)
    momentum = clf.net_.optimizer_.state_dict()["state"]
    clf.set_params(correction="dsc", threshold=0.0, lr=0.05, history_size=2)
    clf.partial_fit(X[300:400], y[300:400])
    assert clf.stream_log_[-1]["threshold"] == 0.0
    assert clf.stream_log_[-1]["n_flagged"] > 0
    assert clf.net_.optimizer_.param_groups[0]["lr"] == 0.05
    assert len(clf.snapshots_) == min(2, snapshots)
    assert momentum  # optimizer state was kept, not rebuilt


def test_unchanged_parameters_keep_the_threshold_calibration(digits):
    clf = DiscrepancyAwareOnlineClassifier(threshold=linear_schedule(), correction="dsc",
                                           random_state=0)
    stream(clf, digits.X_train[:300], digits.y_train[:300])
    clf.set_params(threshold=linear_schedule())  # an equal schedule, not a new one
    clf.partial_fit(digits.X_train[300:400], digits.y_train[300:400])
    assert clf.stream_log_[-1]["threshold"] == pytest.approx(0.5 + 0.02 * 3)
