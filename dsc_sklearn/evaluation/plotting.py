"""Plots of benchmark records (needs matplotlib: ``pip install "dsc-sklearn[plot]"``)."""

import numpy as np

__all__ = ["plot_accuracy_curves", "plot_benchmark", "plot_discrepancy", "plot_tradeoff"]


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


def _attacked(records, benchmark):
    return [r for r in records if r["attack"] == "accumulative" and r["benchmark"] == benchmark]


def plot_accuracy_curves(records, benchmark, ax=None):
    """Test accuracy after every online batch and the trigger, per defence.

    Each seed is one line; the last point of a line is the accuracy after
    the trigger, so lines of different lengths show where the attacker's
    stealth stop fired.

    Parameters
    ----------
    records : list of dict
        From :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`.
    benchmark : str
        Which benchmark to draw.
    ax : matplotlib Axes, default=None

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    defences = list(dict.fromkeys(r["defence"] for r in _attacked(records, benchmark)))
    colours = plt.get_cmap("tab10")
    for index, defence in enumerate(defences):
        for n, record in enumerate(r for r in _attacked(records, benchmark)
                                   if r["defence"] == defence):
            curve = [record["accuracy_burn_in"]] + record["accuracy_curve"]
            ax.plot(range(len(curve)), curve, color=colours(index), alpha=0.7,
                    marker="o", markevery=[len(curve) - 1],
                    label=defence if n == 0 else None)
    ax.set_xlabel("online batch (last point: after the trigger)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{benchmark}: accuracy along the attacked stream")
    ax.legend(fontsize="small")
    return ax


def plot_discrepancy(records, benchmark, defence="ST", ax=None):
    """Histogram of the discrepancy of clean and poisoned samples.

    Both are measured on the same model state, just before each attacked
    batch is fed.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    defence : str, default="ST"
        Whose runs to draw (plain training shows the undefended model).
    ax : matplotlib Axes, default=None

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    runs = [r for r in _attacked(records, benchmark) if r["defence"] == defence]
    clean = np.concatenate([r["discrepancy_clean"] for r in runs] or [[]])
    poison = np.concatenate([r["discrepancy_poison"] for r in runs] or [[]])
    floor = 1e-8
    values = np.r_[clean, poison] + floor
    bins = np.logspace(np.log10(values.min()), np.log10(values.max()), 40) if values.size else 10
    ax.hist(clean + floor, bins=bins, alpha=0.6, density=True, label=f"clean (n={clean.size})")
    ax.hist(poison + floor, bins=bins, alpha=0.6, density=True,
            label=f"poisoned (n={poison.size})")
    ax.set_xscale("log")
    ax.set_xlabel("memorization discrepancy (KL)")
    ax.set_ylabel("density")
    ax.set_title(f"{benchmark}, {defence}: clean vs poisoned samples")
    ax.legend(fontsize="small")
    return ax


def plot_tradeoff(records, benchmark, ax=None, annotate=True):
    """Accuracy after the trigger against the clean-stream cost, per defence.

    Parameters
    ----------
    records : list of dict
    benchmark : str
    ax : matplotlib Axes, default=None
    annotate : bool, default=True
        Write each defence's name next to its point; ``False`` names them in
        a legend beside the axes instead, with a distinct marker each, which
        stays readable when many points overlap.

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    runs = _attacked(records, benchmark)
    plain = [r["accuracy_clean"] for r in runs if r["defence"] == "ST"]
    baseline = np.mean(plain) if plain else np.nan
    markers = "osD^vP*Xh<>p"
    for i, defence in enumerate(dict.fromkeys(r["defence"] for r in runs)):
        mine = [r for r in runs if r["defence"] == defence]
        cost = 100 * (baseline - np.mean([r["accuracy_clean"] for r in mine]))
        attacked = 100 * np.mean([r["accuracy_trigger"] for r in mine])
        if annotate:
            ax.scatter(cost, attacked, s=50)
            ax.annotate(defence, (cost, attacked), textcoords="offset points",
                        xytext=(5, 5), fontsize="small")
        else:
            ax.scatter(cost, attacked, s=50, marker=markers[i % len(markers)],
                       label=defence, alpha=0.8)
    if not annotate:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("clean cost: points below plain training on the clean stream")
    ax.set_ylabel("accuracy after the trigger (%)")
    ax.set_title(f"{benchmark}: robustness against clean cost")
    return ax


def plot_benchmark(records, output_dir):
    """Write the three plots of every benchmark as PNG files.

    Parameters
    ----------
    records : list of dict
    output_dir : path-like

    Returns
    -------
    paths : list of pathlib.Path
    """
    from pathlib import Path

    plt = _pyplot()
    output_dir = Path(output_dir)
    paths = []
    for benchmark in dict.fromkeys(r["benchmark"] for r in records):
        for name, draw in (("accuracy_stream", plot_accuracy_curves),
                           ("discrepancy", plot_discrepancy),
                           ("tradeoff", plot_tradeoff)):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            draw(records, benchmark, ax=ax)
            fig.tight_layout()
            path = output_dir / f"{benchmark}_{name}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths
