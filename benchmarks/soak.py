"""Soak test: stream many samples through ``partial_fit`` and watch memory.

Streams ``--n-samples`` samples (default 200 000) of scikit-learn's digits,
cycled with fresh uniform noise so that no batch repeats, through
:meth:`DiscrepancyAwareOnlineClassifier.partial_fit` in batches of
``--batch-size`` (default 100), and reports the resident set size (RSS) after
the warm-up (``--warmup``, default 20 000 samples) and at the end, the growth
in between, the lengths of ``stream_log_`` and of the snapshot buffer, and the
time taken. ``tests/defence/test_soak.py`` runs a shorter version of the same loop.

Run it from the repository root::

    python benchmarks/soak.py                       # the full 200 000 samples
    python benchmarks/soak.py --n-samples 50000 --json soak.json
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset

__all__ = ["resident_memory_mb", "soak"]


def resident_memory_mb():
    """Current resident set size of this process in MB (10**6 bytes).

    Reads ``/proc/self/statm`` on Linux, else asks ``psutil`` when it is
    installed; returns ``nan`` when neither is available.
    """
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 1e6


def soak(n_samples=200_000, batch_size=100, warmup=20_000, noise=0.05,
         random_state=0, every=None, **params):
    """Stream ``n_samples`` samples through ``partial_fit``; measure memory.

    Parameters
    ----------
    n_samples : int, default=200_000
        Samples streamed in all.
    batch_size : int, default=100
        Rows per ``partial_fit`` call.
    warmup : int, default=20_000
        Samples streamed before the reference RSS is read.
    noise : float, default=0.05
        Half-width of the uniform noise added to every cycled digit.
    random_state : int, default=0
        Seeds the stream and the estimator.
    every : int, default=None
        Also record the RSS every ``every`` samples (in ``trace``).
    **params : dict
        Passed to :class:`DiscrepancyAwareOnlineClassifier`.

    Returns
    -------
    report : dict
        ``rss_start_mb``, ``rss_after_warmup_mb``, ``rss_end_mb``,
        ``growth_mb`` (end minus after warm-up), ``peak_growth_mb``,
        ``seconds``, ``samples_per_second``, ``stream_log_len``,
        ``n_snapshots``, ``n_batches_seen``, ``trace`` and the estimator as
        ``estimator``.
    """
    data = load_stream_dataset("digits", random_state=random_state)
    X_pool, y_pool = data.X_train.astype(np.float32), data.y_train
    rng = np.random.default_rng(random_state)
    params = {"input_bounds": (0.0, 1.0), "random_state": random_state, **params}
    clf = DiscrepancyAwareOnlineClassifier(batch_size=batch_size, **params)
    classes = np.unique(data.y_train)
    rss_start = resident_memory_mb()
    rss_warm = None
    peak = -np.inf
    trace = []
    start_time = time.perf_counter()
    seen = 0
    while seen < n_samples:
        rows = rng.integers(len(X_pool), size=batch_size)
        X = X_pool[rows] + rng.uniform(-noise, noise, (batch_size, X_pool.shape[1]))
        clf.partial_fit(np.clip(X, 0.0, 1.0, dtype=np.float32), y_pool[rows],
                        classes=classes)
        seen += batch_size
        if rss_warm is None and seen >= warmup:
            rss_warm = resident_memory_mb()
        elif rss_warm is not None:
            peak = max(peak, resident_memory_mb() - rss_warm)
        if every and seen % every == 0:
            trace.append((seen, round(resident_memory_mb(), 1)))
    seconds = time.perf_counter() - start_time
    rss_end = resident_memory_mb()
    if rss_warm is None:
        rss_warm = rss_end
    return {
        "n_samples": seen,
        "batch_size": batch_size,
        "warmup": warmup,
        "rss_start_mb": round(rss_start, 1),
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "growth_mb": round(rss_end - rss_warm, 1),
        "peak_growth_mb": round(max(peak, rss_end - rss_warm), 1),
        "seconds": round(seconds, 1),
        "samples_per_second": round(seen / seconds),
        "stream_log_len": len(clf.stream_log_),
        "n_snapshots": len(clf.snapshots_),
        "n_batches_seen": clf.n_batches_seen_,
        "trace": trace,
        "estimator": clf,
    }


def _machine():
    return {
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=20_000,
                        help="record the RSS every this many samples")
    parser.add_argument("--correction", default="none")
    parser.add_argument("--threshold", default="auto")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = [round(load, 2) for load in os.getloadavg()]
    threshold = args.threshold if args.threshold == "auto" else float(args.threshold)
    report = soak(args.n_samples, args.batch_size, args.warmup, every=args.every,
                  correction=args.correction, threshold=threshold)
    report.pop("estimator")
    report.update(
        load_average_before=load_before,
        machine=_machine(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([os.path.basename(sys.executable), *sys.argv]),
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
