"""The attack-and-defence benchmark: defences x datasets x attacks x seeds.

:func:`run_benchmark` runs :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`
(and :func:`~dsc_sklearn.evaluation.protocol.run_drift_protocol`, and on
river's drift generators
:func:`~dsc_sklearn.evaluation.protocol.run_concept_drift_protocol`) for
every combination, in parallel through joblib (any joblib backend, ``dask``
included, via :func:`joblib.parallel_config`), with one torch thread per
run. :func:`results_table`, :func:`drift_table`, :func:`adaptive_table`
and :func:`stream_table` aggregate the runs into markdown tables
(:mod:`dsc_sklearn.evaluation.report` explains their columns and writes
``results.md`` and ``report.html``). The ``dsc-sklearn benchmark`` command
wraps them all and draws the plots of :mod:`dsc_sklearn.evaluation.plotting`.
"""

import contextlib
import json
from functools import partial

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.utils import deprecated
from tqdm.auto import tqdm

from ..defence._alarms import held_back
from ..defence._classifier import DiscrepancyAwareOnlineClassifier
from .datasets import (
    DRIFT_STREAMS,
    RIVER_DATASETS,
    image_shape,
    input_bounds,
    load_drift_stream,
    load_stream_dataset,
)
from .drifts import CONCEPT_DRIFT, DRIFT_REGISTRY, DRIFTS, drifts_for
from .protocol import (
    ADAPTIVE_ATTACKS,
    ATTACKS,
    LEARNING,
    run_concept_drift_protocol,
    run_drift_protocol,
    run_learning_protocol,
    run_stream_protocol,
)
from .report import ST_BASELINE_ATTACKS, adaptive_results, attack_results, drift_results, stream_results
from ..defence.guards import CumulativeGuard, StepGuard
from ..defence.modules import SmallCNN
from ..defence.thresholds import linear_schedule

__all__ = [
    "BENCHMARKS",
    "CONCEPT_DRIFT",
    "DEFENCES",
    "DRIFT_NAMES",
    "LEARNING",
    "QUICK_BENCHMARKS",
    "QUICK_DEFENCES",
    "QUICK_DRIFTS",
    "STREAM_BENCHMARKS",
    "adaptive_table",
    "default_drifts",
    "drift_table",
    "make_defence",
    "results_table",
    "run_benchmark",
    "save_results",
    "stream_table",
]

def _guard_only(guard):
    """A benchmark row with ``guard`` as the only defence (no sample correction)."""
    return {"correction": "none", "step_guard": guard}


#: Defences by name: the estimator parameters each one sets. Every row but
#: ``DSC-default`` (the library's defaults, whatever they are) names each part
#: of the defence it uses and switches the others off, so that a change of
#: the defaults never changes what a row measures.
DEFENCES = {
    "ST": {"correction": "none", "step_guard": None},
    "GC": {"correction": "none", "clip_value": 0.01, "step_guard": None},
    "AT-reference": {"correction": "descent", "step_guard": None},
    "AT-Madry": {"correction": "adversarial", "step_guard": None},
    "DSC-paper": {"correction": "dsc", "granularity": "batch",
                  "threshold": linear_schedule(), "step_guard": None},
    # The paper's recipe against its own historical model: one checkpoint
    # frozen halfway through the burn-in (see run_stream_protocol).
    "DSC-paper-frozen": {"correction": "dsc", "granularity": "batch",
                         "threshold": linear_schedule(), "step_guard": None,
                         "snapshot_every": None, "history_size": 1},
    # Per-sample DSC against the rolling snapshot buffer: the 0.1 default.
    "DSC": {"correction": "dsc", "step_guard": None},
    "guard+DSC": {"correction": "dsc", "step_guard": "auto"},
    # The per-step check alone, and with the bound on the last 5 accepted
    # steps (issue 21; docs/ablations.md, fourth round).
    "guard": _guard_only(StepGuard()),
    "guard+cum": _guard_only(CumulativeGuard()),
    "guard+cum-wharm": _guard_only(CumulativeGuard(step_harm="window")),
    "guard+cum10-wharm": _guard_only(CumulativeGuard(k=10, step_harm="window")),
    # The window harm rule on the per-step check alone (no window bound).
    "guard-wharm10": _guard_only(CumulativeGuard(k=10, step_harm="window",
                                                 cumulative_margin=None)),
    "guard-wharm10-level50": _guard_only(CumulativeGuard(k=10, step_harm="window",
                                                         window_harm_level=0.5,
                                                         cumulative_margin=None)),
    # The cumulative guard following a sustained novel shift of the inputs
    # (issue 21 item 4): the shift test at the protocol's epsilon 0.2.
    "guard+cum-shift": _guard_only(CumulativeGuard(shift_epsilon=0.2)),
    "guard+cum-shift-s20": _guard_only(CumulativeGuard(shift_epsilon=0.2, shift_steps=20)),
    # Harm at first order: a too-large step that raised the probe loss is
    # harmful only if it raises it at a tenth of its length too (item 2).
    "guard-fo": _guard_only(StepGuard(harm="first_order")),
    "guard+cum-fo": _guard_only(CumulativeGuard(harm="first_order")),
    # The momentum of a pulled-back step interpolated instead of scaled, with
    # each harm rule.
    "guard-interp": _guard_only(StepGuard(optimizer_state="interpolate")),
    "guard-fo-interp": _guard_only(StepGuard(harm="first_order", optimizer_state="interpolate")),
    "guard-fo-descend": _guard_only(StepGuard(harm="first_order_descend")),
    "guard-fo-descend-interp": _guard_only(StepGuard(harm="first_order_descend",
                                                     optimizer_state="interpolate")),
    "guard-fo-descend-oi": _guard_only(StepGuard(harm="first_order_descend_interpolate")),
    # The cumulative guard with the momentum of a pulled-back step (or
    # window) interpolated instead of scaled (issue 21, items 2 and 4).
    "guard+cum-interp": _guard_only(CumulativeGuard(optimizer_state="interpolate")),
    # ... and with the shift test of guard+cum-shift-s20: the composite of the
    # measured options that each helped one axis.
    "guard+cum-interp-shift": _guard_only(CumulativeGuard(optimizer_state="interpolate",
                                                          shift_epsilon=0.2, shift_steps=20)),
    "DSC-default": {},
}

#: The defences of ``dsc-sklearn benchmark --quick``, by name: the library's
#: defaults, plain training, the strongest baseline and the paper's recipe.
QUICK_DEFENCES = ("DSC-default", "ST", "GC", "DSC-paper")

# The benchmarks: each data set and the models trained on it.
_MODELS = {"digits": ("mlp", "cnn"), "mnist1d": ("cnn",), **{
    dataset: ("mlp",) for dataset in RIVER_DATASETS + DRIFT_STREAMS}}

#: Benchmark settings by name: a data set and the module trained on it
#: (``None``: the MLP 128-128; an image shape, the data set's own:
#: :class:`~dsc_sklearn.defence.modules.SmallCNN`). The ``-mlp`` rows after
#: the first three are river's streams (the optional ``river`` package,
#: nothing downloaded): its bundled real data sets and the concept before the
#: drift of its drift generators, standardised.
BENCHMARKS = {f"{dataset}-{model}": (dataset, image_shape(dataset) if model == "cnn" else None)
              for dataset, models in _MODELS.items() for model in models}

#: The benchmarks on river's streams (the "Real streams" table).
STREAM_BENCHMARKS = tuple(name for name, (dataset, _) in BENCHMARKS.items()
                          if dataset in RIVER_DATASETS + DRIFT_STREAMS)

#: Every drift name ``run_benchmark(drifts=...)`` accepts.
DRIFT_NAMES = tuple(DRIFT_REGISTRY)

#: The benchmarks of ``dsc-sklearn benchmark --quick``.
QUICK_BENCHMARKS = ("digits-mlp",)

#: The benign drifts of ``dsc-sklearn benchmark --quick``.
QUICK_DRIFTS = tuple(DRIFTS)

# Attacks that run only against plain training, as baselines of the attack.
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
    dataset, shape = BENCHMARKS[benchmark]
    module = None if shape is None else partial(SmallCNN, image_shape=shape)
    return DiscrepancyAwareOnlineClassifier(
        module, hidden_layer_sizes=_MLP_WIDTHS, input_bounds=input_bounds(dataset),
        **(DEFENCES[defence] if params is None else params),
    )


# Protocol parameters that the drift protocol shares; ``max_steps`` is its ``n_steps``.
_DRIFT_PARAMS = ("burn_in_fraction", "burn_in_epochs", "defence_warmup", "batch_size")


@contextlib.contextmanager
def _torch_threads(n_threads):
    """Run with ``n_threads`` torch intra-op threads (``None``: leave them be)."""
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(benchmark, defence, params, attack, seed, stream, protocol_params, torch_threads=1,
         attack_params=None):
    """One protocol run as a JSON-serialisable record.

    ``attack`` is an attack of the stream protocol, ``"drift-<kind>"``
    for a benign-drift run (``"drift-concept"``: a drift generator's own),
    or :data:`LEARNING` for a learning-from-scratch run.
    """
    dataset = BENCHMARKS[benchmark][0]
    estimator = make_defence(defence, benchmark, params)
    if attack == f"drift-{CONCEPT_DRIFT}":
        data = load_drift_stream(dataset, random_state=seed)
    else:
        data = load_stream_dataset(dataset, random_state=seed)
    # A run records its alarms; hundreds of runs would raise hundreds of lines.
    with _torch_threads(torch_threads), held_back():
        if attack == f"drift-{CONCEPT_DRIFT}":
            result = run_concept_drift_protocol(
                estimator, data, stream=stream, random_state=seed,
                **{key: value for key, value in protocol_params.items()
                   if key in _DRIFT_PARAMS},
            )
        elif attack == LEARNING:
            result = run_learning_protocol(estimator, data, random_state=seed,
                                           batch_size=protocol_params.get("batch_size", 100))
        elif attack.startswith("drift-"):
            result = run_drift_protocol(
                estimator, data, kind=attack[len("drift-"):], stream=stream,
                random_state=seed, n_steps=protocol_params.get("max_steps", 40),
                **{key: value for key, value in protocol_params.items()
                   if key in _DRIFT_PARAMS},
            )
        else:
            result = run_stream_protocol(estimator, data, attack=attack, stream=stream,
                                         random_state=seed,
                                         attack_params=(attack_params or {}).get(attack),
                                         **protocol_params)
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


def default_drifts(benchmark):
    """The benign drifts that fit a benchmark.

    Parameters
    ----------
    benchmark : str
        A key of :data:`BENCHMARKS`.

    Returns
    -------
    drifts : tuple of str
        Every kind of :data:`~dsc_sklearn.evaluation.protocol.DRIFTS` for
        the image and signal benchmarks (digits, MNIST-1D), the generator's
        own concept drift (:data:`CONCEPT_DRIFT`) for river's drift
        generators, and none for river's fixed data sets.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.benchmark import default_drifts
    >>> default_drifts("digits-mlp"), default_drifts("sea-mlp"), default_drifts("phishing-mlp")
    (('noise', 'brightness', 'translation'), ('concept',), ())
    """
    return drifts_for(BENCHMARKS[benchmark][0])


def _drifts_of(benchmark, drifts):
    if drifts is None:
        return default_drifts(benchmark)
    # The concept drift needs a drift generator.
    return tuple(kind for kind in drifts if DRIFT_REGISTRY[kind].on_inputs
                 or DRIFT_REGISTRY[kind].fits(BENCHMARKS[benchmark][0]))


def run_benchmark(benchmarks=("digits-mlp",), defences=tuple(DEFENCES), seeds=(0, 1, 2),
                  *, attacks=("accumulative",), stream="new", drifts=None, learning=True,
                  n_jobs=None,
                  torch_threads=1, progress=True, attack_params=None, **protocol_params):
    """Run every defence on every benchmark, attack and seed.

    With the accumulative attack among ``attacks``, plain training (``ST``)
    also runs against the uniform-noise stream and the trigger alone, the
    attack's own baselines. Every defence also runs each benign drift of
    ``drifts`` (:func:`~dsc_sklearn.evaluation.protocol.run_drift_protocol`,
    or :func:`~dsc_sklearn.evaluation.protocol.run_concept_drift_protocol`
    for ``"concept"``).

    Parameters
    ----------
    benchmarks : sequence of str, default=("digits-mlp",)
        Keys of :data:`BENCHMARKS`.
    defences : sequence of str or dict, default=all of :data:`DEFENCES`
        Keys of :data:`DEFENCES`, or a mapping from names to estimator
        parameters (ablation variants).
    seeds : sequence of int, default=(0, 1, 2)
        One protocol run per seed (data split, stream, attack, weights).
    attacks : sequence of str, default=("accumulative",)
        Named attacks of :data:`~dsc_sklearn.evaluation.protocol.ATTACKS`,
        each run against every defence.
    stream : {"new", "seen"}, default="new"
        Passed to :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`.
    drifts : sequence of str or None, default=None
        Benign drifts to run, names of :data:`DRIFT_NAMES`; ``()`` runs
        none, ``None`` those that fit each benchmark
        (:func:`default_drifts`). ``"concept"`` runs on river's drift
        generators only. Their records have ``attack="drift-<kind>"``.
    learning : bool, default=True
        Also train every defence's model from scratch with the defence on
        from the first call, against the same model with every defence off
        (:func:`~dsc_sklearn.evaluation.protocol.run_learning_protocol`: 5
        passes over the training split); records with
        ``attack="learning"``.
    n_jobs : int, default=None
        Parallel runs through :class:`joblib.Parallel` (``None``: one at a
        time, unless a :func:`joblib.parallel_config` context says
        otherwise). ``dsc-sklearn benchmark`` passes the number of usable
        cores.
    torch_threads : int or None, default=1
        Torch intra-op threads of each run, restored afterwards. These
        models are too small to gain from more; with more, one busy core
        stalls every OpenMP barrier of every run. ``None`` leaves torch's
        setting alone.
    progress : bool, default=True
        Show a tqdm progress bar.
    attack_params : dict, default=None
        Parameters of the named attacks, by attack name, e.g.
        ``{"slow": {"horizon": 400}}`` (``attack_params`` of
        :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`).
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
    attacks = tuple(attacks)
    unknown = [attack for attack in attacks if attack not in ATTACKS]
    unknown += [kind for kind in drifts or () if kind not in DRIFT_NAMES]
    if unknown:
        raise ValueError(f"Unknown attacks or drifts {unknown}; attacks are {ATTACKS}, "
                         f"drifts {DRIFT_NAMES}.")
    baselines = ST_BASELINE_ATTACKS if "accumulative" in attacks else ()
    jobs = [
        (benchmark, defence, params, attack, seed)
        for benchmark in benchmarks
        for defence, params in defences.items()
        for attack in attacks + (baselines if defence == "ST" else ())
        for seed in seeds
    ] + [
        (benchmark, defence, params, f"drift-{kind}", seed)
        for benchmark in benchmarks
        for defence, params in defences.items()
        for kind in _drifts_of(benchmark, drifts)
        for seed in seeds
    ] + [
        (benchmark, defence, params, LEARNING, seed)
        for benchmark in benchmarks
        for defence, params in defences.items()
        for seed in seeds
        if learning
    ]
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_run)(*job, stream, protocol_params, torch_threads, attack_params)
        for job in jobs
    )
    return list(tqdm(runs, total=len(jobs), desc="benchmark", disable=not progress))


def _deprecated_table(name, results, *arguments, source=""):
    """A ``*_table`` function of version 0.1: the markdown of a report table, deprecated."""
    call = f"dsc_sklearn.evaluation.report.{results.__name__}(records{source}).markdown(legend)"

    @deprecated(f"{name} is deprecated since 0.2 and will be removed in 0.3; use {call}.")
    def table(records, legend=False):
        return results(records, *arguments).markdown(legend)

    table.__name__ = table.__qualname__ = name
    table.__doc__ = f"""Markdown of :func:`~dsc_sklearn.evaluation.report.{results.__name__}`.

    .. deprecated:: 0.2
       Use ``{call}``.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`run_benchmark`.
    legend : bool, default=False
        Follow the table with one line per column saying what it holds.

    Returns
    -------
    table : str
    """
    return table


results_table = _deprecated_table("results_table", attack_results)
drift_table = _deprecated_table("drift_table", drift_results)
adaptive_table = _deprecated_table("adaptive_table", adaptive_results)
stream_table = _deprecated_table("stream_table", stream_results, STREAM_BENCHMARKS,
                                 source=", STREAM_BENCHMARKS")


def save_results(records, path):
    """Write the records to ``path`` as JSON."""
    with open(path, "w") as handle:
        json.dump(records, handle)
