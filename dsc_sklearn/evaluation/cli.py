"""The ``dsc-sklearn`` command.

Importing this module imports nothing heavy (no torch, scikit-learn,
matplotlib or joblib): ``dsc-sklearn --help`` answers at once, and the
benchmark's modules are imported when a command runs. The names that
``--benchmarks``, ``--defences``, ``--attacks`` and ``--drifts`` accept are
checked then, and ``dsc-sklearn benchmark --list`` prints them.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

from .. import __version__

__all__ = ["main"]

_QUICK_SEEDS = 3
_FULL_SEEDS = 5
# ``--attacks adaptive``: the accumulative attack and every attack of the
# "Adaptive attacks" table (protocol.ADAPTIVE_ATTACKS).
_ADAPTIVE = "adaptive"


def _usable_cores():
    from joblib import cpu_count

    return cpu_count()


def _parser():
    parser = argparse.ArgumentParser(
        prog="dsc-sklearn",
        description="Memorization discrepancy and DSC against accumulative poisoning. "
        "Run 'dsc-sklearn benchmark --help' for the benchmark's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "benchmark",
        help="replay accumulative poisoning attacks against each defence",
        description="Replay accumulative poisoning attacks (and benign drifts) against "
        "each defence, print the tables and, with --output, write results.json, "
        "results.md, a self-contained report.html and PNG plots. Every run uses one "
        "torch thread; runs go to --n-jobs worker processes.",
        epilog="Examples: 'dsc-sklearn benchmark --quick --output out' (under a minute "
        "on 2 cores); 'dsc-sklearn benchmark --list' (the names the options accept).",
    )
    bench.add_argument(
        "--quick", action="store_true",
        help="the quick set: the benchmarks and defences marked in --list "
        "(digits-mlp; the library's defaults, ST, GC and the paper's recipe), "
        f"{_QUICK_SEEDS} seeds, every drift; options given explicitly still win")
    bench.add_argument(
        "--list", action="store_true",
        help="print the benchmarks, defences and drifts the options accept, and exit")
    bench.add_argument(
        "--benchmarks", nargs="+", metavar="NAME", default=None,
        help="data set and model pairs to run (default: all; the quick set with --quick)")
    bench.add_argument(
        "--defences", nargs="+", metavar="NAME", default=None,
        help="defences to run, rows of dsc_sklearn.evaluation.benchmark.DEFENCES "
        "(default: all; the quick set with --quick)")
    bench.add_argument(
        "--attacks", nargs="+", metavar="NAME", default=None,
        help="attacks to run against every defence (see --list); 'adaptive' stands for "
        "the accumulative attack and every adaptive attack and baseline "
        "(default: accumulative)")
    bench.add_argument(
        "--slow-horizon", type=int, default=None, metavar="N",
        help="poisoned batches of the slow attack (default: the attack's own, 200)")
    bench.add_argument(
        "--seeds", type=int, default=None, metavar="N",
        help=f"number of seeds, 0 to N-1 (default: {_FULL_SEEDS}; "
        f"{_QUICK_SEEDS} with --quick)")
    bench.add_argument(
        "--stream", choices=("new", "seen"), default="new",
        help="whether the stream carries data held out of burn-in (new) or the burn-in "
        "data again, as the reference code does (seen) (default: %(default)s)")
    bench.add_argument(
        "--max-steps", type=int, default=40, metavar="N",
        help="most poisoned batches per attack run before the trigger, and batches per "
        "drift run (default: %(default)s)")
    bench.add_argument(
        "--burn-in-epochs", type=int, default=10, metavar="N",
        help="plain-training passes over the burn-in data before the stream; 10 leaves "
        "the CNNs short of their plateau, see docs/ablations.md (default: %(default)s)")
    bench.add_argument(
        "--drifts", nargs="*", metavar="KIND", default=None,
        help="benign drifts of clean streams to run ('concept': river's generators' own "
        "drift, on their benchmarks only); --drifts with no value runs none (default: "
        "those that fit each benchmark: noise, brightness and translation on digits and "
        "MNIST-1D, concept on river's generators, none on river's fixed data sets)")
    bench.add_argument(
        "--learning", action=argparse.BooleanOptionalAction, default=True,
        help="also train each defence's model from scratch with the defence on from the "
        "first call, against the same model with every defence off (5 passes; the "
        "'Learning from scratch' table) (default: on)")
    bench.add_argument(
        "--n-jobs", type=int, default=None, metavar="N",
        help="worker processes, each running one run at a time on one torch thread "
        "(default: the usable CPU cores)")
    bench.add_argument(
        "--output", type=Path, default=None, metavar="DIR",
        help="directory for results.json, results.md, report.html and the plots, "
        "created if needed (default: none: the tables are printed and nothing is written)")
    bench.add_argument(
        "--no-plots", action="store_true",
        help="with --output, skip the plots (report.html then has no figures)")
    return parser, bench


def _parameters(params):
    """A defence's estimator parameters as keyword arguments."""
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


def _list(benchmark, drifts):
    from .report import ATTACK_LEGENDS, BENCHMARK_LEGENDS, DEFENCE_LEGENDS, DRIFT_LEGENDS

    def mark(name, quick):
        return f"{'*' if name in quick else ' '} {name}"

    indent = " " * 24
    lines = ["benchmarks (--benchmarks; * in the quick set):"]
    lines += [f"  {mark(name, benchmark.QUICK_BENCHMARKS):21} {BENCHMARK_LEGENDS[name]}"
              for name in benchmark.BENCHMARKS]
    lines.append("defences (--defences; * in the quick set), each with the estimator "
                 "parameters it sets:")
    for name, params in benchmark.DEFENCES.items():
        lines.append(f"  {mark(name, benchmark.QUICK_DEFENCES):21} {DEFENCE_LEGENDS[name]}")
        lines.append(f"{indent}{_parameters(params) or 'none: the estimator as constructed'}")
    lines.append("attacks (--attacks; 'adaptive' runs the accumulative attack and "
                 f"{', '.join(benchmark.ADAPTIVE_ATTACKS)}):")
    lines += [f"    {name:19} {ATTACK_LEGENDS.get(name, 'a clean stream and trigger')}"
              for name in benchmark.ATTACKS]
    lines.append("drifts (--drifts; * in the quick set):")
    for name, level in drifts.items():
        final = "" if isinstance(level, str) else f" (final level {level})"
        lines.append(f"  {mark(name, benchmark.QUICK_DRIFTS):21} {DRIFT_LEGENDS[name]}{final}")
    print("\n".join(lines))
    return 0


def _plan(args, benchmark, drifts):
    """The runs the options ask for: the quick set or everything, then the options given."""
    quick = args.quick
    attacks = []
    for name in args.attacks or ["accumulative"]:
        attacks += (["accumulative", *benchmark.ADAPTIVE_ATTACKS] if name == _ADAPTIVE
                    else [name])
    drifts = args.drifts
    if drifts is None:  # None: those that fit each benchmark
        drifts = list(benchmark.QUICK_DRIFTS) if quick else None
    return argparse.Namespace(
        benchmarks=args.benchmarks or list(
            benchmark.QUICK_BENCHMARKS if quick else benchmark.BENCHMARKS),
        defences=args.defences or list(
            benchmark.QUICK_DEFENCES if quick else benchmark.DEFENCES),
        attacks=list(dict.fromkeys(attacks)),
        drifts=drifts,
        seeds=args.seeds or (_QUICK_SEEDS if quick else _FULL_SEEDS),
    )


def _usage_errors(args, plan, benchmark, drifts):
    errors = []
    for option, names, choices in (("--benchmarks", plan.benchmarks, benchmark.BENCHMARKS),
                                   ("--defences", plan.defences, benchmark.DEFENCES),
                                   ("--attacks", plan.attacks, benchmark.ATTACKS),
                                   ("--drifts", plan.drifts or (), drifts)):
        unknown = [name for name in names if name not in choices]
        if unknown:
            errors.append(f"argument {option}: unknown name(s) "
                          f"{', '.join(map(repr, unknown))}; choose from {', '.join(choices)} "
                          "(see 'dsc-sklearn benchmark --list').")
    for option, value in (("--seeds", args.seeds), ("--n-jobs", args.n_jobs),
                          ("--max-steps", args.max_steps),
                          ("--slow-horizon", args.slow_horizon)):
        if value is not None and value < 1:
            errors.append(f"argument {option}: must be at least 1; got {value}.")
    return errors


def _benchmark(args, parser):
    from . import benchmark, report
    from .drifts import DRIFT_REGISTRY

    drifts = {name: drift.description if drift.level is None else drift.level
              for name, drift in DRIFT_REGISTRY.items()}
    if args.list:
        return _list(benchmark, drifts)
    plan = _plan(args, benchmark, drifts)
    errors = _usage_errors(args, plan, benchmark, drifts)
    if errors:
        parser.error(" ".join(errors))
    n_jobs = args.n_jobs or _usable_cores()

    started = time.perf_counter()
    options = {}
    if args.attacks is not None:  # the default run keeps its signature
        options["attacks"] = tuple(plan.attacks)
    if not args.learning:
        options["learning"] = False
    if args.slow_horizon is not None:
        options["attack_params"] = {"slow": {"horizon": args.slow_horizon}}
    records = benchmark.run_benchmark(
        plan.benchmarks, plan.defences, tuple(range(plan.seeds)), stream=args.stream,
        drifts=None if plan.drifts is None else tuple(plan.drifts), n_jobs=n_jobs,
        torch_threads=1, max_steps=args.max_steps, burn_in_epochs=args.burn_in_epochs,
        **options,
    )
    wall_time = time.perf_counter() - started
    table = "## Accumulative poisoning\n\n" + report.attack_results(records).markdown()
    if any(r["attack"].startswith("drift-") for r in records):
        table += ("\n## Benign drift (clean streams)\n\n"
                  + report.drift_results(records).markdown())
    if len(set(plan.attacks)) > 1:
        table += "\n## Adaptive attacks\n\n" + report.adaptive_results(records).markdown()
    if set(plan.benchmarks) & set(benchmark.STREAM_BENCHMARKS):
        table += "\n## Real streams\n\n" + report.stream_results(
            records, benchmark.STREAM_BENCHMARKS).markdown()
    if any(r["attack"] == benchmark.LEARNING for r in records):
        table += "\n## Learning from scratch\n\n" + report.learning_results(records).markdown()
    print(table)
    print(f"{len(records)} runs in {wall_time:.1f} s on {n_jobs} worker(s), one torch "
          "thread each; mean ± standard deviation over seeds, accuracies in %.")
    if args.output is None:
        print("Nothing written: pass --output DIR for results.json, results.md and "
              "report.html (every column explained) and the plots.")
        return 0
    _write(args, records, wall_time, dict(
        benchmarks=plan.benchmarks, defences=plan.defences, attacks=plan.attacks,
        seeds=plan.seeds, stream=args.stream,
        **{"max steps": args.max_steps, "burn-in epochs": args.burn_in_epochs},
        drifts="those that fit each benchmark" if plan.drifts is None
        else plan.drifts or "none", workers=f"{n_jobs}, one torch thread each"),
        benchmark.STREAM_BENCHMARKS)
    return 0


def _write(args, records, wall_time, settings, stream_benchmarks=()):
    from .benchmark import save_results
    from .report import write_report

    args.output.mkdir(parents=True, exist_ok=True)
    save_results(records, args.output / "results.json")
    figures = []
    if not args.no_plots:
        from .plotting import plot_benchmark

        figures = plot_benchmark(records, args.output)
    command = shlex.join(["dsc-sklearn", *args.argv])
    paths = write_report(records, args.output, command=command, settings=settings,
                         figures=figures, wall_time=wall_time,
                         stream_benchmarks=stream_benchmarks)
    for path in [args.output / "results.json", *paths, *figures]:
        print(f"wrote {path}")


def main(argv=None):
    """Entry point of the ``dsc-sklearn`` command.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success; a usage error exits with status 2 through argparse.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.cli import main
    >>> main([])  # doctest: +ELLIPSIS
    usage: dsc-sklearn [-h] [--version] COMMAND ...
    ...
    0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, bench = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = argv
    return _benchmark(args, bench)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
