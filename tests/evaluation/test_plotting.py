import numpy as np
import pytest

pytest.importorskip("matplotlib")

from dsc_sklearn.evaluation.plotting import (  # noqa: E402
    _pyplot,
    plot_accuracy_curves,
    plot_benchmark,
    plot_discrepancy,
    plot_tradeoff,
)


def _record(defence, seed, clean, trigger, benchmark="digits-mlp", attack="accumulative"):
    rng = np.random.default_rng(seed)
    return {
        "benchmark": benchmark, "defence": defence, "attack": attack, "seed": seed,
        "accuracy_burn_in": 0.9, "accuracy_clean": clean, "accuracy_trigger": trigger,
        "accuracy_curve": [0.9, 0.85, trigger],
        "discrepancy_clean": rng.exponential(0.01, 50).tolist(),
        "discrepancy_poison": rng.exponential(0.02, 20).tolist(),
    }


@pytest.fixture
def records():
    return [
        _record("ST", 0, clean=0.95, trigger=0.60),
        _record("ST", 1, clean=0.93, trigger=0.62),
        _record("GC", 0, clean=0.92, trigger=0.90),
        _record("GC", 1, clean=0.92, trigger=0.92),
        _record("ST", 0, clean=0.95, trigger=0.95, attack="noise"),  # not an attack run
        _record("ST", 0, clean=0.50, trigger=0.10, benchmark="digits-cnn"),
    ]


@pytest.fixture
def plt():
    plt = _pyplot()
    yield plt
    plt.close("all")


def _points(ax):
    return np.concatenate([collection.get_offsets() for collection in ax.collections])


@pytest.mark.parametrize("annotate", [True, False])
def test_tradeoff_places_one_point_per_defence(records, plt, annotate):
    ax = plot_tradeoff(records, "digits-mlp", ax=plt.subplots()[1], annotate=annotate)
    # Cost against plain training's mean clean accuracy (94 %), in points.
    np.testing.assert_allclose(_points(ax), [[0.0, 61.0], [2.0, 91.0]])
    names = [text.get_text() for text in ax.texts]
    legend = ax.get_legend()
    if annotate:
        assert names == ["ST", "GC"] and legend is None
    else:
        assert names == [] and [t.get_text() for t in legend.get_texts()] == ["ST", "GC"]
        first, second = (c.get_paths()[0].vertices for c in ax.collections)
        assert first.shape != second.shape or not np.allclose(first, second)  # own markers


def test_tradeoff_without_plain_training_has_no_cost(records, plt):
    ax = plot_tradeoff([r for r in records if r["defence"] == "GC"], "digits-mlp",
                       ax=plt.subplots()[1])
    assert np.isnan(_points(ax)[0, 0])


def test_accuracy_curves_draw_one_line_per_seed(records, plt):
    ax = plot_accuracy_curves(records, "digits-mlp", ax=plt.subplots()[1])
    assert len(ax.lines) == 4
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.9, 0.9, 0.85, 0.60])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ST", "GC"]


def test_discrepancy_histograms_count_every_sample(records, plt):
    ax = plot_discrepancy(records, "digits-mlp", ax=plt.subplots()[1])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["clean (n=100)", "poisoned (n=40)"]
    assert ax.get_xscale() == "log"


def test_plot_benchmark_writes_three_pngs_per_benchmark(records, tmp_path):
    paths = plot_benchmark(records, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"{b}_{kind}.png" for b in ("digits-mlp", "digits-cnn")
        for kind in ("accuracy_stream", "discrepancy", "tradeoff")
    )
    assert all(p.stat().st_size > 1000 for p in paths)
