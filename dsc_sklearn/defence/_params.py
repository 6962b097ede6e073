"""The classifier's parameters, declared once.

:data:`PARAMETERS` lists every parameter of
:class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier` with its default, its
scikit-learn constraints and its role. The estimator's ``__init__`` and
``_parameter_constraints``, the parameters it hands to its net, the ones
``set_params`` may change mid-stream, and the net's own defence parameters
and components are all derived from it, so a new parameter is one entry
here (and a paragraph in the estimator's docstring).

Roles:

- ``"estimator"``: read by the scikit-learn shell only (architecture,
  batching, device, seeding); they take effect at the next ``fit``;
- ``"optimizer"``: the optimizer's hyper-parameters, changed in its
  parameter groups between two ``partial_fit`` calls;
- ``"defence"``: attributes of the net that the training step reads; they
  take effect at the next ``partial_fit`` call. When ``build`` is set, the
  net keeps ``build(value)`` as the attribute ``component`` and builds it
  anew when the value changes; ``adjust(net, value)`` changes an existing
  component in place instead.
"""

import inspect
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch
from sklearn.utils._param_validation import StrOptions

from . import thresholds
from ._constraints import FLOAT32_MAX, NumberInterval, SequenceOf, count, size
from ._registry import RegistryOptions
from .correction import CORRECTIONS, BaseCorrection, make_correction
from .discrepancy import REFERENCES
from .guards import BaseGuard, make_step_guard
from .thresholds import ThresholdPolicy, make_threshold

__all__ = [
    "DEFENCE_PARAMETERS",
    "PARAMETERS",
    "Parameter",
    "estimator_init",
]


@dataclass(frozen=True)
class Parameter:
    """One parameter of the classifier: default, constraints and role."""

    name: str
    default: Any
    constraints: tuple
    role: str = "defence"
    component: str = None
    build: Callable = None
    adjust: Callable = None
    #: Whether ``component`` holds learned state (saved by ``save_params``).
    stateful: bool = False
    positional: bool = False


def _optional_threshold(value):
    return None if value is None else make_threshold(value)


def _resize_buffer(net, value):
    net.snapshots_.resize(value)


def _respace_buffer(net, value):
    net.snapshots_.snapshot_every = value


_POSITIVE_INT = (size(),)
# Bounded by what a float32 tensor holds: beyond it the value is infinite.
_NON_NEGATIVE = (NumberInterval(numbers.Real, 0, FLOAT32_MAX, closed="both"),)
_THRESHOLD = (
    NumberInterval(numbers.Real, 0, None, closed="left"),
    RegistryOptions(thresholds.THRESHOLDS),
    callable,
    ThresholdPolicy,
)

#: Every parameter of the classifier, in the order of its signature.
PARAMETERS = (
    Parameter("module", None, (None, callable, torch.nn.Module), "estimator",
              positional=True),
    Parameter("hidden_layer_sizes", (100,),
              (SequenceOf("a tuple of positive int (the widths of the hidden layers), "
                          "e.g. (100,)", item=size()),), "estimator"),
    Parameter("lr", 0.1, (NumberInterval(numbers.Real, 0, FLOAT32_MAX, closed="right"),),
              "optimizer"),
    Parameter("momentum", 0.9, (NumberInterval(numbers.Real, 0, 1, closed="left"),),
              "optimizer"),
    Parameter("batch_size", 100, _POSITIVE_INT, "estimator"),
    Parameter("max_epochs", 1, _POSITIVE_INT, "estimator"),
    Parameter("history_size", 4, _POSITIVE_INT, adjust=_resize_buffer),
    Parameter("snapshot_every", 10, (None,) + _POSITIVE_INT, adjust=_respace_buffer),
    Parameter("reference", "oldest", (StrOptions(set(REFERENCES)),)),
    Parameter("threshold", "auto", _THRESHOLD, component="threshold_policy_",
              build=make_threshold, stateful=True),
    Parameter("granularity", "sample", (StrOptions({"sample", "batch"}),)),
    Parameter("correction", "none", (RegistryOptions(CORRECTIONS), BaseCorrection),
              component="correction_", build=make_correction),
    Parameter("epsilon", 0.2, _NON_NEGATIVE),
    Parameter("step_size", 0.02, _NON_NEGATIVE),
    Parameter("max_correction_steps", 10, (count(),)),
    Parameter("clip_value", None,
              (None, NumberInterval(numbers.Real, 0, None, closed="neither"))),
    Parameter("input_bounds", None, (None, tuple, list)),
    # Read by the estimator before each call; a defence parameter so that
    # set_params mid-stream is validated like the others.
    Parameter("check_input_bounds", "raise", (StrOptions({"raise", "clip", "ignore"}),)),
    Parameter("loss_threshold", None, (None,) + _THRESHOLD,
              component="loss_threshold_policy_", build=_optional_threshold, stateful=True),
    Parameter("step_guard", "auto", (None, StrOptions({"auto"}), BaseGuard),
              component="step_guard_", build=make_step_guard, stateful=True),
    Parameter("callbacks", None, (None, list), "estimator"),
    Parameter("device", "auto", (str, torch.device), "estimator"),
    Parameter("random_state", None, ("random_state",), "estimator"),
    Parameter("verbose", 0, ("verbose",), "estimator"),
)

#: The parameters the net's training step reads, in signature order.
DEFENCE_PARAMETERS = tuple(param for param in PARAMETERS if param.role == "defence")


def estimator_init(parameters):
    """An ``__init__`` that stores each of ``parameters`` under its name.

    It does what scikit-learn asks of an estimator's ``__init__`` (store
    the arguments, nothing else) and carries the real signature, which
    :meth:`~sklearn.base.BaseEstimator.get_params`, :func:`help` and IDEs
    read.
    """
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    signature = inspect.Signature([self_parameter] + [
        inspect.Parameter(
            param.name,
            (inspect.Parameter.POSITIONAL_OR_KEYWORD if param.positional
             else inspect.Parameter.KEYWORD_ONLY),
            default=param.default,
        )
        for param in parameters
    ])

    def __init__(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        for name, value in list(arguments.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__
