"""Where the time of one batch goes: the figures behind docs/performance.md.

Four measurements, each side by side in interleaved rounds (medians):

1. ``train_step`` alone (``correction="none"``) against the raw torch step,
   on one batch already on the device: the estimator's per-step overhead
   without ``partial_fit``'s input validation;
2. the per-call cost of ``partial_fit`` with ``train_step`` replaced by a
   stub: validation, label encoding, logging;
3. ``threshold=1e9`` steps with parts of the discrepancy replaced by stubs
   (no divergence, no reference pass, neither), against ``"none"``;
4. the reference logits of 16 snapshots in one vmapped call against a
   Python loop over the same snapshots.

Run it from the repository root::

    python benchmarks/breakdown.py                  # CPU time, 1 thread, MLP, batch 256
    python benchmarks/breakdown.py --module cnn --batch-size 1024
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dsc_sklearn._net as net_module  # noqa: E402
from _workloads import (  # noqa: E402
    BatchCycler,
    MODULES,
    digits_stream,
    fitted_classifier,
    make_trainer,
)
from dsc_sklearn.history import call_with_state, eval_mode  # noqa: E402
from ratios import CLOCKS, _interleaved, machine  # noqa: E402

__all__ = ["main"]


def _medians(times, scale=1e3):
    return {name: statistics.median(values) * scale for name, values in times.items()}


def _ratios(times, denominator):
    return {name: statistics.median(a / b for a, b in zip(values, times[denominator]))
            for name, values in times.items()}


def step_overhead(module, batch_size, rounds, clock):
    """``train_step`` (``"none"``) against the raw step, one batch, ms."""
    raw = make_trainer("raw", module, batch_size, pretrain=0, warmup=2)
    net = make_trainer("none", module, batch_size, pretrain=0, warmup=2).net_
    X, y = (torch.as_tensor(a) for a in digits_stream(batch_size, seed=7))

    def raw_step():
        raw.optimizer.zero_grad()
        raw.criterion(raw.module(X), y).backward()
        raw.optimizer.step()

    times = _interleaved({"raw": raw_step, "train_step": lambda: net.train_step((X, y))},
                         rounds, 20, clock)
    return _medians(times), _ratios(times, "raw")


def call_overhead(module, batch_size, rounds, clock, batches_per_call=8):
    """``partial_fit`` of ``batches_per_call`` batches with a stub step, ms."""
    clf = make_trainer("none", module, batch_size, pretrain=0, warmup=2)
    X, y = BatchCycler(batch_size * batches_per_call)()

    def stub(batch, **fit_params):
        return {"loss": None, "y_pred": None, "record": torch.zeros(6),
                "flagged": torch.zeros(len(batch[0]), dtype=torch.bool)}

    clf.net_.train_step = stub
    times = _interleaved({"partial_fit": lambda: clf.partial_fit(X, y)}, rounds, 10, clock)
    return _medians(times)


def discrepancy_parts(module, batch_size, rounds, clock):
    """``threshold=1e9`` steps with parts stubbed, against ``"none"``."""
    none = make_trainer("none", module, batch_size, pretrain=0, warmup=2).net_
    gated = make_trainer("dsc-without-flags", module, batch_size, pretrain=0, warmup=2).net_
    X, y = (torch.as_tensor(a) for a in digits_stream(batch_size, seed=7))
    n_classes = none.module_(X[:1]).shape[1]
    real_divergence = net_module.memorization_discrepancy
    real_reference = gated.snapshots_.reference_logits

    def no_divergence(reference, current):
        return torch.zeros(reference.shape[:-1])

    def no_reference(module_, X_, reference, dtype=None):
        return torch.zeros(1, len(X_), n_classes)

    def variant(divergence, reference):
        def step():
            net_module.memorization_discrepancy = divergence
            gated.snapshots_.reference_logits = reference
            try:
                gated.train_step((X, y))
            finally:
                net_module.memorization_discrepancy = real_divergence
                gated.snapshots_.reference_logits = real_reference
        return step

    steps = {
        "none": lambda: none.train_step((X, y)),
        "no-flags": variant(real_divergence, real_reference),
        "stub divergence": variant(no_divergence, real_reference),
        "stub reference pass": variant(real_divergence, no_reference),
        "stub both": variant(no_divergence, no_reference),
    }
    times = _interleaved(steps, rounds, 20, clock)
    return _medians(times), _ratios(times, "none")


def vmap_against_loop(module, batch_size, rounds, clock, history_size=16):
    """Reference logits of ``history_size`` snapshots: vmap against a loop, ms."""
    net = fitted_classifier(module, batch_size, history_size=history_size).net_
    X = torch.as_tensor(digits_stream(batch_size, seed=5)[0])
    buffer, live = net.snapshots_, net.module_

    def loop():
        with torch.no_grad(), eval_mode(live):
            return torch.stack([call_with_state(live, state, X) for state in buffer.snapshots])

    assert torch.equal(loop(), buffer.reference_logits(live, X, "all"))
    times = _interleaved({"vmap": lambda: buffer.reference_logits(live, X, "mean"),
                          "loop": loop}, rounds, 5, clock)
    return _medians(times), _ratios(times, "vmap")


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", default="mlp", choices=list(MODULES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--clock", default="cpu", choices=list(CLOCKS))
    parser.add_argument("--threads", type=int, default=1)
    return parser


def _show(title, values, unit=" ms"):
    print(f"{title}: " + ", ".join(f"{k} {v:.3f}{unit}" for k, v in values.items()))


def main(argv=None):
    """Run the four measurements and print them."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    print(" | ".join(f"{key}: {value}" for key, value in machine().items()))
    print("command: python benchmarks/breakdown.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    print(f"module {args.module}, batch {args.batch_size}, {args.clock} time, "
          f"medians of {args.rounds} rounds")
    options = (args.module, args.batch_size, args.rounds, args.clock)
    ms, ratios = step_overhead(*options)
    _show("1. one step", ms)
    _show("   ratio to raw", ratios, "")
    _show("2. partial_fit of 8 batches, step stubbed", call_overhead(*options))
    ms, ratios = discrepancy_parts(*options)
    _show("3. threshold=1e9 step", ms)
    _show("   ratio to none", ratios, "")
    ms, ratios = vmap_against_loop(*options)
    _show("4. 16 snapshots", ms)
    _show("   ratio to vmap", ratios, "")


if __name__ == "__main__":
    main()
