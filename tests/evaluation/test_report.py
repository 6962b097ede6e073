"""The report: every column explained with its unit; results.md and a self-contained page."""

import re

import pytest

from dsc_sklearn.evaluation.report import (
    ATTACK_COLUMNS,
    ATTACK_TABLES,
    DEFENCE_LEGENDS,
    DRIFT_COLUMNS,
    attack_results,
    drift_results,
    environment,
    verdicts,
    write_report,
)

_UNITS = ("(%)", "(pt)", "(s)", "(batches)", "(per 100 batches)")


def _attack(defence, seed, clean, trigger, attack="accumulative"):
    return {"benchmark": "digits-mlp", "defence": defence, "attack": attack, "seed": seed,
            "accuracy_burn_in": 0.9, "accuracy_accumulative": 0.85,
            "accuracy_trigger": trigger, "accuracy_clean": clean,
            "n_accumulative_steps": 3.0, "flagged_fraction_clean": 0.01,
            "flagged_fraction_poison": None, "flagged_fraction_trigger": 0.0,
            "auc_discrepancy_sample": 0.6, "auc_discrepancy_batch": None,
            "auc_loss_sample": 0.7, "wall_time": 1.5,
            "alarm_delay": None if defence == "ST" else float(seed),
            "alarm_rate_clean": 0.0 if defence == "ST" else 0.025}


@pytest.fixture
def records():
    return [
        _attack("ST", 0, 0.95, 0.60), _attack("ST", 1, 0.93, 0.62),
        _attack("GC", 0, 0.92, 0.90), _attack("GC", 1, 0.92, 0.92),
        {"benchmark": "digits-mlp", "defence": "GC", "attack": "drift-noise", "seed": 0,
         "accuracy_drift": 0.8, "accuracy_plain": 0.82, "accuracy_gap": 0.02,
         "flagged_fraction_drift": 0.0, "wall_time": 0.5},
    ]


@pytest.mark.parametrize("columns", [ATTACK_COLUMNS, DRIFT_COLUMNS])
def test_every_column_has_a_unit_and_a_legend(columns):
    labels = {"benchmark", "defence", "attack", "drift", "seeds"}
    for column in columns:
        assert len(column.legend) > 40, column.header
        if column.header not in labels and not column.header.startswith("AUC"):
            assert column.header.endswith(_UNITS), column.header
    aucs = [c for c in columns if c.header.startswith("AUC")]
    assert all("0.5 is chance" in c.legend or "same ROC AUC" in c.legend for c in aucs)


def test_attack_rows_in_percent_and_points(records):
    table = attack_results(records)
    assert [row[:4] for row in table.rows] == [["digits-mlp", "ST", "accumulative", "2"],
                                               ["digits-mlp", "GC", "accumulative", "2"]]
    header = [c.header for c in table.columns]
    st, gc = ({h: cell for h, cell in zip(header, row)} for row in table.rows)
    assert gc["after trigger (%)"] == "**91.0 ± 1.0**"
    assert gc["clean cost (pt)"] == "2.0 ± 0.0"  # against ST's mean of 94 %
    assert st["clean cost (pt)"] == "0.0 ± 1.0"
    assert st["steps (batches)"] == "3.0 ± 0.0"
    assert st["flagged poison (%)"] == "n/a"
    assert st["AUC disc. sample"] == "0.60 ± 0.00"
    assert st["time (s)"] == "1.5 ± 0.0"


def test_clean_cost_needs_plain_training(records):
    table = attack_results([r for r in records if r["defence"] == "GC"])
    cost = [c.header for c in table.columns].index("clean cost (pt)")
    assert table.rows[0][cost] == "n/a"


def test_drift_rows(records):
    table = drift_results(records)
    assert table.rows == [["digits-mlp", "GC", "noise", "1", "80.0 ± 0.0", "82.0 ± 0.0",
                           "**2.0 ± 0.0**", "0.0 ± 0.0", "0.5 ± 0.0"]]


def test_markdown_and_html_carry_the_legend(records):
    table = attack_results(records)
    markdown = table.markdown(legend=True)
    for column in table.columns:
        assert f"- **{column.header}**: {column.legend}" in markdown
    page = table.html()
    assert page.count("<dt>") == len(table.columns)
    assert "<strong>91.0 ± 1.0</strong>" in page
    assert "<code>BENCHMARKS</code>" in page


def test_environment_says_what_ran_where():
    info = environment()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", info["date"])
    for name in ("dsc_sklearn ", "torch ", "scikit-learn ", "Python "):
        assert name in info["versions"]
    assert "usable CPU cores" in info["machine"]


def test_write_report_is_self_contained(records, tmp_path):
    figure = tmp_path / "digits-mlp_tradeoff.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    paths = write_report(records, tmp_path, command="dsc-sklearn benchmark <quick> & more",
                         settings={"seeds": 2, "defences": ["ST", "GC"]}, figures=[figure],
                         wall_time=12.5)
    assert [p.name for p in paths] == ["results.md", "report.html"]
    markdown = paths[0].read_text()
    assert "| command | `dsc-sklearn benchmark <quick> & more` |" in markdown
    assert "| defences | ST, GC |" in markdown and "| runs | 5 in 12.5 s |" in markdown
    assert "## Accumulative poisoning" in markdown and "## Benign drift" in markdown
    assert "![digits-mlp tradeoff](digits-mlp_tradeoff.png)" in markdown
    assert "Up and left is better" in markdown  # the figure's caption
    page = paths[1].read_text()
    assert "&lt;quick&gt; &amp; more" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert page.count("<dl>") == 3  # the attack columns in two tables, and the drift table
    assert markdown.index("## Verdict") < markdown.index("## Accumulative poisoning")
    assert "- **digits-mlp**: GC kept the most after the accumulative attack: 91.0 %" in markdown
    assert "<h2>Verdict</h2>" in page and "<strong>digits-mlp</strong>: GC kept" in page


def test_the_report_splits_the_attack_columns_into_tables_that_fit_a_screen():
    headers = [column.header for column in ATTACK_COLUMNS[4:]]
    split = [header for _, chosen in ATTACK_TABLES for header in chosen]
    assert sorted(split) == sorted(headers)
    # At most 11 columns a table, so that it fits 1280 pixels (checked by eye, in chromium).
    assert all(4 + len(chosen) <= 13 for _, chosen in ATTACK_TABLES)


def test_alarm_columns_and_the_worst_seed(records):
    table = attack_results(records)
    header = [c.header for c in table.columns]
    st, gc = ({h: cell for h, cell in zip(header, row)} for row in table.rows)
    assert st["alarm delay (batches)"] == "n/a"
    assert gc["alarm delay (batches)"] == "0.5 ± 0.5"
    assert gc["clean alarms (per 100 batches)"] == "2.5 ± 0.0"
    assert gc["worst seed (%)"] == "90.0"


def test_legends_name_only_what_the_run_holds(records):
    legend = {c.header: c.legend for c in attack_results(records).columns}["defence"]
    assert f"ST: {DEFENCE_LEGENDS['ST']}." in legend
    assert f"GC: {DEFENCE_LEGENDS['GC']}." in legend
    assert "AT-Madry" not in legend and "DSC-paper" not in legend
    drift = {c.header: c.legend for c in drift_results(records).columns}["drift"]
    assert "noise: " in drift and "translation" not in drift


def test_verdicts_are_written_from_the_numbers(records):
    records = records + [
        dict(_attack("DSC-default", seed, 0.94, trigger), alarm_delay=0.0)
        for seed, trigger in ((0, 0.80), (1, 0.70))]
    text = verdicts(records)["digits-mlp"]
    assert text.startswith("GC kept the most after the accumulative attack: 91.0 % after it "
                           "(worst seed 90.0 %, 2 seeds), a clean cost of 2.0 pt and a worst "
                           "drift gap of 2.0 pt (noise).")
    assert "Plain training (ST): 61.0 % after it (worst seed 60.0 %, 2 seeds)." in text
    assert ("The library's defaults (DSC-default): 75.0 % after it (worst seed 70.0 %, "
            "2 seeds), a clean cost of 0.0 pt (no benign drift ran).") in text
