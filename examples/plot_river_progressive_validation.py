"""
Progressive validation with river
=================================

`river <https://riverml.xyz>`_ evaluates online models *progressively*:
each sample of the stream is first predicted, then learnt, so every
prediction is made on unseen data.
:class:`~dsc_sklearn.integrations.river.RiverClassifier` makes the defended
classifier a river model: it takes river's feature dicts, fits in a
``compose.Pipeline`` after ``preprocessing.StandardScaler``, and runs in
``evaluate.progressive_val_score`` like river's own classifiers.

What it does with river's one-sample-at-a-time stream:

- ``learn_one`` buffers the rows, and every ``batch_size`` rows (the
  wrapped estimator's) takes **one optimizer step on the mini-batch**, so
  the step guard calibrates on batches as it does in the benchmarks, not on
  single noisy rows;
- ``learn_many`` (a pandas DataFrame) feeds the same buffer: a stream
  trains on the same mini-batches whether it arrives row by row or in
  frames;
- ``classes=`` are given up front (the network has one output per class),
  and every row must hold the features of the first one.

Both data sets below ship with river; nothing is downloaded.
"""

# %%
# Phishing, one sample at a time
# ------------------------------
# 1 250 web pages, 9 features, phishing or not. Three models see the same
# stream: the defended classifier with its defaults (the step guard, no
# correction), the same network without the guard (``step_guard=None``:
# plain SGD on the same mini-batches), and river's own logistic
# regression, which takes one step per sample.
import matplotlib.pyplot as plt
import pandas as pd
from river import compose, datasets, evaluate, linear_model, metrics, multiclass, preprocessing

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.integrations.river import RiverClassifier


def defended(**params):
    """StandardScaler, then the defended classifier in mini-batches of 25 rows."""
    estimator = DiscrepancyAwareOnlineClassifier(batch_size=25, random_state=0, **params)
    return compose.Pipeline(preprocessing.StandardScaler(),
                            RiverClassifier(estimator, classes=[False, True]))


models = {
    "dsc_sklearn, defaults (step guard)": defended(),
    "dsc_sklearn, step_guard=None (plain SGD)": defended(step_guard=None),
    "river LogisticRegression": compose.Pipeline(preprocessing.StandardScaler(),
                                                 linear_model.LogisticRegression()),
}

curves = {}
for name, model in models.items():
    steps = evaluate.iter_progressive_val_score(
        datasets.Phishing(), model, metrics.Accuracy(), step=50
    )
    curves[name] = [(step["Step"], step["Accuracy"].get()) for step in steps]
    print(f"{name}: progressive accuracy {curves[name][-1][1]:.3f}")

# %%
# The wrapped estimator is ``estimator_``: its counters and its
# ``stream_log_`` show one training step per mini-batch of 25 rows, and
# ``alarms_`` lists the episodes in which the step guard intervened.
clf = models["dsc_sklearn, defaults (step guard)"]["RiverClassifier"].estimator_
print(f"{clf.n_batches_seen_} training steps on {clf.n_samples_seen_} samples; "
      f"{clf.n_steps_scaled_} steps pulled back by the guard, in "
      f"{len(clf.alarms_)} alarm episode(s)")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for name, curve in curves.items():
    ax.plot(*zip(*curve), label=name)
ax.set_xlabel("samples seen")
ax.set_ylabel("progressive accuracy")
ax.set_title("Phishing, predicted then learnt, one sample at a time")
ax.legend(fontsize="small")
fig.tight_layout()

# %%
# Image segments in DataFrames with ``learn_many``
# ------------------------------------------------
# 2 310 image regions, 18 features, 7 classes. ``learn_many`` and
# ``predict_many`` take a whole DataFrame at once, which pays the input
# validation once per frame instead of once per sample; predicting each
# frame before learning it is progressive validation by hand. river's
# logistic regression is binary, so its multi-class baseline is one
# against the rest, run by ``progressive_val_score``.
rows = list(datasets.ImageSegments())
X = pd.DataFrame([x for x, _ in rows])
y = pd.Series([label for _, label in rows])
classes = sorted(y.unique())

model = compose.Pipeline(
    preprocessing.StandardScaler(),
    RiverClassifier(DiscrepancyAwareOnlineClassifier(batch_size=50, random_state=0),
                    classes=classes),
)
correct = 0
for start in range(0, len(X), 100):
    X_frame, y_frame = X.iloc[start:start + 100], y.iloc[start:start + 100]
    correct += int((model.predict_many(X_frame) == y_frame).sum())
    model.learn_many(X_frame, y_frame)
print(f"dsc_sklearn, frames of 100 rows: progressive accuracy {correct / len(X):.3f}")

baseline = evaluate.progressive_val_score(
    datasets.ImageSegments(),
    compose.Pipeline(preprocessing.StandardScaler(),
                     multiclass.OneVsRestClassifier(linear_model.LogisticRegression())),
    metrics.Accuracy(),
)
print(f"river LogisticRegression (one vs rest), one sample at a time: "
      f"progressive accuracy {baseline.get():.3f}")
