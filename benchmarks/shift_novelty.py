"""How far incoming batches lie from the guard's reservoir, in input space (issue 21, item 4).

For each batch the library's protocols feed a ``CumulativeGuard()`` victim,
the novelty of every row is its distance (L2 and L-infinity) to the
nearest row of the guard's reservoir probe at that moment; a batch's
novelty is the median over its rows. Besides L2 and L-inf, the q-th largest coordinate
difference (QS). Compared on the same reservoir: the
clean batch and the batch the attack feeds instead (accumulative phase),
the clean and the crafted trigger, and the clean and the drifted batch of
the benign drifts.

    PYTHONPATH=. python benchmarks/shift_novelty.py --seeds 3
"""

import argparse
import json

import numpy as np
import torch
from sklearn.utils import check_random_state

from dsc_sklearn.evaluation.benchmark import make_defence
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.evaluation.drifts import DRIFTS, apply_drift
from dsc_sklearn.evaluation.protocol import _make_attack, _start_online_phase, _Threat

KW = dict(stream="new", burn_in_fraction=0.5, burn_in_epochs=10, defence_warmup=10,
          batch_size=100)


#: The distances measured: L2, then the q-th largest coordinate difference
#: (q = 1 is L-infinity), each 1-Lipschitz in an L-inf perturbation of either row.
QS = (1, 4, 8, 16)


def novelty(guard, X):
    """Median over the rows of ``X`` of each distance to the nearest reservoir row.

    ``[L2, d_1 (L-inf), d_4, d_8, d_16, share of rows at L-inf distance 0]``.
    """
    R = guard.probe_.X
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    values = [float(torch.cdist(X, R).min(1).values.median())]
    diff = (X[:, None, :] - R[None]).abs().sort(-1, descending=True).values
    for q in QS:
        values.append(float(diff[..., q - 1].min(1).values.median()))
    values.append(float((diff[..., 0].min(1).values == 0).float().mean()))
    return values


def attack_run(benchmark, attack, seed, defence):
    data = load_stream_dataset("digits", random_state=seed)
    attacker = _make_attack(attack, 0.2, data.input_bounds, None)
    horizon = getattr(attacker, "horizon", None)
    start = _start_online_phase(make_defence(defence, benchmark), data, check_random_state(seed),
                                n_steps=40 if horizon is None else horizon, **KW)
    if "random_state" in attacker.get_params():
        attacker.set_params(random_state=start.seed)
    victim, = start.models
    threat = _Threat(attacker, start)
    X_trigger = threat.trigger(victim)
    rows = []
    for X_clean, y in start.batches:
        X_fed, y_fed, is_poison = threat.poison(victim, X_clean, y, X_trigger)
        guard = victim.step_guard_
        rows.append({"kind": "poison" if is_poison.any() else "clean",
                     "clean": novelty(guard, X_clean), "fed": novelty(guard, X_fed)})
        victim.partial_fit(X_fed, y_fed)
        if victim.score(data.X_test, data.y_test) < start.accuracy_burn_in - 0.05:
            break
    for _ in range(int(getattr(attacker, "n_trigger_batches", 1))):
        X_trigger = threat.trigger(victim)
        guard = victim.step_guard_
        rows.append({"kind": "trigger", "clean": novelty(guard, start.split.X_trigger),
                     "fed": novelty(guard, X_trigger)})
        victim.partial_fit(X_trigger, start.split.y_trigger)
    return rows


def drift_run(benchmark, kind, seed, defence, n_steps=40):
    data = load_stream_dataset("digits", random_state=seed)
    rng = check_random_state(seed)
    start = _start_online_phase(make_defence(defence, benchmark), data, rng,
                                n_steps=n_steps, **KW)
    victim = start.models[0]
    rows = []
    for step, (X, y) in enumerate(start.batches, start=1):
        level = DRIFTS[kind] * step / n_steps
        X_d = apply_drift(X, kind, level, random_state=rng, image_shape=data.image_shape,
                          input_bounds=data.input_bounds)
        guard = victim.step_guard_
        rows.append({"kind": kind, "step": step, "level": level,
                     "clean": novelty(guard, X), "fed": novelty(guard, X_d)})
        victim.partial_fit(X_d, y)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--benchmarks", nargs="+", default=["digits-mlp", "digits-cnn"])
    parser.add_argument("--defence", default="guard+cum")
    parser.add_argument("--output", default="/work/runs21s/novelty.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = []
    for benchmark in args.benchmarks:
        for seed in range(args.seeds):
            for attack in ("accumulative", "multi_trigger"):
                for row in attack_run(benchmark, attack, seed, args.defence):
                    out.append({"benchmark": benchmark, "seed": seed, "run": attack, **row})
            for kind in ("translation", "noise", "brightness"):
                for row in drift_run(benchmark, kind, seed, args.defence):
                    out.append({"benchmark": benchmark, "seed": seed, "run": kind, **row})
            print(benchmark, seed, flush=True)
    with open(args.output, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
