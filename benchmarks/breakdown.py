"""Where the time of one batch goes: the figures behind docs/performance.md.

Four measurements, each side by side in interleaved rounds (medians):

1. ``train_step`` alone (``correction="none"``) against the raw torch step,
   on one batch already on the device: the estimator's per-step overhead
   without ``partial_fit``'s input validation;
2. the per-call cost of ``partial_fit`` around a training step that does
   nothing (a net subclass, through the estimator's ``net_class``):
   validation, label encoding, logging;
3. the time of each stage of the training step (the net's hooks, timed by
   a subclass that overrides each one), for every defence off (``none``),
   for the defaults (``default``: the step guard alone, its own stages
   timed by a :class:`~dsc_sklearn.defence.guards.StepGuard` subclass) and
   for DSC with ``threshold=1e9`` (``no-flags``: the discrepancy computed,
   nothing flagged), the gate split into the reference pass and the
   statistic; each trainer is warmed up as in ``ratios.py`` and fed fresh
   batches;
4. the reference logits of 16 snapshots in one vmapped call against a
   Python loop over the same snapshots;
5. the input validation of one ``partial_fit`` call on a plain float32
   batch: scikit-learn's ``validate_data`` against the estimator's fast
   path, which gives the same arrays.

Nothing is patched: the measurements subclass the net and the estimator.

Run it from the repository root::

    python benchmarks/breakdown.py                  # CPU time, 1 thread, MLP, batch 256
    python benchmarks/breakdown.py --module cnn --batch-size 1024
"""

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.utils.validation import validate_data

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workloads import (  # noqa: E402
    CLASSES,
    CONFIGS,
    DEVICE,
    MODULES,
    PLAIN,
    PRETRAIN_BATCHES,
    WARMUP_BATCHES,
    BatchCycler,
    digits_stream,
    fitted_classifier,
    make_trainer,
    synchronize,
)
from dsc_sklearn import DiscrepancyAwareOnlineClassifier  # noqa: E402
from dsc_sklearn._torch import call_with_state, eval_mode  # noqa: E402
from dsc_sklearn.defence import DiscrepancyAwareNet  # noqa: E402
from dsc_sklearn.defence._classifier import _validated_batch  # noqa: E402
from dsc_sklearn.defence._net import LOG_FIELDS  # noqa: E402
from dsc_sklearn.defence.discrepancy import STATISTICS  # noqa: E402
from dsc_sklearn.defence.guards import GuardContext, StepGuard  # noqa: E402
from ratios import CLOCKS, _interleaved, machine  # noqa: E402

__all__ = ["main"]


def _medians(times, scale=1e3):
    return {name: statistics.median(values) * scale for name, values in times.items()}


def _ratios(times, denominator):
    return {name: statistics.median(a / b for a, b in zip(values, times[denominator]))
            for name, values in times.items()}


def step_overhead(module, batch_size, rounds, clock):
    """``train_step`` (``"none"``) against the raw step, one batch, ms."""
    raw = make_trainer("raw", module, batch_size, pretrain=0, warmup=2)
    net = make_trainer("none", module, batch_size, pretrain=0, warmup=2).net_
    X, y = (torch.as_tensor(a) for a in digits_stream(batch_size, seed=7))

    steps = {"raw": lambda: raw.step(X, y), "train_step": lambda: net.train_step((X, y))}
    times = _interleaved(steps, rounds, 20, clock)
    return _medians(times), _ratios(times, "raw")


class _NoOpStepNet(DiscrepancyAwareNet):
    """A net whose training step trains nothing: what surrounds it in partial_fit."""

    def train_step(self, batch, **fit_params):
        X = batch[0]
        return {"loss": None, "y_pred": None,
                "record": torch.zeros(len(LOG_FIELDS), device=X.device),
                "flagged": torch.zeros(len(X), dtype=torch.bool, device=X.device),
                "non_finite": torch.zeros((), device=X.device)}


class _NoOpStepClassifier(DiscrepancyAwareOnlineClassifier):
    net_class = _NoOpStepNet


def call_overhead(module, batch_size, rounds, clock, batches_per_call=8):
    """``partial_fit`` of ``batches_per_call`` batches around a no-op step, ms."""
    clf = _NoOpStepClassifier(MODULES[module], batch_size=batch_size, device=DEVICE,
                              random_state=0, **PLAIN)
    X, y = BatchCycler(batch_size * batches_per_call)()
    clf.partial_fit(X, y, classes=CLASSES)
    times = _interleaved({"partial_fit": lambda: clf.partial_fit(X, y)}, rounds, 10, clock)
    return _medians(times)


#: The hooks of the training step, in the order it runs them.
STAGES = ("begin_step", "gate", "correct", "optimizer_step", "snapshot", "record")


class _TimedNet(DiscrepancyAwareNet):
    """Times each hook of the training step, and the gate's two parts."""

    clock = staticmethod(CLOCKS["cpu"])

    def initialize(self):
        self.stage_times_ = {}
        return super().initialize()

    def guard_context(self):
        context = super().guard_context()
        return _TimedContext(**vars(context), timed=self._timed)

    def _timed(self, name, call):
        synchronize()
        start = self.clock()
        result = call()
        synchronize()
        self.stage_times_[name] = self.stage_times_.get(name, 0.0) + self.clock() - start
        return result

    def begin_step(self, X, y):
        return self._timed("begin_step", lambda: super(_TimedNet, self).begin_step(X, y))

    def gate(self, step):
        return self._timed("gate", lambda: super(_TimedNet, self).gate(step))

    def correct(self, step):
        return self._timed("correct", lambda: super(_TimedNet, self).correct(step))

    def optimizer_step(self, step):
        return self._timed("optimizer_step",
                           lambda: super(_TimedNet, self).optimizer_step(step))

    def snapshot(self, step):
        return self._timed("snapshot", lambda: super(_TimedNet, self).snapshot(step))

    def record(self, step):
        return self._timed("record", lambda: super(_TimedNet, self).record(step))

    def gate_statistics(self, X, y, logits):
        reference = self._timed("gate: reference pass", lambda: self.snapshots_.reference_logits(
            self.module_, X, self.reference))
        return self._timed("gate: statistic", lambda: [
            STATISTICS[name](logits, reference, y, self.reference)
            for _, name in self.gate_policies()])


@dataclasses.dataclass(frozen=True)
class _TimedContext(GuardContext):
    """A guard context that also carries the net's stage timer."""

    timed: Callable = None


class _TimedGuard(StepGuard):
    """A step guard whose stages the net times (nested in ``optimizer_step``)."""

    def before_step(self, context, step):
        self._timed = context.timed
        context.timed("guard: before_step",
                      lambda: super(_TimedGuard, self).before_step(context, step))

    def after_step(self, context, step):
        context.timed("guard: after_step",
                      lambda: super(_TimedGuard, self).after_step(context, step))

    def _forward(self, context):
        return context.timed("guard: probe forward",
                             lambda: super(_TimedGuard, self)._forward(context))

    def _measure(self, *args):
        return self._timed("guard: measure (one sync)",
                           lambda: super(_TimedGuard, self)._measure(*args))

    def _add_rows(self, context, *args, **kwargs):
        return context.timed("guard: add rows", lambda: super(_TimedGuard, self)._add_rows(
            context, *args, **kwargs))


class _TimedClassifier(DiscrepancyAwareOnlineClassifier):
    net_class = _TimedNet


#: The cases of measurement 3, as in ``_workloads.CONFIGS``.
STAGE_CASES = {"none": CONFIGS["none"], "default": dict(step_guard=_TimedGuard()),
               "no-flags": CONFIGS["dsc-without-flags"]}


def _timed_trainer(module, batch_size, params, pretrain=PRETRAIN_BATCHES,
                   warmup=WARMUP_BATCHES):
    """A timed classifier trained as ``_workloads.make_trainer`` trains its own."""
    clf = _TimedClassifier(MODULES[module], batch_size=batch_size, device=DEVICE,
                           random_state=0, **{**params, **PLAIN})
    switched = {name: params.get(name, clf.get_params()[name]) for name in PLAIN}
    X, y = digits_stream(batch_size * (pretrain + warmup), seed=1)
    for i, start in enumerate(range(0, len(y), batch_size)):
        if i == pretrain:
            clf.set_params(**switched)
        clf.partial_fit(X[start:start + batch_size], y[start:start + batch_size],
                        classes=CLASSES)
    return clf


def stage_times(module, batch_size, rounds, clock, cases=tuple(STAGE_CASES)):
    """Median ms per batch of each stage, for each case of :data:`STAGE_CASES`."""
    cycler = BatchCycler(batch_size, n_chunks=16, seed=7)
    batches = [tuple(torch.as_tensor(a, device=DEVICE) for a in cycler()) for _ in range(16)]
    results = {}
    for case in cases:
        net, samples = _timed_trainer(module, batch_size, STAGE_CASES[case]).net_, {}
        net.clock = CLOCKS[clock]
        for _ in range(rounds):
            net.stage_times_ = {}
            start = net.clock()
            for batch in batches:
                net.train_step(batch)
            synchronize()
            samples.setdefault("train_step", []).append((net.clock() - start) / len(batches))
            for name, seconds in net.stage_times_.items():
                samples.setdefault(name, []).append(seconds / len(batches))
        results[case] = _medians(samples)
    return results


def vmap_against_loop(module, batch_size, rounds, clock, history_size=16):
    """Reference logits of ``history_size`` snapshots: vmap against a loop, ms."""
    net = fitted_classifier(module, batch_size, history_size=history_size).net_
    X = torch.as_tensor(digits_stream(batch_size, seed=5)[0])
    buffer, live = net.snapshots_, net.module_

    def loop():
        with torch.no_grad(), eval_mode(live):
            return torch.stack([call_with_state(live, state, X) for state in buffer.snapshots])

    assert torch.equal(loop(), buffer.reference_logits(live, X, "all"))
    times = _interleaved({"vmap": lambda: buffer.reference_logits(live, X, "mean"),
                          "loop": loop}, rounds, 5, clock)
    return _medians(times), _ratios(times, "vmap")


def validation(module, batch_size, rounds, clock, batches_per_call=1):
    """The checks of one call: ``validate_data`` against the fast path, ms."""
    clf = make_trainer("none", module, batch_size, pretrain=0, warmup=1)
    X, y = BatchCycler(batch_size * batches_per_call)()
    fast = _validated_batch(clf, X, y, reset=False)
    slow = validate_data(clf, X, y, dtype=np.float32, force_writeable=True, reset=False)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    times = _interleaved({
        "validate_data": lambda: validate_data(clf, X, y, dtype=np.float32,
                                               force_writeable=True, reset=False),
        "fast path": lambda: _validated_batch(clf, X, y, reset=False),
    }, rounds, 50, clock)
    return _medians(times)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", default="mlp", choices=list(MODULES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--clock", default="cpu", choices=list(CLOCKS))
    parser.add_argument("--threads", type=int, default=1)
    return parser


def _show(title, values, unit=" ms"):
    print(f"{title}: " + ", ".join(f"{k} {v:.3f}{unit}" for k, v in values.items()))


def main(argv=None):
    """Run the four measurements and print them."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    print(" | ".join(f"{key}: {value}" for key, value in machine().items()))
    print("command: python benchmarks/breakdown.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    print(f"module {args.module}, batch {args.batch_size}, {args.clock} time, "
          f"medians of {args.rounds} rounds")
    options = (args.module, args.batch_size, args.rounds, args.clock)
    ms, ratios = step_overhead(*options)
    _show("1. one step", ms)
    _show("   ratio to raw", ratios, "")
    _show("2. partial_fit of 8 batches around a no-op step", call_overhead(*options))
    for case, ms in stage_times(*options).items():
        _show(f"3. stages of a {case} step (the guard's nested in optimizer_step, "
              "its sub-stages in after_step)" if case == "default"
              else f"3. stages of a {case} step", ms)
    ms, ratios = vmap_against_loop(*options)
    _show("4. 16 snapshots", ms)
    _show("   ratio to vmap", ratios, "")
    _show("5. input validation of one call", validation(*options))


if __name__ == "__main__":
    main()
