import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax, rel_entr, softmax

from dsc_sklearn.defence.discrepancy import (
    REFERENCES,
    decision_statistic,
    memorization_discrepancy,
    reduce_snapshots,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def logit_pairs(draw, low=-20.0, high=20.0):
    n_samples = draw(st.integers(1, 5))
    n_classes = draw(st.integers(2, 5))
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False)
    shape = (n_samples, n_classes)
    ref = draw(arrays(np.float64, shape, elements=elements))
    cur = draw(arrays(np.float64, shape, elements=elements))
    return ref, cur


def _hand_kl(ref, cur):
    p = softmax(ref, axis=-1)
    q = softmax(cur, axis=-1)
    return rel_entr(p, q).sum(axis=-1)


def _log_space_kl(ref, cur):
    log_p, log_q = log_softmax(ref, axis=-1), log_softmax(cur, axis=-1)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def _kl(ref, cur):
    return memorization_discrepancy(torch.as_tensor(ref), torch.as_tensor(cur))


@FAST
@given(logit_pairs())
def test_matches_hand_computed_kl_with_scipy(pair):
    ref, cur = pair
    result = _kl(ref, cur)
    assert result.shape == (ref.shape[0],)
    assert result.dtype == torch.float64
    np.testing.assert_allclose(result.numpy(), _hand_kl(ref, cur), rtol=1e-7, atol=1e-10)


def test_matches_hand_computation_in_float32():
    torch.manual_seed(0)
    ref, cur = torch.randn(6, 4) * 3, torch.randn(6, 4) * 3
    expected = _hand_kl(ref.double().numpy(), cur.double().numpy())
    result = memorization_discrepancy(ref, cur)
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_direction_is_reference_first():
    ref = torch.tensor([[3.0, 0.0, 0.0]])
    cur = torch.tensor([[0.0, 1.0, 2.0]])
    forward = memorization_discrepancy(ref, cur)
    backward = memorization_discrepancy(cur, ref)
    np.testing.assert_allclose(forward.numpy(), _hand_kl(ref.numpy(), cur.numpy()), rtol=1e-5)
    assert not torch.allclose(forward, backward)


@FAST
@given(logit_pairs())
def test_zero_for_identical_logits(pair):
    ref, _ = pair
    result = _kl(ref, ref)
    assert torch.equal(result, torch.zeros_like(result))


@FAST
@given(logit_pairs())
def test_non_negative(pair):
    ref, cur = pair
    assert bool((_kl(ref, cur) >= 0).all())
    assert bool((_kl(ref.astype(np.float32), cur.astype(np.float32)) >= 0).all())


@FAST
@given(
    logit_pairs(),
    arrays(np.float64, (5, 1), elements=st.floats(-100, 100)),
    arrays(np.float64, (5, 1), elements=st.floats(-100, 100)),
)
def test_invariant_to_a_constant_added_per_row(pair, shift_ref, shift_cur):
    ref, cur = pair
    n = ref.shape[0]
    shifted = _kl(ref + shift_ref[:n], cur + shift_cur[:n])
    np.testing.assert_allclose(shifted.numpy(), _kl(ref, cur).numpy(), rtol=1e-6, atol=1e-9)


def test_stable_for_logits_of_magnitude_1e4():
    ref = torch.tensor([[1e4, -1e4, 0.0], [5e3, 5e3, -1e4]])
    cur = torch.tensor([[-1e4, 1e4, 0.0], [5e3, 5e3, -1e4]])
    result = memorization_discrepancy(ref, cur)
    assert bool(torch.isfinite(result).all())
    # p_ref is one-hot on class 0 where log p_cur = -2e4.
    np.testing.assert_allclose(result[0].item(), 2e4, rtol=1e-6)
    assert result[1].item() == 0.0
    big = torch.tensor([[1e4, 9.99e3, -1e4]])
    np.testing.assert_allclose(
        memorization_discrepancy(big, big.flip(-1)).numpy(),
        _log_space_kl(big.double().numpy(), big.flip(-1).double().numpy()),
        rtol=1e-5,
    )


def test_broadcasts_over_a_leading_snapshot_axis():
    torch.manual_seed(1)
    ref = torch.randn(3, 7, 4)
    cur = torch.randn(7, 4)
    result = memorization_discrepancy(ref, cur)
    assert result.shape == (3, 7)
    for i in range(3):
        torch.testing.assert_close(result[i], memorization_discrepancy(ref[i], cur))


@pytest.fixture
def per_snapshot():
    torch.manual_seed(2)
    return torch.rand(3, 5)


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("oldest", lambda d: d[0]),
        ("newest", lambda d: d[-1]),
        ("mean", lambda d: d.mean(dim=0)),
        ("max", lambda d: d.max(dim=0).values),
        ("all", lambda d: d.T),
    ],
)
def test_reduce_snapshots_for_each_reference(per_snapshot, reference, expected):
    reduced = reduce_snapshots(per_snapshot, reference)
    torch.testing.assert_close(reduced, expected(per_snapshot))


def test_reduce_snapshots_all_keeps_one_column_per_snapshot(per_snapshot):
    assert reduce_snapshots(per_snapshot, "all").shape == (5, 3)


def test_references_constant_lists_every_reduction(per_snapshot):
    assert set(REFERENCES) == {"oldest", "newest", "mean", "max", "all"}
    for reference in REFERENCES:
        reduce_snapshots(per_snapshot, reference)


@pytest.mark.parametrize("reference", ["median", "Oldest", "", None])
def test_reduce_snapshots_rejects_unknown_reference(per_snapshot, reference):
    with pytest.raises(ValueError, match="reference must be one of"):
        reduce_snapshots(per_snapshot, reference)


def test_decision_statistic_takes_the_max_over_snapshot_columns():
    d = torch.tensor([[0.1, 0.5], [0.7, 0.2]])
    torch.testing.assert_close(decision_statistic(d), torch.tensor([0.5, 0.7]))
    flat = torch.tensor([0.3, 0.1])
    assert decision_statistic(flat) is flat


def test_zero_probability_reference_classes_contribute_zero():
    ref = np.array([[0.0, -np.inf, 1.0], [2.0, -np.inf, -np.inf]])
    cur = np.array([[0.0, 0.0, 1.0], [2.0, -np.inf, -np.inf]])
    result = _kl(ref, cur)
    assert bool(torch.isfinite(result).all())
    np.testing.assert_allclose(result.numpy(), _hand_kl(ref, cur), rtol=1e-7, atol=1e-12)
