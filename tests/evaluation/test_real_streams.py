"""River's streams as benchmarks (issue 13): the concept-drift protocol, every stream, the CLI."""

import json

import numpy as np
import pytest

pytest.importorskip("river")

from dsc_sklearn import DiscrepancyAwareOnlineClassifier  # noqa: E402
from dsc_sklearn.evaluation.benchmark import (  # noqa: E402
    BENCHMARKS,
    STREAM_BENCHMARKS,
    default_drifts,
    run_benchmark,
)
from dsc_sklearn.evaluation.cli import main  # noqa: E402
from dsc_sklearn.evaluation.datasets import (  # noqa: E402
    DRIFT_STREAMS,
    load_drift_stream,
    load_stream_dataset,
)
from dsc_sklearn.evaluation.protocol import run_concept_drift_protocol  # noqa: E402
from dsc_sklearn.evaluation.report import adaptive_results, stream_results  # noqa: E402

TINY = dict(learning=False, max_steps=1, burn_in_epochs=1, defence_warmup=1)


@pytest.fixture(scope="module")
def sea():
    return load_drift_stream("sea", n_samples=600, n_stream=500, position=250, width=100,
                             random_state=0)


def test_concept_drift_protocol_against_its_plain_twin(sea):
    plain = DiscrepancyAwareOnlineClassifier(correction="none", step_guard=None)
    result = run_concept_drift_protocol(plain, sea, burn_in_epochs=2, defence_warmup=2,
                                        random_state=0)
    assert result.accuracy_gap == 0.0 and result.prequential_gap == 0.0  # its own twin
    assert np.isnan(result.scaled_fraction_drift)
    assert len(result.prequential_curve) == len(result.drift_curve) == 5
    assert result.drift_curve[0] < 0.5 < result.drift_curve[-1]
    guarded = run_concept_drift_protocol(DiscrepancyAwareOnlineClassifier(), sea,
                                         burn_in_epochs=2, defence_warmup=2, random_state=0)
    assert 0.0 <= guarded.scaled_fraction_drift <= 1.0
    assert guarded.accuracy_plain == result.accuracy_plain  # the same twin and stream
    np.testing.assert_array_equal(guarded.prequential_curve_plain,
                                  result.prequential_curve_plain)


def test_concept_drift_protocol_needs_a_drift_stream():
    data = load_stream_dataset("phishing", random_state=0)
    with pytest.raises(ValueError, match="load_drift_stream"):
        run_concept_drift_protocol(DiscrepancyAwareOnlineClassifier(), data)


def test_the_stream_benchmarks_are_river_and_their_drifts_fit():
    assert len(STREAM_BENCHMARKS) == 9
    assert {BENCHMARKS[name][0] for name in STREAM_BENCHMARKS} >= set(DRIFT_STREAMS)
    for name in STREAM_BENCHMARKS:
        expected = ("concept",) if BENCHMARKS[name][0] in DRIFT_STREAMS else ()
        assert default_drifts(name) == expected
    assert default_drifts("digits-cnn") == ("noise", "brightness", "translation")


@pytest.mark.parametrize("name", STREAM_BENCHMARKS)
def test_every_stream_runs_the_attack_and_its_drift(name):
    records = run_benchmark([name], ["DSC-default"], [0], progress=False, **TINY)
    kinds = sorted(r["attack"] for r in records)
    drift = BENCHMARKS[name][0] in DRIFT_STREAMS
    assert kinds == (["accumulative", "drift-concept"] if drift else ["accumulative"])
    attack = next(r for r in records if r["attack"] == "accumulative")
    assert attack["n_accumulative_steps"] == 1 and attack["accuracy_trigger"] is not None
    table = stream_results(records, STREAM_BENCHMARKS).markdown()
    assert table.count(f"| {name} | DSC-default |") == 1
    assert ("drift gap (pt)" in table) == drift


def test_explicit_drifts_run_where_they_can():
    records = run_benchmark(["phishing-mlp"], ["ST"], [0], attacks=("label_flip",),
                            drifts=("concept", "noise"), progress=False, **TINY)
    # No concept drift on a fixed data set; the input noise runs anywhere.
    assert sorted(r["attack"] for r in records) == ["drift-noise", "label_flip"]
    with pytest.raises(ValueError, match="Unknown attacks or drifts"):
        run_benchmark(["phishing-mlp"], ["ST"], [0], attacks=("laser",))


def test_adaptive_and_stream_tables_from_one_run():
    records = run_benchmark(["phishing-mlp"], ["ST", "DSC-default"], [0, 1],
                            attacks=("accumulative", "guard_aware"), drifts=(),
                            progress=False, n_jobs=1, **TINY)
    table = adaptive_results(records).markdown(True)
    rows = [line for line in table.splitlines() if line.startswith("| phishing-mlp")]
    # Grouped by attack; the ST-only baselines are left out.
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["accumulative", "ST"], ["accumulative", "DSC-default"],
        ["guard_aware", "ST"], ["guard_aware", "DSC-default"]]
    assert "- **steps scaled (%)**: " in table and "guard_aware: " in table
    streams = stream_results(records, STREAM_BENCHMARKS).markdown()
    assert "after accumulative (%)" in streams and "after guard_aware (%)" in streams
    st_row = next(line for line in streams.splitlines() if line.startswith("| phishing-mlp | ST"))
    assert st_row.split(" | ")[6].startswith("0.0 ± ")  # ST against its own mean


@pytest.mark.slow
def test_cli_runs_every_attack_and_a_real_drift(tmp_path, capsys):
    status = main(["benchmark", "--benchmarks", "phishing-mlp", "sea-mlp", "--defences",
                   "DSC-default", "--attacks", "adaptive", "--slow-horizon", "1", "--no-learning",
                   "--seeds", "1", "--max-steps", "1", "--burn-in-epochs", "1",
                   "--n-jobs", "1", "--output", str(tmp_path)])
    assert status == 0
    output = capsys.readouterr().out
    assert "## Adaptive attacks" in output and "## Real streams" in output
    records = json.loads((tmp_path / "results.json").read_text())
    assert {r["attack"] for r in records} == {
        "accumulative", "guard_aware", "multi_trigger", "window_aware", "slow",
        "discrepancy_aware",
        "label_flip", "gradient_ascent", "drift-concept"}
    slow = next(r for r in records if r["attack"] == "slow")
    assert slow["n_accumulative_steps"] == 1
    markdown = (tmp_path / "results.md").read_text()
    assert "## Adaptive attacks" in markdown and "## Real streams" in markdown
    for name in ("phishing-mlp_attacks.png", "sea-mlp_attacks.png",
                 "sea-mlp_prequential.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in markdown
