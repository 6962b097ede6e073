"""The evaluation toolkit: how the defence is tested.

- :mod:`~dsc_sklearn.evaluation.attacks`: white-box poisoning attacks;
- :mod:`~dsc_sklearn.evaluation.datasets`: offline data sets and streams;
- :mod:`~dsc_sklearn.evaluation.drifts`: the benign drifts;
- :mod:`~dsc_sklearn.evaluation.protocol`: the attack-and-defence stream
  protocol, benign drifts, the detection report;
- :mod:`~dsc_sklearn.evaluation.benchmark`: defences x benchmarks x seeds,
  and the tables;
- :mod:`~dsc_sklearn.evaluation.plotting`: the figures;
- :mod:`~dsc_sklearn.evaluation.cli`: the ``dsc-sklearn`` command.

The protocol's functions are importable from here, as they were from the
``dsc_sklearn.evaluation`` module of version 0.1.
"""

from .._lazy import lazy_attributes

__all__ = [
    "ATTACKS",
    "DRIFTS",
    "apply_drift",
    "detection_report",
    "run_drift_protocol",
    "run_stream_protocol",
]

__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(__all__, ".protocol"))
