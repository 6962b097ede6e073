"""pytest configuration of the benchmark suites.

The suites live in ``bench_*.py`` files, which pytest does not collect by
default, so that a plain ``pytest`` (``testpaths`` are ``tests`` and
``dsc_sklearn``) never runs them. Run them with::

    python -m pytest benchmarks                        # timed, pytest-benchmark
    python -m pytest benchmarks --benchmark-disable    # each body once
    DSC_BENCH_QUICK=1 python -m pytest benchmarks --benchmark-disable  # tiny

``tests/test_benchmarks_smoke.py`` runs the last command.
"""

import sys
from pathlib import Path

import pytest

# The suites import the shared workloads as a top-level module.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` as test modules."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
