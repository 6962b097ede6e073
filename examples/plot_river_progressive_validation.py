"""
Progressive validation with river
=================================

`river <https://riverml.xyz>`_ evaluates online models *progressively*:
each sample of the stream is first predicted, then learnt, so every
prediction is made on unseen data. river's
``compat.convert_sklearn_to_river`` wraps any scikit-learn classifier that
has ``partial_fit`` into a river classifier, and
:class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier` is one.

What the adapter does (river 0.26), and what it means here:

- it deep-copies the estimator, and every ``learn_one`` calls
  ``partial_fit([x], [y], classes=classes)``. The classifier accepts
  ``classes=`` on every call (it checks that they do not change), so the
  adapter works as it is;
- ``learn_one`` is **one training step on one sample**. ``batch_size`` has
  no effect, and everything counted in batches is counted in samples:
  ``snapshot_every``, the ``"auto"`` threshold's warm-up and window. A
  step on a single sample is noisy, so the learning rate is lowered to
  0.01 here;
- before the first ``learn_one`` the classifier is not fitted; the adapter
  catches the ``NotFittedError`` and predicts the first class;
- each call goes through scikit-learn's input validation, a fixed cost of
  a few milliseconds per sample. For throughput, the mini-batch methods
  ``learn_many`` and ``predict_many`` take a pandas DataFrame of many
  samples at once (last section).
"""

# %%
# Progressive validation, one sample at a time
# --------------------------------------------
# river's ``stream.iter_array`` turns the arrays into a stream of
# ``(features dict, label)`` pairs. The first 600 shuffled digits keep the
# example short.
import matplotlib.pyplot as plt
import pandas as pd
from river import compat, evaluate, linear_model, metrics, multiclass, stream

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset

data = load_stream_dataset("digits", random_state=0)
X, y = data.X_train[:600], data.y_train[:600]
classes = list(range(data.n_classes))

models = {
    "DSC (dsc_sklearn)": compat.convert_sklearn_to_river(
        DiscrepancyAwareOnlineClassifier(lr=0.01, input_bounds=(0.0, 1.0), random_state=0),
        classes=classes,
    ),
    "plain (dsc_sklearn, correction='none')": compat.convert_sklearn_to_river(
        DiscrepancyAwareOnlineClassifier(lr=0.01, correction="none",
                                         input_bounds=(0.0, 1.0), random_state=0),
        classes=classes,
    ),
    "river logistic regression (one vs rest)": multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression()
    ),
}

curves = {}
for name, model in models.items():
    steps = evaluate.iter_progressive_val_score(
        stream.iter_array(X, y), model, metrics.Accuracy(), step=50
    )
    curves[name] = [(step["Step"], step["Accuracy"].get()) for step in steps]
    print(f"{name}: progressive accuracy {curves[name][-1][1]:.3f}")

# %%
# The wrapped estimator is reachable as ``model.estimator``: its counters
# and its ``stream_log_`` show one training step per sample.
dsc = models["DSC (dsc_sklearn)"].estimator
print(f"{dsc.n_batches_seen_} training steps on {dsc.n_samples_seen_} samples, "
      f"{dsc.n_flagged_} flagged, {len(dsc.snapshots_)} snapshots")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for name, curve in curves.items():
    ax.plot(*zip(*curve), label=name)
ax.set_xlabel("samples seen")
ax.set_ylabel("progressive accuracy")
ax.set_title("Digits, one sample at a time")
ax.legend(fontsize="small")
fig.tight_layout()

# %%
# Mini-batches with ``learn_many``
# --------------------------------
# ``learn_many`` passes a whole DataFrame to one ``partial_fit`` call, so
# the classifier trains in its own batches of ``batch_size`` rows, with the
# default learning rate, and the validation cost is paid once per batch.
# Predicting each batch before learning it is progressive validation by
# hand.
model = compat.convert_sklearn_to_river(
    DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0), random_state=0),
    classes=classes,
)
columns = [f"pixel_{i}" for i in range(X.shape[1])]
correct = seen = 0
for start in range(0, len(data.X_train), 50):
    X_batch = pd.DataFrame(data.X_train[start:start + 50], columns=columns)
    y_batch = pd.Series(data.y_train[start:start + 50])
    correct += int((model.predict_many(X_batch).to_numpy() == y_batch.to_numpy()).sum())
    seen += len(y_batch)
    model.learn_many(X_batch, y_batch)
print(f"mini-batch progressive accuracy on {seen} samples: {correct / seen:.3f}")
X_test = pd.DataFrame(data.X_test, columns=columns)
print(f"test accuracy after one pass: {model.estimator.score(X_test, data.y_test):.3f}")
