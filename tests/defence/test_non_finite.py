"""Hostile values: accepted and finite, or refused and unchanged (issue 14, item 1).

A batch whose loss, weights, gate statistics or step-guard measurements are
not finite (or whose weights are so large that the next forward pass would
overflow) is refused with a ``ValueError`` that names the batch, and the
estimator is left exactly as it was before the call. Rows outside
``input_bounds`` are refused, clipped or let through (``check_input_bounds``).
The property test at the end draws hostile batches and checks the contract
on every configuration.
"""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skorch.callbacks import Callback
from sklearn.utils._param_validation import InvalidParameterError

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.discrepancy import NonFiniteError, mark_non_finite, mark_out_of_range

from _state import assert_same, learned_state

CLASSES = np.arange(10)
SMALL = dict(hidden_layer_sizes=(16,), random_state=0)
#: The configurations of issue 14, item 1, and the gated corrections.
CONFIGS = {
    "default": dict(),
    "none, no guard": dict(correction="none", step_guard=None),
    "drop": dict(correction="drop", step_guard=None),
    "clip_value": dict(clip_value=0.01, step_guard=None),
    "dsc": dict(correction="dsc", step_guard=None),
    "dsc + guard": dict(correction="dsc"),
}
NON_FINITE = "produced NaN or an infinity"


def stream(clf, X, y, stop, batch_size=100):
    for start in range(0, stop, batch_size):
        clf.partial_fit(X[start:start + batch_size], y[start:start + batch_size],
                        classes=CLASSES)
    return clf


def assert_finite_model(clf, X):
    for name, tensor in clf.module_.state_dict().items():
        assert bool(torch.isfinite(tensor).all()), name
    assert np.isfinite(clf.predict_proba(X)).all()
    assert not math.isnan(clf.threshold_)


@pytest.fixture(scope="module")
def trained(digits):
    """Each configuration after 12 batches: the guard and the thresholds are calibrated."""
    return {name: stream(DiscrepancyAwareOnlineClassifier(**SMALL, **params),
                         digits.X_train, digits.y_train, 1200 if name == "default" else 600)
            for name, params in CONFIGS.items()}


# ------------------------------------------------ one row of 1e38 (item 1)

@pytest.mark.parametrize("config", [name for name in CONFIGS if name != "clip_value"])
@pytest.mark.parametrize("value", [1e38, -3e38, 1e25])
def test_one_huge_finite_row_is_refused_and_changes_nothing(trained, digits, config, value):
    clf = copy.deepcopy(trained[config])
    before = learned_state(clf)
    accuracy = clf.score(digits.X_test, digits.y_test)
    X = digits.X_train[600:800].copy()
    X[150] = value  # in the second batch of the call: the first one trains
    with pytest.raises(ValueError, match=NON_FINITE) as error:
        clf.partial_fit(X, digits.y_train[600:800])
    assert isinstance(error.value, NonFiniteError)
    assert "batch 2 of this call (rows 100 to 199)" in str(error.value)
    assert f"{abs(value):.3g}" in str(error.value)
    assert_same(before, learned_state(clf))
    # Still learning, and still flagging.
    clf.partial_fit(digits.X_train[800:900], digits.y_train[800:900])
    assert_finite_model(clf, digits.X_test)
    assert clf.score(digits.X_test, digits.y_test) >= accuracy - 0.05


@pytest.mark.parametrize("value", [1e38, -3e38, 1e25])
def test_with_gradient_clipping_a_huge_row_is_refused_or_trains_a_finite_model(
        trained, digits, value):
    # clip_value bounds the step: when the row's loss (about 1e35) and its
    # gradients are finite, the step is small and the batch is accepted;
    # when a gradient overflows, it is refused.
    clf = copy.deepcopy(trained["clip_value"])
    before = learned_state(clf)
    X = digits.X_train[600:800].copy()
    X[150] = value
    try:
        clf.partial_fit(X, digits.y_train[600:800])
    except NonFiniteError:
        assert_same(before, learned_state(clf))
    assert_finite_model(clf, digits.X_test)
    clf.partial_fit(digits.X_train[800:900], digits.y_train[800:900])
    assert_finite_model(clf, digits.X_test)


@pytest.mark.parametrize("config", ["default", "none, no guard"])
def test_a_huge_row_in_the_first_call_leaves_the_estimator_unfitted(digits, config):
    clf = DiscrepancyAwareOnlineClassifier(**SMALL, **CONFIGS[config])
    X = digits.X_train[:100].copy()
    X[3] = 1e38
    with pytest.raises(ValueError, match=NON_FINITE):
        clf.partial_fit(X, digits.y_train[:100], classes=CLASSES)
    assert not hasattr(clf, "net_") and not hasattr(clf, "n_batches_seen_")


def test_a_huge_row_in_fit_keeps_the_previous_model(trained, digits):
    clf = copy.deepcopy(trained["none, no guard"])
    before = learned_state(clf)
    X = digits.X_train[:300].copy()
    X[250] = 1e38
    with pytest.raises(ValueError, match=NON_FINITE):
        clf.fit(X, digits.y_train[:300])
    assert_same(before, learned_state(clf))


class _Recorder(Callback):
    def initialize(self):
        self.losses = []
        return self

    def on_batch_end(self, net, **kwargs):
        self.losses.append(float(kwargs["loss"]))


def test_with_callbacks_a_refused_batch_is_never_reported(digits):
    recorder = _Recorder()
    clf = stream(DiscrepancyAwareOnlineClassifier(
        **SMALL, correction="none", step_guard=None, callbacks=[("recorder", recorder)]),
        digits.X_train, digits.y_train, 300)
    callback = dict(clf.net_.callbacks_)["recorder"]
    n_reported = len(callback.losses)
    X = digits.X_train[300:500].copy()
    X[120] = 1e38
    with pytest.raises(ValueError, match="batch 2 of this call"):
        clf.partial_fit(X, digits.y_train[300:500])
    # The first batch was reported before the second failed; the recorder's
    # own list is its state, rolled back with the call.
    assert len(callback.losses) == n_reported
    assert all(math.isfinite(loss) for loss in callback.losses)


def test_the_step_guard_refuses_a_non_finite_step_at_once(trained, digits):
    # The guard copies its measurements to the host anyway: it checks them
    # there, before a NaN step discrepancy can enter its window.
    clf = copy.deepcopy(trained["default"])
    assert len(clf.net_.step_guard_.probe_)
    X = digits.X_train[600:700].copy()
    X[5] = 1e38
    with pytest.raises(NonFiniteError, match="batch 1 of this call") as error:
        clf.partial_fit(X, digits.y_train[600:700])
    assert "step guard measured a non-finite step" in str(error.value.__cause__)
    assert all(math.isfinite(value) for value in clf.net_.step_guard_.window_)


def test_the_net_flags_a_non_finite_step_without_a_host_copy(trained, digits):
    net = copy.deepcopy(trained["none, no guard"]).net_
    X = torch.as_tensor(digits.X_train[:20].copy())
    y = torch.as_tensor(digits.y_train[:20])
    assert net.train_step((X, y))["non_finite"].item() == 0
    X[0] = 1e38
    step = net.train_step((X, y))
    assert step["non_finite"].item() == 1
    assert step["non_finite"].shape == () and step["non_finite"].device == X.device


def test_weights_whose_square_overflows_are_flagged(trained, digits):
    net = copy.deepcopy(trained["none, no guard"]).net_
    X = torch.as_tensor(digits.X_train[:20])
    y = torch.as_tensor(digits.y_train[:20])
    weight = net.module_.state_dict()[next(iter(net.module_.state_dict()))]
    with torch.no_grad():
        weight[0, 0] = 1e10  # large, but products of such values stay finite
    assert net.train_step((X, y))["non_finite"].item() == 0
    with torch.no_grad():
        weight[0, 0] = 3e19  # finite; its square is not
    assert net.train_step((X, y))["non_finite"].item() == 1


def test_the_range_check_gives_the_parameters_back_bit_for_bit():
    torch.manual_seed(0)
    values = torch.cat((torch.randn(1000) * 10.0 ** torch.randint(-44, 19, (1000,)),
                        torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1.17e-38, 1.8e19, -1.8e19])))
    parameters = [values.clone(), torch.nn.Parameter(torch.randn(3, 4))]
    expected = [p.detach().clone() for p in parameters]
    found = torch.zeros(())
    mark_out_of_range(found, parameters)
    assert found.item() == 0
    for param, before in zip(parameters, expected):
        assert torch.equal(param.detach().view(torch.int32), before.view(torch.int32))
    for bad in (1.9e19, -3e38, math.inf, math.nan):
        found = torch.zeros(())
        mark_out_of_range(found, [torch.tensor([1.0, bad])])
        assert found.item() == 1, bad


def test_mark_non_finite_is_sticky_and_skips_integer_tensors():
    found = torch.zeros(())
    mark_non_finite(found, [torch.arange(3), torch.ones(2)])
    assert found.item() == 0
    mark_non_finite(found, [torch.tensor([math.inf])])
    mark_non_finite(found, [torch.ones(2)])
    assert found.item() == 1
    mark_non_finite(found, [])
    assert found.item() == 1


@pytest.mark.parametrize("value", [1e6, 1e10, 1e15])
def test_a_large_finite_row_is_accepted_and_leaves_a_finite_model(trained, digits, value):
    # The bound is on the weights' magnitude after the step, not on the loss:
    # a loss bound also refused the clean batches that bring such a model
    # back (docs/reliability.md, section 7).
    clf = copy.deepcopy(trained["none, no guard"])
    X = digits.X_train[600:700].copy()
    X[0] = value
    clf.partial_fit(X, digits.y_train[600:700])
    assert_finite_model(clf, digits.X_test)
    for start in range(700, 1100, 100):
        clf.partial_fit(digits.X_train[start:start + 100], digits.y_train[start:start + 100])
    assert_finite_model(clf, digits.X_test)


# --------------------------------------------------- check_input_bounds

def test_rows_outside_input_bounds_are_refused_by_default(trained, digits):
    params = dict(SMALL, input_bounds=(0.0, 1.0))
    clf = stream(DiscrepancyAwareOnlineClassifier(**params), digits.X_train,
                 digits.y_train, 300)
    assert clf.check_input_bounds == "raise"
    before = learned_state(clf)
    X = digits.X_train[300:400].copy()
    X[[4, 7], 0] = [1.5, -0.25]
    with pytest.raises(ValueError, match=r"2 row\(s\) of X hold values outside "
                                         r"input_bounds=\(0.0, 1.0\) \(rows \[4, 7\]"):
        clf.partial_fit(X, digits.y_train[300:400])
    assert_same(before, learned_state(clf))
    with pytest.raises(ValueError, match="outside input_bounds"):
        clf.fit(X, digits.y_train[300:400])
    assert_same(before, learned_state(clf))
    with pytest.raises(ValueError, match="outside input_bounds"):
        DiscrepancyAwareOnlineClassifier(**params).partial_fit(X, digits.y_train[300:400],
                                                               classes=CLASSES)


def test_clip_trains_on_the_clipped_rows(digits):
    X = digits.X_train[:300].copy()
    X[::7, 3] = 4.0
    X[::11, 5] = -2.0
    original = X.copy()
    clipped = DiscrepancyAwareOnlineClassifier(**SMALL, input_bounds=(0.0, 1.0),
                                               check_input_bounds="clip")
    stream(clipped, X, digits.y_train, 300)
    np.testing.assert_array_equal(X, original)  # the caller's array is not written
    reference = stream(DiscrepancyAwareOnlineClassifier(**SMALL, input_bounds=(0.0, 1.0)),
                       np.clip(X, 0.0, 1.0), digits.y_train, 300)
    np.testing.assert_array_equal(clipped.predict_proba(digits.X_test),
                                  reference.predict_proba(digits.X_test))


def test_ignore_trains_on_the_rows_as_they_are(digits):
    X = digits.X_train[:300].copy()
    X[::7, 3] = 4.0
    params = dict(SMALL, correction="none", step_guard=None)
    ignored = stream(DiscrepancyAwareOnlineClassifier(
        **params, input_bounds=(0.0, 1.0), check_input_bounds="ignore"), X, digits.y_train, 300)
    unbounded = stream(DiscrepancyAwareOnlineClassifier(**params), X, digits.y_train, 300)
    np.testing.assert_array_equal(ignored.predict_proba(digits.X_test),
                                  unbounded.predict_proba(digits.X_test))


def test_check_input_bounds_is_validated_mid_stream(digits):
    clf = stream(DiscrepancyAwareOnlineClassifier(**SMALL, input_bounds=(0.0, 1.0)),
                 digits.X_train, digits.y_train, 200)
    before = learned_state(clf)
    clf.set_params(check_input_bounds="warn")
    with pytest.raises(InvalidParameterError, match="'check_input_bounds' parameter"):
        clf.partial_fit(digits.X_train[200:300], digits.y_train[200:300])
    assert_same({k: v for k, v in before.items() if k != "params"},
                {k: v for k, v in learned_state(clf).items() if k != "params"})
    clf.set_params(check_input_bounds="clip")
    X = digits.X_train[200:300].copy()
    X[0, 0] = 9.0
    clf.partial_fit(X, digits.y_train[200:300])
    assert clf.n_batches_seen_ == 3


def test_without_input_bounds_nothing_is_checked(digits):
    X = digits.X_train[:100] * 50.0
    clf = DiscrepancyAwareOnlineClassifier(**SMALL).partial_fit(X, digits.y_train[:100],
                                                                classes=CLASSES)
    assert clf.n_batches_seen_ == 1


# ---------------------------------------------------------------- property

HOSTILE_VALUES = [1e3, 1e8, 1e15, 1e20, 1e25, 1e38, -1e38, 3.4e38, -3.4e38, 1.5, -0.5,
                  1e-38, 1e-45, 0.0]
KINDS = ["cells", "row", "column", "nan", "inf", "too_large_float64", "weights", "labels"]
PROPERTY_CONFIGS = {
    "default": dict(),
    "none, no guard": dict(correction="none", step_guard=None),
    "drop, bounded": dict(correction="drop", step_guard=None, input_bounds=(0.0, 1.0)),
    "dsc, bounded, clip": dict(correction="dsc", input_bounds=(0.0, 1.0),
                               check_input_bounds="clip"),
    "clip_value, batch gate": dict(clip_value=0.01, correction="dsc", granularity="batch",
                                   step_guard=None),
}


@pytest.fixture(scope="module")
def property_estimators(digits):
    return {name: stream(DiscrepancyAwareOnlineClassifier(
        hidden_layer_sizes=(8,), batch_size=30, random_state=0, **params),
        digits.X_train, digits.y_train, 450, batch_size=30)
        for name, params in PROPERTY_CONFIGS.items()}


@st.composite
def hostile_batches(draw, pool):
    X_pool, y_pool = pool
    n = draw(st.integers(1, 70))
    start = draw(st.integers(0, len(X_pool) - n))
    X, y = X_pool[start:start + n].astype(np.float64), y_pool[start:start + n].copy()
    weights = None
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(KINDS))
        row, column = draw(st.integers(0, n - 1)), draw(st.integers(0, 63))
        value = draw(st.sampled_from(HOSTILE_VALUES))
        if kind == "cells":
            X[row, column] = value
        elif kind == "row":
            X[row] = value
        elif kind == "column":
            X[:, column] = value
        elif kind == "nan":
            X[row, column] = np.nan
        elif kind == "inf":
            X[row, column] = draw(st.sampled_from([np.inf, -np.inf]))
        elif kind == "too_large_float64":
            X[row, column] = 1e39
        elif kind == "weights":
            weights = draw(st.lists(st.sampled_from([0.0, 1.0, 3.0, 1e-30, 1e30, 1e300,
                                                     -1.0, np.nan]), min_size=n, max_size=n))
        else:
            y[row] = draw(st.sampled_from([-1, 10]))
    return X, y, weights


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), config=st.sampled_from(list(PROPERTY_CONFIGS)))
def test_accepted_and_finite_or_refused_and_unchanged(property_estimators, digits, data,
                                                      config):
    X, y, weights = data.draw(hostile_batches((digits.X_train[450:], digits.y_train[450:])))
    clf = copy.deepcopy(property_estimators[config])
    before = learned_state(clf)
    try:
        clf.partial_fit(X, y, sample_weight=weights)
    except ValueError:
        assert_same(before, learned_state(clf))
        return
    assert clf.n_batches_seen_ > before["counters"]["n_batches_seen"]
    assert_finite_model(clf, digits.X_test[:50])
    for record in list(clf.stream_log_)[before["counters"]["n_batches_seen"]:]:
        for field in ("loss", "mean_discrepancy", "max_discrepancy", "step_discrepancy"):
            # NaN: nothing trained on, no gate, or no guard; never infinite.
            assert not math.isinf(record[field]), (field, record)
    # And it goes on learning from clean batches.
    clf.partial_fit(digits.X_train[:30], digits.y_train[:30])
    assert_finite_model(clf, digits.X_test[:50])


# ------------------------------------------------------------------- CUDA

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("params", [dict(), dict(correction="none", step_guard=None),
                                    dict(correction="dsc", step_guard=None)])
def test_on_cuda_a_huge_row_is_refused_and_changes_nothing(digits, params):
    # Not run yet: no GPU was available when it was written.
    clf = stream(DiscrepancyAwareOnlineClassifier(**SMALL, **params, device="cuda"),
                 digits.X_train, digits.y_train, 1200)
    before = learned_state(clf)
    X = digits.X_train[:300].copy()
    X[250] = 1e38
    with pytest.raises(NonFiniteError, match="batch 3 of this call"):
        clf.partial_fit(X, digits.y_train[:300])
    assert_same(before, learned_state(clf))
    clf.partial_fit(digits.X_train[:100], digits.y_train[:100],
                    sample_weight=np.arange(100.0))
    assert_finite_model(clf, digits.X_test)
