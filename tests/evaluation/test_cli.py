"""The ``dsc-sklearn`` command: its help, its checks, and what it runs and writes."""

import base64
import json
import re
import subprocess
import sys

import pytest
from joblib import cpu_count

import dsc_sklearn.evaluation.benchmark as benchmark
from dsc_sklearn.evaluation.cli import _parser, main


def test_importing_the_command_imports_nothing_heavy():
    code = ("import sys; import dsc_sklearn.evaluation.cli; "
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'joblib', 'skorch') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_no_command_prints_the_help(capsys):
    assert main([]) == 0
    output = capsys.readouterr().out
    assert output.startswith("usage: dsc-sklearn")
    assert "benchmark" in output


def test_help_documents_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: new)", "(default: 40)", "(default: 10)",
                    "(default: the usable CPU cores)", "(default: 5; 3 with --quick)",
                    "nothing is written"):
        assert default in text, default
    _, bench = _parser()
    for action in bench._actions:
        assert action.help, action.dest


def test_list_names_what_the_options_accept(capsys):
    assert main(["benchmark", "--list"]) == 0
    output = capsys.readouterr().out
    for name in [*benchmark.BENCHMARKS, *benchmark.DEFENCES]:
        assert name in output
    for name in benchmark.QUICK_DEFENCES:
        assert re.search(rf"\* {re.escape(name)}\b", output), name
    assert "translation" in output
    # Each entry says what it is, in words; no raw tuples or empty dicts.
    assert "(" + repr("digits") not in output and "{}" not in output
    assert re.search(r"digits-mlp +Scikit-learn's 8x8 handwritten digits.*; an MLP 128-128", output)
    assert re.search(r"ST +plain training, no defence\n +correction='none', step_guard=None",
                     output)
    assert re.search(r"DSC-default +the library's defaults.*\n +none: the estimator", output)
    assert "noise               Gaussian noise" in output and "(final level 0.3)" in output


@pytest.mark.parametrize("argv, message", [
    (["--defences", "magic"], "unknown name(s) 'magic'; choose from ST"),
    (["--benchmarks", "cifar"], "argument --benchmarks: unknown name(s) 'cifar'"),
    (["--drifts", "rotation"], "argument --drifts: unknown name(s) 'rotation'"),
    (["--seeds", "0"], "argument --seeds: must be at least 1"),
])
def test_bad_options_are_refused_with_what_to_do(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def fake_benchmark(monkeypatch):
    seen = {}

    def fake_run_benchmark(benchmarks, defences, seeds, **options):
        seen.update(options, benchmarks=benchmarks, defences=defences, seeds=seeds)
        return []

    monkeypatch.setattr(benchmark, "run_benchmark", fake_run_benchmark)
    return seen


def test_cli_passes_the_protocol_options(fake_benchmark, capsys):
    main(["benchmark", "--benchmarks", "mnist1d-cnn", "--seeds", "2", "--burn-in-epochs",
          "60", "--max-steps", "7", "--drifts", "--n-jobs", "3"])
    seen = fake_benchmark
    assert seen["burn_in_epochs"] == 60 and seen["max_steps"] == 7
    assert seen["benchmarks"] == ["mnist1d-cnn"] and seen["seeds"] == (0, 1)
    assert seen["drifts"] == () and seen["n_jobs"] == 3 and seen["torch_threads"] == 1
    assert seen["defences"] == list(benchmark.DEFENCES)
    assert "Nothing written: pass --output DIR" in capsys.readouterr().out


def test_quick_runs_the_quick_set_on_every_usable_core(fake_benchmark):
    main(["benchmark", "--quick"])
    seen = fake_benchmark
    assert seen["benchmarks"] == list(benchmark.QUICK_BENCHMARKS)
    assert seen["defences"] == list(benchmark.QUICK_DEFENCES)
    assert seen["drifts"] == tuple(benchmark.QUICK_DRIFTS)
    assert seen["seeds"] == (0, 1, 2)
    assert seen["n_jobs"] == cpu_count()


def test_cli_quick_smoke(tmp_path, capsys):
    status = main(["benchmark", "--quick", "--defences", "ST", "GC", "--seeds", "1",
                   "--max-steps", "2", "--burn-in-epochs", "2", "--drifts", "translation",
                   "--n-jobs", "1", "--output", str(tmp_path)])
    assert status == 0
    output = capsys.readouterr().out
    assert "| digits-mlp | GC | accumulative |" in output
    assert "| digits-mlp | GC | translation |" in output
    records = json.loads((tmp_path / "results.json").read_text())
    assert {r["defence"] for r in records} == {"ST", "GC"}
    assert {r["attack"] for r in records} >= {"accumulative", "drift-translation"}
    markdown = (tmp_path / "results.md").read_text()
    assert "`dsc-sklearn benchmark --quick --defences ST GC --seeds 1" in markdown
    assert "- **flagged trigger (%)**: " in markdown
    names = [f"digits-mlp_{kind}.png" for kind in
             ("accuracy_stream", "discrepancy", "tradeoff", "drift")]
    for name in names:
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in markdown
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(names)
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch " in page and "scikit-learn " in page and "usable CPU cores" in page
