"""Predict throughput while another thread trains, and what the threads contract costs.

For a digits MLP (mode invariant: a read runs the module itself) and the same
MLP with a Dropout layer (a read runs this thread's eval-mode copy with the
weights passed in), it measures, each for ``--seconds`` seconds:

- ``predict`` calls per second (``--rows`` rows each) in one thread, alone;
- the same while another thread streams ``partial_fit`` (batches of 100);
- ``partial_fit`` calls per second alone, and while one thread predicts.

``torch`` runs one intra-op thread (``torch.set_num_threads(1)``), so two
Python threads can use two cores; the GIL is released inside torch's kernels
only, which is what limits the overlap for models this small.

Run it from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/threads.py
    OMP_NUM_THREADS=1 python benchmarks/threads.py --seconds 5 --json threads.json
    OMP_NUM_THREADS=1 python benchmarks/threads.py --alone   # each call alone
"""

import argparse
import functools
import json
import platform
import threading
import time

import numpy as np
import torch

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.modules import MLP
from dsc_sklearn.evaluation.datasets import load_stream_dataset

__all__ = ["measure"]


#: The default MLP, and the same shape (one hidden layer of 100) with Dropout(0.2).
MODULES = {"mlp": None, "mlp+dropout": functools.partial(MLP, dropout=0.2)}


def _rate(work, seconds, stop=None):
    """Calls of ``work`` per second over ``seconds`` (or until ``stop`` is set)."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and not (stop and stop.is_set()):
        work(n)
        n += 1
    return n / (time.perf_counter() - start)


def measure(module, seconds=3.0, rows=100, alone=False):
    """The four rates for one module (two with ``alone``); a dict of calls per second."""
    data = load_stream_dataset("digits", random_state=0)
    X, y = data.X_train.astype(np.float32), data.y_train
    X_query = data.X_test[:rows].astype(np.float32)
    clf = DiscrepancyAwareOnlineClassifier(module, input_bounds=(0.0, 1.0), random_state=0)
    clf.partial_fit(X[:100], y[:100], classes=np.unique(y))
    n_batches = len(X) // 100

    def train(n):
        start = (n % n_batches) * 100
        clf.partial_fit(X[start:start + 100], y[start:start + 100])

    def predict(n):
        clf.predict(X_query)

    _rate(predict, 0.3)  # the thread's private copy, caches
    result = {"predict alone": _rate(predict, seconds),
              "partial_fit alone": _rate(train, seconds)}
    if alone:
        return result
    for name, (measured, other) in {"predict while training": (predict, train),
                                    "partial_fit while predicting": (train, predict)}.items():
        stop, rates = threading.Event(), {}
        background = threading.Thread(target=lambda: _rate(other, seconds * 10, stop))
        background.start()
        rates[name] = _rate(measured, seconds)
        stop.set()
        background.join()
        result.update(rates)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--json", default=None)
    parser.add_argument("--alone", action="store_true",
                        help="measure each call alone only (for a version without the "
                             "threads contract, where the concurrent runs are unsafe)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {"machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "seconds": args.seconds, "rows": args.rows,
              "results": {}}
    for name, module in MODULES.items():
        rates = measure(module, args.seconds, args.rows, args.alone)
        report["results"][name] = rates
        for key, value in rates.items():
            print(f"{name:12s} {key:30s} {value:9.1f} calls/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
