"""The attack-and-defence benchmark: defences x datasets x seeds.

:func:`run_benchmark` runs :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`
for every combination, in parallel through joblib (any joblib backend,
``dask`` included, via :func:`joblib.parallel_config`), and
:func:`results_table` aggregates the runs into a markdown table. The
``dsc-sklearn benchmark`` command wraps both and draws the plots of
:mod:`dsc_sklearn.evaluation.plotting`.
"""

import json
from functools import partial

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from ..defence._classifier import DiscrepancyAwareOnlineClassifier
from .datasets import load_stream_dataset
from .protocol import DRIFTS, run_drift_protocol, run_stream_protocol
from ..defence.modules import SmallCNN
from ..defence.thresholds import linear_schedule

__all__ = [
    "BENCHMARKS",
    "DEFENCES",
    "drift_table",
    "make_defence",
    "results_table",
    "run_benchmark",
    "save_results",
]

#: Defences by name: the estimator parameters each one sets.
DEFENCES = {
    "ST": {"correction": "none"},
    "GC": {"correction": "none", "clip_value": 0.01},
    "AT-reference": {"correction": "descent"},
    "AT-Madry": {"correction": "adversarial"},
    "DSC-paper": {"correction": "dsc", "granularity": "batch",
                  "threshold": linear_schedule()},
    "DSC-default": {},
}

#: Benchmark settings by name: a data set and the module trained on it.
BENCHMARKS = {
    "digits-mlp": ("digits", None),
    "digits-cnn": ("digits", (1, 8, 8)),
    "mnist1d-cnn": ("mnist1d", (1, 40)),
}

# Attacks that run only against plain training, as baselines of the attack.
_ST_BASELINE_ATTACKS = ("noise", "trigger_only")
_MLP_WIDTHS = (128, 128)


def make_defence(defence, benchmark, params=None):
    """The unfitted estimator of ``defence`` for ``benchmark``.

    Parameters
    ----------
    defence : str
        A key of :data:`DEFENCES`, or any name when ``params`` is given.
    benchmark : str
        A key of :data:`BENCHMARKS`.
    params : dict, default=None
        Estimator parameters of the defence; ``None`` looks ``defence`` up
        in :data:`DEFENCES`.

    Returns
    -------
    estimator : DiscrepancyAwareOnlineClassifier

    Examples
    --------
    >>> from dsc_sklearn.evaluation.benchmark import make_defence
    >>> make_defence("GC", "digits-mlp").clip_value
    0.01
    """
    if params is None and defence not in DEFENCES:
        raise ValueError(f"Unknown defence {defence!r}; choose from {sorted(DEFENCES)}.")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {benchmark!r}; choose from {sorted(BENCHMARKS)}.")
    dataset, image_shape = BENCHMARKS[benchmark]
    module = None if image_shape is None else partial(SmallCNN, image_shape=image_shape)
    input_bounds = (0.0, 1.0) if dataset == "digits" else None
    return DiscrepancyAwareOnlineClassifier(
        module, hidden_layer_sizes=_MLP_WIDTHS, input_bounds=input_bounds,
        **(DEFENCES[defence] if params is None else params),
    )


# Protocol parameters that the drift protocol shares; ``max_steps`` is its ``n_steps``.
_DRIFT_PARAMS = ("burn_in_fraction", "burn_in_epochs", "defence_warmup", "batch_size")


def _run(benchmark, defence, params, attack, seed, stream, protocol_params):
    """One protocol run as a JSON-serialisable record.

    ``attack`` is an attack of the stream protocol, or ``"drift-<kind>"``
    for a benign-drift run.
    """
    data = load_stream_dataset(BENCHMARKS[benchmark][0], random_state=seed)
    estimator = make_defence(defence, benchmark, params)
    if attack.startswith("drift-"):
        result = run_drift_protocol(
            estimator, data, kind=attack[len("drift-"):], stream=stream, random_state=seed,
            n_steps=protocol_params.get("max_steps", 40),
            **{key: value for key, value in protocol_params.items() if key in _DRIFT_PARAMS},
        )
    else:
        result = run_stream_protocol(estimator, data, attack=attack, stream=stream,
                                     random_state=seed, **protocol_params)
    record = {"benchmark": benchmark, "defence": defence, "attack": attack, "seed": seed,
              "stream": stream}
    for key, value in result.items():
        if isinstance(value, np.ndarray):
            record[key] = value.tolist()
        elif isinstance(value, dict):  # the detection report, already plain
            record[key] = value
        else:
            record[key] = _plain(value)
    return record


def _plain(value):
    value = float(value)
    return value if np.isfinite(value) else None


def run_benchmark(benchmarks=("digits-mlp",), defences=tuple(DEFENCES), seeds=(0, 1, 2),
                  *, stream="new", drifts=tuple(DRIFTS), n_jobs=None, progress=True,
                  **protocol_params):
    """Run every defence on every benchmark and seed.

    Plain training (``ST``) also runs against the uniform-noise stream and
    the trigger alone, the attack's own baselines. Every defence also runs
    each benign drift of ``drifts``
    (:func:`~dsc_sklearn.evaluation.protocol.run_drift_protocol`).

    Parameters
    ----------
    benchmarks : sequence of str, default=("digits-mlp",)
        Keys of :data:`BENCHMARKS`.
    defences : sequence of str or dict, default=all of :data:`DEFENCES`
        Keys of :data:`DEFENCES`, or a mapping from names to estimator
        parameters (ablation variants).
    seeds : sequence of int, default=(0, 1, 2)
        One protocol run per seed (data split, stream, attack, weights).
    stream : {"new", "seen"}, default="new"
        Passed to :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`.
    drifts : sequence of str, default=all of :data:`~dsc_sklearn.evaluation.protocol.DRIFTS`
        Benign drifts to run; ``()`` runs none. Their records have
        ``attack="drift-<kind>"``.
    n_jobs : int, default=None
        Parallel runs through :class:`joblib.Parallel`.
    progress : bool, default=True
        Show a tqdm progress bar.
    **protocol_params : dict
        Further parameters of
        :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`.

    Returns
    -------
    records : list of dict
        One JSON-serialisable record per run.
    """
    if not isinstance(defences, dict):
        defences = {name: None for name in defences}
    for name, params in defences.items():
        make_defence(name, "digits-mlp", params)
    for name in benchmarks:
        make_defence("ST", name)
    jobs = [
        (benchmark, defence, params, attack, seed)
        for benchmark in benchmarks
        for defence, params in defences.items()
        for attack in ("accumulative",) + (_ST_BASELINE_ATTACKS if defence == "ST" else ())
        for seed in seeds
    ] + [
        (benchmark, defence, params, f"drift-{kind}", seed)
        for benchmark in benchmarks
        for defence, params in defences.items()
        for kind in drifts
        for seed in seeds
    ]
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_run)(*job, stream, protocol_params) for job in jobs
    )
    return list(tqdm(runs, total=len(jobs), desc="benchmark", disable=not progress))


def _mean_std(values, scale=1.0, digits=1):
    values = np.array([v for v in values if v is not None], dtype=float) * scale
    if values.size == 0:
        return "n/a"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def results_table(records):
    """Markdown table of the runs: mean ± standard deviation over seeds.

    Accuracies and flagged fractions are in percent; "clean cost" is the
    drop of the clean-stream accuracy against plain training (``ST``) on the
    same benchmark, in points.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`run_benchmark`.

    Returns
    -------
    table : str
    """
    header = (
        "| benchmark | defence | attack | seeds | after burn-in | before trigger "
        "| after trigger | clean stream | clean cost (pt) | steps | flagged clean "
        "| flagged poison | flagged trigger | AUC disc. sample | AUC disc. batch "
        "| AUC loss sample | time (s) |\n" + "|---" * 17 + "|\n"
    )
    groups = _groups(r for r in records if not r["attack"].startswith("drift-"))
    rows = []
    for (benchmark, defence, attack), runs in groups.items():
        plain = groups.get((benchmark, "ST", "accumulative"), runs)
        baseline = np.mean([r["accuracy_clean"] for r in plain])
        cost = [100 * (baseline - r["accuracy_clean"]) for r in runs]

        def column(name, scale=100.0, digits=1):
            return _mean_std([r[name] for r in runs], scale, digits)

        rows.append(
            f"| {benchmark} | {defence} | {attack} | {len(runs)} "
            f"| {column('accuracy_burn_in')} | {column('accuracy_accumulative')} "
            f"| **{column('accuracy_trigger')}** | {column('accuracy_clean')} "
            f"| {_mean_std(cost)} | {column('n_accumulative_steps', 1.0)} "
            f"| {column('flagged_fraction_clean')} | {column('flagged_fraction_poison')} "
            f"| {column('flagged_fraction_trigger')} "
            f"| {column('auc_discrepancy_sample', 1.0, 2)} "
            f"| {column('auc_discrepancy_batch', 1.0, 2)} "
            f"| {column('auc_loss_sample', 1.0, 2)} | {column('wall_time', 1.0)} |"
        )
    return header + "\n".join(rows) + "\n"


def _groups(records):
    groups = {}
    for record in records:
        key = (record["benchmark"], record["defence"], record["attack"])
        groups.setdefault(key, []).append(record)
    return groups


def drift_table(records):
    """Markdown table of the benign-drift runs: mean ± standard deviation.

    "gap" is plain training's accuracy minus the defence's on the drifted
    test set (positive: the defence costs accuracy), in points.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`run_benchmark`.

    Returns
    -------
    table : str
    """
    header = (
        "| benchmark | defence | drift | seeds | accuracy (drifted test) "
        "| plain training | gap (pt) | flagged | time (s) |\n" + "|---" * 9 + "|\n"
    )
    rows = []
    for (benchmark, defence, drift), runs in _groups(
            r for r in records if r["attack"].startswith("drift-")).items():
        def column(name, scale=100.0):
            return _mean_std([r[name] for r in runs], scale)

        rows.append(
            f"| {benchmark} | {defence} | {drift[len('drift-'):]} | {len(runs)} "
            f"| {column('accuracy_drift')} | {column('accuracy_plain')} "
            f"| **{column('accuracy_gap')}** | {column('flagged_fraction_drift')} "
            f"| {column('wall_time', 1.0)} |"
        )
    return header + "\n".join(rows) + "\n"


def save_results(records, path):
    """Write the records to ``path`` as JSON."""
    with open(path, "w") as handle:
        json.dump(records, handle)
