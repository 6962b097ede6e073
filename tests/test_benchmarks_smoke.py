"""The benchmark suites and scripts run, once, on tiny workloads.

The suites are not part of the test run (``testpaths`` are ``tests`` and
``dsc_sklearn``); this runs each benchmark body once, with
``--benchmark-disable`` and ``DSC_BENCH_QUICK=1`` (batch 32, short warm-up),
so that CI proves they still execute. Timing them is a manual job, see
``docs/performance.md``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK_ENV = {**os.environ, "DSC_BENCH_QUICK": "1"}

pytestmark = pytest.mark.skipif(
    not (ROOT / "benchmarks" / "conftest.py").exists(), reason="no benchmarks/ folder"
)


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=QUICK_ENV, capture_output=True,
        text=True, timeout=timeout,
    )


def test_benchmark_suites_run_once():
    pytest.importorskip("pytest_benchmark")
    result = _run("-m", "pytest", "benchmarks", "--benchmark-disable", "-q",
                  "-p", "no:cacheprovider", "-x")
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert " passed" in result.stdout and "bench_partial_fit" not in result.stderr


def test_scripts_print_their_tables(tmp_path):
    # Both scripts in one interpreter: each import of torch costs seconds.
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import ratios, breakdown; "
        "ratios.main(['--modules', 'mlp', '--batch-sizes', '32', '--rounds', '1', "
        "'--calls', '1', '--batches-per-call', '1', '--history-size', '2', "
        f"'--json', {str(tmp_path / 'ratios.json')!r}]); "
        "ratios.main(['--modules', 'resnet', '--device', 'cpu', '--batch-sizes', '32', "
        "'--cases', 'raw', 'none', 'dsc-without-flags', '--rounds', '1', '--calls', '1', "
        "'--batches-per-call', '1', '--skip-snapshots']); "
        "breakdown.main(['--batch-size', '32', '--rounds', '1'])"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "none/raw" in result.stdout and "2/1 vmapped" in result.stdout
    assert "| resnet | 32 |" in result.stdout and "none samples/s" in result.stdout
    assert "device: cpu" in result.stdout
    assert "16 snapshots" in result.stdout
    assert (tmp_path / "ratios.json").exists()


def test_reimplementations_script_prints_its_table():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import reimplementations; "
            "reimplementations.main(['--batch-sizes', '32', '--rounds', '1'])")
    result = _run("-c", code)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "| window quantile, partial_fit dsc-auto | 32 |" in result.stdout
    assert "| validation, alone | 32 |" in result.stdout
