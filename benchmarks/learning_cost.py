"""What a guard costs while a model learns from scratch (issue 21, item 2).

A user trains ``DiscrepancyAwareOnlineClassifier`` from scratch with a guard
on from the first ``partial_fit``: digits (64 features in ``[0, 1]``, a
stratified 70/30 split per seed; ``--models mnist1d-cnn``: MNIST-1D as the
library's benchmark splits it, which needs the optional ``mnist1d``
package), ``--passes`` passes over the training rows in shuffled batches of
100, one torch thread. The learning cost of a guard
is the test accuracy of the same model with every defence off
(``step_guard=None``) minus the guard's, seed by seed. Run it from the
repository root (``PYTHONPATH=.`` where another checkout is installed)::

    python benchmarks/learning_cost.py --guards off default --seeds 3
    python benchmarks/learning_cost.py --guards off default cum --models cnn \
        --seeds 6 --json /tmp/learning.json

Each run prints one line (accuracy, steps the guards pulled back, windows a
:class:`~dsc_sklearn.defence.guards.CumulativeGuard` pulled back, CPU
seconds); the summary gives the mean accuracy and the mean and worst
learning cost per model and guard. ``GUARDS`` holds every candidate that
docs/ablations.md's fourth round names.
"""

import argparse
import json
import statistics
import sys
import time
from functools import partial

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.guards import CumulativeGuard, StepGuard
from dsc_sklearn.defence.modules import SmallCNN
from dsc_sklearn.evaluation.datasets import load_stream_dataset

__all__ = ["GUARDS", "MODELS", "learning_run", "main"]

#: The guards by name: ``step_guard=`` of each candidate (a callable, so
#: that every run gets a fresh guard).
GUARDS = {
    "off": lambda: None,
    "default": lambda: "auto",
    "cum": lambda: CumulativeGuard(),
    "cum-wharm": lambda: CumulativeGuard(step_harm="window"),
    "cum-wharm-k3": lambda: CumulativeGuard(step_harm="window", k=3),
    "cum-wharm-k10": lambda: CumulativeGuard(step_harm="window", k=10),
    # The window harm rule on the per-step check alone (no window bound).
    "wharm-only": lambda: CumulativeGuard(step_harm="window", cumulative_margin=None),
    "wharm-only-k10": lambda: CumulativeGuard(step_harm="window", k=10,
                                              cumulative_margin=None),
    # Exempt only the overshoots of a model whose probe loss fell by 10 % /
    # 20 % over the 10 steps up to the step.
    "wharm-only-k10-drop10": lambda: CumulativeGuard(step_harm="window", k=10,
                                                     learning_drop=0.1,
                                                     cumulative_margin=None),
    "wharm-only-k10-drop20": lambda: CumulativeGuard(step_harm="window", k=10,
                                                     learning_drop=0.2,
                                                     cumulative_margin=None),
    # The window rule only while the probe loss is above half of ln K.
    "wharm-only-k10-level50": lambda: CumulativeGuard(step_harm="window", k=10,
                                                      window_harm_level=0.5,
                                                      cumulative_margin=None),
    # The same with the window bound (k = 5 and 10).
    "cum-wharm-level50": lambda: CumulativeGuard(step_harm="window", window_harm_level=0.5),
    "cum-wharm-k10-level50": lambda: CumulativeGuard(step_harm="window", k=10,
                                                     window_harm_level=0.5),
    # The cumulative guard with the input-space shift test (issue 21, item 4).
    "cum-shift": lambda: CumulativeGuard(shift_epsilon=0.2),
    # A too-large step that raised the probe loss is harmful only if it raises
    # it at a tenth of its length too (item 2: harm at first order).
    "first-order": lambda: StepGuard(harm="first_order"),
    "cum-first-order": lambda: CumulativeGuard(harm="first_order"),
    # The same at a hundredth of the step, and with the momentum of a
    # pulled-back step interpolated instead of scaled.
    "first-order-s001": lambda: StepGuard(harm="first_order", harm_scale=0.01),
    "first-order-interp": lambda: StepGuard(harm="first_order",
                                            optimizer_state="interpolate"),
    "interp": lambda: StepGuard(optimizer_state="interpolate"),
    # An overshoot pulled back to where the probe loss stops rising.
    "first-order-descend": lambda: StepGuard(harm="first_order_descend"),
    "first-order-descend-interp": lambda: StepGuard(harm="first_order_descend",
                                                    optimizer_state="interpolate"),
    # Only an overshoot's momentum interpolated; a harmful step's scaled.
    "first-order-descend-oi": lambda: StepGuard(harm="first_order_descend_interpolate"),
    # The cumulative guard with the momentum of what it pulls back interpolated.
    "cum-interp": lambda: CumulativeGuard(optimizer_state="interpolate"),
    "cum-interp-shift": lambda: CumulativeGuard(optimizer_state="interpolate",
                                                shift_epsilon=0.2, shift_steps=20),
    # Measures every step and never acts: the same seeds' control for "off".
    "observe": lambda: StepGuard(margin=1e9),
}

#: The models by name: the estimator's ``module`` (``None``: the MLP 128-128).
MODELS = {
    "mlp": None,
    "cnn": partial(SmallCNN, image_shape=(1, 8, 8)),
    # SmallCNN on MNIST-1D (the optional mnist1d package): the library's
    # split of 5000 signals, standardized, trained on its 3250 training rows.
    "mnist1d-cnn": partial(SmallCNN, image_shape=(1, 40)),
}


def _data(model, seed):
    """``(X_train, X_test, y_train, y_test, input_bounds)`` of the model's data set."""
    if model == "mnist1d-cnn":
        data = load_stream_dataset("mnist1d", random_state=seed)
        return data.X_train, data.X_test, data.y_train, data.y_test, data.input_bounds
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return (*train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed),
            (0.0, 1.0))


def _guard_counts(guard):
    """``(steps pulled back, windows pulled back)`` summed over a guard or a chain."""
    guards = getattr(guard, "guards_", [guard]) if guard is not None else []
    scaled = sum(getattr(g, "n_scaled_", 0) for g in guards)
    windows = sum(getattr(g, "n_pulled_back_", 0) for g in guards)
    return scaled, windows


def learning_run(model, guard, seed, passes=5, batch_size=100):
    """Train from scratch with ``guard`` on from the first call; return a record."""
    X_train, X_test, y_train, y_test, bounds = _data(model, seed)
    clf = DiscrepancyAwareOnlineClassifier(
        MODELS[model], hidden_layer_sizes=(128, 128), input_bounds=bounds,
        batch_size=batch_size, step_guard=GUARDS[guard](), random_state=seed)
    rng = np.random.default_rng(seed)
    start = time.process_time()
    for _ in range(passes):
        order = rng.permutation(len(X_train))
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            clf.partial_fit(X_train[rows], y_train[rows], classes=np.arange(10))
    cpu = time.process_time() - start
    scaled, windows = _guard_counts(clf.step_guard_)
    return {"model": model, "guard": guard, "seed": seed, "passes": passes,
            "accuracy": float(clf.score(X_test, y_test)), "n_steps": clf.n_batches_seen_,
            "n_scaled": scaled, "n_windows": windows, "cpu_s": cpu}


def summary(records):
    """Mean accuracy and mean (worst) learning cost per model and guard, in pt."""
    off = {(r["model"], r["seed"]): r["accuracy"] for r in records if r["guard"] == "off"}
    lines = ["| model | guard | accuracy | learning cost (worst) | steps pulled back | windows pulled back |",
             "|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["guard"]) for r in records})
    for model, guard in keys:
        runs = [r for r in records if r["model"] == model and r["guard"] == guard]
        accuracy = 100 * statistics.mean(r["accuracy"] for r in runs)
        costs = [100 * (off[model, r["seed"]] - r["accuracy"]) for r in runs
                 if (model, r["seed"]) in off]
        cost = f"{statistics.mean(costs):.1f} ({max(costs):.1f})" if costs else "n/a"
        scaled = "/".join(str(r["n_scaled"]) for r in runs)
        windows = "/".join(str(r["n_windows"]) for r in runs)
        lines.append(f"| {model} | {guard} | {accuracy:.1f} | {cost} | {scaled} of "
                     f"{runs[0]['n_steps']} | {windows} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=list(MODELS))
    parser.add_argument("--guards", nargs="+", default=["off", "default"],
                        choices=list(GUARDS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--json", help="write every run's record to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records = []
    for model in args.models:
        for guard in args.guards:
            for seed in range(args.seeds):
                record = learning_run(model, guard, seed, passes=args.passes)
                records.append(record)
                print(json.dumps(record), flush=True)
    print(summary(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return records


if __name__ == "__main__":
    sys.exit(main() and 0)
