"""Soak: a long stream keeps memory, the log and the buffers bounded.

The loop is ``benchmarks/soak.py``'s, shortened to run in well under a minute
on two cores; ``python benchmarks/soak.py`` measures the full 200 000-sample
figure recorded in ``docs/reliability.md``.
"""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from dsc_sklearn.defence import _classifier

SOAK_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
N_SAMPLES, WARMUP, BATCH_SIZE = 60_000, 20_000, 100
MAX_GROWTH_MB = 25  # the full 200 000-sample soak must stay under 50 MB


def load_soak():
    spec = importlib.util.spec_from_file_location("dsc_soak", SOAK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resident_memory_is_measurable():
    rss = load_soak().resident_memory_mb()
    assert math.isnan(rss) or 10 < rss < 1e6


@pytest.mark.slow
def test_long_stream_keeps_memory_and_logs_bounded(monkeypatch, one_torch_thread):
    monkeypatch.setattr(_classifier, "MAX_LOG_RECORDS", 250)  # reached after 250 batches
    report = load_soak().soak(n_samples=N_SAMPLES, warmup=WARMUP, batch_size=BATCH_SIZE)
    clf = report["estimator"]
    assert clf.n_samples_seen_ == N_SAMPLES
    assert clf.n_batches_seen_ == N_SAMPLES // BATCH_SIZE
    assert len(clf.stream_log_) == 250
    assert clf.stream_log_[-1]["step"] == clf.n_batches_seen_
    assert len(clf.snapshots_) == clf.history_size
    guard = clf.net_.step_guard_
    assert len(guard.probe_) == guard.probe_size and len(guard.window_) <= guard.window
    assert guard.n_steps_ == clf.n_batches_seen_
    if math.isnan(report["growth_mb"]):
        pytest.skip("no way to read the resident set size on this platform")
    assert report["growth_mb"] <= MAX_GROWTH_MB, report
