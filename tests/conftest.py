"""Fixtures shared by the test suite."""

import pytest
import torch

from dsc_sklearn.evaluation.datasets import load_stream_dataset


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, above all under pytest-xdist."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_stream_dataset("digits", random_state=0)
