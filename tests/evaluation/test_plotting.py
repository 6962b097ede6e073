"""The benchmark's figures, checked through the Figure objects (no image comparison)."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402

from dsc_sklearn.evaluation.plotting import (  # noqa: E402
    FIGURE_CAPTIONS,
    _pyplot,
    plot_accuracy_curves,
    plot_attack_curves,
    plot_benchmark,
    plot_discrepancy,
    plot_discrepancy_by_defence,
    plot_drift,
    plot_prequential,
    plot_tradeoff,
)


def _record(defence, seed, clean, trigger, benchmark="digits-mlp", attack="accumulative",
            curve=(0.85,)):
    rng = np.random.default_rng(seed)
    return {
        "benchmark": benchmark, "defence": defence, "attack": attack, "seed": seed,
        "accuracy_burn_in": 0.9, "accuracy_clean": clean, "accuracy_trigger": trigger,
        "accuracy_curve": [*curve, trigger],
        "discrepancy_clean": rng.exponential(0.01, 50).tolist(),
        "discrepancy_poison": rng.exponential(0.02, 20).tolist(),
        "auc_discrepancy_sample": 0.6,
    }


def _drift(defence, seed, kind, gap, flagged):
    return {"benchmark": "digits-mlp", "defence": defence, "attack": f"drift-{kind}",
            "seed": seed, "accuracy_gap": gap, "flagged_fraction_drift": flagged}


@pytest.fixture
def records():
    return [
        _record("ST", 0, clean=0.95, trigger=0.60),
        _record("ST", 1, clean=0.93, trigger=0.62, curve=(0.88, 0.86, 0.80)),
        _record("GC", 0, clean=0.92, trigger=0.90),
        _record("GC", 1, clean=0.92, trigger=0.92),
        _record("ST", 0, clean=0.95, trigger=0.95, attack="noise"),  # not an attack run
        _record("ST", 0, clean=0.50, trigger=0.10, benchmark="digits-cnn"),
        _drift("ST", 0, "noise", 0.0, 0.0),
        _drift("GC", 0, "noise", 0.02, 0.0),
        _drift("GC", 1, "noise", 0.04, 0.0),
        _drift("GC", 0, "translation", 0.5, 0.1),
    ]


@pytest.fixture
def plt():
    plt = _pyplot()
    yield plt
    plt.close("all")


def _legend(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _outside(fig, legend, ax):
    """The legend's box and the axes' box do not overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_accuracy_curves_show_mean_band_and_trigger_per_defence(records, plt):
    ax = plot_accuracy_curves(records, "digits-mlp")
    assert _legend(ax) == ["ST", "GC", "stealth stop (a seed)"]
    assert "mean ± 1 s.d." in ax.get_legend().get_title().get_text()
    assert ax.get_ylabel() == "test accuracy (%)"
    # One mean line per defence, in percent; ST's seeds stop at different batches,
    # so the mean runs over the seeds still streaming.
    st, gc = (line for line in ax.lines if line.get_label() in ("ST", "GC"))
    np.testing.assert_allclose(st.get_ydata(), [90.0, 86.5, 86.0, 80.0])
    np.testing.assert_allclose(gc.get_ydata(), [90.0, 85.0])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one band per defence
    # The trigger: a marked line, then one error bar per defence right of it.
    trigger = [line for line in ax.lines if line.get_gid() == "trigger"]
    assert len(trigger) == 1
    bars = _errorbars(ax)
    assert len(bars) == 2
    (x_st, y_st), = bars[0].lines[0].get_xydata()
    (x_gc, y_gc), = bars[1].lines[0].get_xydata()
    assert (y_st, y_gc) == pytest.approx((61.0, 91.0))
    # Without stealth_stop in the records, a stream shorter than the longest stopped
    # early: a cross where each such seed's stream ended.
    crosses = [line.get_xydata().tolist() for line in ax.lines
               if line.get_gid() == "stealth stop"]
    assert crosses == [[[1.0, 85.0]], [[1.0, 85.0], [1.0, 85.0]]]
    assert trigger[0].get_xdata()[0] < x_st < x_gc  # apart, never on top of each other
    assert ax.get_xlim()[1] > x_gc
    assert "after\ntrigger" in [t.get_text() for t in ax.get_xticklabels()]
    assert _outside(ax.figure, ax.get_legend(), ax)


def test_the_stealth_stop_is_marked_where_the_records_say(records, plt):
    for record in records:
        record["stealth_stop"] = float(record["defence"] == "ST" and record["seed"] == 1)
    ax = plot_accuracy_curves(records, "digits-mlp")
    crosses = [line.get_xydata().tolist() for line in ax.lines
               if line.get_gid() == "stealth stop"]
    assert crosses == [[[3.0, 80.0]]]
    for record in records:
        record["stealth_stop"] = 0.0
    assert _legend(plot_accuracy_curves(records, "digits-mlp")) == ["ST", "GC"]


def test_accuracy_curves_of_identical_defences_stay_distinguishable(records, plt):
    twins = records + [dict(r, defence="twin") for r in records if r["defence"] == "ST"]
    ax = plot_accuracy_curves(twins, "digits-mlp")
    st, twin = (line for line in ax.lines if line.get_label() in ("ST", "twin"))
    np.testing.assert_allclose(st.get_ydata(), twin.get_ydata())
    assert st.get_linestyle() != twin.get_linestyle()
    assert st.get_linewidth() > twin.get_linewidth()  # the one below shows around the other
    assert st.get_marker() != twin.get_marker()


def test_discrepancy_histograms_count_every_sample_in_percent(records, plt):
    ax = plot_discrepancy(records, "digits-mlp")
    assert _legend(ax) == ["clean (n=100)", "poisoned (n=40)"]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "share of samples (%)"
    assert ax.get_title() == "ST: per-sample AUC 0.60 ± 0.00"
    heights = [sum(patch.get_height() for patch in container)
               for container in ax.containers if isinstance(container, BarContainer)]
    assert heights == [] or np.allclose(heights, 100.0)
    for patch in ax.patches[::2]:  # the filled histograms, each summing to 100 %
        path = patch.get_path().vertices
        assert path[:, 1].max() <= 100.0


def test_discrepancy_zeros_are_counted_not_drawn(plt):
    record = _record("ST", 0, clean=0.9, trigger=0.5)
    record["discrepancy_clean"] = [0.0, 0.0, 0.01]
    ax = plot_discrepancy([record], "digits-mlp")
    assert _legend(ax)[0] == "clean (n=3, 2 at 0)"


def test_discrepancy_by_defence_draws_each_defended_model(records, plt):
    fig = plot_discrepancy_by_defence(records, "digits-mlp")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["ST", "GC"]
    assert all("clean n=" in ax.get_title() and "poisoned n=" in ax.get_title()
               for ax in panels)
    assert panels[0].get_xlim() == panels[1].get_xlim()  # the same bins and axes
    assert panels[0].get_ylabel() == "share of samples (%)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "clean samples", "poisoned samples"]


def test_tradeoff_has_error_bars_and_one_legend_entry_per_defence(records, plt):
    ax = plot_tradeoff(records, "digits-mlp")
    assert _legend(ax) == ["ST", "GC", "ST when the attack started"]
    bars = _errorbars(ax)
    # Cost against plain training's mean clean accuracy (94 %), in points.
    points = np.concatenate([bar.lines[0].get_xydata() for bar in bars])
    np.testing.assert_allclose(points, [[0.0, 61.0], [2.0, 91.0]], atol=1e-9)
    assert all(bar.has_xerr and bar.has_yerr for bar in bars)
    x_error = bars[0].lines[2][0].get_segments()[0]
    np.testing.assert_allclose(x_error[:, 0], [-1.0, 1.0])  # ST's clean accuracy ± 1 pt
    assert ax.get_xlabel().startswith("clean cost (pt")
    assert ax.get_ylabel() == "accuracy after the trigger (%)"
    assert _outside(ax.figure, ax.get_legend(), ax)


def test_tradeoff_labels_never_overlap(plt):
    # Four defences on nearly the same spot.
    records = [_record(name, 0, clean=0.92 + i * 1e-4, trigger=0.6 + i * 1e-4)
               for i, name in enumerate(["ST", "DSC-default", "DSC-paper", "GC"])]
    ax = plot_tradeoff(records, "digits-mlp", ax=plt.subplots()[1], annotate=True)
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["ST", "DSC-default", "DSC-paper", "GC"])
    renderer = ax.figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in ax.texts]
    for i, box in enumerate(boxes):
        for other in boxes[i + 1:]:
            assert not box.overlaps(other)


def test_tradeoff_without_plain_training_has_no_cost(records, plt):
    ax = plot_tradeoff([r for r in records if r["defence"] == "GC"], "digits-mlp")
    assert np.isnan(_errorbars(ax)[0].lines[0].get_xydata()[0, 0])
    assert _legend(ax) == ["GC"]


def test_drift_bars_with_error_bars(records, plt):
    ax = plot_drift(records, "digits-mlp")
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [bar.get_label() for bar in bars] == ["ST", "GC"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["noise", "translation"]
    gc = [patch.get_height() for patch in bars[1]]
    np.testing.assert_allclose(gc, [3.0, 50.0])  # points
    assert all(bar.errorbar is not None for bar in bars)
    assert ax.get_ylabel() == "accuracy cost (pt below plain training)"
    flagged = plot_drift(records, "digits-mlp", "flagged_fraction_drift")
    assert flagged.get_ylabel() == "clean samples flagged (%)"
    with pytest.raises(ValueError, match="value must be one of"):
        plot_drift(records, "digits-mlp", "loss")


def test_plot_benchmark_writes_each_figure_with_a_caption(records, tmp_path):
    paths = plot_benchmark(records, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        [f"{b}_{kind}.png" for b in ("digits-mlp", "digits-cnn")
         for kind in ("accuracy_stream", "discrepancy", "tradeoff")] + ["digits-mlp_drift.png"])
    assert all(p.stat().st_size > 1000 for p in paths)
    assert set(FIGURE_CAPTIONS) == {"accuracy_stream", "discrepancy", "tradeoff", "drift",
                                    "attacks", "prequential"}


def _concept(defence, seed, shift):
    curve = [0.9, 0.9, 0.6 + shift, 0.7 + shift, 0.8]
    return {"benchmark": "sea-mlp", "defence": defence, "attack": "drift-concept",
            "seed": seed, "prequential_curve": curve,
            "prequential_curve_plain": [0.9, 0.9, 0.6, 0.7, 0.8],
            "drift_curve": [0.0, 0.02, 0.5, 0.98, 1.0], "accuracy_gap": 0.0}


def test_attack_curves_one_panel_per_attack_and_the_multi_batch_trigger(records, plt):
    records = records + [
        dict(_record(d, 0, clean=0.9, trigger=0.5, attack="multi_trigger",
                     curve=(0.85, 0.8, 0.7, 0.6)), n_trigger_batches=2)
        for d in ("ST", "GC")]
    fig = plot_attack_curves(records, "digits-mlp")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["accumulative", "multi_trigger"]  # not the noise baseline
    multi = fig.axes[1]
    # Five entries, the last two after trigger batches: the line is the attack's
    # start and the three stream batches.
    assert len(multi.get_lines()[0].get_xdata()) == 4
    assert [t.get_text() for t in multi.get_legend().get_texts()] == ["ST", "GC"]
    plt.close(fig)


def test_prequential_plot_marks_the_drift_and_the_plain_twin(plt):
    records = [_concept("ST", 0, 0.0), _concept("DSC-default", 0, 0.1),
               _concept("DSC-default", 1, 0.0)]
    ax = plot_prequential(records, "sea-mlp")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "ST", "DSC-default", "plain training (twin)"]
    assert ax.get_ylabel() == "prequential accuracy (%)"
    span, = [p for p in ax.patches if p.get_gid() == "drift"]
    assert span.get_x() == pytest.approx(2.5)  # batches 3 and 4 are inside the drift
    plt.close(ax.figure)


def test_plot_benchmark_writes_the_new_figures(records, tmp_path):
    records = records + [
        _record("ST", 0, clean=0.9, trigger=0.5, attack="guard_aware"),
        _concept("ST", 0, 0.0)]
    names = {p.name for p in plot_benchmark(records, tmp_path)}
    assert {"digits-mlp_attacks.png", "sea-mlp_prequential.png"} <= names
    assert "sea-mlp_accuracy_stream.png" not in names  # no attack ran there
