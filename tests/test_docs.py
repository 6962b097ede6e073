"""The documentation builds with warnings as errors, examples and figures included.

One Sphinx build, in a temporary copy of ``docs/`` and ``examples/`` so that
the repository stays clean, runs every gallery example and every user-guide
figure script; the test then checks what the site holds.
"""

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = (
    "dsc_sklearn",
    "dsc_sklearn.defence.discrepancy",
    "dsc_sklearn.defence.history",
    "dsc_sklearn.defence.thresholds",
    "dsc_sklearn.defence.correction",
    "dsc_sklearn.defence.guards",
    "dsc_sklearn.defence.modules",
    "dsc_sklearn.evaluation.attacks",
    "dsc_sklearn.evaluation.datasets",
    "dsc_sklearn.evaluation.drifts",
    "dsc_sklearn.evaluation.protocol",
    "dsc_sklearn.evaluation.benchmark",
    "dsc_sklearn.evaluation.plotting",
    "dsc_sklearn.evaluation.report",
    "dsc_sklearn.integrations.river",
)
USER_GUIDE = ("threat", "discrepancy", "dsc", "history", "thresholds", "corrections",
              "step_guard", "customization")

pytestmark = pytest.mark.slow


def test_docs_build_with_warnings_as_errors(tmp_path):
    """One test, so that pytest-xdist never builds the site twice."""
    for name in ("sphinx", "numpydoc", "sphinx_gallery", "myst_parser",
                 "pydata_sphinx_theme", "matplotlib", "pandas", "river"):
        pytest.importorskip(name)
    site = _build(tmp_path)
    _check_examples(site)
    _check_api_reference(site)
    _check_user_guide_figures(site)
    _check_measured_pages(site)
    _check_nothing_is_loaded_from_the_network(site)


def _build(work):
    """Build the HTML site with ``-W`` from a copy of the sources; return its folder."""
    shutil.copytree(ROOT / "docs", work / "docs",
                    ignore=shutil.ignore_patterns("_build", "generated", "auto_examples"))
    shutil.copytree(ROOT / "examples", work / "examples")
    for name in ("CHANGES.md", "CONTRIBUTING.md"):
        shutil.copy(ROOT / name, work / name)
    html = work / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
               "-d", str(work / "doctrees"), str(work / "docs"), str(html)]
    build = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, (
        f"{' '.join(command)} failed:\n{build.stderr[-6000:]}\n{build.stdout[-3000:]}"
    )
    return html


def _check_examples(site):
    """Every example is rendered, with its figures."""
    examples = sorted((ROOT / "examples").glob("plot_*.py"))
    assert len(examples) >= 5
    for example in examples:
        page = (site / "auto_examples" / f"{example.stem}.html").read_text()
        assert f"sphx_glr_{example.stem}_001.png" in page, example.name
        assert (site / "_images" / f"sphx_glr_{example.stem}_001.png").is_file()


def _check_api_reference(site):
    """Every public name of every public module is documented."""
    for module_name in PUBLIC_MODULES:
        page = site / "generated" / f"{module_name}.html"
        assert page.is_file(), module_name
        html = page.read_text()
        for name in importlib.import_module(module_name).__all__:
            if name.startswith("__"):
                continue
            target = f"{module_name}.{name}"
            own_page = (site / "generated" / f"{target}.html").is_file()
            assert own_page or f'id="{target}"' in html, target


def _check_user_guide_figures(site):
    """Each section of the user guide shows a figure."""
    for section in USER_GUIDE:
        page = (site / "user_guide" / f"{section}.html").read_text()
        assert re.search(r'<img [^>]*src="[^"]+\.png"', page), section


def _check_measured_pages(site):
    """Every markdown page of docs/ is in the site, linked from the index."""
    index = (site / "index.html").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (site / f"{page.stem}.html").is_file(), page.name
        assert f'href="{page.stem}.html"' in index, page.name


def _check_nothing_is_loaded_from_the_network(site):
    for page in site.rglob("*.html"):
        for url in re.findall(r'<(?:img|script)[^>]+src="([^"]+)"', page.read_text()):
            assert not url.startswith(("http:", "https:", "//")), (page, url)
