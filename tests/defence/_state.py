"""Exact comparison of what an estimator has learned, for the tests of "changes nothing"."""

import copy
import math

import torch

from dsc_sklearn.defence._persistence import estimator_state


def assert_same(a, b, where="state"):
    """Exact recursive equality of two ``estimator_state`` payloads (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


def learned_state(clf, timings=True):
    """A deep copy of everything the estimator has learned (``estimator_state``).

    ``estimator_state`` returns the live tensors, which training writes in
    place; the copy does not change. ``timings=False`` drops the epochs'
    durations that skorch's ``EpochTimer`` writes into the history, which
    differ between two runs.
    """
    state = copy.deepcopy(estimator_state(clf))
    if not timings:
        for row in state["net"]["history"]:
            row.pop("dur", None)
    return state
