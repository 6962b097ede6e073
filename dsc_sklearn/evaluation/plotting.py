"""Plots of benchmark records (needs matplotlib: ``pip install "dsc-sklearn[plot]"``).

Every plot draws each defence in the same style (colour, line style,
marker), in the order the records list them, and gives accuracies in %
and accuracy differences in percentage points. Seeds are aggregated:
a line or a point is the mean over seeds, a band or an error bar one
standard deviation either side. Legends sit outside the axes, so that
they never hide data.

:func:`plot_benchmark` writes the figures of ``dsc-sklearn benchmark``;
:data:`FIGURE_CAPTIONS` says what each one shows.
"""

from pathlib import Path

import numpy as np

from .attacks import PLAIN_TRAINING_ONLY_ATTACKS
from .protocol import LEARNING

__all__ = [
    "FIGURE_CAPTIONS",
    "plot_accuracy_curves",
    "plot_attack_curves",
    "plot_benchmark",
    "plot_discrepancy",
    "plot_discrepancy_by_defence",
    "plot_drift",
    "plot_prequential",
    "plot_tradeoff",
]

#: What each figure of :func:`plot_benchmark` shows, by the end of its file
#: name (``<benchmark>_<kind>.png``).
FIGURE_CAPTIONS = {
    "accuracy_stream": (
        "Test accuracy along the attacked stream. A line is the mean over seeds "
        "and its band one standard deviation either side, over the seeds still "
        "streaming: a line ends when the attacker's stealth stop has fired on "
        "every seed. A cross marks where a seed's attack stopped early, its "
        "accuracy more than 5 pt below the start (the attacker's stealth stop); "
        "the trigger batch followed at once. The markers right of the dotted "
        "line are the accuracy after the trigger batch (mean ± 1 s.d.)."
    ),
    "discrepancy": (
        "Memorization discrepancy of clean and poisoned samples, for each "
        "defence's own model, measured on the same model state just before each "
        "poisoned batch is fed. Each histogram sums to 100 %. The more the two "
        "overlap, the closer the per-sample ROC AUC in the panel's title is to "
        "0.5 (chance)."
    ),
    "tradeoff": (
        "Robustness against clean cost: accuracy after the trigger against how "
        "far below plain training (ST) the defence ends on the same stream "
        "without poison. Up and left is better. Error bars: 1 s.d. over seeds."
    ),
    "drift": (
        "Benign drift (clean streams whose inputs shift gradually): how much "
        "accuracy the defence costs against plain training on the drifted test "
        "set, and how many clean samples it flags. Error bars: 1 s.d. over seeds."
    ),
    "attacks": (
        "Test accuracy along the stream under each attack, one panel per attack, "
        "as in the accuracy_stream figure: a line is the mean over the seeds still "
        "streaming, its band one standard deviation; the markers right of the "
        "dotted line are the accuracy after the attack's last batch (the trigger, "
        "or the last of several trigger batches)."
    ),
    "prequential": (
        "River's concept drift, fed in order, nothing poisoned: the share of each "
        "batch predicted right just before it is trained on (prequential "
        "accuracy), mean over seeds with a band of one standard deviation. The "
        "shaded span is the drift, from 5 % to 95 % of its progress."
    ),
}

_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_MARKERS = "osD^vP*Xh<>p"
_STARTED = "ST when the attack started"
_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Plotting needs matplotlib: pip install "dsc-sklearn[plot]"'
        ) from error
    return plt


def _attacked(records, benchmark, attack="accumulative"):
    return [r for r in records if r["attack"] == attack and r["benchmark"] == benchmark]


def _defences(runs):
    return list(dict.fromkeys(r["defence"] for r in runs))


def _style(index):
    """The colour, line style, marker and width of the ``index``-th defence.

    Earlier defences get wider lines, so that a later one drawn on top of
    an identical curve leaves the earlier one visible around it.
    """
    plt = _pyplot()
    return {"color": plt.get_cmap("tab10")(index % 10),
            "linestyle": _LINESTYLES[index % len(_LINESTYLES)],
            "marker": _MARKERS[index % len(_MARKERS)],
            "linewidth": max(3.0 - 0.5 * index, 1.2)}


def _axes(ax, figsize):
    return ax if ax is not None else _pyplot().subplots(figsize=figsize)[1]


def _mean_std(values, scale=100.0):
    values = np.array([np.nan if v is None else v for v in values], dtype=float) * scale
    if np.isnan(values).all():
        return np.nan, np.nan
    return float(np.nanmean(values)), float(np.nanstd(values))


def plot_accuracy_curves(records, benchmark, ax=None, attack="accumulative"):
    """Test accuracy along the attacked stream and after the trigger, per defence.

    For each defence, the line is the mean test accuracy over seeds after
    every poisoned batch (x = 0: when the attack starts, after burn-in and
    warm-up) and the band one standard deviation either side. Runs stop at
    different batches (the attacker's stealth stop), so the mean at a
    batch is over the seeds still streaming, and a line ends when the last
    seed stops; a cross in the defence's colour marks each seed's stop
    (records with ``stealth_stop``; for older records, a stream shorter
    than the longest). Right of the dotted "trigger" line, one marker per defence
    (mean ± 1 s.d., as an error bar) is the accuracy after the trigger
    batch, in a strip of its own (one slot per defence, so that none hides
    another).

    Parameters
    ----------
    records : list of dict
        From :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`.
    benchmark : str
        Which benchmark to draw.
    ax : matplotlib Axes, default=None
        Where to draw; ``None`` makes a new figure.
    attack : str, default="accumulative"
        Whose runs to draw. With several trigger batches
        (``n_trigger_batches``), the markers are the accuracy after the
        last one.

    Returns
    -------
    ax : matplotlib Axes
        Its legend has one entry per defence, and one for the stealth stops
        when any run stopped early; the trigger line has the ``gid``
        ``"trigger"``, the crosses the ``gid`` ``"stealth stop"``.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.plotting import plot_accuracy_curves
    >>> record = {"benchmark": "digits-mlp", "defence": "ST", "attack": "accumulative",
    ...           "accuracy_burn_in": 0.9, "accuracy_curve": [0.8, 0.5],
    ...           "accuracy_trigger": 0.5}
    >>> ax = plot_accuracy_curves([record], "digits-mlp")
    >>> ax.get_ylabel(), [t.get_text() for t in ax.get_legend().get_texts()]
    ('test accuracy (%)', ['ST'])
    >>> record.update(accuracy_curve=[0.8, 0.5, 0.4], stealth_stop=1.0)
    >>> ax = plot_accuracy_curves([record], "digits-mlp")
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['ST', 'stealth stop (a seed)']
    """
    ax = _axes(ax, (8, 4.5))
    runs = _attacked(records, benchmark, attack)
    defences = _defences(runs)
    curves = {d: [100 * np.array([r["accuracy_burn_in"]] + _stream_part(r))
                  for r in runs if r["defence"] == d] for d in defences}
    n_batches = max((len(c) for cs in curves.values() for c in cs), default=1)
    # The trigger's markers share a strip right of the stream, one slot each.
    strip = max(2.0, 0.04 * n_batches * max(len(defences), 1))
    slots = n_batches + 0.5 + strip * (np.arange(len(defences)) + 0.5) / max(len(defences), 1)
    trigger_x = n_batches + 0.5 + strip / 2
    n_seeds = set()
    stopped = False
    for index, defence in enumerate(defences):
        style = _style(index)
        padded = np.full((len(curves[defence]), n_batches), np.nan)
        for row, curve in zip(padded, curves[defence]):
            row[:len(curve)] = curve
        streaming = ~np.isnan(padded).all(axis=0)
        x = np.arange(n_batches)[streaming]
        mean = np.nanmean(padded[:, streaming], axis=0)
        std = np.nanstd(padded[:, streaming], axis=0)
        # The marker shows in the legend only, naming the trigger's marker.
        ax.plot(x, mean, color=style["color"], linestyle=style["linestyle"],
                linewidth=style["linewidth"], marker=style["marker"], markevery=[],
                label=defence)
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15,
                        linewidth=0)
        after, spread = _mean_std(r["accuracy_trigger"] for r in runs if r["defence"] == defence)
        ax.errorbar(slots[index], after, yerr=spread, color=style["color"],
                    marker=style["marker"], markersize=7, capsize=3, linestyle="none")
        n_seeds.add(len(curves[defence]))
        stops = [(len(curve) - 1, curve[-1]) for curve, run in zip(
            curves[defence], (r for r in runs if r["defence"] == defence))
            if _stopped_early(run, len(curve), n_batches)]
        if stops:
            ax.plot(*zip(*stops), linestyle="none", marker="X", markersize=8,
                    color=style["color"], markeredgecolor="black", markeredgewidth=0.6,
                    gid="stealth stop")
            stopped = True
    if stopped:
        ax.plot([], [], linestyle="none", marker="X", markersize=8, color="white",
                markeredgecolor="black", markeredgewidth=0.6, label="stealth stop (a seed)")
    ax.axvline(n_batches + 0.5, color="grey", linestyle=":", linewidth=1.2, gid="trigger")
    ticks = [t for t in ax.get_xticks() if 0 <= t <= n_batches - 1 and t == int(t)]
    if len(ticks) > 1 and n_batches - 1 - ticks[-1] < 0.15 * n_batches:
        ticks = ticks[:-1]  # keep room for the trigger's label
    ax.set_xticks(ticks + [trigger_x], [f"{t:g}" for t in ticks] + ["after\ntrigger"])
    ax.set_xlim(-0.5, n_batches + 0.5 + strip)
    ax.set_xlabel("poisoned batches fed (0: the attack starts, after burn-in)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{benchmark}: accuracy along the attacked stream"
                 + ("" if attack == "accumulative" else f" ({attack})"))
    seeds = "/".join(str(n) for n in sorted(n_seeds)) or "0"
    ax.legend(title=f"mean ± 1 s.d.\n{seeds} seeds", fontsize="small",
              title_fontsize="small", **_OUTSIDE)
    return ax


def _stopped_early(record, length, longest):
    """Whether the attacker's stealth stop ended the run's stream."""
    if "stealth_stop" in record:
        return bool(record["stealth_stop"])
    return length < longest


def _stream_part(record):
    """The accuracy curve before the trigger batch(es)."""
    n_trigger = int(record.get("n_trigger_batches") or 1)
    return list(record["accuracy_curve"][:-n_trigger])


def _plotted_attacks(records, benchmark):
    """The attacks of ``benchmark``'s runs, but the ST-only baselines, in order."""
    return [a for a in dict.fromkeys(r["attack"] for r in records if r["benchmark"] == benchmark)
            if not a.startswith("drift-") and a != LEARNING
            and a not in PLAIN_TRAINING_ONLY_ATTACKS]


def plot_attack_curves(records, benchmark, attacks=None):
    """:func:`plot_accuracy_curves` under each attack, one panel per attack.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    attacks : sequence of str, default=None
        The attacks to draw; ``None`` draws every attack of the records on
        ``benchmark`` but the ST-only baselines (``noise``, ``trigger_only``).

    Returns
    -------
    fig : matplotlib Figure
        One panel per attack, on a common accuracy axis, each with its
        legend.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.plotting import plot_attack_curves
    >>> records = [{"benchmark": "b", "defence": "ST", "attack": attack,
    ...             "accuracy_burn_in": 0.9, "accuracy_curve": [0.8, 0.6, 0.5],
    ...             "accuracy_trigger": 0.5, "n_trigger_batches": k}
    ...            for attack, k in (("accumulative", 1), ("multi_trigger", 2))]
    >>> fig = plot_attack_curves(records, "b")
    >>> [ax.get_title() for ax in fig.axes]
    ['accumulative', 'multi_trigger']
    """
    plt = _pyplot()
    attacks = _plotted_attacks(records, benchmark) if attacks is None else list(attacks)
    n_cols = min(2, max(len(attacks), 1))
    n_rows = -(-max(len(attacks), 1) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(8.5 * n_cols, 4.0 * n_rows),
                             sharey=True, squeeze=False)
    for ax, attack in zip(axes.flat, attacks):
        plot_accuracy_curves(records, benchmark, ax=ax, attack=attack)
        ax.set_title(attack)
    for ax in axes.flat[len(attacks):]:
        ax.set_visible(False)
    fig.suptitle(f"{benchmark}: test accuracy along the stream under each attack")
    fig.tight_layout()
    return fig


def plot_prequential(records, benchmark, ax=None):
    """Prequential accuracy along river's concept drift, per defence and plain training.

    Parameters
    ----------
    records : list of dict
        Records of ``drift-concept`` runs
        (:func:`~dsc_sklearn.evaluation.protocol.run_concept_drift_protocol`).
    benchmark : str
    ax : matplotlib Axes, default=None

    Returns
    -------
    ax : matplotlib Axes
        One line per defence (mean over seeds, a band of 1 s.d.), the plain
        twin of the first defence's runs dashed in grey, the drift's span
        shaded.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.plotting import plot_prequential
    >>> record = {"benchmark": "sea-mlp", "defence": "ST", "attack": "drift-concept",
    ...           "prequential_curve": [0.9, 0.7, 0.8], "prequential_curve_plain":
    ...           [0.9, 0.7, 0.8], "drift_curve": [0.0, 0.5, 1.0]}
    >>> ax = plot_prequential([record], "sea-mlp")
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['ST', 'plain training (twin)']
    """
    ax = _axes(ax, (8, 4.5))
    runs = [r for r in records if r["benchmark"] == benchmark
            and r["attack"] == "drift-concept"]
    defences = _defences(runs)

    def band(curves, **style):
        curves = 100 * np.array([c for c in curves], dtype=float)
        mean, std = curves.mean(axis=0), curves.std(axis=0)
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, mean, **style)
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.12,
                        linewidth=0)

    for index, defence in enumerate(defences):
        style = _style(index)
        band([r["prequential_curve"] for r in runs if r["defence"] == defence],
             color=style["color"], linestyle=style["linestyle"],
             linewidth=style["linewidth"], label=defence)
    if runs:
        band([r["prequential_curve_plain"] for r in runs if r["defence"] == defences[0]],
             color="grey", linestyle="--", linewidth=1.0, label="plain training (twin)")
        progress = np.mean([r["drift_curve"] for r in runs], axis=0)
        inside = np.flatnonzero((progress > 0.05) & (progress < 0.95)) + 1
        if inside.size:
            ax.axvspan(inside[0] - 0.5, inside[-1] + 0.5, color="grey", alpha=0.12,
                       linewidth=0, gid="drift")
    ax.set_xlabel("batch of the drifting stream (fed in order)")
    ax.set_ylabel("prequential accuracy (%)")
    ax.set_title(f"{benchmark}: accuracy along the concept drift")
    ax.legend(title="mean ± 1 s.d.", fontsize="small", title_fontsize="small", **_OUTSIDE)
    return ax


def _discrepancies(records, benchmark, defence):
    runs = [r for r in _attacked(records, benchmark) if r["defence"] == defence]
    clean = np.concatenate([r["discrepancy_clean"] for r in runs] or [[]]).astype(float)
    poison = np.concatenate([r["discrepancy_poison"] for r in runs] or [[]]).astype(float)
    return runs, clean, poison


def _log_bins(values, n_bins=40):
    values = values[values > 0]
    if values.size == 0:
        return np.logspace(-8, 0, n_bins + 1)
    low, high = values.min(), values.max()
    if high <= low:
        low, high = low / 2, high * 2
    return np.logspace(np.log10(low), np.log10(high), n_bins + 1)


def plot_discrepancy(records, benchmark, defence="ST", ax=None, bins=None, legend=True):
    """Histograms of the discrepancy of clean and poisoned samples, one defence.

    Both are measured on the defence's own model, in the same state, just
    before each poisoned batch is fed. Each histogram is in % of its own
    samples (it sums to 100), on log-spaced bins; a discrepancy of exactly 0
    cannot be drawn on the log axis and is counted in the legend instead.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    defence : str, default="ST"
        Whose model to draw (plain training shows the undefended model).
    ax : matplotlib Axes, default=None
    bins : array-like, default=None
        Bin edges; ``None`` spans this defence's values with 40 log bins.
    legend : bool, default=True
        Draw the legend (clean, poisoned, with their counts) beside the
        axes; ``False`` gives the counts in the title instead.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> from dsc_sklearn.evaluation.plotting import plot_discrepancy
    >>> record = {"benchmark": "digits-mlp", "defence": "ST", "attack": "accumulative",
    ...           "discrepancy_clean": [0.01, 0.02, 0.0], "discrepancy_poison": [0.05],
    ...           "auc_discrepancy_sample": 0.9}
    >>> ax = plot_discrepancy([record], "digits-mlp")
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['clean (n=3, 1 at 0)', 'poisoned (n=1)']
    """
    ax = _axes(ax, (7, 4))
    runs, clean, poison = _discrepancies(records, benchmark, defence)
    bins = _log_bins(np.r_[clean, poison]) if bins is None else bins
    counts = []
    for values, name, colour in ((clean, "clean", "tab:blue"), (poison, "poisoned", "tab:red")):
        shown = values[values > 0]
        count = f"n={values.size}"
        count += f", {values.size - shown.size} at 0" if shown.size < values.size else ""
        label = f"{name} ({count})"
        counts.append(f"{name} {count}")
        weights = np.full(shown.size, 100.0 / max(values.size, 1))
        ax.hist(shown, bins=bins, weights=weights, histtype="stepfilled", alpha=0.3,
                color=colour)
        ax.hist(shown, bins=bins, weights=weights, histtype="step", linewidth=1.5,
                color=colour, label=label)
    auc, spread = _mean_std((r.get("auc_discrepancy_sample") for r in runs), scale=1.0)
    ax.set_xscale("log")
    ax.set_xlabel("memorization discrepancy KL(p_hist ‖ p_current)")
    ax.set_ylabel("share of samples (%)")
    title = f"{defence}: " + (f"per-sample AUC {auc:.2f} ± {spread:.2f}" if runs else "no runs")
    if not legend:
        title += "\n" + ", ".join(counts)
    ax.set_title(title, fontsize="medium")
    if legend:
        ax.legend(fontsize="small", **_OUTSIDE)
    return ax


def plot_discrepancy_by_defence(records, benchmark, defences=None):
    """:func:`plot_discrepancy` for each defence's model, side by side.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    defences : sequence of str, default=None
        Whose models to draw; ``None`` draws every defence with attacked
        runs on ``benchmark``, in the records' order.

    Returns
    -------
    fig : matplotlib Figure
        One panel per defence, on the same bins and axes, and one legend.
    """
    plt = _pyplot()
    runs = _attacked(records, benchmark)
    defences = _defences(runs) if defences is None else list(defences)
    n_cols = min(3, max(len(defences), 1))
    n_rows = -(-max(len(defences), 1) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows + 0.8),
                             sharex=True, sharey=True, squeeze=False)
    everything = np.concatenate([np.r_[c, p] for _, c, p in
                                 (_discrepancies(records, benchmark, d) for d in defences)]
                                or [[]])
    bins = _log_bins(everything)
    for ax, defence in zip(axes.flat, defences):
        plot_discrepancy(records, benchmark, defence, ax=ax, bins=bins, legend=False)
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in axes.flat[len(defences):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("memorization discrepancy KL(p_hist ‖ p_current)")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of samples (%)")
    handles = axes.flat[0].get_legend_handles_labels()[0]
    fig.legend(handles, ["clean samples", "poisoned samples"], loc="lower center", ncol=2,
               frameon=False)
    fig.suptitle(f"{benchmark}: discrepancy of clean and poisoned samples, per defence")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_tradeoff(records, benchmark, ax=None, annotate=False):
    """Accuracy after the trigger against the clean-stream cost, per defence.

    One point per defence: x is the clean cost, plain training's (``ST``)
    mean clean-stream accuracy minus the defence's, in percentage points
    (NaN without ``ST`` runs); y is the accuracy after the trigger, in %.
    Error bars are one standard deviation over seeds. The dotted line
    (last in the legend) is plain training's accuracy when the attack
    started.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    ax : matplotlib Axes, default=None
    annotate : bool, default=False
        Write each defence's name beside its point, moved apart where they
        would overlap, instead of naming them in the legend beside the axes.

    Returns
    -------
    ax : matplotlib Axes
        One error bar per defence (``ax.containers``, in the records'
        order).

    Examples
    --------
    >>> from dsc_sklearn.evaluation.plotting import plot_tradeoff
    >>> records = [{"benchmark": "b", "defence": name, "attack": "accumulative",
    ...             "accuracy_burn_in": 0.9, "accuracy_clean": clean,
    ...             "accuracy_trigger": trigger}
    ...            for name, clean, trigger in (("ST", 0.95, 0.6), ("GC", 0.94, 0.9))]
    >>> ax = plot_tradeoff(records, "b")
    >>> [bar.lines[0].get_xydata().round(1).tolist() for bar in ax.containers]
    [[[0.0, 60.0]], [[1.0, 90.0]]]
    """
    ax = _axes(ax, (7, 4.5))
    runs = _attacked(records, benchmark)
    plain = [r["accuracy_clean"] for r in runs if r["defence"] == "ST"]
    baseline = np.mean(plain) if plain else np.nan
    points = []
    for index, defence in enumerate(_defences(runs)):
        mine = [r for r in runs if r["defence"] == defence]
        cost, cost_spread = _mean_std(baseline - r["accuracy_clean"] for r in mine)
        after, after_spread = _mean_std(r["accuracy_trigger"] for r in mine)
        style = _style(index)
        ax.errorbar(cost, after, xerr=cost_spread, yerr=after_spread, color=style["color"],
                    marker=style["marker"], markersize=8, capsize=3, linestyle="none",
                    label=defence)
        points.append((defence, cost, after))
    start = [r["accuracy_burn_in"] for r in runs if r["defence"] == "ST"]
    if start:
        reference = ax.axhline(100 * np.mean(start), color="grey", linestyle=":",
                               linewidth=1.0, label=_STARTED)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("clean cost (pt below plain training on the clean stream)")
    ax.set_ylabel("accuracy after the trigger (%)")
    ax.set_title(f"{benchmark}: robustness against clean cost")
    if annotate:
        _annotate_apart(ax, points)
        if start:  # the reference line alone still needs naming
            ax.legend(handles=[reference], fontsize="small", **_OUTSIDE)
    else:
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i] == _STARTED)
        ax.legend([handles[i] for i in order], [labels[i] for i in order],
                  title="mean ± 1 s.d.", fontsize="small", title_fontsize="small",
                  **_OUTSIDE)
    return ax


def _annotate_apart(ax, points):
    """Name each point beside it; a label that would overlap another moves up."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the limits, so that display coordinates hold
    renderer = fig.canvas.get_renderer()
    placed = []
    finite = [(name, x, y) for name, x, y in points if np.isfinite(x) and np.isfinite(y)]
    for name, x, y in sorted(finite, key=lambda point: point[2]):
        probe = ax.annotate(name, (x, y), xytext=(6, 0), textcoords="offset points",
                            fontsize="small", va="center")
        box = probe.get_window_extent(renderer)
        probe.remove()
        shift = 0.0
        while any(box.translated(0, shift).overlaps(other) for other in placed):
            shift += 1.1 * box.height
        placed.append(box.translated(0, shift))
        ax.annotate(name, (x, y), xytext=(6, 72 * shift / fig.dpi), textcoords="offset points",
                    fontsize="small", va="center",
                    arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5}
                    if shift else None)


def plot_drift(records, benchmark, value="accuracy_gap", ax=None):
    """Benign-drift runs: one bar per defence and drift, with error bars.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    value : {"accuracy_gap", "flagged_fraction_drift"}, default="accuracy_gap"
        Plain training's accuracy minus the defence's on the drifted test
        set (points; positive: the defence costs accuracy), or the share of
        the drifting stream's samples the defence flagged (%).
    ax : matplotlib Axes, default=None

    Returns
    -------
    ax : matplotlib Axes
        One bar container per defence, with its error bars.
    """
    labels = {"accuracy_gap": "accuracy cost (pt below plain training)",
              "flagged_fraction_drift": "clean samples flagged (%)"}
    if value not in labels:
        raise ValueError(f"value must be one of {sorted(labels)}; got {value!r}.")
    ax = _axes(ax, (7, 4))
    runs = [r for r in records if r["benchmark"] == benchmark
            and r["attack"].startswith("drift-")]
    drifts = list(dict.fromkeys(r["attack"] for r in runs))
    defences = _defences(runs)
    width = 0.8 / max(len(defences), 1)
    for index, defence in enumerate(defences):
        stats = [_mean_std(r[value] for r in runs
                           if r["defence"] == defence and r["attack"] == drift)
                 for drift in drifts]
        x = np.arange(len(drifts)) + (index - (len(defences) - 1) / 2) * width
        ax.bar(x, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=2,
               color=_style(index)["color"], label=defence)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(np.arange(len(drifts)), [d[len("drift-"):] for d in drifts])
    ax.set_xlabel("drift of the clean stream")
    ax.set_ylabel(labels[value])
    return ax


def _drift_figure(records, benchmark):
    plt = _pyplot()
    fig, (gap, flagged) = plt.subplots(1, 2, figsize=(11, 4))
    plot_drift(records, benchmark, "accuracy_gap", ax=gap)
    plot_drift(records, benchmark, "flagged_fraction_drift", ax=flagged)
    flagged.legend(title="mean ± 1 s.d.", fontsize="small", title_fontsize="small",
                   **_OUTSIDE)
    fig.suptitle(f"{benchmark}: what each defence costs on clean, drifting streams")
    return fig


def plot_benchmark(records, output_dir):
    """Write the figures of every benchmark as PNG files.

    ``<benchmark>_accuracy_stream.png`` (:func:`plot_accuracy_curves`),
    ``<benchmark>_discrepancy.png`` (:func:`plot_discrepancy_by_defence`),
    ``<benchmark>_tradeoff.png`` (:func:`plot_tradeoff`) and, when the
    records hold benign-drift runs, ``<benchmark>_drift.png``
    (:func:`plot_drift`); with more than one attack,
    ``<benchmark>_attacks.png`` (:func:`plot_attack_curves`); with river's
    concept drift, ``<benchmark>_prequential.png``
    (:func:`plot_prequential`). The first three need accumulative runs.
    :data:`FIGURE_CAPTIONS` describes them.

    Parameters
    ----------
    records : list of dict
    output_dir : path-like
        An existing directory.

    Returns
    -------
    paths : list of pathlib.Path
    """
    plt = _pyplot()
    output_dir = Path(output_dir)
    paths = []
    for benchmark in dict.fromkeys(r["benchmark"] for r in records):
        figures = {}
        if _attacked(records, benchmark):
            figures = {
                "accuracy_stream": plot_accuracy_curves(records, benchmark).figure,
                "discrepancy": plot_discrepancy_by_defence(records, benchmark),
                "tradeoff": plot_tradeoff(records, benchmark).figure,
            }
        kinds = {r["attack"] for r in records if r["benchmark"] == benchmark}
        if any(kind.startswith("drift-") and kind != "drift-concept" for kind in kinds):
            figures["drift"] = _drift_figure(records, benchmark)
        if len(_plotted_attacks(records, benchmark)) > 1:
            figures["attacks"] = plot_attack_curves(records, benchmark)
        if "drift-concept" in kinds:
            figures["prequential"] = plot_prequential(records, benchmark).figure
        for kind, fig in figures.items():
            path = output_dir / f"{benchmark}_{kind}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
    return paths
