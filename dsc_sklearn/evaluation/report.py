"""The benchmark's report: tables whose columns are explained, results.md, report.html.

:func:`attack_results` and :func:`drift_results` aggregate benchmark records
over seeds into a :class:`Table`, whose :class:`Column` objects carry each
column's header (with its unit) and its legend. :func:`write_report` writes
``results.md`` and a self-contained ``report.html`` (figures embedded,
no network access needed to read it), each with the command line, the
versions, the date and the machine.

Besides the standard library and numpy, only the registries are imported
here (the attacks', data sets' and drifts' legends, the plain-training
baselines and the name of a learning run, which the legends and tables
name).

Examples
--------
>>> from dsc_sklearn.evaluation.report import attack_results
>>> records = [{"benchmark": "digits-mlp", "defence": "ST", "attack": "accumulative",
...             "seed": seed, "accuracy_burn_in": 0.9, "accuracy_accumulative": 0.8,
...             "accuracy_trigger": trigger, "accuracy_clean": 0.95}
...            for seed, trigger in ((0, 0.6), (1, 0.7))]
>>> table = attack_results(records)
>>> table.rows[0][:7]
['digits-mlp', 'ST', 'accumulative', '2', '90.0 ± 0.0', '80.0 ± 0.0', '**65.0 ± 5.0**']
>>> table.columns[6].header
'after trigger (%)'
"""

import base64
import datetime
import html
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.utils import deprecated

from .attacks import ATTACK_LEGENDS
from .attacks import PLAIN_TRAINING_ONLY_ATTACKS as ST_BASELINE_ATTACKS
from .datasets import DATASETS, description, image_shape
from .drifts import DRIFT_REGISTRY
from .protocol import LEARNING

__all__ = [
    "ADAPTIVE_COLUMNS",
    "ATTACK_COLUMNS",
    "LEARNING_COLUMNS",
    "ATTACK_LEGENDS",
    "DRIFT_COLUMNS",
    "Column",
    "Table",
    "ATTACK_TABLES",
    "BENCHMARK_LEGENDS",
    "DEFENCE_LEGENDS",
    "DRIFT_LEGENDS",
    "adaptive_results",
    "attack_results",
    "drift_results",
    "environment",
    "learning_results",
    "stream_results",
    "usable_cores",
    "verdicts",
    "write_report",
]


@deprecated("usable_cores is deprecated since 0.2 and will be removed in 0.3; use "
            "joblib.cpu_count().")
def usable_cores():
    """The number of CPU cores this process may run on: ``joblib.cpu_count()``.

    .. deprecated:: 0.2
       Use :func:`joblib.cpu_count`, which also honours container CPU quotas.

    Returns
    -------
    n_cores : int
    """
    return _cpu_count()


def _cpu_count():
    from joblib import cpu_count

    return cpu_count()


def _mean_std(values, scale=1.0, digits=1):
    values = np.array([v for v in values if v is not None], dtype=float) * scale
    if values.size == 0:
        return "n/a"
    mean = round(float(values.mean()), digits) + 0.0  # never "-0.0"
    return f"{mean:.{digits}f} ± {values.std():.{digits}f}"


@dataclass(frozen=True)
class Column:
    """One column of a results table.

    Parameters
    ----------
    header : str
        The column's name, with its unit in parentheses.
    legend : str
        What the column holds, for the legend under the table.
    cell : callable
        ``cell(runs) -> str``: the cell of a group of runs (records).
    bold : bool, default=False
        Whether the cells are the table's headline (bold in markdown).
    entries : dict, default=None
        For a column of names: what each name means. A table's legend
        names only the entries its rows hold.
    """

    header: str
    legend: str
    cell: Callable = field(repr=False)
    bold: bool = False
    entries: dict = field(default=None, repr=False)


def _label(header, legend, name, entries=None):
    return Column(header, legend, lambda runs: str(runs[0][name]), entries=entries)


def _stat(header, legend, key, scale=100.0, digits=1, bold=False):
    return Column(header, legend,
                  lambda runs: _mean_std((r.get(key) for r in runs), scale, digits), bold)


_SEEDS = Column("seeds", "Runs in the row, one per seed. Every other number is the mean "
                "± standard deviation over these runs.", lambda runs: str(len(runs)))
#: What each benchmark of ``BENCHMARKS`` is, for the legends and ``--list``.
BENCHMARK_LEGENDS = {
    f"{dataset}-{model}": f"{description(dataset).rstrip('.')}; " + (
        "an MLP 128-128" if model == "mlp" else f"a small CNN on {image_shape(dataset)} images")
    for dataset in DATASETS for model in ("mlp", "cnn")
    if model == "mlp" or image_shape(dataset) is not None}

#: What each defence of ``DEFENCES`` is, for the legends and ``--list``.
DEFENCE_LEGENDS = {
    "ST": "plain training, no defence",
    "GC": "gradient clipping: every gradient clipped to L∞ 0.01 (`clip_value`), no guard",
    "AT-reference": "the reference code's \"AT\": each batch corrected by descent "
                    "(`correction=\"descent\"`), no guard",
    "AT-Madry": "adversarial training with Madry's PGD (`correction=\"adversarial\"`), "
                "no guard",
    "DSC-paper": "the paper's recipe: a batch-level DSC gate with the linear threshold "
                 "schedule 0.5 + 0.02 · step against the rolling snapshot buffer, no guard",
    "DSC-paper-frozen": "DSC-paper against one historical model frozen halfway through "
                        "the burn-in",
    "DSC": "per-sample DSC with the \"auto\" threshold against the rolling snapshot "
           "buffer (the 0.1 default), no guard",
    "guard+DSC": "per-sample DSC in front of the step guard",
    "guard": "the step guard `StepGuard()` alone, whatever the defaults",
    "guard+cum": "the cumulative guard `CumulativeGuard()`: the per-step check and a bound "
                 "on the last 5 accepted steps, down to a rewind",
    "guard+cum-wharm": "`CumulativeGuard(step_harm=\"window\")`: a step is harmful only if "
                       "the probe loss also ends above its level 5 steps before",
    "guard+cum10-wharm": "the same with a window of 10 steps",
    "guard-wharm10": "the per-step check with the 10-step window harm rule, no window bound",
    "guard-wharm10-level50": "the same, the window rule only while the probe loss is above "
                             "0.5 ln K",
    "guard+cum-shift": "`CumulativeGuard(shift_epsilon=0.2)`: the cumulative guard, with "
                       "no bound on the steps of a batch that lies more than 0.2 (L∞) "
                       "beyond the calibrated distance to the probe rows while 3 of the "
                       "last 5 batches do: an episode of 10 such steps",
    "guard+cum-shift-s20": "the same, each episode exempting 20 steps",
    "guard-fo": "`StepGuard(harm=\"first_order\")`: a too-large step that raised the probe "
                "loss is harmful only if it raises it at a tenth of its length too",
    "guard+cum-fo": "`CumulativeGuard(harm=\"first_order\")`: the cumulative guard with "
                    "that per-step harm rule",
    "guard-interp": "`StepGuard(optimizer_state=\"interpolate\")`: a pulled-back step's "
                    "momentum interpolated between before and after, not scaled",
    "guard-fo-interp": "the same with the first-order harm rule",
    "guard-fo-descend": "`StepGuard(harm=\"first_order_descend\")`: an overshoot (harmless "
                        "at first order) pulled back to where the probe loss stops rising",
    "guard-fo-descend-interp": "the same with the momentum interpolated, not scaled",
    "guard-fo-descend-oi": "the same with only an overshoot's momentum interpolated",
    "guard+cum-interp": "`CumulativeGuard(optimizer_state=\"interpolate\")`: the cumulative "
                        "guard, the momentum of what it pulls back interpolated, not scaled",
    "guard+cum-interp-shift": "the same with the shift test of `guard+cum-shift-s20` "
                              "(`shift_epsilon=0.2, shift_steps=20`)",
    "DSC-default": "the library's defaults, whatever they are (in this version the step guard, "
                   "`correction=\"none\"`)",
}

#: What each benign drift is, for the legends and ``--list`` (its final level is
#: in ``DRIFTS``).
DRIFT_LEGENDS = {name: drift.description for name, drift in DRIFT_REGISTRY.items()}

_BENCHMARK = _label("benchmark", "The data set and model (`BENCHMARKS`); river's "
                    "streams are standardised and learnt by an MLP 128-128.", "benchmark",
                    BENCHMARK_LEGENDS)
_DEFENCE = _label("defence", "A row of `DEFENCES`, the estimator parameters of a defence.",
                  "defence", DEFENCE_LEGENDS)
_TIME = _stat("time (s)", "Wall time of one run, on one worker with one torch thread.",
              "wall_time", 1.0)

_ATTACK = _label("attack", "The attack (`dsc_sklearn.evaluation.attacks.ATTACK_REGISTRY`).",
                 "attack", ATTACK_LEGENDS)


def _worst(key, pick=min):
    """A cell of the worst seed's value in %: the lowest, or with ``pick=max`` the largest."""
    def cell(runs):
        values = [r.get(key) for r in runs if r.get(key) is not None]
        return f"{100 * pick(values) + 0.0:.1f}" if values else "n/a"
    return cell


_CLEAN_COST = _stat(
    "clean cost (pt)", "Plain training's (ST's) mean clean-stream accuracy on this "
    "benchmark and attack (the same horizon) minus this row's, in percentage points: "
    "what the defence costs when nothing is wrong. Positive: it costs accuracy. n/a "
    "without ST runs.", "clean_cost", 1.0)
_FLAGGED_POISON = _stat("flagged poison (%)", "Share of the poisoned samples that the "
                        "defence flagged during the accumulative phase.",
                        "flagged_fraction_poison")

#: The columns of the accumulative-poisoning table, in order; the report
#: splits them into :data:`ATTACK_TABLES`.
ATTACK_COLUMNS = (
    _BENCHMARK,
    _DEFENCE,
    _ATTACK,
    _SEEDS,
    _stat("after burn-in (%)", "Test accuracy when the attack starts: after the burn-in "
          "(plain training, the same for every defence) and the warm-up batches, which "
          "already go through the defence. It therefore differs between defences that "
          "change training on clean data.", "accuracy_burn_in"),
    _stat("before trigger (%)", "Test accuracy at the end of the accumulative phase.",
          "accuracy_accumulative"),
    _stat("after trigger (%)", "Test accuracy after one training step on the trigger "
          "batch: the headline, higher is better.", "accuracy_trigger", bold=True),
    Column("worst seed (%)", "The lowest accuracy after the trigger over the seeds.",
           _worst("accuracy_trigger")),
    _stat("clean stream (%)", "Test accuracy of the clean twin: a copy of the model at "
          "the attack's start, fed the same batches and trigger batch without poison.",
          "accuracy_clean"),
    _CLEAN_COST,
    _stat("steps (batches)", "Poisoned batches fed before the attacker's stealth stop "
          "(test accuracy more than 5 pt below its value when the attack started) or the "
          "step limit (`--max-steps`).", "n_accumulative_steps", 1.0),
    _stat("alarm delay (batches)", "Poisoned batches (the trigger included) fed before "
          "the first one the defence intervened on, which starts an alarm episode of "
          "`alarms_` (the step guard pulled it back or refused it, or the gate flagged "
          "more than 10 % of its rows): 0 when it acted on the first. The mean over the "
          "seeds that raised an alarm; n/a when none did.", "alarm_delay", 1.0),
    _stat("clean alarms (per 100 batches)", "Alarm episodes that started on the clean "
          "twin, per 100 batches it was fed: false alarms an operator would see.",
          "alarm_rate_clean"),
    _stat("flagged clean (%)", "Share of the clean twin's samples that the defence "
          "flagged: false alarms.", "flagged_fraction_clean"),
    _FLAGGED_POISON,
    _stat("flagged trigger (%)", "Share of the trigger batch's samples that the defence "
          "flagged.", "flagged_fraction_trigger"),
    _stat("AUC disc. sample", "ROC AUC, from 0 to 1 (0.5 is chance, 1 a perfect "
          "detector), of the per-sample memorization discrepancy as a detector of "
          "poisoned samples. Each poisoned batch and its clean original are scored on the "
          "same model state. n/a when nothing is poisoned.", "auc_discrepancy_sample",
          1.0, 2),
    _stat("AUC disc. batch", "The same ROC AUC for batch means of the discrepancy, one "
          "score per batch.", "auc_discrepancy_batch", 1.0, 2),
    _stat("AUC loss sample", "The same ROC AUC for the model's per-sample cross-entropy, "
          "a baseline detector that needs no snapshots.", "auc_loss_sample", 1.0, 2),
    _TIME,
)

#: The columns of the benign-drift table, in order.
DRIFT_COLUMNS = (
    _BENCHMARK,
    _DEFENCE,
    Column("drift", "The benign drift of a clean stream; its level grows linearly over "
           "the stream up to its final value (`DRIFTS`).",
           lambda runs: runs[0]["attack"][len("drift-"):], entries=DRIFT_LEGENDS),
    _SEEDS,
    _stat("accuracy (drifted test) (%)", "Test accuracy of the defended model on the test "
          "set drifted to the final level.", "accuracy_drift"),
    _stat("plain training (%)", "The same for a plain-training twin: the same burn-in and "
          "batches, no defence.", "accuracy_plain"),
    _stat("gap (pt)", "Plain training's accuracy minus the defence's, in percentage "
          "points: positive means the defence costs accuracy under a benign drift.",
          "accuracy_gap", bold=True),
    _stat("flagged (%)", "Share of the drifting stream's samples that the defence flagged. "
          "Nothing is poisoned, so every flag is a false alarm.", "flagged_fraction_drift"),
    _TIME,
)


#: The columns of the learning-from-scratch table, in order.
LEARNING_COLUMNS = (
    _BENCHMARK,
    _DEFENCE,
    _SEEDS,
    _stat("learned (%)", "Test accuracy after 5 passes of `partial_fit` over the training "
          "split from scratch, with the defence on from the first call, as a user runs "
          "it.", "accuracy_learned"),
    _stat("every defence off (%)", "The same model, weights and batches with every "
          "defence off (no correction, no clipping, no guard).", "accuracy_plain"),
    _stat("learning cost (pt)", "The second minus the first, in percentage points: what "
          "the defence costs while a model still learns. Positive: it slows learning.",
          "learning_cost", bold=True),
    Column("worst seed (pt)", "The largest learning cost over the seeds.",
           _worst("learning_cost", pick=max)),
    _stat("steps scaled (%)", "Share of the defended model's steps the step guard pulled "
          "back while it learned; n/a without a guard.", "scaled_fraction_learning"),
    _TIME,
)


#: The two tables the report shows the accumulative-poisoning columns in, so
#: that each fits a 1280-pixel screen: ``(title, headers)``; both start with
#: the benchmark, defence, attack and seeds.
ATTACK_TABLES = (
    ("Accumulative poisoning: what each defence keeps",
     ("after burn-in (%)", "before trigger (%)", "after trigger (%)", "worst seed (%)",
      "clean stream (%)", "clean cost (pt)", "steps (batches)")),
    ("Accumulative poisoning: alarms and detection",
     ("alarm delay (batches)", "clean alarms (per 100 batches)", "flagged clean (%)",
      "flagged poison (%)", "flagged trigger (%)", "AUC disc. sample", "AUC disc. batch",
      "AUC loss sample", "time (s)")),
)

_SCALED_ATTACK = _stat(
    "steps scaled (%)", "Share of the attack's optimizer steps (poisoned batches and "
    "trigger batches) that the step guard pulled back; n/a without a guard.",
    "scaled_fraction_attack")

#: The columns of the adaptive-attacks table, in order.
ADAPTIVE_COLUMNS = (
    _BENCHMARK,
    _ATTACK,
    _DEFENCE,
    _SEEDS,
    _stat("attack starts (%)", "Test accuracy when the attack starts (after burn-in and the "
          "warm-up batches through the defence).", "accuracy_burn_in"),
    _stat("after attack (%)", "Test accuracy after the attack's last batch (the trigger, "
          "or the last of its trigger batches): the headline, higher is better.",
          "accuracy_trigger", bold=True),
    Column("worst seed (%)", "The lowest accuracy after the attack over the seeds.",
           _worst("accuracy_trigger")),
    _CLEAN_COST,
    _SCALED_ATTACK,
    _stat("trigger scale", "The scale the step guard kept for the trigger's step (1: "
          "unscaled, 0: refused; the mean over the trigger batches); n/a without a guard.",
          "trigger_scale", 1.0, 2),
    _stat("poisoned batches", "Batches poisoned before the attacker's stealth stop or its "
          "horizon.", "n_accumulative_steps", 1.0),
    _FLAGGED_POISON,
    _TIME,
)


@dataclass
class Table:
    """A results table: columns, rows of cells, and its legend.

    Parameters
    ----------
    title : str
    columns : tuple of Column
    rows : list of list of str
        One cell per column; headline cells are already bold (``**...**``).
    """

    title: str
    columns: tuple
    rows: list

    def select(self, title, headers):
        """The table of the first four columns and those named ``headers``.

        Parameters
        ----------
        title : str
            The new table's title.
        headers : sequence of str
            Headers of the columns to keep after the first four (the
            benchmark, the defence, the attack and the seeds), in order.

        Returns
        -------
        table : Table
        """
        names = [column.header for column in self.columns]
        keep = [0, 1, 2, 3] + [names.index(header) for header in headers]
        return Table(title, tuple(self.columns[i] for i in keep),
                     [[row[i] for i in keep] for row in self.rows])

    def markdown(self, legend=False):
        """The table in markdown, optionally followed by its legend."""
        lines = ["| " + " | ".join(c.header for c in self.columns) + " |",
                 "|---" * len(self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        text = "\n".join(lines) + "\n"
        if legend:
            text += "\n" + self.legend_markdown()
        return text

    def legend_markdown(self):
        """One bullet per column: its header, then what it holds."""
        return "".join(f"- **{c.header}**: {c.legend}\n" for c in self.columns)

    def html(self):
        """The table and its legend as an HTML fragment."""
        head = "".join(f"<th>{html.escape(c.header)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(_html_cell(cell) for cell in row) + "</tr>\n" for row in self.rows)
        legend = "".join(f"<dt>{html.escape(c.header)}</dt><dd>{_inline(c.legend)}</dd>\n"
                         for c in self.columns)
        return (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n'
                f'<tbody>\n{body}</tbody>\n</table></div>\n'
                f'<details open><summary>What the columns mean</summary>\n'
                f'<dl>\n{legend}</dl></details>\n')


def _html_cell(cell):
    if cell.startswith("**") and cell.endswith("**"):
        return f"<td><strong>{html.escape(cell[2:-2])}</strong></td>"
    return f"<td>{html.escape(cell)}</td>"


def _inline(text):
    """Escaped text with markdown's `code` spans as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _table(title, columns, groups):
    rows = [[f"**{c.cell(runs)}**" if c.bold else c.cell(runs) for c in columns]
            for runs in groups.values()]
    return Table(title, tuple(_with_entries(column, [row[i] for row in rows])
                              for i, column in enumerate(columns)), rows)


def _with_entries(column, cells):
    """``column`` whose legend names what each of its ``cells`` means."""
    if not column.entries:
        return column
    present = [name for name in dict.fromkeys(cells) if name in column.entries]
    legend = " ".join([column.legend] + [f"{name}: {column.entries[name]}."
                                         for name in present])
    return Column(column.header, legend, column.cell, column.bold, column.entries)


def _attack_runs(records):
    """The records of attack runs: neither benign drifts nor learning from scratch."""
    return [r for r in records
            if not r["attack"].startswith("drift-") and r["attack"] != LEARNING]


def _groups(records):
    groups = {}
    for record in records:
        key = (record["benchmark"], record["defence"], record["attack"])
        groups.setdefault(key, []).append(record)
    return groups


def _with_clean_cost(records):
    """The attack runs, each with its ``clean_cost`` against ST's clean twin.

    ST's runs of the same benchmark and attack (the same horizon) are the
    reference, else its accumulative runs; ``None`` without either.
    """
    runs = _attack_runs(records)
    baselines = {}
    for (benchmark, defence, attack), group in _groups(runs).items():
        if defence == "ST":
            baselines[benchmark, attack] = np.mean([r["accuracy_clean"] for r in group])

    def cost(record):
        key = (record["benchmark"], record["attack"])
        baseline = baselines.get(key, baselines.get((record["benchmark"], "accumulative")))
        return None if baseline is None else 100 * (baseline - record["accuracy_clean"])

    return [dict(r, clean_cost=cost(r)) for r in runs]


def attack_results(records):
    """The attack runs aggregated over seeds.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`;
        benign-drift records are left out.

    Returns
    -------
    table : Table
        One row per benchmark, defence and attack; :data:`ATTACK_COLUMNS`.
    """
    return _table("Accumulative poisoning", ATTACK_COLUMNS, _groups(_with_clean_cost(records)))


def adaptive_results(records):
    """What each defence keeps under each attack, aggregated over seeds.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`;
        benign-drift records and the ST-only baselines (``noise``,
        ``trigger_only``) are left out.

    Returns
    -------
    table : Table
        One row per benchmark, attack and defence (grouped by attack);
        :data:`ADAPTIVE_COLUMNS`.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.report import adaptive_results
    >>> records = [{"benchmark": "b", "defence": d, "attack": "guard_aware", "seed": 0,
    ...             "accuracy_burn_in": 0.9, "accuracy_trigger": t, "accuracy_clean": 0.95,
    ...             "scaled_fraction_attack": f}
    ...            for d, t, f in (("ST", 0.5, None), ("DSC-default", 0.8, 0.25))]
    >>> [row[2:8] + row[8:9] for row in adaptive_results(records).rows]
    [['ST', '1', '90.0 ± 0.0', '**50.0 ± 0.0**', '50.0', '0.0 ± 0.0', 'n/a'], \
['DSC-default', '1', '90.0 ± 0.0', '**80.0 ± 0.0**', '80.0', '0.0 ± 0.0', '25.0 ± 0.0']]
    """
    runs = [r for r in _with_clean_cost(records)
            if r["attack"] not in ST_BASELINE_ATTACKS]
    groups = _groups(runs)  # keyed (benchmark, defence, attack), in the records' order
    benchmarks = list(dict.fromkeys(benchmark for benchmark, _, _ in groups))
    attacks = list(dict.fromkeys(attack for _, _, attack in groups))
    keys = sorted(groups, key=lambda key: (benchmarks.index(key[0]),
                                           attacks.index(key[2])))  # stable
    return _table("Adaptive attacks", ADAPTIVE_COLUMNS, {key: groups[key] for key in keys})


def _of_attack(runs, attack):
    return [r for r in runs if r["attack"] == attack]


def stream_results(records, benchmarks=None):
    """River's streams: each attack and the generators' own drift, per defence.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`.
    benchmarks : sequence of str, default=None
        The benchmarks to show (``STREAM_BENCHMARKS``); ``None`` shows all.

    Returns
    -------
    table : Table
        One row per benchmark and defence. Columns: the seeds, the accuracy
        after each attack in the records (one column each), the clean cost
        and the share of clean steps the guard scaled (from the first
        attack's clean twin), and, where the generators' own concept drift
        ran (``drift-concept``), the accuracy after it, its gap to plain
        training, the prequential accuracy and its gap, and the share of
        the drifting stream's steps the guard scaled.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.report import stream_results
    >>> records = [{"benchmark": "sea-mlp", "defence": "ST", "attack": "accumulative",
    ...             "seed": 0, "accuracy_burn_in": 0.9, "accuracy_trigger": 0.6,
    ...             "accuracy_clean": 0.9},
    ...            {"benchmark": "sea-mlp", "defence": "ST", "attack": "drift-concept",
    ...             "seed": 0, "accuracy_drift": 0.8, "accuracy_gap": 0.0,
    ...             "prequential_accuracy": 0.85, "prequential_gap": 0.0}]
    >>> table = stream_results(records)
    >>> [c.header for c in table.columns][2:6]
    ['seeds', 'attack starts (%)', 'after accumulative (%)', 'clean cost (pt)']
    >>> table.rows[0][4:6], table.rows[0][8]
    (['60.0 ± 0.0', '0.0 ± 0.0'], '**0.0 ± 0.0**')
    """
    runs = [r for r in records if benchmarks is None or r["benchmark"] in benchmarks]
    attacked = _attack_runs(runs)
    attacks = [a for a in dict.fromkeys(r["attack"] for r in attacked)
               if a not in ST_BASELINE_ATTACKS]
    costs = {id(r): costed for r, costed in zip(attacked, _with_clean_cost(attacked))}
    first = attacks[0] if attacks else None

    def on(attack, column):
        return Column(column.header, column.legend,
                      lambda group: column.cell(_of_attack(group, attack)), column.bold)

    columns = [_BENCHMARK, _DEFENCE,
               Column("seeds", "Seeds of the row's runs; every other number is the mean ± "
                      "standard deviation over them.",
                      lambda group: str(len({r["seed"] for r in group})))]
    if first is not None:
        columns.append(on(first, _stat(
            "attack starts (%)", f"Test accuracy when the {first} attack starts (after "
            "burn-in and the warm-up batches through the defence).", "accuracy_burn_in")))
    columns += [on(attack, _stat(f"after {attack} (%)", f"Test accuracy after the {attack} "
                                 "attack's last batch.", "accuracy_trigger"))
                for attack in attacks]
    if first is not None:
        cost = _CLEAN_COST
        columns.append(Column(cost.header, cost.legend + f" From the {first} runs.",
                              lambda group: cost.cell(
                                  [costs.get(id(r), r) for r in _of_attack(group, first)])))
        columns.append(on(first, _stat(
            "clean steps scaled (%)", "Share of the clean twin's steps (the same stream "
            "unpoisoned) that the step guard pulled back: false alarms; n/a without a "
            "guard.", "scaled_fraction_clean")))
    if any(r["attack"] == "drift-concept" for r in runs):
        drift = "drift-concept"
        columns += [
            on(drift, _stat("after drift (%)", "Test accuracy on the concept after the "
                            "drift, at the end of the drifting stream (river's generator "
                            "drifts on its own; nothing is poisoned).", "accuracy_drift")),
            on(drift, _stat("drift gap (pt)", "Plain training's accuracy after the drift "
                            "minus the defence's, in points: positive means the defence "
                            "costs accuracy when the world really changes.", "accuracy_gap",
                            bold=True)),
            on(drift, _stat("prequential (%)", "Share of the drifting stream's rows "
                            "predicted right just before being trained on (test, then "
                            "train).", "prequential_accuracy")),
            on(drift, _stat("prequential gap (pt)", "Plain training's prequential accuracy "
                            "minus the defence's, in points.", "prequential_gap")),
            on(drift, _stat("drift steps scaled (%)", "Share of the drifting stream's steps "
                            "the step guard pulled back (all false alarms); n/a without a "
                            "guard.", "scaled_fraction_drift")),
        ]
    groups = {}
    for record in runs:
        groups.setdefault((record["benchmark"], record["defence"]), []).append(record)
    return _table("Real streams", tuple(columns), groups)


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _points(value):
    return f"{round(value, 1) + 0.0:.1f}"  # never "-0.0"


def _summary(runs, drifts, reference=False):
    """A defence's numbers: after the attack, worst seed, clean cost, worst drift gap.

    The reference (plain training) has neither a clean cost nor a drift gap
    of its own: both are measured against it.
    """
    after = [r["accuracy_trigger"] for r in runs if r.get("accuracy_trigger") is not None]
    text = (f"{100 * np.mean(after):.1f} % after it (worst seed {100 * min(after):.1f} %"
            f", {len(after)} seeds)")
    if reference:
        return text
    cost = _mean(r.get("clean_cost") for r in runs)
    text += (", clean cost n/a (no plain-training run)" if cost is None
             else f", a clean cost of {_points(cost)} pt")
    gaps = {}
    for record in drifts:
        gaps.setdefault(record["attack"][len("drift-"):], []).append(record.get("accuracy_gap"))
    gaps = {kind: _mean(values) for kind, values in gaps.items()}
    gaps = {kind: gap for kind, gap in gaps.items() if gap is not None}
    if gaps:
        kind = max(gaps, key=gaps.get)
        text += f" and a worst drift gap of {_points(100 * gaps[kind])} pt ({kind})"
    else:
        text += " (no benign drift ran)"
    return text


def verdicts(records):
    """What each benchmark of the run concludes, written from its numbers.

    For each benchmark: the defence that kept the highest mean accuracy
    after the attack (the accumulative attack when it ran, else the first
    attack of the records besides the ST-only baselines), with its worst
    seed, its clean cost and its worst benign-drift gap; then plain
    training's (``ST``) accuracy, and the same four numbers for the
    library's defaults (``DSC-default``), when they ran and are not that
    defence.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`.

    Returns
    -------
    verdicts : dict of str
        One paragraph per benchmark with attack runs, in markdown.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.report import verdicts
    >>> records = [{"benchmark": "digits-mlp", "defence": d, "attack": "accumulative",
    ...             "seed": seed, "accuracy_trigger": t + seed / 100, "accuracy_clean": c}
    ...            for d, t, c in (("ST", 0.55, 0.95), ("GC", 0.93, 0.94))
    ...            for seed in (0, 1)]
    >>> records.append({"benchmark": "digits-mlp", "defence": "GC", "seed": 0,
    ...                 "attack": "drift-translation", "accuracy_gap": 0.576})
    >>> print(verdicts(records)["digits-mlp"])
    GC kept the most after the accumulative attack: 93.5 % after it (worst seed 93.0 %, 2 seeds), a clean cost of 1.0 pt and a worst drift gap of 57.6 pt (translation). Plain training (ST): 55.5 % after it (worst seed 55.0 %, 2 seeds).
    """
    runs = [r for r in _with_clean_cost(records) if r["attack"] not in ST_BASELINE_ATTACKS]
    found = {}
    for benchmark in dict.fromkeys(r["benchmark"] for r in runs):
        mine = [r for r in runs if r["benchmark"] == benchmark]
        attacks = list(dict.fromkeys(r["attack"] for r in mine))
        attack = "accumulative" if "accumulative" in attacks else attacks[0]
        by_defence = {}
        for record in mine:
            if record["attack"] == attack and record.get("accuracy_trigger") is not None:
                by_defence.setdefault(record["defence"], []).append(record)
        if not by_defence:
            continue

        def summary(defence):
            drifts = [r for r in records if r["benchmark"] == benchmark
                      and r["defence"] == defence and r["attack"].startswith("drift-")]
            return _summary(by_defence[defence], drifts, reference=defence == "ST")

        best = max(by_defence, key=lambda d: np.mean([r["accuracy_trigger"]
                                                       for r in by_defence[d]]))
        text = [f"{best} kept the most after the {attack} attack: {summary(best)}."]
        for defence, name in (("ST", "Plain training (ST)"),
                              ("DSC-default", "The library's defaults (DSC-default)")):
            if defence in by_defence and defence != best:
                text.append(f"{name}: {summary(defence)}.")
        found[benchmark] = " ".join(text)
    return found


def drift_results(records):
    """The benign-drift runs aggregated over seeds.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`;
        only the ``"drift-<kind>"`` records are used.

    Returns
    -------
    table : Table
        One row per benchmark, defence and drift; :data:`DRIFT_COLUMNS`.
    """
    runs = [r for r in records if r["attack"].startswith("drift-")]
    return _table("Benign drift (clean streams)", DRIFT_COLUMNS, _groups(runs))


def learning_results(records):
    """The learning-from-scratch runs aggregated over seeds.

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`;
        only the records of learning runs
        (``attack=``:data:`~dsc_sklearn.evaluation.protocol.LEARNING`) are used.

    Returns
    -------
    table : Table
        One row per benchmark and defence; :data:`LEARNING_COLUMNS`.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.report import learning_results
    >>> records = [{"benchmark": "digits-cnn", "defence": "DSC-default", "seed": seed,
    ...             "attack": "learning", "accuracy_learned": learned,
    ...             "accuracy_plain": 0.88, "learning_cost": 0.88 - learned}
    ...            for seed, learned in ((0, 0.75), (1, 0.80))]
    >>> table = learning_results(records)
    >>> table.rows[0][5:7]
    ['**10.5 ± 2.5**', '13.0']
    """
    runs = [r for r in records if r["attack"] == LEARNING]
    return _table("Learning from scratch", LEARNING_COLUMNS, _groups(runs))


def _version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment():
    """What produced a report: date, versions and machine.

    Returns
    -------
    info : dict of str
        ``date`` (UTC), ``versions`` (dsc_sklearn, torch, scikit-learn,
        skorch, numpy, Python), ``machine`` (platform and cores).
    """
    from .. import __version__

    versions = [f"dsc_sklearn {__version__}"]
    versions += [f"{name} {_version(name)}" for name in ("torch", "scikit-learn", "skorch",
                                                         "numpy", "matplotlib")]
    versions.append(f"Python {platform.python_version()}")
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "versions": ", ".join(versions),
        "machine": (f"{platform.platform()}, {_cpu_count()} usable CPU cores "
                    f"({os.cpu_count()} in all)"),
    }


_PROTOCOL = (
    "Each run burns a model in with plain training, switches the defence on and feeds "
    "it some clean warm-up batches; then the attacker poisons every stream batch until "
    "test accuracy falls 5 pt (its stealth stop) or the step limit, and feeds one "
    "poisoned trigger batch. A clean twin of the model sees the same batches unpoisoned. "
    "Benign-drift runs feed clean batches whose inputs shift gradually, to show what a "
    "defence costs when nothing is wrong. The protocol is "
    "`dsc_sklearn.evaluation.protocol.run_stream_protocol`; docs/results.md describes "
    "it in full and holds the measured full run. The numbers below come from this run "
    "only."
)


def _run_facts(command, settings, wall_time, n_records):
    facts = {"command": f"`{command}`"}
    facts.update(environment())
    if wall_time is not None:
        facts["runs"] = f"{n_records} in {wall_time:.1f} s"
    for name, value in (settings or {}).items():
        facts[name] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) \
            else str(value)
    return facts


def _caption(path):
    from .plotting import FIGURE_CAPTIONS

    stem = Path(path).stem
    for kind, caption in FIGURE_CAPTIONS.items():
        if stem.endswith("_" + kind):
            return stem[:-len(kind) - 1], kind, caption
    return stem, stem, ""


def _markdown(facts, tables, figures, conclusions=None):
    lines = ["# dsc-sklearn benchmark", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in facts.items()]
    lines += ["", _PROTOCOL, ""]
    if conclusions:
        lines += ["## Verdict", ""]
        lines += [f"- **{benchmark}**: {text}" for benchmark, text in conclusions.items()]
        lines.append("")
    for table in tables:
        lines += [f"## {table.title}", "", table.markdown(legend=True)]
    if figures:
        lines += ["## Figures", ""]
        for path in figures:
            benchmark, kind, caption = _caption(path)
            lines += [f"### {benchmark}: {kind.replace('_', ' ')}", "",
                      f"![{benchmark} {kind}]({Path(path).name})", "", caption, ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right;
         white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; vertical-align: bottom; }
td:nth-child(-n+3), th:nth-child(-n+3) { text-align: left; }
.scroll { overflow-x: auto; }
table.facts td { text-align: left; white-space: normal; }
dt { font-weight: bold; margin-top: 0.4rem; }
dd { margin-left: 1.5rem; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9rem; color: #444; max-width: 60rem; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def _html(facts, tables, figures, conclusions=None):
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{_inline(value)}</td></tr>\n"
                   for name, value in facts.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>dsc-sklearn benchmark</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>dsc-sklearn benchmark</h1>",
        f'<table class="facts">\n{rows}</table>',
        f"<p>{_inline(_PROTOCOL)}</p>",
    ]
    if conclusions:
        parts.append("<h2>Verdict</h2>\n<ul>")
        parts += [f"<li><strong>{html.escape(benchmark)}</strong>: {_inline(text)}</li>"
                  for benchmark, text in conclusions.items()]
        parts.append("</ul>")
    for table in tables:
        parts += [f"<h2>{html.escape(table.title)}</h2>", table.html()]
    if figures:
        parts.append("<h2>Figures</h2>")
        for path in figures:
            benchmark, kind, caption = _caption(path)
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(benchmark)} {html.escape(kind)}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption><strong>{html.escape(benchmark)}: "
                f"{html.escape(kind.replace('_', ' '))}.</strong> "
                f"{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(records, output_dir, *, command, settings=None, figures=(), wall_time=None,
                 stream_benchmarks=()):
    """Write ``results.md`` and a self-contained ``report.html``.

    Both hold the command line, the date, the versions and the machine,
    the verdict of each benchmark (:func:`verdicts`), every table with a
    legend that explains each column and its unit (the accumulative-poisoning
    columns in the two tables of :data:`ATTACK_TABLES`), and
    the figures (linked from ``results.md``, embedded in ``report.html`` as
    base64 PNG, so that the page can be mailed or archived alone).

    Parameters
    ----------
    records : list of dict
        As returned by :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`.
    output_dir : path-like
        An existing directory.
    command : str
        The command line that produced the records.
    settings : dict, default=None
        Further facts to show (seeds, workers, protocol parameters...),
        by name.
    figures : sequence of path-like, default=()
        PNG files in ``output_dir``, as written by
        :func:`~dsc_sklearn.evaluation.plotting.plot_benchmark`.
    wall_time : float, default=None
        Seconds the whole benchmark took.
    stream_benchmarks : sequence of str, default=()
        Benchmarks of the "Real streams" table (``STREAM_BENCHMARKS``); it
        is written when the records hold any of them. The "Adaptive
        attacks" table is written when they hold more than one attack
        besides the ST-only baselines.

    Returns
    -------
    paths : list of pathlib.Path
        ``results.md`` and ``report.html``.
    """
    output_dir = Path(output_dir)
    facts = _run_facts(command, settings, wall_time, len(records))
    attacks = attack_results(records)
    tables = [attacks.select(title, headers) for title, headers in ATTACK_TABLES]
    if any(r["attack"].startswith("drift-") for r in records):
        tables.append(drift_results(records))
    attacks = {r["attack"] for r in _attack_runs(records)}
    if len(attacks - set(ST_BASELINE_ATTACKS)) > 1:
        tables.append(adaptive_results(records))
    if any(r["benchmark"] in stream_benchmarks for r in records):
        tables.append(stream_results(records, stream_benchmarks))
    if any(r["attack"] == LEARNING for r in records):
        tables.append(learning_results(records))
    markdown, page = output_dir / "results.md", output_dir / "report.html"
    conclusions = verdicts(records)
    markdown.write_text(_markdown(facts, tables, figures, conclusions), encoding="utf-8")
    page.write_text(_html(facts, tables, figures, conclusions), encoding="utf-8")
    return [markdown, page]
