"""Ablations of the defence: which levers make the default win, and at what cost.

Runs every variant below, and the baselines, through the benchmark protocol
(:func:`dsc_sklearn.evaluation.benchmark.run_benchmark`, attack and benign drifts) and
writes ``ablations.json``, ``ablations.md`` and one robustness-against-cost
plot per benchmark::

    python benchmarks/ablations.py --benchmarks digits-mlp --seeds 5 --output ablations
    python benchmarks/ablations.py --variants ST GC "guard (default)" "guard strict" --seeds 5

The table in ``docs/ablations.md`` was produced this way.
"""

import argparse
from pathlib import Path

from dsc_sklearn.evaluation.benchmark import (
    DEFENCES,
    drift_table,
    results_table,
    run_benchmark,
    save_results,
)
from dsc_sklearn.defence.guards import StepGuard
from dsc_sklearn.defence.thresholds import AutoThreshold

from _ablation_thresholds import ExcessLossThreshold, MarginThreshold, PatientThreshold

# A loss or discrepancy threshold whose window keeps out batches it flagged.
EXCLUDING = AutoThreshold(max_flagged_fraction=0.5)
LONG_WINDOW = AutoThreshold(window=100)
BATCH_DROP = {"granularity": "batch", "correction": "drop"}

# The gate-and-correction variants of the first two rounds (0.1.0, whose
# default was DSC without a step guard).
_GATE_VARIANTS = {
    "ST": DEFENCES["ST"],
    "GC": DEFENCES["GC"],
    "DSC-paper": DEFENCES["DSC-paper"],
    "sample-dsc (0.1.0 default)": {"threshold": "auto"},
    "sample-dsc ref max": {"reference": "max"},
    "sample-dsc h8 s5": {"history_size": 8, "snapshot_every": 5},
    "sample-dsc h2 s20": {"history_size": 2, "snapshot_every": 20},
    "sample-dsc q0.9": {"threshold": AutoThreshold(quantile=0.9)},
    "sample-dsc +GC": {"clip_value": 0.01},
    "batch-dsc": {"granularity": "batch"},
    "sample-drop": {"correction": "drop"},
    "batch-drop": BATCH_DROP,
    "batch-drop excl": {**BATCH_DROP, "threshold": EXCLUDING},
    "batch-drop +loss": {**BATCH_DROP, "loss_threshold": "auto"},
    "batch-drop +loss excl": {**BATCH_DROP, "threshold": LONG_WINDOW,
                              "loss_threshold": EXCLUDING},
    "batch-dsc +loss excl": {"granularity": "batch", "threshold": LONG_WINDOW,
                             "loss_threshold": EXCLUDING},
    "loss only excl": {**BATCH_DROP, "threshold": 1e9, "loss_threshold": EXCLUDING},
    "batch-drop +loss excl x1.5": {
        **BATCH_DROP, "threshold": LONG_WINDOW,
        "loss_threshold": MarginThreshold(margin=1.5, max_flagged_fraction=0.5)},
    "batch-drop +loss excl p40": {
        **BATCH_DROP, "threshold": LONG_WINDOW,
        "loss_threshold": PatientThreshold(patience=40, max_flagged_fraction=0.5)},
    "excess-loss only": {**BATCH_DROP, "threshold": 1e9,
                         "loss_threshold": ExcessLossThreshold()},
    "excess-loss only excl": {**BATCH_DROP, "threshold": 1e9,
                              "loss_threshold": ExcessLossThreshold(max_flagged_fraction=0.5)},
    "sample-drop excess-loss excl": {
        "correction": "drop", "threshold": 1e9,
        "loss_threshold": ExcessLossThreshold(max_flagged_fraction=0.5)},
}


def _guard(**params):
    return {"correction": "none", "step_guard": StepGuard(**params)}


#: The step-guard variants of the third round (docs/ablations.md).
GUARD_VARIANTS = {
    "guard (default)": _guard(),
    "guard margin 1.5": _guard(margin=1.5),
    "guard margin 3": _guard(margin=3.0),
    "guard strict": _guard(rule="strict"),
    "guard bound rule": _guard(rule="bound"),
    "guard recent probe": _guard(probe="recent"),
    "guard interpolate momentum": _guard(optimizer_state="interpolate"),
    "guard admit all": _guard(admit="all"),
    "guard admit all margin 1.5": _guard(admit="all", margin=1.5),
    "guard recent judge 128": _guard(recent_size=128),
    "guard recent judge 256": _guard(recent_size=256),
    "guard strict recent judge 128": _guard(rule="strict", recent_size=128),
    "guard + DSC": {"correction": "dsc", "step_guard": StepGuard()},
    # The loss gate alone (the discrepancy gate never fires) drops flagged
    # batches in front of the guard.
    "guard + loss gate": {**BATCH_DROP, "threshold": 1e9, "loss_threshold": "auto",
                          "step_guard": StepGuard()},
    "guard + loss gate excl": {**BATCH_DROP, "threshold": 1e9, "loss_threshold": EXCLUDING,
                               "step_guard": StepGuard()},
}

VARIANTS = {
    **{name: params for name, params in _GATE_VARIANTS.items()
       if name in ("ST", "GC", "DSC-paper")},
    # Every gate variant names its correction and switches the guard off, so
    # that it measures what it measured before the defaults changed.
    **{name: {"correction": "dsc", "step_guard": None, **params}
       for name, params in _GATE_VARIANTS.items() if name not in ("ST", "GC", "DSC-paper")},
    **GUARD_VARIANTS,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", default=["digits-mlp"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--drifts", nargs="*", default=None,
                        help="benign drifts (default: all; none: --drifts)")
    parser.add_argument("--burn-in-epochs", type=int, default=None,
                        help="plain passes over the burn-in data (default: the protocol's 10)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("ablations"))
    args = parser.parse_args(argv)
    variants = {name: VARIANTS[name] for name in args.variants}
    options = {} if args.drifts is None else {"drifts": tuple(args.drifts)}
    if args.burn_in_epochs is not None:
        options["burn_in_epochs"] = args.burn_in_epochs
    records = run_benchmark(args.benchmarks, variants, tuple(range(args.seeds)),
                            n_jobs=args.n_jobs, **options)
    args.output.mkdir(parents=True, exist_ok=True)
    save_results(records, args.output / "ablations.json")
    table = ("## Accumulative poisoning\n\n" + results_table(records)
             + "\n## Benign drift\n\n" + drift_table(records))
    (args.output / "ablations.md").write_text(table)
    print(table)
    from dsc_sklearn.evaluation.plotting import plot_tradeoff, _pyplot

    plt = _pyplot()
    for benchmark in args.benchmarks:
        fig, ax = plt.subplots(figsize=(10, 5.5))
        plot_tradeoff(records, benchmark, ax=ax, annotate=False)
        fig.tight_layout()
        fig.savefig(args.output / f"{benchmark}_ablations_tradeoff.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
