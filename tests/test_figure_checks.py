"""The documentation build fails on a figure that shows nothing (docs/sphinxext/figure_checks.py)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

plt = pytest.importorskip("matplotlib.pyplot")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "sphinxext"))
import figure_checks  # noqa: E402


@pytest.fixture
def fig():
    figure, _ = plt.subplots(1, 2)
    yield figure
    plt.close(figure)


def test_a_figure_with_data_passes(fig):
    left, right = fig.axes
    left.plot([1, 2, np.nan], [3, 4, 5])
    right.fill_between([0, 1], [0, 0], [1, 1])
    assert figure_checks.empty_axes(fig) == []
    figure_checks.check_figure(fig)


def test_empty_or_all_nan_axes_are_found(fig):
    left, right = fig.axes
    left.plot([], [])
    left.set_title("thresholds")
    right.plot([1.0, 2.0], [np.nan, np.nan])
    right.set_ylabel("KL")
    assert figure_checks.empty_axes(fig) == ["'thresholds'", "'KL'"]
    with pytest.raises(figure_checks.EmptyFigureError, match="2 axis/axes"):
        figure_checks.check_figure(fig)
    right.axis("off")  # a diagram's hidden axis is not checked
    assert figure_checks.empty_axes(fig) == ["'thresholds'"]


@pytest.mark.slow
@pytest.mark.parametrize("script, message", [
    ("ax.plot([], [])", "EmptyFigureError"),
    ("ax.plot([1, 2], [np.float64(0.0) / np.float64(0.0), 1.0])", "RuntimeWarning"),
])
def test_the_docs_build_fails_on_an_empty_figure_or_a_runtime_warning(
        tmp_path, script, message):
    """A two-file Sphinx project with the extension, built with -W as the docs are."""
    pytest.importorskip("sphinx")
    (tmp_path / "conf.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "docs" / "sphinxext")!r})
        extensions = ["matplotlib.sphinxext.plot_directive", "figure_checks"]
        plot_formats = [("png", 50)]
    """))
    (tmp_path / "index.rst").write_text(textwrap.dedent(f"""
        Page
        ====

        .. plot::

           import numpy as np
           import matplotlib.pyplot as plt
           fig, ax = plt.subplots()
           {script}
    """))
    command = [sys.executable, "-m", "sphinx", "-W", "-b", "html", "-q",
               str(tmp_path), str(tmp_path / "html")]
    build = subprocess.run(command, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "MPLBACKEND": "Agg"})
    assert build.returncode != 0
    assert message in build.stderr + build.stdout


def test_the_documentation_uses_the_checks():
    assert '"figure_checks"' in (ROOT / "docs" / "conf.py").read_text()

