"""Print the performance issue's cost ratios, measured side by side.

Every configuration of one table row is built and warmed up in this process,
then timed in interleaved rounds (the order rotates each round), so that load
from other processes hits all of them alike; a ratio is the median over the
rounds of the per-round ratio, and the times are medians too. Run it from the
repository root::

    python benchmarks/ratios.py                        # everything, about 10 min
    python benchmarks/ratios.py --modules mlp --batch-sizes 256 --rounds 5
    python benchmarks/ratios.py --threads 1 --json ratios.json

Section 1, ``partial_fit`` per batch: ``--batches-per-call`` batches per call
(the per-call cost of input validation is shared by them; ``1`` measures a
stream fed one batch per call, the hot path). Columns: the time per batch of
each case, then ``none / raw`` (every defence off against the torch loop),
``floor / raw`` (the torch loop plus the least that ``partial_fit``'s
guarantees cost, ``_workloads.GuaranteedLoop``),
``1 + forward / none`` (the step plus one eval-mode forward pass of the
module, the bound the discrepancy approaches), ``default / none`` (the
defaults: the step guard alone), ``dsc-without-flags / none`` (DSC with
``threshold=1e9``: the discrepancy is computed, nothing is flagged),
``dsc-auto / none`` (DSC with ``threshold="auto"``: about 1 % of the samples
flagged and corrected) and ``dsc-with-correction / none`` (``threshold=0.0``:
every sample corrected, up to 10 steps). The DSC cases run without the
guard.

Section 2, reference logits of ``history_size`` snapshots in one vectorised
call (``reference="mean"``), against one snapshot through the same vectorised
path (a buffer of one) and through the single-snapshot path
(``reference="oldest"``, what training with the default reference pays).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _workloads  # noqa: E402
from _workloads import (  # noqa: E402
    BATCH_SIZES,
    DEFAULT_MODULES,
    MODULES,
    RATIO_CASES,
    digits_stream,
    fitted_classifier,
    make_trainer,
    partial_fit_step,
    synchronize,
)

__all__ = ["main", "partial_fit_ratios", "snapshot_ratios"]

#: (name, numerator, denominator) of the ratios of section 1.
PARTIAL_FIT_RATIOS = (
    ("none/raw", "none", "raw"),
    ("floor/raw", "floor", "raw"),
    ("1+forward/none", "forward", "none"),
    ("default/none", "default", "none"),
    ("no-flags/none", "dsc-without-flags", "none"),
    ("dsc-auto/none", "dsc-auto", "none"),
    ("correction/none", "dsc-with-correction", "none"),
)


#: Clocks: wall time, or the CPU time of the whole process (all threads),
#: which other processes' load on a shared machine disturbs much less.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _interleaved(steps, rounds, repeats, clock="wall"):
    """Per-round seconds per call of each step, timed in rotating order."""
    now = CLOCKS[clock]
    names = list(steps)
    times = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = now()
            for _ in range(repeats):
                steps[name]()
            synchronize()
            times[name].append((now() - start) / repeats)
    return times


def _median_ratio(times, numerator, denominator):
    return statistics.median(
        a / b for a, b in zip(times[numerator], times[denominator])
    )


def partial_fit_ratios(module, batch_size, *, cases=RATIO_CASES, rounds=7, calls=2,
                       batches_per_call=8, clock="wall"):
    """Median seconds per batch of each case and the section-1 ratios."""
    steps = {
        case: partial_fit_step(make_trainer(case, module, batch_size), batch_size,
                               batches_per_call)
        for case in cases
    }
    times = _interleaved(steps, rounds, calls, clock)
    per_batch = {
        case: statistics.median(times[case]) / batches_per_call for case in cases
    }
    ratios = {
        name: _median_ratio(times, num, den)
        for name, num, den in PARTIAL_FIT_RATIOS
        if num in times and den in times
    }
    if "1+forward/none" in ratios:
        # The bound the issue quotes: the step plus one reference pass.
        ratios["1+forward/none"] += 1.0
    return per_batch, ratios


def snapshot_ratios(module, batch_size, history_size=16, *, rounds=7, repeats=20,
                    clock="wall"):
    """Seconds per reference-logit call: many snapshots against one."""
    many = fitted_classifier(module, batch_size, history_size=history_size).net_
    one = fitted_classifier(module, batch_size, history_size=1).net_
    X = torch.as_tensor(digits_stream(batch_size, seed=5)[0])
    assert len(many.snapshots_) == history_size and len(one.snapshots_) == 1
    steps = {
        "many_mean": lambda: many.snapshots_.reference_logits(many.module_, X, "mean"),
        "one_mean": lambda: one.snapshots_.reference_logits(one.module_, X, "mean"),
        "one_oldest": lambda: many.snapshots_.reference_logits(many.module_, X, "oldest"),
    }
    for step in steps.values():
        step()
    times = _interleaved(steps, rounds, repeats, clock)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        "many/one (vmapped)": _median_ratio(times, "many_mean", "one_mean"),
        "many/oldest": _median_ratio(times, "many_mean", "one_oldest"),
    }
    return seconds, ratios


def _device_name():
    device = torch.device(_workloads.DEVICE)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def machine():
    """A description of the machine, torch and the thread count."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": _device_name(),
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES),
                        choices=list(MODULES),
                        help="resnet: a small ResNet with BatchNorm (not run by default)")
    parser.add_argument("--device", default=None,
                        help="torch device of every workload, e.g. cuda (default: "
                             "$DSC_BENCH_DEVICE or cpu)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--cases", nargs="+", default=list(RATIO_CASES),
                        choices=list(RATIO_CASES))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2,
                        help="partial_fit calls per case and round")
    parser.add_argument("--batches-per-call", type=int, default=8)
    parser.add_argument("--history-size", type=int, default=16)
    parser.add_argument("--clock", default="wall", choices=list(CLOCKS),
                        help="wall time, or CPU time of the process (all threads)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads; default: torch's default")
    parser.add_argument("--skip-partial-fit", action="store_true")
    parser.add_argument("--skip-snapshots", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def main(argv=None):
    """Measure and print both sections; return the results as a dict."""
    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device is not None:
        _workloads.DEVICE = args.device
    info = machine()
    print(" | ".join(f"{key}: {value}" for key, value in info.items()))
    print("command: python benchmarks/ratios.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:]))
    results = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
               "partial_fit": [], "snapshots": []}
    if not args.skip_partial_fit:
        names = [name for name, num, den in PARTIAL_FIT_RATIOS
                 if num in args.cases and den in args.cases]
        print(f"\n## partial_fit, {args.clock} ms per batch ({args.batches_per_call} batches "
              f"per call), ratios: median of {args.rounds} rounds\n")
        print("| module | batch | " + " | ".join(f"{c} ms" for c in args.cases) + " | "
              + " | ".join(names) + " | " + " | ".join(f"{c} samples/s" for c in args.cases)
              + " |")
        print("|---" * (2 + 2 * len(args.cases) + len(names)) + "|")
        for module in args.modules:
            for batch_size in args.batch_sizes:
                per_batch, ratios = partial_fit_ratios(
                    module, batch_size, cases=args.cases, rounds=args.rounds,
                    calls=args.calls, batches_per_call=args.batches_per_call,
                    clock=args.clock,
                )
                print(f"| {module} | {batch_size} | "
                      + " | ".join(f"{per_batch[c] * 1e3:.3f}" for c in args.cases) + " | "
                      + " | ".join(f"{ratios[n]:.2f}" for n in names) + " | "
                      + " | ".join(f"{batch_size / per_batch[c]:.0f}" for c in args.cases)
                      + " |", flush=True)
                results["partial_fit"].append(dict(module=module, batch_size=batch_size,
                                                   ms_per_batch={c: per_batch[c] * 1e3
                                                                 for c in args.cases},
                                                   ratios=ratios))
    if not args.skip_snapshots:
        print(f"\n## reference logits, {args.history_size} snapshots against 1, "
              f"{args.clock} ms per call, ratios: median of {args.rounds} rounds\n")
        print(f"| module | batch | {args.history_size} (mean) ms | 1 (mean) ms | "
              f"1 (oldest) ms | {args.history_size}/1 vmapped | "
              f"{args.history_size}/oldest |")
        print("|---" * 7 + "|")
        for module in args.modules:
            for batch_size in args.batch_sizes:
                seconds, ratios = snapshot_ratios(module, batch_size, args.history_size,
                                                  rounds=args.rounds, clock=args.clock)
                print(f"| {module} | {batch_size} | {seconds['many_mean'] * 1e3:.3f} | "
                      f"{seconds['one_mean'] * 1e3:.3f} | {seconds['one_oldest'] * 1e3:.3f} | "
                      f"{ratios['many/one (vmapped)']:.2f} | {ratios['many/oldest']:.2f} |",
                      flush=True)
                results["snapshots"].append(dict(module=module, batch_size=batch_size,
                                                 ms={k: v * 1e3 for k, v in seconds.items()},
                                                 ratios=ratios))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
