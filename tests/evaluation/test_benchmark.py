"""Tests for the benchmark suite, its table, plots and the CLI."""

import json

import pytest

from dsc_sklearn.evaluation.benchmark import (
    BENCHMARKS,
    DEFENCES,
    drift_table,
    make_defence,
    results_table,
    run_benchmark,
)
from dsc_sklearn.evaluation.cli import main
from dsc_sklearn.defence.modules import SmallCNN

FAST = dict(max_steps=2, burn_in_epochs=1, defence_warmup=1)


def test_every_defence_and_benchmark_builds():
    for benchmark in BENCHMARKS:
        for defence in DEFENCES:
            assert make_defence(defence, benchmark).get_params()
    assert make_defence("DSC-paper", "digits-mlp").granularity == "batch"
    assert make_defence("ST", "mnist1d-cnn").input_bounds is None
    assert make_defence("ST", "digits-cnn").module.func is SmallCNN


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown defence"):
        make_defence("magic", "digits-mlp")
    with pytest.raises(ValueError, match="Unknown benchmark"):
        run_benchmark(["cifar"], ["ST"], [0])


def test_run_benchmark_records_and_table():
    records = run_benchmark(["digits-cnn"], ["ST", "DSC-default"], [0], progress=False,
                            n_jobs=2, drifts=(), **FAST)
    # ST also runs the noise and trigger-only baselines of the attack.
    assert sorted((r["defence"], r["attack"]) for r in records) == [
        ("DSC-default", "accumulative"), ("ST", "accumulative"), ("ST", "noise"),
        ("ST", "trigger_only")]
    json.dumps(records)  # JSON-serialisable
    table = results_table(records)
    assert table.count("\n| digits-cnn |") == 4
    assert "after trigger" in table


def test_drift_runs_and_table():
    variants = {"plain": {"correction": "none"}, "gated": {"threshold": 0.0}}
    records = run_benchmark(["digits-mlp"], variants, [0], progress=False,
                            drifts=("brightness",), **FAST)
    drift = [r for r in records if r["attack"] == "drift-brightness"]
    assert {r["defence"] for r in drift} == {"plain", "gated"}
    plain = next(r for r in drift if r["defence"] == "plain")
    assert plain["accuracy_gap"] == 0.0  # plain training is its own twin
    assert plain["flagged_fraction_drift"] == 0.0
    table = drift_table(records)
    assert table.count("| brightness |") == 2
    assert "drift" not in results_table(records).split("\n", 2)[2]


def test_cli_quick_smoke(tmp_path, capsys):
    status = main(["benchmark", "--quick", "--defences", "ST", "GC", "--seeds", "1",
                   "--max-steps", "2", "--burn-in-epochs", "2", "--drifts", "translation",
                   "--output", str(tmp_path)])
    assert status == 0
    output = capsys.readouterr().out
    assert "| digits-mlp | GC | accumulative |" in output
    assert "| digits-mlp | GC | translation |" in output
    records = json.loads((tmp_path / "results.json").read_text())
    assert {r["defence"] for r in records} == {"ST", "GC"}
    assert {r["attack"] for r in records} >= {"accumulative", "drift-translation"}
    assert "dsc-sklearn benchmark" in (tmp_path / "results.md").read_text()
    for name in ("accuracy_stream", "discrepancy", "tradeoff"):
        assert (tmp_path / f"digits-mlp_{name}.png").stat().st_size > 1000


def test_cli_passes_the_protocol_options(monkeypatch):
    import dsc_sklearn.evaluation.cli as cli

    seen = {}

    def fake_run_benchmark(benchmarks, defences, seeds, **options):
        seen.update(options, benchmarks=benchmarks, seeds=seeds)
        return []

    monkeypatch.setattr(cli, "run_benchmark", fake_run_benchmark)
    monkeypatch.setattr(cli, "results_table", lambda records: "")
    main(["benchmark", "--benchmarks", "mnist1d-cnn", "--seeds", "2", "--burn-in-epochs", "60",
          "--max-steps", "7", "--drifts"])
    assert seen["burn_in_epochs"] == 60 and seen["max_steps"] == 7
    assert seen["benchmarks"] == ["mnist1d-cnn"] and seen["seeds"] == (0, 1)
    assert seen["drifts"] == ()


def test_cli_rejects_unknown_defence(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--defences", "magic"])
