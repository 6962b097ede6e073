import math
import pickle

import numpy as np
import pytest
import torch

from dsc_sklearn.defence.thresholds import (
    AutoThreshold,
    FixedThreshold,
    ScheduleThreshold,
    linear_schedule,
    make_threshold,
)


def _update(policy, statistic):
    flagged = policy.flag(statistic)
    policy.update(statistic, flagged)
    return flagged


def test_fixed_threshold_flags_strictly_above():
    policy = FixedThreshold(0.5)
    statistic = torch.tensor([0.4, 0.5, 0.5001, 2.0])
    assert policy.flag(statistic).tolist() == [False, False, True, True]
    assert policy.current().item() == 0.5
    assert policy.current().ndim == 0


def test_fixed_threshold_zero_flags_every_positive_value():
    policy = FixedThreshold(0)
    assert policy.flag(torch.tensor([0.0, 1e-12, 1.0], dtype=torch.float64)).tolist() == [
        False, True, True,
    ]


def test_fixed_threshold_update_counts_but_does_not_move():
    policy = FixedThreshold(0.1)
    for _ in range(3):
        _update(policy, torch.tensor([5.0, 6.0]))
    assert policy.n_updates_ == 3
    assert policy.current().item() == pytest.approx(0.1)


def test_schedule_threshold_follows_schedule_per_update():
    values = [0.3, 0.1, 0.7, 0.0]
    policy = ScheduleThreshold(lambda step: values[step])
    statistic = torch.tensor([0.05, 0.2, 0.5])
    for step, value in enumerate(values):
        assert policy.current().item() == pytest.approx(value)
        expected = (statistic > value).tolist()
        assert policy.flag(statistic).tolist() == expected
        policy.update(statistic, policy.flag(statistic))
        assert policy.n_updates_ == step + 1


@pytest.mark.parametrize("bad", [-0.01, math.nan, -math.inf])
def test_schedule_threshold_rejects_negative_or_nan_values(bad):
    policy = ScheduleThreshold(lambda step: 0.2 if step < 2 else bad)
    for _ in range(2):
        _update(policy, torch.tensor([0.1]))
    with pytest.raises(ValueError, match="non-negative float"):
        policy.current()
    with pytest.raises(ValueError, match="step 2"):
        policy.flag(torch.tensor([0.1]))


def test_linear_schedule_is_half_plus_two_hundredths_per_step():
    schedule = linear_schedule()
    for t in (0, 1, 10, 100, 1000):
        assert schedule(t) == pytest.approx(0.5 + 0.02 * t)
    custom = linear_schedule(start=1.0, slope=0.5)
    assert custom(4) == pytest.approx(3.0)


def test_linear_schedule_is_picklable():
    schedule = linear_schedule(0.25, 0.125)
    restored = pickle.loads(pickle.dumps(schedule))
    assert [restored(t) for t in range(5)] == [schedule(t) for t in range(5)]
    assert "0.25" in repr(restored) and "0.125" in repr(restored)
    policy = ScheduleThreshold(linear_schedule())
    _update(policy, torch.tensor([1.0]))
    restored_policy = pickle.loads(pickle.dumps(policy))
    assert restored_policy.current().item() == pytest.approx(0.52)


def test_schedule_threshold_drives_linear_schedule():
    policy = ScheduleThreshold(linear_schedule())
    for t in range(5):
        assert policy.current().item() == pytest.approx(0.5 + 0.02 * t)
        _update(policy, torch.tensor([0.1, 10.0]))


def test_auto_threshold_is_infinite_during_warmup():
    policy = AutoThreshold(warmup=3)
    huge = torch.tensor([1e30, 1e10, 5.0])
    for _ in range(3):
        assert math.isinf(policy.current().item())
        assert not policy.flag(huge).any()
        policy.update(huge, policy.flag(huge))
    assert math.isfinite(policy.current().item())


@pytest.mark.parametrize("quantile", [0.5, 0.9, 0.99])
def test_auto_threshold_equals_quantile_of_window(quantile):
    torch.manual_seed(0)
    policy = AutoThreshold(quantile=quantile, window=3, warmup=2)
    batches = [torch.rand(20) * (i + 1) for i in range(6)]
    for i, batch in enumerate(batches):
        _update(policy, batch)
        if i + 1 < 2:
            continue
        window = torch.cat(batches[max(0, i - 2):i + 1])
        expected = torch.quantile(window, quantile)
        torch.testing.assert_close(policy.current(), expected)
        np.testing.assert_allclose(
            policy.current().item(), np.quantile(window.numpy(), quantile), rtol=1e-5
        )


def test_auto_threshold_window_is_bounded():
    policy = AutoThreshold(quantile=1.0, window=2, warmup=0)
    for value in (100.0, 1.0, 2.0):
        _update(policy, torch.full((4,), value))
    # The batch of 100s has left the window.
    assert policy.current().item() == 2.0
    assert len(policy._history) == 2


def test_auto_threshold_admits_every_batch_by_default():
    policy = AutoThreshold(quantile=1.0, window=5, warmup=1)
    _update(policy, torch.full((4,), 1.0))
    _update(policy, torch.full((4,), 10.0))  # fully flagged, still admitted
    assert policy.current().item() == 10.0


def test_auto_threshold_max_flagged_fraction_excludes_heavily_flagged_batches():
    policy = AutoThreshold(quantile=1.0, window=5, warmup=1, max_flagged_fraction=0.5)
    _update(policy, torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert policy.current().item() == 1.0
    flagged = _update(policy, torch.tensor([5.0, 5.0, 5.0, 0.5]))  # 3/4 flagged
    assert flagged.tolist() == [True, True, True, False]
    assert policy.current().item() == 1.0
    assert policy.n_updates_ == 2
    flagged = _update(policy, torch.tensor([3.0, 3.0, 0.5, 0.5]))  # 1/2 flagged: admitted
    assert flagged.sum().item() == 2
    assert policy.current().item() == 3.0


def test_auto_threshold_current_moves_to_requested_device():
    policy = AutoThreshold(warmup=1)
    _update(policy, torch.rand(10, dtype=torch.float64))
    value = policy.current("cpu")
    assert value.device.type == "cpu" and value.ndim == 0
    assert value.dtype == torch.float32


def test_auto_threshold_flags_about_one_minus_quantile_on_stationary_stream():
    rng = np.random.default_rng(0)
    quantile = 0.9
    policy = AutoThreshold(quantile=quantile, window=20, warmup=5)
    rates = []
    for step in range(80):
        batch = torch.from_numpy(rng.exponential(size=200))
        flagged = _update(policy, batch)
        if step >= 20:
            rates.append(flagged.float().mean().item())
    assert abs(np.mean(rates) - (1 - quantile)) < 0.03
    assert max(rates) < 0.3


def test_make_threshold_auto():
    policy = make_threshold("auto")
    assert isinstance(policy, AutoThreshold)
    assert make_threshold("auto") is not policy


@pytest.mark.parametrize("value", [0, 0.0, 0.3, 2, np.float64(0.25), np.float32(1.5), math.inf])
def test_make_threshold_non_negative_number(value):
    policy = make_threshold(value)
    assert type(policy) is FixedThreshold
    assert policy.current().item() == pytest.approx(float(value))


def test_make_threshold_callable():
    schedule = linear_schedule()
    policy = make_threshold(schedule)
    assert isinstance(policy, ScheduleThreshold)
    assert policy.schedule is schedule
    assert isinstance(make_threshold(lambda t: 0.1 * t), ScheduleThreshold)


@pytest.mark.parametrize(
    "value", [-0.1, -1, math.nan, True, False, "AUTO", "fixed", "", "0.5", None, [0.1]]
)
def test_make_threshold_rejects_invalid_values(value):
    with pytest.raises(ValueError, match="threshold must be"):
        make_threshold(value)


# ------------------------------------------------ load_state_dict checks

def _calibrated(**params):
    policy = AutoThreshold(warmup=2, window=3, **params)
    for step in range(4):
        values = torch.linspace(0.0, 1.0 + step, 101)
        policy.update(values, policy.flag(values))
    return policy


def _policy_view(policy):
    return (policy.n_updates_, [v.clone() for v in getattr(policy, "_history", ())],
            float(policy.current()))


def _assert_same_view(a, b):
    assert a[0] == b[0] and a[2] == b[2] and len(a[1]) == len(b[1])
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


@pytest.mark.parametrize("key, value, message", [
    ("warmup", 10**9, "has the entries"),  # would switch detection off
    ("quantile", 1.0, "has the entries"),
    # "window" is also the name of the state's calibration window.
    ("window", 10**6, "list of 1-D float32 tensors"),
    ("max_flagged_fraction", 0.0, "has the entries"),
])
def test_auto_threshold_refuses_configuration_in_its_state(key, value, message):
    policy = _calibrated()
    before = _policy_view(policy)
    with pytest.raises(ValueError, match=message):
        policy.load_state_dict({**policy.state_dict(), key: value})
    _assert_same_view(before, _policy_view(policy))
    assert (policy.warmup, policy.quantile, policy.window) == (2, 0.99, 3)


@pytest.mark.parametrize("make", [lambda: FixedThreshold(0.3),
                                  lambda: ScheduleThreshold(linear_schedule())],
                         ids=["fixed", "schedule"])
@pytest.mark.parametrize("key, value", [("value", 1e9), ("schedule", None), ("step", 10**9)])
def test_fixed_and_schedule_thresholds_refuse_configuration_in_their_state(make, key,
                                                                           value):
    policy = make()
    policy.update(torch.tensor([0.1]), torch.tensor([False]))
    before = float(policy.current())
    with pytest.raises(ValueError, match="has the entries"):
        policy.load_state_dict({**policy.state_dict(), key: value})
    assert policy.n_updates_ == 1 and float(policy.current()) == before


def test_auto_threshold_recomputes_a_forged_value_with_its_own_quantile():
    policy = _calibrated()
    state = policy.state_dict()
    restored = AutoThreshold(warmup=2, window=3, quantile=0.5)
    restored.load_state_dict({**state, "value": torch.tensor(1e9)})
    assert float(restored.current()) == pytest.approx(
        float(torch.quantile(torch.cat(state["window"]), 0.5)))


def test_auto_threshold_keeps_the_newest_window_batches():
    state = _calibrated().state_dict()
    small = AutoThreshold(warmup=2, window=2)
    small.load_state_dict(state)
    assert len(small._history) == 2 and small._history.maxlen == 2
    assert all(torch.equal(a, b) for a, b in zip(small._history, state["window"][-2:]))


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "non-finite"),
    (float("inf"), "non-finite"),
])
def test_auto_threshold_refuses_a_non_finite_window(bad, message):
    """A NaN in the window makes the threshold NaN: nothing would ever be flagged."""
    policy = _calibrated()
    state = policy.state_dict()
    window = [values.clone() for values in state["window"]]
    window[0][3] = bad
    before = _policy_view(policy)
    with pytest.raises(ValueError, match=message):
        policy.load_state_dict({**state, "window": window})
    _assert_same_view(before, _policy_view(policy))


@pytest.mark.parametrize("window, message", [
    ("not a list", "list of 1-D float32 tensors"),
    ([torch.zeros(3, dtype=torch.float64)], "list of 1-D float32 tensors"),
    ([torch.zeros(2, 2)], "list of 1-D float32 tensors"),
    ([[0.1, 0.2]], "list of 1-D float32 tensors"),
])
def test_auto_threshold_refuses_a_window_of_the_wrong_type(window, message):
    policy = _calibrated()
    before = _policy_view(policy)
    with pytest.raises(ValueError, match=message):
        policy.load_state_dict({**policy.state_dict(), "window": window})
    _assert_same_view(before, _policy_view(policy))


@pytest.mark.parametrize("n_updates", [-1, True, 1.5, "3", None, torch.tensor(3)])
def test_policies_refuse_a_bad_update_count(n_updates):
    for policy in (_calibrated(), FixedThreshold(0.1)):
        before = policy.n_updates_
        with pytest.raises(ValueError, match="non-negative int"):
            policy.load_state_dict({**policy.state_dict(), "n_updates": n_updates})
        assert policy.n_updates_ == before
