"""
Attack and defend: the accumulative poisoning protocol
======================================================

An accumulative poisoning attack (Pang et al., NeurIPS 2021) perturbs the
batches of a training stream, within an invisible budget, so that the model
drifts towards a state where one later *trigger* batch wrecks it. This
example replays the attack against plain online training and against
several defences with :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`
and :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark`, the functions behind the
``dsc-sklearn benchmark`` command.

To keep the example fast it runs one seed and at most 20 poisoned batches;
``dsc-sklearn benchmark`` runs the full protocol over several seeds.
"""

# %%
# One run of the protocol
# -----------------------
# :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol` clones the estimator
# and runs, on one seed:
#
# 1. **burn-in**: ten plain passes over half of the training split, then a
#    few clean stream batches with the defence switched on;
# 2. **accumulative phase**: each stream batch (the other half of the
#    training split, data the model has not seen) is poisoned and fed to
#    ``partial_fit``, until the test accuracy has dropped by 5 points (the
#    attacker's stealth stop) or ``max_steps`` batches;
# 3. **trigger**: the poisoned trigger batch, crafted on the model reached;
# 4. **clean twin**: a copy of the burnt-in model trained on the same
#    stream without poison, to measure what the defence costs.
#
# :func:`~dsc_sklearn.evaluation.benchmark.make_defence` builds the estimator of each
# named defence; ``"ST"`` is plain training.
import matplotlib.pyplot as plt
import pandas as pd

from dsc_sklearn.evaluation.benchmark import make_defence, run_benchmark
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.evaluation.protocol import run_stream_protocol
from dsc_sklearn.evaluation.plotting import plot_accuracy_curves, plot_discrepancy, plot_tradeoff

data = load_stream_dataset("digits", random_state=0)
plain = make_defence("ST", "digits-mlp")
result = run_stream_protocol(plain, data, max_steps=20, random_state=0)

print(f"accuracy after burn-in      {result.accuracy_burn_in:.3f}")
print(f"after {result.n_accumulative_steps:2d} poisoned batches  "
      f"{result.accuracy_accumulative:.3f}")
print(f"after the trigger           {result.accuracy_trigger:.3f}")
print(f"clean twin (no attack)      {result.accuracy_clean:.3f}")

# %%
# Each poisoned batch lowers the test accuracy a little, until the
# attacker's stealth stop ends the accumulative phase; then the trigger, one
# batch of 90 samples, takes it down at once. The clean twin, trained on the
# same batches without poison, keeps learning.
curve = [result.accuracy_burn_in, *result.accuracy_curve]
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(range(len(curve)), curve, marker="o", markevery=[len(curve) - 1])
ax.axhline(result.accuracy_clean, color="grey", linestyle="--", label="clean twin")
ax.set_xlabel("online batch (last point: after the trigger)")
ax.set_ylabel("test accuracy")
ax.set_title("Plain training under accumulative poisoning")
ax.legend()
fig.tight_layout()

# %%
# Each poisoned batch was also scored before it was fed: the memorization
# discrepancy of its samples, and of the clean batch it came from, on the
# same model state. ``detection`` counts what the defence flagged; plain
# training flags nothing.
print(f"ROC AUC of the discrepancy: per sample {result.auc_discrepancy_sample:.2f}, "
      f"per batch mean {result.auc_discrepancy_batch:.2f}")
print(f"ROC AUC of the loss:        per sample {result.auc_loss_sample:.2f}, "
      f"per batch mean {result.auc_loss_batch:.2f}")
print("flagged poisoned samples:", result.detection["true_positive"])

# %%
# Several defences side by side
# -----------------------------
# :func:`~dsc_sklearn.evaluation.benchmark.run_benchmark` runs the protocol for every
# defence and seed (in parallel with ``n_jobs``, on any joblib backend) and
# returns one JSON-serialisable record per run. Plain training also faces
# uniform noise of the same budget and the trigger alone, the attack's own
# baselines. ``drifts=()`` leaves out the benign-drift runs, which measure
# false alarms on a clean stream whose inputs drift. The defences here:
#
# - ``GC``: plain training with the gradient's L-infinity norm clipped to
#   0.01;
# - ``AT-reference``: the reference code's "AT", 10 steps of loss descent on
#   every batch;
# - ``DSC-paper``: DSC as the reference code runs it, on the batch-mean
#   discrepancy with the threshold ``0.5 + 0.02 t``;
# - ``DSC-default``: the library's defaults (the step guard alone: each
#   training step is measured on a probe of learned rows and pulled back
#   when it moves them too far and harms them).
records = run_benchmark(
    ("digits-mlp",), defences=("ST", "GC", "AT-reference", "DSC-paper", "DSC-default"),
    seeds=(0,), max_steps=20, drifts=(), progress=False,
)
columns = ["defence", "attack", "accuracy_burn_in", "accuracy_accumulative",
           "accuracy_trigger", "accuracy_clean", "n_accumulative_steps",
           "flagged_fraction_clean", "flagged_fraction_poison"]
pd.DataFrame(records)[columns].round(3)

# %%
# :func:`~dsc_sklearn.evaluation.report.attack_results` aggregates the records over
# seeds into a table (its ``markdown()`` is what ``dsc-sklearn benchmark``
# writes to ``results.md``).
#
# The plots of :mod:`dsc_sklearn.evaluation.plotting` draw the records. Along the
# attacked stream, a defence that holds keeps its accuracy after the
# trigger (the last point of each line):
fig, ax = plt.subplots(figsize=(7, 4))
plot_accuracy_curves(records, "digits-mlp", ax=ax)
fig.tight_layout()

# %%
# Poisoned samples have a somewhat higher discrepancy than clean ones, but
# the two distributions overlap (plain training's run):
fig, ax = plt.subplots(figsize=(6.5, 3.8))
plot_discrepancy(records, "digits-mlp", ax=ax)
fig.tight_layout()

# %%
# Robustness is only half of the story: a defence that stops the model from
# learning also "resists" the attack. The clean cost is how far below plain
# training the defended model ends on the same stream without poison.
fig, ax = plt.subplots(figsize=(6.5, 4))
plot_tradeoff(records, "digits-mlp", ax=ax)
fig.tight_layout()
