"""Property tests at the estimator level (hypothesis, few examples each).

``tests/defence/test_discrepancy.py`` checks the KL function itself on arbitrary
logits; here the same laws are checked through a fitted classifier, its
snapshot buffer and its torch module, together with the bounds every
correction must respect and the rule that rejected input changes nothing.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._persistence import estimator_state
from dsc_sklearn.defence.modules import MLP

CLASSES = np.arange(10)
FAST = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
REFERENCES = ["oldest", "newest", "mean", "max", "all"]


class Shifted(nn.Module):
    """An MLP whose logits all move by the buffer ``shift``."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.base = MLP(n_features, n_classes, hidden_layer_sizes=(16,))
        self.register_buffer("shift", torch.zeros(()))

    def forward(self, X):
        return self.base(X) + self.shift


@pytest.fixture(scope="module")
def fitted(digits):
    """Three distinct snapshots and a current model that differs from them."""
    clf = DiscrepancyAwareOnlineClassifier(Shifted, history_size=3, snapshot_every=2,
                                           batch_size=50, random_state=0)
    for start in range(0, 400, 50):
        clf.partial_fit(digits.X_train[start:start + 50], digits.y_train[start:start + 50],
                        classes=CLASSES)
    return clf


def inputs(max_rows=6, low=-10.0, high=10.0):
    return st.integers(1, max_rows).flatmap(lambda n: arrays(
        np.float32, (n, 64),
        elements=st.floats(low, high, width=32, allow_nan=False, allow_infinity=False),
    ))


def same_learned_state(a, b):
    """Exact recursive equality of two estimator_state payloads."""
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_learned_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_learned_state(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


# ------------------------------------------------------------ discrepancy

@FAST
@given(X=inputs(), reference=st.sampled_from(REFERENCES))
def test_discrepancy_is_finite_and_non_negative(fitted, X, reference):
    scores = fitted.memorization_discrepancy(X, reference)
    assert scores.dtype == np.float64
    assert scores.shape == ((len(X), 3) if reference == "all" else (len(X),))
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)


@FAST
@given(X=inputs(), reference=st.sampled_from(REFERENCES))
def test_discrepancy_is_zero_when_every_snapshot_is_the_current_model(fitted, X,
                                                                      reference):
    buffer = fitted.net_.snapshots_
    saved = buffer.state_dict()
    current = fitted.module_.state_dict()
    try:
        buffer.load_state_dict({**saved, "snapshots": [current] * len(saved["snapshots"])})
        scores = fitted.memorization_discrepancy(X, reference)
    finally:
        buffer.load_state_dict(saved)
    np.testing.assert_allclose(scores, 0.0, atol=1e-12)


@FAST
@given(
    X=inputs(),
    shifts=arrays(np.float32, 4, elements=st.floats(-1e3, 1e3, width=32)),
    reference=st.sampled_from(REFERENCES),
)
def test_discrepancy_ignores_a_constant_added_to_each_models_logits(fitted, X, shifts,
                                                                     reference):
    expected = fitted.memorization_discrepancy(X, reference)
    buffer, module = fitted.net_.snapshots_, fitted.module_
    saved = buffer.state_dict()
    shifted = [{**snapshot, "shift": torch.tensor(shift)}
               for snapshot, shift in zip(saved["snapshots"], shifts[1:])]
    try:
        buffer.load_state_dict({**saved, "snapshots": shifted})
        module.shift.fill_(float(shifts[0]))
        scores = fitted.memorization_discrepancy(X, reference)
    finally:
        module.shift.zero_()
        buffer.load_state_dict(saved)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------ corrections

@FAST
@given(
    correction=st.sampled_from(["dsc", "descent", "adversarial"]),
    granularity=st.sampled_from(["sample", "batch"]),
    epsilon=st.floats(0.0, 0.5),
    step_size=st.floats(0.0, 0.3),
    max_correction_steps=st.integers(0, 4),
    input_bounds=st.sampled_from([None, (0.0, 1.0), (-0.5, 1.25)]),
    offset=st.integers(0, 1000),
)
def test_corrections_stay_in_the_epsilon_ball_and_the_bounds(
    digits, correction, granularity, epsilon, step_size, max_correction_steps,
    input_bounds, offset,
):
    X = digits.X_train[offset:offset + 60]  # pixels in [0, 1]: inside every bound
    y = digits.y_train[offset:offset + 60]
    clf = DiscrepancyAwareOnlineClassifier(
        hidden_layer_sizes=(8,), batch_size=20, threshold=0.0, correction=correction,
        granularity=granularity, epsilon=epsilon, step_size=step_size,
        max_correction_steps=max_correction_steps, input_bounds=input_bounds,
        random_state=offset,
    )
    clf.partial_fit(X[:20], y[:20], classes=CLASSES)
    trained = []
    # A training pass: training mode, with gradients (a mode-invariant module
    # may serve the guard's no-grad passes without switching to eval mode).
    clf.module_.register_forward_pre_hook(
        lambda module, args: trained.append(args[0].detach().clone())
        if module.training and torch.is_grad_enabled() else None
    )
    for start in (20, 40):
        del trained[:]
        clf.partial_fit(X[start:start + 20], y[start:start + 20])
        batch = torch.as_tensor(X[start:start + 20])
        assert trained
        for X_train in trained:
            assert bool(torch.isfinite(X_train).all())
            assert float((X_train - batch).abs().max()) <= epsilon + 1e-6
            if input_bounds is not None:
                assert float(X_train.min()) >= input_bounds[0]
                assert float(X_train.max()) <= input_bounds[1]


# ---------------------------------------------------------- rejected input

BAD_KINDS = ["nan", "inf", "too_large", "n_features", "unknown_label", "length",
             "empty", "3d", "continuous_labels"]


@st.composite
def bad_batches(draw):
    n = draw(st.integers(1, 30))
    X = draw(arrays(np.float64, (n, 64), elements=st.floats(0, 1, width=32)))
    y = draw(arrays(np.int64, n, elements=st.integers(0, 9)))
    kind = draw(st.sampled_from(BAD_KINDS))
    row, column = draw(st.integers(0, n - 1)), draw(st.integers(0, 63))
    if kind == "nan":
        X[row, column] = np.nan
    elif kind == "inf":
        X[row, column] = draw(st.sampled_from([np.inf, -np.inf]))
    elif kind == "too_large":
        X[row, column] = 1e39  # overflows float32
    elif kind == "n_features":
        X = X[:, :draw(st.sampled_from([1, 63]))] if draw(st.booleans()) else np.hstack(
            [X, X[:, :1]])
    elif kind == "unknown_label":
        y[row] = draw(st.sampled_from([-1, 10, 99]))
    elif kind == "length":
        y = np.append(y, 0)
    elif kind == "empty":
        X, y = X[:0], y[:0]
    elif kind == "3d":
        X = X.reshape(n, 8, 8)
    else:
        y = y + 0.5
    return X, y


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=30, deadline=None)
@given(batch=bad_batches())
def test_rejected_input_never_changes_the_state(fitted, batch):
    before = estimator_state(fitted)
    with pytest.raises(ValueError):
        fitted.partial_fit(*batch)
    assert same_learned_state(before, estimator_state(fitted))
