"""Fail the documentation build on a figure that shows nothing.

The user guide's Thresholds figure once rendered as empty axes (every row
of its data dropped on NaN columns that a new log field added) and the build
passed. This Sphinx extension makes two such failures errors:

- a **RuntimeWarning** while the build runs (a division by zero, the mean
  of an empty slice: the usual trace of an empty selection) is raised as an
  exception, so the figure script or example that caused it fails;
- a figure saved with an **empty axis**, one that is shown (its axis is on)
  yet holds no finite data point, image, patch or filled area, raises
  :class:`EmptyFigureError` from ``savefig``.

Both reach the build as errors: matplotlib's plot directive reports an
exception while saving as a warning, which ``-W`` turns into an error, and
sphinx-gallery fails on an exception in an example or its image scraper.
"""

import warnings

import numpy as np
from matplotlib.figure import Figure

__all__ = ["EmptyFigureError", "check_figure", "empty_axes", "setup"]


class EmptyFigureError(ValueError):
    """A figure about to be saved has an axis that shows no data."""


def _has_data(ax):
    for line in ax.lines:
        xy = np.asarray(line.get_xydata(), dtype=float)
        if xy.size and np.isfinite(xy).all(axis=1).any():
            return True
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), dtype=float)
        if offsets.size and np.isfinite(offsets).all(axis=1).any():
            return True
        if any(len(path.vertices) and np.isfinite(path.vertices).all()
               for path in collection.get_paths()):
            return True
    return bool(ax.patches or ax.images or ax.tables)


def empty_axes(fig):
    """The axes of ``fig`` that are shown but hold no data.

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    axes : list of str
        A description (title, labels) of each empty axis; axes switched off
        (``ax.axis("off")``, e.g. for a diagram) are not checked.
    """
    found = []
    for ax in fig.axes:
        if ax.axison and not _has_data(ax):
            name = ax.get_title() or ax.get_ylabel() or ax.get_xlabel() or "untitled"
            found.append(repr(name))
    return found


def check_figure(fig):
    """Raise :class:`EmptyFigureError` when ``fig`` has an empty axis."""
    empty = empty_axes(fig)
    if empty:
        raise EmptyFigureError(
            f"The figure has {len(empty)} axis/axes with no finite data to show "
            f"({', '.join(empty)}): the data behind it are empty or all NaN."
        )


_savefig = Figure.savefig


def _checked_savefig(self, *args, **kwargs):
    check_figure(self)
    return _savefig(self, *args, **kwargs)


def setup(app):
    """Check every figure saved during the build, and raise on RuntimeWarning."""
    Figure.savefig = _checked_savefig
    warnings.filterwarnings("error", category=RuntimeWarning)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
