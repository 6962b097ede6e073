"""Poisoning attacks on a streaming neural-network classifier.

White-box simulators of the accumulative attack of Pang et al. (2021),
adaptive attacks that know the defence and keep their poison inside what
it accepts, and non-accumulative baselines:

- :class:`AccumulativePoisoningAttack`: the attack of Pang et al. (2021);
- :class:`GuardAwarePoisoningAttack`: every poisoned step kept under the
  step guard's bound, as the victim's own guard decides it on a copy of
  the victim;
- :class:`MultiBatchTriggerAttack`: the same, with the trigger's damage
  split over several consecutive batches;
- :class:`WindowAwarePoisoningAttack`: the trigger spread over more batches
  than a cumulative guard's window, each passing every check unscaled;
- :class:`SlowPoisoningAttack`: a small budget over a long horizon;
- :class:`TriggerOnlyAttack`: a clean stream, then the poisoned trigger;
- :class:`DiscrepancyAwarePoisoningAttack`: poison kept under the paper's
  gate (memorization discrepancy against the snapshot buffer);
- :class:`GradientAscentAttack`, :class:`LabelFlipAttack`,
  :class:`UniformNoiseAttack`, :class:`NoAttack`: baselines that plan
  nothing ahead.

Every attack is a :class:`PoisoningAttack`; :data:`ATTACK_REGISTRY` names
those the stream protocol, the benchmark and its report know, and
:data:`ATTACKS`, :data:`ADAPTIVE_ATTACKS`,
:data:`PLAIN_TRAINING_ONLY_ATTACKS` and :data:`ATTACK_LEGENDS` derive from
it. A new attack is one class and one entry there.

An attack reads the victim's public fitted state (``module_``,
``classes_`` and, for the adaptive ones, ``net_.optimizer_``,
``memorization_discrepancy`` and ``threshold_``), and the guard-aware ones
run candidate batches through ``partial_fit`` on a deep copy of the victim
and read its guards' :meth:`~dsc_sklearn.defence.guards.BaseGuard.decisions`,
so they attack the guard as it is, whatever its rule; none changes the
victim, and each only returns poisoned copies of the arrays it is given;
the caller feeds those to ``estimator.partial_fit``.
"""

from ._accumulative import AccumulativePoisoningAttack, SlowPoisoningAttack, TriggerOnlyAttack
from ._adaptive import (
    DiscrepancyAwarePoisoningAttack,
    GuardAwarePoisoningAttack,
    MultiBatchTriggerAttack,
    WindowAwarePoisoningAttack,
)
from ._base import PoisoningAttack
from ._baselines import GradientAscentAttack, LabelFlipAttack, NoAttack, UniformNoiseAttack

__all__ = [
    "ADAPTIVE_ATTACKS",
    "ATTACKS",
    "ATTACK_LEGENDS",
    "ATTACK_REGISTRY",
    "AccumulativePoisoningAttack",
    "DiscrepancyAwarePoisoningAttack",
    "GradientAscentAttack",
    "GuardAwarePoisoningAttack",
    "LabelFlipAttack",
    "MultiBatchTriggerAttack",
    "NoAttack",
    "PLAIN_TRAINING_ONLY_ATTACKS",
    "PoisoningAttack",
    "SlowPoisoningAttack",
    "TriggerOnlyAttack",
    "UniformNoiseAttack",
    "WindowAwarePoisoningAttack",
]

#: The attacks the stream protocol, the benchmark and the report know by
#: name, in the order of the tables and of ``dsc-sklearn benchmark --list``.
ATTACK_REGISTRY = {attack.name: attack for attack in (
    AccumulativePoisoningAttack,
    TriggerOnlyAttack,
    UniformNoiseAttack,
    NoAttack,
    GuardAwarePoisoningAttack,
    MultiBatchTriggerAttack,
    WindowAwarePoisoningAttack,
    SlowPoisoningAttack,
    DiscrepancyAwarePoisoningAttack,
    LabelFlipAttack,
    GradientAscentAttack,
)}

#: The registered attacks' names.
ATTACKS = tuple(ATTACK_REGISTRY)

#: The attacks that adapt to the defence and the baselines that plan nothing
#: ahead: ``--attacks adaptive`` and the "Adaptive attacks" table.
ADAPTIVE_ATTACKS = tuple(name for name, attack in ATTACK_REGISTRY.items()
                         if attack.adaptive_set)

#: The baselines of the accumulative attack, run against plain training only.
PLAIN_TRAINING_ONLY_ATTACKS = tuple(name for name, attack in ATTACK_REGISTRY.items()
                                    if attack.plain_training_only)

#: What each registered attack does, for the legends.
ATTACK_LEGENDS = {name: attack.legend for name, attack in ATTACK_REGISTRY.items()}
