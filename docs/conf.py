"""Sphinx configuration of the dsc_sklearn documentation.

Build with warnings as errors, from the repository root::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is downloaded at build time: no intersphinx, no remote images.
The examples gallery runs ``examples/plot_*.py`` and the user guide's
figures run ``docs/user_guide/figures/*.py`` (matplotlib's plot directive).
"""

import os
import sys
from pathlib import Path

import torch

import dsc_sklearn

DOCS = Path(__file__).resolve().parent
# Helpers of the build itself (the gallery's reading order, the figure checks).
sys.path.insert(0, str(DOCS / "sphinxext"))
os.environ.setdefault("MPLBACKEND", "Agg")
# The examples and figures train small models: one torch thread is as fast as
# two, and does not fight the other pytest worker when the test suite builds
# the docs (two competing thread pools made the gallery several times slower).
torch.set_num_threads(1)

# -- Project ---------------------------------------------------------------

project = "dsc-sklearn"
author = "dsc_sklearn developers"
copyright = f"2026, {author}"
release = dsc_sklearn.__version__
version = ".".join(release.split(".")[:2])

# -- General ---------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",
    # Every figure saved must show data, and a RuntimeWarning is an error.
    "figure_checks",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
]
default_role = "literal"
# "fit", not "DiscrepancyAwareOnlineClassifier.fit", in the page tables of contents.
toc_object_entries_show_parents = "hide"

# -- The measured pages ---------------------------------------------------
# Markdown pages written from measurements sit at the top of docs/ (results.md,
# performance.md, ...). setup() lists them in the index's "Measured results"
# toctree, so that a new page is in the site without editing anything here.

#: Markdown pages written from measurements, in reading order; any other
#: ``docs/*.md`` page follows them.
MEASURED_PAGES = ("results", "performance", "reliability", "ablations")
_PLACEHOLDER = ".. measured-pages-toctree"


def measured_pages():
    """The top-level markdown pages of docs/, known ones first."""
    present = {path.stem for path in DOCS.glob("*.md")}
    known = [name for name in MEASURED_PAGES if name in present]
    return known + sorted(present - set(known))


suppress_warnings = [
    # The measured pages may start at a second-level heading.
    "myst.header",
]
# Links to a heading of a markdown page (``results.md#the-table``) work as on
# GitHub.
myst_heading_anchors = 3

# -- autodoc, autosummary, numpydoc ----------------------------------------

autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- matplotlib plot directive (user guide figures) -------------------------

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.figsize": (7.0, 3.6), "figure.autolayout": True}
plot_apply_rcparams = True

# -- sphinx-gallery (examples) ------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("dsc_sklearn",),
    "download_all_examples": False,
    # The running times are on each example's page; no sg_execution_times.rst
    # in the source tree.
    "write_computation_times": False,
}

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"dsc-sklearn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 4,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# Single pages have no section to navigate: no left sidebar.
html_sidebars = {
    name: [] for name in ["index", "install", "changes", "contributing", *measured_pages()]
}
html_show_sourcelink = False
html_static_path = []

def _insert_measured_toctree(app, docname, source):
    """Replace the placeholder in the index with a toctree of what exists."""
    if docname != root_doc or _PLACEHOLDER not in source[0]:
        return
    pages = measured_pages()
    toctree = (
        ".. toctree::\n   :maxdepth: 1\n   :caption: Measured results\n\n"
        + "".join(f"   {name}\n" for name in pages)
        if pages
        else ""
    )
    source[0] = source[0].replace(_PLACEHOLDER, toctree)


def _always_reread_index(app, env, added, changed, removed):
    """Re-read the index at every build: the measured pages may have changed."""
    return [root_doc]


def _inherited_scikit_learn_reference(app, env, node, contnode):
    """Render references of inherited scikit-learn docstrings as plain text.

    ``get_params``, ``score``, ``set_output`` and the metadata-routing
    methods come from scikit-learn with references to scikit-learn's own
    documentation, which this build does not download (no intersphinx).
    Every other unresolved reference still fails the build.
    """
    source = node
    while source is not None and not source.source:  # inline nodes have no source
        source = source.parent
    if source is not None and "docstring of sklearn." in source.source:
        return contnode
    return None


def _skip_river_members(app, what, name, obj, skip, options):
    """Leave out the methods a class inherits from river (``clone``, ``mutate``, ...).

    Their docstrings are written for river's markdown documentation, which
    docutils rejects; ``RiverClassifier`` documents every method of its API
    itself.
    """
    if (getattr(obj, "__module__", None) or "").startswith("river."):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_river_members)
    app.connect("source-read", _insert_measured_toctree)
    app.connect("env-get-outdated", _always_reread_index)
    app.connect("missing-reference", _inherited_scikit_learn_reference)
