"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    output = capsys.readouterr().out
    assert "accuracy 0.9" in output
    assert "best" not in output and "threshold" in output


def test_readme_shows_the_main_and_test_commands():
    text = README.read_text()
    assert "dsc-sklearn benchmark --quick --output" in text
    assert 'pip install -e ".[test]" && python -m pytest -n 2' in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'python -m pip install --quiet -e ".[test]" && python -m pytest -n 2' in ci
