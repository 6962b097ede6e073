"""The ``dsc-sklearn`` command."""

import argparse
import sys
import time
from pathlib import Path

from .. import __version__
from .benchmark import (
    BENCHMARKS,
    DEFENCES,
    drift_table,
    results_table,
    run_benchmark,
    save_results,
)
from .protocol import DRIFTS

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="dsc-sklearn",
        description="Memorization discrepancy and DSC against accumulative poisoning.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "benchmark",
        help="replay accumulative poisoning attacks against each defence",
        description="Replay accumulative poisoning attacks against each defence and "
        "write results.json, results.md and PNG plots.",
    )
    bench.add_argument("--quick", action="store_true",
                       help="digits MLP, 3 seeds, every defence (about a minute)")
    bench.add_argument("--benchmarks", nargs="+", choices=sorted(BENCHMARKS),
                       default=None, help="default: all (digits-mlp only with --quick)")
    bench.add_argument("--defences", nargs="+", choices=list(DEFENCES),
                       default=list(DEFENCES))
    bench.add_argument("--seeds", type=int, default=None,
                       help="number of seeds (default: 3 with --quick, else 5)")
    bench.add_argument("--stream", choices=("new", "seen"), default="new",
                       help="stream of data held out of burn-in, or burn-in data again")
    bench.add_argument("--max-steps", type=int, default=40,
                       help="maximum accumulative batches per run")
    bench.add_argument("--burn-in-epochs", type=int, default=10,
                       help="plain passes over the burn-in data before the stream; 10 "
                       "leaves the CNNs short of their plateau (see docs/ablations.md)")
    bench.add_argument("--drifts", nargs="*", choices=list(DRIFTS), default=list(DRIFTS),
                       help="benign drifts to run (none: --drifts with no value)")
    bench.add_argument("--n-jobs", type=int, default=1, help="parallel runs (joblib)")
    bench.add_argument("--output", type=Path, default=None,
                       help="directory for results.json, results.md and plots")
    bench.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def _benchmark(args):
    benchmarks = args.benchmarks or (["digits-mlp"] if args.quick else list(BENCHMARKS))
    n_seeds = args.seeds or (3 if args.quick else 5)
    started = time.perf_counter()
    records = run_benchmark(
        benchmarks, args.defences, tuple(range(n_seeds)), stream=args.stream,
        drifts=tuple(args.drifts), n_jobs=args.n_jobs, max_steps=args.max_steps,
        burn_in_epochs=args.burn_in_epochs,
    )
    table = "## Accumulative poisoning\n\n" + results_table(records)
    if args.drifts:
        table += "\n## Benign drift (clean streams)\n\n" + drift_table(records)
    print(table)
    print(f"{len(records)} runs in {time.perf_counter() - started:.1f} s")
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        save_results(records, args.output / "results.json")
        command = "dsc-sklearn " + " ".join(sys.argv[1:]) if sys.argv[1:] else "dsc-sklearn"
        (args.output / "results.md").write_text(
            f"# dsc-sklearn benchmark\n\nCommand: `{command}`\n\n{table}"
        )
        if not args.no_plots:
            from .plotting import plot_benchmark

            for path in plot_benchmark(records, args.output):
                print(f"wrote {path}")
        print(f"wrote {args.output / 'results.json'} and {args.output / 'results.md'}")
    return 0


def main(argv=None):
    """Entry point of the ``dsc-sklearn`` command.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
    """
    args = _parser().parse_args(argv)
    if args.command == "benchmark":
        return _benchmark(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
