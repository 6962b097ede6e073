"""
Detecting poisoned samples with the scorer in a ``Pipeline``
============================================================

:class:`~dsc_sklearn.MemorizationDiscrepancyScorer` turns samples into
memorization-discrepancy scores: how much the current model's predictions
differ from those of its historical snapshots. Here it is the feature
extractor of a scikit-learn :class:`~sklearn.pipeline.Pipeline` that learns
to tell poisoned samples from clean ones, and is evaluated as any other
scikit-learn model, with cross-validation.

The poisoned samples come from the accumulative poisoning attack of Pang et
al. (2021), :class:`~dsc_sklearn.evaluation.attacks.AccumulativePoisoningAttack`,
crafted against the same model the scorer reads.
"""

# %%
# A model after burn-in
# ---------------------
# The attack targets a model that has been trained, not yet converged: ten
# plain passes over half of the training split, then a few more clean
# batches, as :func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol` does. The
# snapshot buffer keeps four snapshots, one every ten batches: the newest
# is five batches old, the oldest thirty-five.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import RocCurveDisplay, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from dsc_sklearn import DiscrepancyAwareOnlineClassifier, MemorizationDiscrepancyScorer
from dsc_sklearn.evaluation.attacks import AccumulativePoisoningAttack
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.evaluation.protocol import detection_report

data = load_stream_dataset("digits", random_state=0)
n_burn_in = len(data.X_train) // 2
X_burn_in, y_burn_in = data.X_train[:n_burn_in], data.y_train[:n_burn_in]
X_stream, y_stream = data.X_train[n_burn_in:], data.y_train[n_burn_in:]

clf = DiscrepancyAwareOnlineClassifier(correction="none", hidden_layer_sizes=(128, 128),
                                       input_bounds=(0.0, 1.0), random_state=0)
rng = np.random.default_rng(0)
for _ in range(10):
    order = rng.permutation(n_burn_in)
    for start in range(0, n_burn_in, 100):
        rows = order[start:start + 100]
        clf.partial_fit(X_burn_in[rows], y_burn_in[rows], classes=np.arange(10))
for _ in range(5):
    rows = rng.choice(n_burn_in, size=100, replace=False)
    clf.partial_fit(X_burn_in[rows], y_burn_in[rows])
print(f"after burn-in: test accuracy {clf.score(data.X_test, data.y_test):.3f}, "
      f"{len(clf.snapshots_)} snapshots")

# %%
# Poisoned and clean stream batches
# ---------------------------------
# The white-box attacker crafts a trigger batch from half of the validation
# split, aimed at the other half, and then poisons stream batches so that
# training on them prepares the model for the trigger. Every other batch of
# 25 stream samples is poisoned; the others stay clean. The labels are
# never changed: only the inputs move, by at most 0.2 per pixel.
attack = AccumulativePoisoningAttack(epsilon=0.2, random_state=0)
half = len(data.X_val) // 2
X_trigger, y_trigger = data.X_val[:half], data.y_val[:half]
X_target, y_target = data.X_val[half:], data.y_val[half:]
X_trigger = attack.craft_trigger(clf, X_trigger, y_trigger, X_target, y_target)

X_parts, y_parts, poison_parts, batch_parts = [], [], [], []
for batch, start in enumerate(range(0, len(X_stream) - 24, 25)):
    X_batch, y_batch = X_stream[start:start + 25], y_stream[start:start + 25]
    if batch % 2:
        X_batch, is_poison = attack.poison_batch(clf, X_batch, y_batch, X_trigger, y_trigger,
                                                 X_target, y_target)
    else:
        is_poison = np.zeros(len(X_batch), dtype=bool)
    X_parts.append(X_batch)
    y_parts.append(y_batch)
    poison_parts.append(is_poison)
    batch_parts.append(np.full(len(X_batch), batch))
X, y = np.concatenate(X_parts), np.concatenate(y_parts)
is_poison = np.concatenate(poison_parts)
batch_id = np.concatenate(batch_parts)
print(f"{len(X)} samples in {batch_id.max() + 1} batches, {is_poison.sum()} poisoned")

# %%
# The scorer as a detector
# ------------------------
# With ``prefit=True`` the scorer reads the fitted classifier as it is.
# ``reference="newest"`` compares it with its most recent snapshot.
# ``predict`` flags the samples whose discrepancy is above ``threshold``
# (``-1``); here the threshold is the 95th percentile of the discrepancy of
# clean validation samples, so about 5 % of clean samples are flagged.
scorer = MemorizationDiscrepancyScorer(clf, prefit=True, reference="newest")
scorer.fit(X, is_poison)
clean_scores = scorer.transform(data.X_val).ravel()
scorer.set_params(threshold=float(np.quantile(clean_scores, 0.95)))
report = detection_report(is_poison, scorer.predict(X) == -1)
print(f"threshold {scorer.threshold:.4f}: "
      f"recall {report['recall']:.2f}, precision {report['precision']:.2f}, "
      f"false positive rate {report['false_positive']['rate']:.2f}")

scores = scorer.transform(X).ravel()
fig, ax = plt.subplots(figsize=(6.5, 3.6))
bins = np.logspace(np.log10(scores.min() + 1e-8), np.log10(scores.max()), 30)
ax.hist(scores[~is_poison], bins=bins, alpha=0.6, label="clean")
ax.hist(scores[is_poison], bins=bins, alpha=0.6, label="poisoned")
ax.axvline(scorer.threshold, color="k", linestyle="--", label="threshold")
ax.set_xscale("log")
ax.set_xlabel("memorization discrepancy (KL against the newest snapshot)")
ax.set_ylabel("samples")
ax.legend()
fig.tight_layout()

# %%
# A learned detector in a ``Pipeline``
# ------------------------------------
# With ``reference="all"`` the scorer outputs one discrepancy per snapshot.
# A logistic regression on their logarithms learns how to weigh them. The
# whole pipeline is cross-validated with batches kept whole, so no batch is
# in both a training and a test fold.
#
# Cross-validation clones the pipeline, and a clone of a fitted estimator is
# unfitted; :class:`~sklearn.frozen.FrozenEstimator` keeps the classifier
# fitted through the clones.
detector = make_pipeline(
    MemorizationDiscrepancyScorer(FrozenEstimator(clf), prefit=True, reference="all"),
    FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
    LogisticRegression(),
)
cv = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=0)
auc = cross_val_score(detector, X, is_poison, groups=batch_id, cv=cv, scoring="roc_auc")
print(f"per-sample ROC AUC: {auc.mean():.2f} +/- {auc.std():.2f}")
detector.fit(X, is_poison)
print(dict(zip(detector[:-1].get_feature_names_out(),
               detector[-1].coef_.ravel().round(2).tolist())))

# %%
# One sample or one batch
# -----------------------
# A single sample's discrepancy separates poisoned from clean samples only
# weakly. Averaged over a batch, as the reference implementation decides,
# the same scores separate poisoned batches from clean ones much better:
# the attack moves every sample of a batch a little in the same direction.
#
# The current model's own loss on the labelled sample is a baseline worth
# comparing with: it needs no snapshot at all.
batches = np.unique(batch_id)


def batch_means(values):
    return np.array([values[batch_id == b].mean() for b in batches])


batch_poisoned = np.array([is_poison[batch_id == b].any() for b in batches])
loss = -np.log(clf.predict_proba(X)[np.arange(len(X)), y])
for name, values in (("discrepancy", scores), ("loss", loss)):
    print(f"{name}: ROC AUC per sample {roc_auc_score(is_poison, values):.2f}, "
          f"per batch mean {roc_auc_score(batch_poisoned, batch_means(values)):.2f}")

fig, ax = plt.subplots(figsize=(4.8, 4.5))
RocCurveDisplay.from_predictions(is_poison, scores, name="discrepancy, per sample", ax=ax)
RocCurveDisplay.from_predictions(batch_poisoned, batch_means(scores),
                                 name="discrepancy, batch mean", ax=ax)
RocCurveDisplay.from_predictions(batch_poisoned, batch_means(loss), name="loss, batch mean",
                                 ax=ax, plot_chance_level=True)
ax.set_title("Detecting poisoned samples and batches")
fig.tight_layout()
