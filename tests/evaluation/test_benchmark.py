"""Tests for the benchmark suite and its tables."""

import json

import numpy as np
import pytest
import torch
from sklearn.utils import Bunch

import dsc_sklearn.evaluation.benchmark as benchmark
from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.modules import SmallCNN
from dsc_sklearn.evaluation.benchmark import (
    BENCHMARKS,
    DEFENCES,
    QUICK_BENCHMARKS,
    QUICK_DEFENCES,
    QUICK_DRIFTS,
    make_defence,
    run_benchmark,
)
from dsc_sklearn.evaluation.protocol import DRIFTS
from dsc_sklearn.evaluation.report import attack_results, drift_results, learning_results

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
    # ST also runs the noise and trigger-only baselines of the attack; every
    # defence also learns from scratch.
    assert sorted((r["defence"], r["attack"]) for r in records) == [
        ("DSC-default", "accumulative"), ("DSC-default", "learning"), ("ST", "accumulative"),
        ("ST", "learning"), ("ST", "noise"), ("ST", "trigger_only")]
    json.dumps(records)  # JSON-serialisable
    table = attack_results(records).markdown()
    assert table.count("\n| digits-cnn |") == 4
    assert "after trigger" in table
    learning = learning_results(records)
    assert [row[:2] for row in learning.rows] == [["digits-cnn", "ST"],
                                                   ["digits-cnn", "DSC-default"]]
    st = next(r for r in records if r["defence"] == "ST" and r["attack"] == "learning")
    assert st["learning_cost"] == 0.0 and len(st["curve_learned"]) == 5
    assert st["scaled_fraction_learning"] is None  # no guard


def test_drift_runs_and_table():
    variants = {"plain": {"correction": "none", "step_guard": None},
                "gated": {"correction": "dsc", "threshold": 0.0, "step_guard": None}}
    records = run_benchmark(["digits-mlp"], variants, [0], progress=False,
                            drifts=("brightness",), **FAST)
    drift = [r for r in records if r["attack"] == "drift-brightness"]
    assert {r["defence"] for r in drift} == {"plain", "gated"}
    plain = next(r for r in drift if r["defence"] == "plain")
    assert plain["accuracy_gap"] == 0.0  # plain training is its own twin
    assert plain["flagged_fraction_drift"] == 0.0
    table = drift_results(records).markdown()
    assert table.count("| brightness |") == 2
    assert "drift" not in attack_results(records).markdown().split("\n", 2)[2]


def test_the_quick_set_names_rows_of_the_tables():
    assert set(QUICK_DEFENCES) <= set(DEFENCES)
    assert set(QUICK_BENCHMARKS) <= set(BENCHMARKS)
    assert set(QUICK_DRIFTS) <= set(DRIFTS)
    assert {"DSC-default", "ST", "GC", "DSC-paper"} <= set(QUICK_DEFENCES)
    assert DEFENCES["DSC-default"] == {}  # the library's defaults, whatever they are


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_each_run_uses_one_torch_thread_and_restores_the_setting(monkeypatch, threads):
    seen = []

    def fake_protocol(estimator, data, **params):
        seen.append(torch.get_num_threads())
        return Bunch(accuracy_trigger=0.5, accuracy_curve=np.array([0.9, 0.5]),
                     detection={"f1": 0.0}, auc_loss_batch=np.nan)

    monkeypatch.setattr(benchmark, "run_stream_protocol", fake_protocol)
    torch.set_num_threads(2)
    records = run_benchmark(["digits-mlp"], ["GC"], [0], drifts=(), n_jobs=1, progress=False)
    assert seen == [1]
    assert torch.get_num_threads() == 2
    assert records[0]["accuracy_curve"] == [0.9, 0.5]
    assert records[0]["auc_loss_batch"] is None  # NaN -> null in JSON
    assert records[0]["detection"] == {"f1": 0.0}
    run_benchmark(["digits-mlp"], ["GC"], [0], drifts=(), n_jobs=1, progress=False,
                  torch_threads=None)
    assert seen[-1] == 2


def test_tables_can_carry_their_legends():
    records = run_benchmark(["digits-mlp"], ["ST"], [0], progress=False, drifts=("noise",),
                            n_jobs=1, **FAST)
    attack, drift = attack_results(records).markdown(True), drift_results(records).markdown(True)
    assert "- **after trigger (%)**: " in attack and "- **clean cost (pt)**: " in attack
    assert "- **gap (pt)**: " in drift
    assert "**after trigger (%)**" not in attack_results(records).markdown()


def test_every_row_but_the_defaults_names_its_parts():
    defaults = DiscrepancyAwareOnlineClassifier().get_params()
    for name, params in DEFENCES.items():
        if name != "DSC-default":
            assert "correction" in params and "step_guard" in params, name
    plain = make_defence("ST", "digits-mlp").get_params()
    assert plain["correction"] == "none" and plain["clip_value"] is None
    assert plain["step_guard"] is None
    assert make_defence("DSC-default", "digits-mlp").get_params()["step_guard"] == \
        defaults["step_guard"]


@pytest.mark.parametrize("name, results", [("results_table", attack_results),
                                           ("drift_table", drift_results)])
def test_the_0_1_table_functions_are_deprecated_aliases(name, results):
    records = [dict(benchmark="digits-mlp", defence="ST", attack="accumulative", seed=0,
                    accuracy_trigger=0.5, accuracy_clean=0.9, accuracy_burn_in=0.9,
                    accuracy_accumulative=0.8, flagged_fraction_clean=0.0,
                    flagged_fraction_trigger=0.0, wall_time=1.0)]
    with pytest.warns(FutureWarning, match=f"{name} is deprecated.*report.{results.__name__}"):
        table = getattr(benchmark, name)(records, legend=True)
    assert table == results(records).markdown(True)
