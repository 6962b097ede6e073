"""
Streaming training with ``partial_fit``
=======================================

:class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier` learns from a stream:
every :meth:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier.partial_fit` call
is one pass over the rows it is given, in steps of ``batch_size``. Before
each step it compares the current model with its weight snapshots (the
*memorization discrepancy*), flags the samples whose discrepancy is above
the threshold, and corrects them (DSC) before training on them.

This example streams scikit-learn's digits through the classifier, reads
the per-batch ``stream_log_``, and retunes the defence in the middle of the
stream with ``set_params``.
"""

# %%
# A stream of digits
# ------------------
# :func:`~dsc_sklearn.evaluation.datasets.load_stream_dataset` returns stratified
# train, validation and test splits with pixels in ``[0, 1]``. The training
# split is the stream; it is reshuffled at every pass, as a stream of fresh
# batches would be.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset

data = load_stream_dataset("digits", random_state=0)
classes = np.arange(data.n_classes)
print(data.description)
print(f"stream: {len(data.X_train)} samples, test: {len(data.X_test)} samples")


def stream_batches(X, y, n_passes, batch_size=100, seed=0):
    """Yield mini-batches of ``(X, y)``, reshuffled at every pass."""
    rng = np.random.default_rng(seed)
    for _ in range(n_passes):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            yield X[rows], y[rows]


# %%
# Burn-in: plain training first
# -----------------------------
# ``classes`` must be given on the first call: a stream cannot promise that
# its first batch holds every label. ``input_bounds`` keeps corrected pixels
# inside ``[0, 1]``.
#
# A model that is still learning from scratch moves fast, so every sample
# disagrees with its older snapshots. The defence is meant for a model that
# has been trained (the *burn-in*, as in the attack's threat model), so the
# stream starts with plain training: ``correction="none"`` computes no
# discrepancy at all.
clf = DiscrepancyAwareOnlineClassifier(correction="none", input_bounds=(0.0, 1.0),
                                       random_state=0)
accuracy = []
for X_batch, y_batch in stream_batches(data.X_train, data.y_train, n_passes=3, seed=0):
    clf.partial_fit(X_batch, y_batch, classes=classes)
    accuracy.append(clf.score(data.X_test, data.y_test))
n_burn_in = clf.n_batches_seen_
print(f"burn-in: {n_burn_in} batches, test accuracy {accuracy[-1]:.3f}")

# %%
# Then the defence
# ----------------
# ``set_params`` between two ``partial_fit`` calls takes effect from the next
# call and keeps the weights, the snapshots and the optimizer state. The
# ``"auto"`` threshold first watches 10 batches (it is infinite meanwhile),
# then sits at a high quantile of the recent discrepancies.
clf.set_params(correction="dsc")
for X_batch, y_batch in stream_batches(data.X_train, data.y_train, n_passes=4, seed=1):
    clf.partial_fit(X_batch, y_batch)
    accuracy.append(clf.score(data.X_test, data.y_test))

print(f"{clf.n_batches_seen_} batches, {clf.n_samples_seen_} samples, "
      f"{clf.n_flagged_} flagged; test accuracy {accuracy[-1]:.3f}")
print(f"{len(clf.snapshots_)} snapshots kept, threshold in force {clf.threshold_:.3f}")

# %%
# The stream log
# --------------
# ``stream_log_`` holds one record per training batch (the last 10 000):
# the loss, the mean and maximum discrepancy, the threshold in force, how
# many samples were flagged and how many correction steps were taken. The
# discrepancy columns are NaN while no defence runs.
log = pd.DataFrame(clf.stream_log_).set_index("step")
log.iloc[n_burn_in - 2:n_burn_in + 14]

# %%
# The discrepancy is measured against the *oldest* of the four snapshots
# (``reference="oldest"``), taken every 10 batches. It is large right after
# burn-in, when the oldest snapshot is a half-trained model, and falls as
# the snapshots catch up with a model that has stopped moving much; the
# quantile threshold lags behind it.
fig, (ax_learn, ax_disc) = plt.subplots(1, 2, figsize=(10, 3.8))
ax_learn.plot(log.index, log["loss"], label="training loss")
ax_learn.plot(log.index, accuracy, label="test accuracy")
ax_learn.set_xlabel("batch")
ax_learn.set_title("Learning from the stream")

ax_disc.plot(log.index, log["mean_discrepancy"], label="mean discrepancy")
ax_disc.plot(log.index, log["max_discrepancy"], label="max discrepancy", alpha=0.7)
ax_disc.plot(log.index, log["threshold"], "k--", label="threshold")
flagged = log[log["n_flagged"] > 0]
ax_disc.scatter(flagged.index, flagged["max_discrepancy"], color="C3", zorder=3,
                label="batches with flagged samples")
ax_disc.set_yscale("log")
ax_disc.set_xlabel("batch")
ax_disc.set_ylabel("KL")
ax_disc.set_title("Memorization discrepancy per batch")
for ax in (ax_learn, ax_disc):
    ax.axvline(n_burn_in + 0.5, color="grey", linewidth=0.8)
    ax.legend(fontsize="small")
fig.tight_layout()

# %%
# Scoring samples without training
# --------------------------------
# :meth:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier.memorization_discrepancy`
# scores samples against the snapshots without a training step. With
# ``reference="all"`` there is one column per snapshot, oldest first.
scores = clf.memorization_discrepancy(data.X_test, reference="all")
print("median discrepancy per snapshot (oldest first):",
      np.round(np.median(scores, axis=0), 4))

# %%
# A threshold that is too low
# ---------------------------
# A fixed threshold is an absolute KL value, and its scale depends on the
# model and the data. One far below the clean discrepancies flags almost
# every sample; with ``correction="drop"`` the model then trains on almost
# nothing and stops learning, which is why every defence must also be judged
# on a clean stream.
clf.set_params(correction="drop", threshold=1e-4)
before = clf.n_flagged_
for X_batch, y_batch in stream_batches(data.X_train, data.y_train, n_passes=1, seed=2):
    clf.partial_fit(X_batch, y_batch)
print(f"threshold 1e-4: {clf.n_flagged_ - before} of {len(data.X_train)} samples "
      f"flagged and dropped")
