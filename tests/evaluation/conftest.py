"""Fixtures shared by the evaluation tests."""

import numpy as np
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def pixel_digits():
    """The digits as float32 pixels in [0, 1], rows in a fixed shuffled order."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    order = np.random.RandomState(0).permutation(len(X))
    return X[order], y[order]
