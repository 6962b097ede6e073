"""Input validation: dtypes, pandas, tiny batches, class subsets, bad modules.

The core bad-batch cases (NaN, inf, wrong width, unknown labels, empty and
mismatched batches) live in ``test_classifier.py``; this file adds the rest.
Every rejected call must leave the fitted state exactly as it was.
"""

import copy
import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from torch import nn

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._persistence import estimator_state
from dsc_sklearn.defence.modules import SmallCNN

from _state import assert_same

CLASSES = np.arange(10)
SMALL = dict(hidden_layer_sizes=(16,), random_state=0)


def stream(clf, X, y, batch_size=100, classes=CLASSES):
    for start in range(0, len(X), batch_size):
        clf.partial_fit(X[start:start + batch_size], y[start:start + batch_size],
                        classes=classes)
    return clf


@pytest.fixture
def streamed(digits):
    return stream(DiscrepancyAwareOnlineClassifier(**SMALL), digits.X_train[:300],
                  digits.y_train[:300])


# ----------------------------------------------------------------- dtypes

def test_float64_and_integer_input_train_like_float32(digits):
    X = digits.X_train[:200] * 16  # digits are multiples of 1/16: exact in every dtype
    y = digits.y_train[:200]
    reference = stream(DiscrepancyAwareOnlineClassifier(**SMALL), X.astype(np.float32), y)
    for dtype in (np.float64, np.int64, np.uint8):
        clf = stream(DiscrepancyAwareOnlineClassifier(**SMALL), X.astype(dtype), y)
        assert_array_equal(clf.predict_proba(X.astype(dtype)),
                           reference.predict_proba(X.astype(np.float32)))
        np.testing.assert_equal(list(clf.stream_log_), list(reference.stream_log_))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_values_too_large_for_float32_are_rejected(streamed, digits):
    X = digits.X_train[300:400].astype(np.float64)
    X[0, 0] = 1e39  # finite in float64, infinite in float32
    before = estimator_state(streamed)
    with pytest.raises(ValueError, match="infinity or a value too large"):
        streamed.partial_fit(X, digits.y_train[300:400])
    assert_same(before, estimator_state(streamed))


# ----------------------------------------------------------------- pandas

@pytest.fixture
def frame(digits):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(digits.X_train[:400], columns=[f"pixel_{i}" for i in range(64)])


def test_pandas_input_records_feature_names(frame, digits):
    pd = pytest.importorskip("pandas")
    y = pd.Series(digits.y_train[:400], name="digit")
    clf = DiscrepancyAwareOnlineClassifier(**SMALL).fit(frame, y)
    assert_array_equal(clf.feature_names_in_, frame.columns)
    assert clf.n_features_in_ == 64
    proba = clf.predict_proba(frame)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        assert_array_equal(clf.predict_proba(frame.to_numpy()), proba)
    streamed = stream(DiscrepancyAwareOnlineClassifier(**SMALL), frame, y)
    assert_array_equal(streamed.feature_names_in_, frame.columns)


def test_pandas_columns_must_match_the_fitted_names(frame, digits):
    clf = DiscrepancyAwareOnlineClassifier(**SMALL)
    clf.partial_fit(frame[:300], digits.y_train[:300], classes=CLASSES)
    before = estimator_state(clf)
    renamed = frame[300:].rename(columns={"pixel_3": "intensity"})
    with pytest.raises(ValueError, match="feature names should match"):
        clf.partial_fit(renamed, digits.y_train[300:400])
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(renamed)
    reordered = frame[300:][frame.columns[::-1]]
    with pytest.raises(ValueError, match="(?i)feature names must be in the same order"):
        clf.partial_fit(reordered, digits.y_train[300:400])
    assert_same(before, estimator_state(clf))


def test_numpy_fit_warns_on_named_columns(frame, digits):
    clf = DiscrepancyAwareOnlineClassifier(**SMALL).fit(frame.to_numpy(), digits.y_train[:400])
    assert not hasattr(clf, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names"):
        clf.predict(frame)


def test_pandas_input_with_integer_column_names(frame, digits):
    numbered = frame.set_axis(range(64), axis=1)
    clf = DiscrepancyAwareOnlineClassifier(**SMALL).fit(numbered, digits.y_train[:400])
    assert not hasattr(clf, "feature_names_in_")


# --------------------------------------------------------- tiny batches

@pytest.mark.parametrize("options", [
    dict(reference="all", correction="dsc", threshold=0.0),
    dict(reference="oldest", correction="drop", threshold=0.0),
    dict(reference="mean", correction="adversarial", granularity="batch"),
    dict(correction="dsc"),  # "auto": calibrates on one-sample batches
])
def test_one_sample_batches(digits, options):
    X, y = digits.X_train[:40], digits.y_train[:40]
    clf = DiscrepancyAwareOnlineClassifier(snapshot_every=3, **SMALL, **options)
    stream(clf, X, y, batch_size=1)
    assert clf.n_batches_seen_ == clf.n_samples_seen_ == 40
    assert clf.last_flagged_.shape == (1,)
    losses = [r["loss"] for r in clf.stream_log_]
    assert all(np.isfinite(loss) for loss in losses) or options.get("correction") == "drop"
    assert all(r["n_flagged"] in (0, 1) for r in clf.stream_log_)
    if options.get("threshold") == 0.0:
        assert clf.n_flagged_ > 0
    assert clf.predict_proba(X[:1]).shape == (1, 10)
    assert clf.memorization_discrepancy(X[:1]).shape[0] == 1
    for parameter in clf.module_.parameters():
        assert bool(torch.isfinite(parameter).all())


def test_a_single_row_remainder_is_its_own_batch(digits):
    clf = DiscrepancyAwareOnlineClassifier(threshold=0.0, **SMALL)
    clf.partial_fit(digits.X_train[:101], digits.y_train[:101], classes=CLASSES)
    assert clf.n_batches_seen_ == 2 and clf.n_samples_seen_ == 101
    assert clf.last_flagged_.shape == (101,)


def test_one_sample_batches_with_a_cnn(digits):
    clf = DiscrepancyAwareOnlineClassifier(SmallCNN, threshold=0.0, random_state=0)
    stream(clf, digits.X_train[:6], digits.y_train[:6], batch_size=1)
    assert clf.n_batches_seen_ == 6
    assert clf.predict(digits.X_train[:1]).shape == (1,)


# ---------------------------------------------------------- class subsets

def test_batches_holding_a_subset_of_the_classes(digits):
    X, y = digits.X_train, digits.y_train
    clf = DiscrepancyAwareOnlineClassifier(threshold=0.0, **SMALL)
    pairs = np.isin(y, [0, 1])
    clf.partial_fit(X[pairs][:50], y[pairs][:50], classes=CLASSES)
    assert_array_equal(clf.classes_, CLASSES)
    sevens = y == 7
    clf.partial_fit(X[sevens][:30], y[sevens][:30])  # a batch of one class
    clf.partial_fit(X[:100], y[:100])
    proba = clf.predict_proba(X[:20])
    assert proba.shape == (20, 10)
    assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.n_batches_seen_ == 3


def test_fit_on_a_subset_of_labels_keeps_only_those(digits):
    keep = np.isin(digits.y_train, [2, 5, 9])
    clf = DiscrepancyAwareOnlineClassifier(**SMALL).fit(digits.X_train[keep][:150],
                                                        digits.y_train[keep][:150])
    assert_array_equal(clf.classes_, [2, 5, 9])
    assert clf.predict_proba(digits.X_test[:5]).shape == (5, 3)
    assert set(clf.predict(digits.X_test)) <= {2, 5, 9}


# ---------------------------------------------- non-finite correction rows

MARK = 10.0  # digits' first pixel is always 0; this is far outside any epsilon ball


class NaNInputGradient(nn.Module):
    """A linear model whose input gradient is NaN on rows with ``X[:, 0] > 5``.

    ``sqrt(x - x)`` is 0 in the forward pass, so the logits stay finite, but
    its derivative is ``inf - inf = NaN``.
    """

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, X):
        marked = X[:, 0] > 5
        X = X.clone()
        X[marked] = X[marked] + torch.sqrt(X[marked] - X[marked])
        return self.linear(X)


class WritesNaNIntoMovedRows(nn.Module):
    """A linear model that, outside autograd, writes NaN into its input in place.

    It hits the marked rows once a correction has moved them off ``MARK``: the
    discrepancy gate of ``"dsc"`` evaluates the snapshots on the corrected
    batch without gradients, so the correction turns those rows into NaN.
    """

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, X):
        if not torch.is_grad_enabled():
            X[(X[:, 0] > 5) & (X[:, 0] != MARK)] = math.nan
        return self.linear(X.nan_to_num())


def _record_training_inputs(module):
    inputs = []

    def hook(module, args):
        if module.training:
            inputs.append(args[0].detach().clone())

    module.register_forward_pre_hook(hook)
    return inputs


def _second_batch_trained_on(module, correction, X, y):
    clf = DiscrepancyAwareOnlineClassifier(
        module, correction=correction, threshold=0.0, batch_size=40,
        epsilon=0.2, step_size=0.05, random_state=0,
    )
    clf.partial_fit(X[:40], y[:40], classes=CLASSES)
    inputs = _record_training_inputs(clf.module_)
    clf.partial_fit(X[40:], y[40:])
    assert np.isfinite(clf.stream_log_[-1]["loss"])
    assert clf.stream_log_[-1]["n_correction_steps"] > 0
    for parameter in clf.module_.parameters():
        assert bool(torch.isfinite(parameter).all())
    return inputs[-1], torch.as_tensor(X[40:])


@pytest.fixture
def marked(digits):
    X, y = digits.X_train[:80].copy(), digits.y_train[:80]
    X[40:50, 0] = MARK
    return X, y


@pytest.mark.parametrize("correction", ["dsc", "descent", "adversarial"])
def test_non_finite_input_gradients_never_reach_training(marked, correction):
    # sign(NaN) is 0 in torch: such rows do not move, and stay finite.
    trained, batch = _second_batch_trained_on(NaNInputGradient, correction, *marked)
    assert bool(torch.isfinite(trained).all())
    moved = (trained - batch).abs().amax(dim=1)
    assert float(moved.max()) <= 0.2 + 1e-6
    assert bool((moved[10:] > 0).any())  # the other rows were corrected
    if correction != "adversarial":  # no random start
        assert torch.equal(trained[:10], batch[:10])


def test_rows_made_non_finite_inside_the_correction_are_reverted(marked, monkeypatch):
    from dsc_sklearn.defence import correction

    revert = correction._revert_non_finite
    non_finite_rows = []

    def spy(X, X_clean):
        non_finite_rows.append(int((~torch.isfinite(X).all(dim=1)).sum()))
        return revert(X, X_clean)

    monkeypatch.setattr(correction, "_revert_non_finite", spy)
    trained, batch = _second_batch_trained_on(WritesNaNIntoMovedRows, "dsc", *marked)
    assert non_finite_rows[-1] == 10  # the guard fired on the marked rows
    assert bool(torch.isfinite(trained).all())
    assert torch.equal(trained[:10], batch[:10])  # reverted: trained as they came
    moved = (trained[10:] - batch[10:]).abs().amax(dim=1)
    assert bool((moved > 0).any()) and float(moved.max()) <= 0.2 + 1e-6


# ------------------------------------------------------------ bad modules

class BatchMean(nn.Module):
    """Returns one row of logits for the whole batch."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, X):
        return self.linear(X).mean(dim=0, keepdim=True)


class Flat(nn.Module):
    """Returns a 1-D output."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, X):
        return self.linear(X)[:, 0]


@pytest.mark.parametrize("module, message", [
    (BatchMean, r"two samples to an output of shape \(1, 10\).*one row of logits"),
    (Flat, r"output of shape \(1,\).*10 classes"),
    (nn.Linear(32, 10), "cannot process one sample of 64 features"),
])
def test_bad_module_is_a_clear_error_at_the_first_call(digits, module, message):
    clf = DiscrepancyAwareOnlineClassifier(module)
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(digits.X_train[:50], digits.y_train[:50], classes=CLASSES)
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")
    with pytest.raises(ValueError, match=message):
        clf.fit(digits.X_train[:50], digits.y_train[:50])
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")


class FailsOnMark(nn.Module):
    """A linear model whose training pass raises on rows marked by ``X[:, 0]``."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, X):
        if self.training and bool((X[:, 0] > 5).any()):
            raise RuntimeError("the module refused this batch")
        return self.linear(X)


def test_a_chunk_that_fails_rolls_back_the_whole_call(digits):
    # Issue 14: a call either completes or changes nothing, the chunks that
    # trained before the failing one included.
    X, y = digits.X_train[:300].copy(), digits.y_train[:300]
    clf = DiscrepancyAwareOnlineClassifier(FailsOnMark, correction="none", random_state=0)
    clf.partial_fit(X[:100], y[:100], classes=CLASSES)
    before = copy.deepcopy(estimator_state(clf))
    X[250, 0] = MARK
    with pytest.raises(RuntimeError, match="refused"):
        clf.partial_fit(X[100:300], y[100:300])  # the first chunk trains, the second fails
    assert clf.n_batches_seen_ == 1 and clf.n_samples_seen_ == 100
    assert [r["step"] for r in clf.stream_log_] == [1]
    assert clf.last_flagged_.shape == (100,)
    assert_same(before, estimator_state(clf))


# --------------------------------------------- bad input changes nothing

def _bad(X, y):
    return {
        "3d": (X.reshape(len(X), 8, 8), y, "dim 3"),
        "1d": (X[:, 0], y, "2D array"),
        "complex": (X.astype(np.complex64), y, "Complex data not supported"),
        "strings": (np.full(X.shape, "a"), y, "could not convert"),
        "y_2d": (X, np.stack([y, y], axis=1), "y should be a 1d array"),
        "y_nan": (X, np.where(np.arange(len(y)) == 3, np.nan, y.astype(float)),
                  "Input y contains NaN"),
    }


@pytest.mark.parametrize("case", ["3d", "1d", "complex", "strings", "y_2d", "y_nan"])
def test_more_bad_batches_leave_the_model_unchanged(streamed, digits, case):
    X, y, message = _bad(digits.X_train[300:364], digits.y_train[300:364])[case]
    before = estimator_state(streamed)
    with pytest.raises(ValueError, match=message):
        streamed.partial_fit(X, y)
    assert_same(before, estimator_state(streamed))


@pytest.mark.parametrize("params, message", [
    ({"lr": -0.1}, "'lr' parameter"),
    ({"batch_size": 0}, "'batch_size' parameter"),
    ({"threshold": -1.0}, "'threshold' parameter"),
    ({"correction": "magic"}, "'correction' parameter"),
    ({"momentum": 1.5}, "'momentum' parameter"),
    ({"input_bounds": (1.0, 0.0)}, "input_bounds must be"),
    ({"input_bounds": (0.0, np.inf)}, "input_bounds must be"),
    ({"input_bounds": (0.0, 0.5, 1.0)}, "input_bounds must be"),
])
def test_invalid_set_params_mid_stream_is_refused_without_a_trace(streamed, digits,
                                                                  params, message):
    def learned(clf):
        return {k: v for k, v in estimator_state(clf).items() if k != "params"}

    before = learned(streamed)
    valid = streamed.get_params()
    streamed.set_params(**params)
    with pytest.raises(ValueError, match=message):
        streamed.partial_fit(digits.X_train[300:400], digits.y_train[300:400])
    assert_same(before, learned(streamed))
    streamed.set_params(**valid)
    streamed.partial_fit(digits.X_train[300:400], digits.y_train[300:400])
    assert streamed.n_batches_seen_ == 4


def test_invalid_input_bounds_are_refused_at_fit(digits):
    with pytest.raises(ValueError, match="input_bounds must be"):
        DiscrepancyAwareOnlineClassifier(input_bounds=(1.0, 0.0)).fit(digits.X_train[:50],
                                                                      digits.y_train[:50])


# ------------------------------------------------ classes= and bools (#14)

@pytest.mark.parametrize("classes, message", [
    ([], "at least two labels"),
    ([3], "at least two labels"),
    (np.array([[0, 1]]), "1-D"),
    ([0, 0, 1], r"duplicates \[0\]"),
    (["a", "b", "a"], r"duplicates \['a'\]"),
    ([0.0, 1.0, np.nan], "NaN or None"),
    ([0, 1, None], "NaN or None"),
    (["a", None], "NaN or None"),
    ([0.5, 1.5], "Unknown label type"),
])
def test_bad_classes_are_a_clear_error(digits, streamed, classes, message):
    X, y = digits.X_train[:50], digits.y_train[:50] % 2
    clf = DiscrepancyAwareOnlineClassifier(**SMALL)
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(X, y, classes=classes)
    assert not hasattr(clf, "classes_") and not hasattr(clf, "net_")
    before = estimator_state(streamed)
    with pytest.raises(ValueError, match=message):
        streamed.partial_fit(X, y, classes=classes)
    assert_same(before, estimator_state(streamed))


@pytest.mark.parametrize("params", [
    {"threshold": True}, {"threshold": False}, {"loss_threshold": True},
    {"lr": True}, {"momentum": False}, {"batch_size": True}, {"history_size": True},
    {"snapshot_every": True}, {"epsilon": True}, {"step_size": False},
    {"max_correction_steps": True}, {"clip_value": True}, {"threshold": np.True_},
])
def test_bools_fail_parameter_validation(digits, params):
    from sklearn.utils._param_validation import InvalidParameterError

    name = next(iter(params))
    clf = DiscrepancyAwareOnlineClassifier(**SMALL, **params)
    with pytest.raises(InvalidParameterError,
                       match=f"The '{name}' parameter of DiscrepancyAwareOnlineClassifier "
                             "must be"):
        clf.partial_fit(digits.X_train[:50], digits.y_train[:50], classes=CLASSES)
    assert not hasattr(clf, "net_")


def test_a_bool_threshold_set_mid_stream_is_refused_every_time(streamed, digits):
    """It used to fail once inside make_threshold, then train with the old policy."""
    def learned(clf):
        return {k: v for k, v in estimator_state(clf).items() if k != "params"}

    before = learned(streamed)
    streamed.set_params(threshold=True)
    for _ in range(2):
        with pytest.raises(ValueError, match="'threshold' parameter"):
            streamed.partial_fit(digits.X_train[300:400], digits.y_train[300:400])
    assert_same(before, learned(streamed))
    assert streamed.net_.threshold == "auto"
