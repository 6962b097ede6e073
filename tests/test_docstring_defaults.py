"""Every numpydoc ``default=`` of a public class is the default the class has.

The API reference is generated from the docstrings, so a default written
there and another in the code is one fact in two places; this test keeps
them equal. A class that can be built without arguments and has
``get_params`` is compared with ``get_params()`` of a default instance,
any other with its ``__init__`` signature.
"""

import ast
import importlib
import inspect
import pkgutil

import pytest
from numpydoc.docscrape import ClassDoc

import dsc_sklearn
import dsc_sklearn.defence
import dsc_sklearn.evaluation


def _public_modules():
    modules = [dsc_sklearn]
    for package in (dsc_sklearn.defence, dsc_sklearn.evaluation):
        modules.append(package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                modules.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return modules


def _public_classes():
    classes = {}
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value):
                classes.setdefault(value, f"{module.__name__}.{name}")
    return sorted(classes.items(), key=lambda item: item[1])


def _documented_defaults(cls):
    """``{parameter: the text after default=}`` from the class's Parameters section."""
    defaults = {}
    for param in ClassDoc(cls, config={"show_class_members": False})["Parameters"]:
        if "default=" not in param.type:
            continue
        text = param.type.split("default=", 1)[1].strip()
        for name in param.name.split(","):
            defaults[name.strip()] = text
    return defaults


def _actual_defaults(cls):
    signature = inspect.signature(cls)
    defaults = {name: param.default for name, param in signature.parameters.items()
                if param.default is not inspect.Parameter.empty}
    required = [param for param in signature.parameters.values()
                if param.default is inspect.Parameter.empty
                and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)]
    if hasattr(cls, "get_params") and not required and not inspect.isabstract(cls):
        defaults.update(cls().get_params(deep=False))
    return defaults


def _matches(text, value):
    try:
        documented = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text == repr(value)  # not a literal: e.g. default=StepGuard()
    if isinstance(value, tuple) and isinstance(documented, list):
        return list(value) == documented
    return type(documented) is type(value) and documented == value or (
        documented is None and value is None)


CLASSES = _public_classes()


@pytest.mark.parametrize("cls", [cls for cls, _ in CLASSES], ids=[name for _, name in CLASSES])
def test_documented_defaults_are_the_defaults(cls):
    documented = _documented_defaults(cls)
    if not documented:
        return
    actual = _actual_defaults(cls)
    wrong = {name: (text, actual.get(name, "<no such parameter>"))
             for name, text in documented.items()
             if name not in actual or not _matches(text, actual[name])}
    assert not wrong, f"docstring default= -> actual default: {wrong}"


def test_the_classes_checked_include_the_estimators_and_their_parts():
    names = {name for _, name in CLASSES}
    assert {"dsc_sklearn.DiscrepancyAwareOnlineClassifier",
            "dsc_sklearn.MemorizationDiscrepancyScorer",
            "dsc_sklearn.defence.thresholds.AutoThreshold",
            "dsc_sklearn.defence.guards.StepGuard"} <= names
    from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    assert {"correction", "step_guard", "threshold"} <= set(
        _documented_defaults(DiscrepancyAwareOnlineClassifier))


@pytest.mark.parametrize("text, value, expected", [
    ('"none"', "none", True),
    ('"dsc"', "none", False),
    ("None", "auto", False),
    ("(100,)", (100,), True),
    ("1", 1.0, False),
    ("0.1", 0.1, True),
    ("StepGuard()", "auto", False),
])
def test_matches_compares_values_and_types(text, value, expected):
    assert _matches(text, value) is expected
