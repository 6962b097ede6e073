"""Time each speed-only re-implementation against the library call it replaces.

Two pieces of the package re-implement a library call for speed:

- ``thresholds._window_quantile``: ``torch.quantile(torch.cat(window), q)``
  from each batch's largest values, kept while the batch stays in the
  ``AutoThreshold`` window;
- ``_classifier._plain_float32``: what scikit-learn's ``validate_data``
  returns for a plain float array after the first call.

Each is timed alone (the function against the library call, on the inputs
the training step gives it) and inside ``partial_fit`` (one batch per call,
the stream's hot path: ``dsc-auto`` for the quantile, every defence off for
the validation), with the re-implementation switched off by replacing it
with the library call in the same process. Every pair is timed in
interleaved rounds whose order rotates (``ratios.py``'s scheme); a time is
the median over the rounds, a ratio the median of the per-round ratios.
Run it from the repository root, one torch thread, with ``PYTHONPATH``
naming the checkout to measure (the first line printed says which package
was imported)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/reimplementations.py --threads 1
"""

import argparse
import statistics
import sys
from collections import deque
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import validate_data

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workloads import BatchCycler, digits_stream, make_trainer, partial_fit_step  # noqa: E402
from ratios import CLOCKS, _interleaved, _median_ratio, machine  # noqa: E402

import dsc_sklearn  # noqa: E402
from dsc_sklearn.defence import _classifier, thresholds  # noqa: E402

__all__ = ["main", "quantile_times", "validation_times"]

_window_quantile = thresholds._window_quantile
_plain_float32 = _classifier._plain_float32


def _library_quantile(window, largest, quantile):
    return torch.quantile(torch.cat(tuple(window)), quantile)


def _library_validation(estimator, X):
    return None, X  # validate_data decides


class _Switch:
    """Run a step with the library call in place of the re-implementation."""

    def __init__(self, module, name, replacement):
        self.module, self.name, self.replacement = module, name, replacement

    def __call__(self, step):
        def switched():
            original = getattr(self.module, self.name)
            setattr(self.module, self.name, self.replacement)
            try:
                step()
            finally:
                setattr(self.module, self.name, original)
        return switched


def _summary(times, numerator, denominator):
    return {
        "ms": {name: statistics.median(values) * 1e3 for name, values in times.items()},
        "library/reimplementation": _median_ratio(times, numerator, denominator),
    }


def quantile_times(batch_size, window=20, quantile=0.99, rounds=15, repeats=50,
                   clock="cpu"):
    """One ``AutoThreshold`` window update: the re-implementation against torch.quantile.

    A full window of ``window`` batches of ``batch_size`` statistics; each
    call appends a new batch (as ``update`` does) and computes the value.
    """
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(batch_size, generator=generator) for _ in range(window + 64)]
    states = {}
    for name in ("reimplementation", "library"):
        history, largest = deque(maxlen=window), deque(maxlen=window)
        for values in batches[:window]:
            history.append(values)
            largest.append(torch.empty(0))
            _window_quantile(history, largest, quantile)
        states[name] = (history, largest, [window])

    def update(name, function):
        history, largest, position = states[name]

        def step():
            history.append(batches[position[0] % len(batches)])
            largest.append(torch.empty(0))
            position[0] += 1
            return function(history, largest, quantile)
        return step

    steps = {"reimplementation": update("reimplementation", _window_quantile),
             "library": update("library", _library_quantile)}
    assert torch.equal(steps["reimplementation"](), steps["library"]())
    return _summary(_interleaved(steps, rounds, repeats, clock), "library",
                    "reimplementation")


def validation_times(batch_size, rounds=15, repeats=200, clock="cpu"):
    """The checks of one call: the fast path against ``validate_data``."""
    clf = make_trainer("none", "mlp", batch_size, pretrain=0, warmup=1)
    X, y = BatchCycler(batch_size)()
    fast = _classifier._validated_batch(clf, X, y, reset=False)
    slow = validate_data(clf, X, y, dtype=np.float32, force_writeable=True, reset=False)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    steps = {
        "reimplementation": lambda: _classifier._validated_batch(clf, X, y, reset=False),
        "library": lambda: validate_data(clf, X, y, dtype=np.float32,
                                         force_writeable=True, reset=False),
    }
    return _summary(_interleaved(steps, rounds, repeats, clock), "library",
                    "reimplementation")


def partial_fit_times(case, module, batch_size, switch, rounds=15, calls=20, clock="cpu"):
    """``partial_fit`` of one batch, with and without the re-implementation."""
    steps = {
        "reimplementation": partial_fit_step(make_trainer(case, module, batch_size),
                                             batch_size),
        "library": switch(partial_fit_step(make_trainer(case, module, batch_size),
                                           batch_size)),
    }
    return _summary(_interleaved(steps, rounds, calls, clock), "library",
                    "reimplementation")


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256, 1024])
    parser.add_argument("--module", default="mlp")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clock", default="cpu", choices=list(CLOCKS))
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(argv=None):
    """Measure and print every pair; return the results as a dict."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    digits_stream(1)  # load the data before any clock runs
    info = dict(machine(), package=str(Path(dsc_sklearn.__file__).parent))
    print(" | ".join(f"{key}: {value}" for key, value in info.items()))
    print("command: python benchmarks/reimplementations.py "
          + " ".join(argv if argv is not None else sys.argv[1:]))
    quantile_switch = _Switch(thresholds, "_window_quantile", _library_quantile)
    validation_switch = _Switch(_classifier, "_plain_float32", _library_validation)
    print(f"\n{args.clock} ms per call, medians of {args.rounds} interleaved rounds\n")
    print("| what | batch | re-implementation ms | library ms | library / re-implementation |")
    print("|---|---|---|---|---|")
    rows = []
    for batch_size in args.batch_sizes:
        rows.append(("window quantile, alone", batch_size,
                     quantile_times(batch_size, rounds=args.rounds, clock=args.clock)))
        rows.append(("window quantile, partial_fit dsc-auto", batch_size,
                     partial_fit_times("dsc-auto", args.module, batch_size, quantile_switch,
                                       rounds=args.rounds, clock=args.clock)))
        rows.append(("validation, alone", batch_size,
                     validation_times(batch_size, rounds=args.rounds, clock=args.clock)))
        rows.append(("validation, partial_fit none", batch_size,
                     partial_fit_times("none", args.module, batch_size, validation_switch,
                                       rounds=args.rounds, clock=args.clock)))
        for what, size, result in rows[-4:]:
            print(f"| {what} | {size} | {result['ms']['reimplementation']:.4f} | "
                  f"{result['ms']['library']:.4f} | "
                  f"{result['library/reimplementation']:.3f} |", flush=True)
    return {"machine": info, "rows": rows}


if __name__ == "__main__":
    main()
