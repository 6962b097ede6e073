"""The step guard on an attacked stream: what each step moves, and what it keeps."""

import matplotlib.pyplot as plt
import numpy as np
from guide_data import burnt_in_classifier, digits, stream_batches, stream_split

from dsc_sklearn.defence.guards import StepGuard
from dsc_sklearn.evaluation.attacks import AccumulativePoisoningAttack

data = digits()
half = len(data.X_val) // 2
X_trigger, y_trigger = data.X_val[:half], data.y_val[:half]
X_target, y_target = data.X_val[half:], data.y_val[half:]
attack = AccumulativePoisoningAttack(epsilon=0.2, random_state=0)

# The same burnt-in model twice: one guard only measures (its bound is never
# reached), the other is the default guard.
models = {
    "plain training (guard measuring only)": burnt_in_classifier().set_params(
        step_guard=StepGuard(margin=1e12)),
    "default step guard": burnt_in_classifier().set_params(step_guard="auto"),
}
n_clean, n_poisoned = 10, 15
curves = {}
for name, clf in models.items():
    clf.net_.initialize_optimizer()
    batches = stream_batches(*stream_split(), n_passes=6, seed=2)
    accuracy, phase = [], []
    for step, (X, y) in enumerate(batches):
        if step == n_clean + n_poisoned:
            break
        if step >= n_clean:
            trigger = attack.craft_trigger(clf, X_trigger, y_trigger, X_target, y_target)
            X = attack.poison_batch(clf, X, y, trigger, y_trigger, X_target, y_target)[0]
        clf.partial_fit(X, y)
        accuracy.append(clf.score(data.X_test, data.y_test))
        phase.append("clean" if step < n_clean else "poisoned")
    trigger = attack.craft_trigger(clf, X_trigger, y_trigger, X_target, y_target)
    clf.partial_fit(trigger, y_trigger)
    accuracy.append(clf.score(data.X_test, data.y_test))
    phase.append("trigger")
    log = list(clf.stream_log_)[-len(phase):]
    curves[name] = (np.array([r["step_discrepancy"] for r in log]),
                    np.array([r["step_scale"] for r in log]), np.array(accuracy), phase)

guard = models["default step guard"].step_guard_
bound = guard.margin * np.median(guard.window_)
fig, (ax_d, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
steps = np.arange(1, n_clean + n_poisoned + 2)
for (name, (discrepancy, scale, accuracy, phase)), colour in zip(curves.items(), ("C1", "C0")):
    ax_d.plot(steps, discrepancy, marker=".", color=colour, label=name)
    ax_acc.plot(steps, 100 * accuracy, marker=".", color=colour, label=name)
scaled = curves["default step guard"][1] < 1
ax_d.scatter(steps[scaled], curves["default step guard"][0][scaled], s=60,
             facecolors="none", edgecolors="C3", label="pulled back by the guard")
ax_d.axhline(bound, color="k", linestyle="--", label="the guard's bound at the end")
for ax in (ax_d, ax_acc):
    ax.axvspan(n_clean + 0.5, n_clean + n_poisoned + 0.5, color="0.9", zorder=0)
    ax.axvline(steps[-1], color="C3", linestyle=":", label="trigger")
    ax.set_xlabel("online batch (grey: poisoned)")
ax_d.set_yscale("log")
ax_d.set_ylabel("step discrepancy D_step (KL)")
ax_d.set_title("What each step moves on the probe")
ax_d.legend(fontsize="x-small")
ax_acc.set_ylabel("test accuracy (%)")
ax_acc.set_title("What the model keeps")
ax_acc.legend(fontsize="x-small")
fig.tight_layout()
