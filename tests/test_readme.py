"""The README's Python examples run as written and print what it says they print."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _examples(text):
    """Each ```python block with the ```text block that follows it ("" if none does)."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    examples = []
    for (kind, body), (next_kind, next_body) in zip(blocks, blocks[1:] + [("", "")]):
        if kind == "python":
            examples.append((body, next_body if next_kind == "text" else ""))
    return examples


def _tokens(text):
    """Words and brackets; every number becomes the token NUMBER."""
    tokens = re.sub(r"([\[\]{}(),:])", r" \1 ", text).split()
    return ["NUMBER" if _NUMBER.fullmatch(token) else token for token in tokens]


def _same_shape(expected, actual):
    """Whether ``actual`` prints like ``expected``: any numbers, spacing free, and
    ``...`` standing for anything."""
    actual = _tokens(actual)
    segments = " ".join(_tokens(expected)).split("...")
    segments = [segment.split() for segment in segments]
    position = 0
    for index, segment in enumerate(segments):
        starts = [position] if index == 0 else range(position, len(actual) - len(segment) + 1)
        start = next((s for s in starts if actual[s:s + len(segment)] == segment), None)
        if start is None:
            return False
        position = start + len(segment)
    return position == len(actual) or segments[-1] == []


def test_same_shape_reads_numbers_and_ellipses():
    assert _same_shape("[[2.5]\n [1e-3]] {'a': ...}", "[[ 7.25] [3]] {'a': 1, 'b': 2}")
    assert not _same_shape("flagged 5 of 10", "flagged 5 in 10")
    assert not _same_shape("accuracy 0.9", "accuracy 0.9 and more")


@pytest.mark.slow
def test_readme_python_blocks_run_in_order_and_print_their_outputs():
    examples = _examples(README.read_text())
    assert len(examples) == 3
    assert all(expected for _, expected in examples), "every example shows its output"
    namespace = {}
    for code, expected in examples:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(code, str(README), "exec"), namespace)
        assert _same_shape(expected, output.getvalue()), (
            f"README shows\n{expected}\nbut the example printed\n{output.getvalue()}")
    assert "accuracy 0.9" in examples[0][1]


def test_readme_shows_the_main_and_test_commands():
    text = README.read_text()
    assert "dsc-sklearn benchmark --quick --output" in text
    assert 'pip install -e ".[test]" && python -m pytest -n 2' in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'python -m pip install --quiet -e ".[test]" && python -m pytest -n 2' in ci


def test_readme_names_the_quick_set_and_what_the_command_writes():
    from dsc_sklearn.evaluation.benchmark import QUICK_DEFENCES

    text = README.read_text()
    for name in QUICK_DEFENCES:
        assert f"`{name}`" in text
    for name in ("report.html", "results.md", "results.json", "docs/results.md"):
        assert name in text


@pytest.mark.slow
def test_readme_quick_run_figures_are_what_the_quick_run_measures():
    """The quick set's accumulative runs (no drifts), recomputed: 3 seeds, about 40 s."""
    from dsc_sklearn.evaluation.benchmark import QUICK_DEFENCES, run_benchmark
    from dsc_sklearn.evaluation.report import attack_results

    text = " ".join(README.read_text().split())
    paragraph = text[text.index("Accuracy after the trigger batch, in %"):]
    paragraph = paragraph[:paragraph.index("Three seeds")]
    shown = dict(re.findall(r"\b(ST|DSC-paper|DSC-default|GC)\b[^0-9]*?(\d+\.\d ± \d+\.\d)",
                            paragraph))
    assert sorted(shown) == sorted(QUICK_DEFENCES)
    records = run_benchmark(("digits-mlp",), QUICK_DEFENCES, seeds=(0, 1, 2), drifts=(),
                            learning=False, n_jobs=1, progress=False)
    table = attack_results(records)
    after = [c.header for c in table.columns].index("after trigger (%)")
    measured = {row[1]: row[after].strip("*") for row in table.rows
                if row[2] == "accumulative"}
    assert shown == measured
