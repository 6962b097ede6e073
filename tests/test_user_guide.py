"""The user guide's doctest examples run and print what they show."""

import doctest
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user_guide"


@pytest.mark.parametrize("page", ["customization.rst"])
def test_user_guide_examples_run(page):
    result = doctest.testfile(str(GUIDE / page), module_relative=False,
                              optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
