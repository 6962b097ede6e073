"""
A poisoned river stream, and the alarm it raises
================================================

A river pipeline learns from a stream it does not control. Here a stretch
of that stream is poisoned, and three models learn from it: the defended
classifier (:class:`~dsc_sklearn.integrations.river.RiverClassifier` with
the library's defaults), the same network with the step guard switched
off, and river's own ``LogisticRegression``. The defended model says when
it acted: a WARNING on the ``"dsc_sklearn"`` logger when an alarm episode
starts, and the episode in the estimator's ``alarms_``.

The poison is crude on purpose: every label of rows 700 to 849 of river's
Phishing data set (shipped with river) is flipped, six mini-batches of 25
rows. It is not the accumulative attack of the benchmark, which crafts
each poisoned batch against the model and is much harder to notice; what
the defaults do against that one is measured in :doc:`/results`.
"""

# %%
# The stream and the models
# -------------------------
# The WARNING goes to the standard ``logging`` module; printing it here
# shows it in the example's output (an application would route the
# ``"dsc_sklearn"`` logger to its alerting instead).
import logging
import sys

import matplotlib.pyplot as plt
import pandas as pd
from river import compose, datasets, linear_model, metrics, preprocessing, utils

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.integrations.river import RiverClassifier

logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")

POISONED = range(700, 850)
stream = [(x, (not y) if i in POISONED else y) for i, (x, y) in enumerate(datasets.Phishing())]
truth = [y for _, y in datasets.Phishing()]


def defended(**params):
    estimator = DiscrepancyAwareOnlineClassifier(batch_size=25, random_state=0, **params)
    return compose.Pipeline(preprocessing.StandardScaler(),
                            RiverClassifier(estimator, classes=[False, True]))


models = {
    "dsc_sklearn, defaults (step guard)": defended(),
    "dsc_sklearn, step_guard=None": defended(step_guard=None),
    "river LogisticRegression": compose.Pipeline(preprocessing.StandardScaler(),
                                                 linear_model.LogisticRegression()),
}

# %%
# Predict, then learn
# -------------------
# Each model predicts every row before learning it (progressive
# validation), and is scored against the *true* label, so the curve shows
# what the poison did to the model, not what it did to the labels. The
# score is a rolling accuracy over the last 100 rows.
curves = {}
for name, model in models.items():
    accuracy = utils.Rolling(metrics.Accuracy, window_size=100)
    curve = []
    for i, ((x, label), true) in enumerate(zip(stream, truth)):
        accuracy.update(true, model.predict_one(x))
        model.learn_one(x, label)
        curve.append(accuracy.get())
    curves[name] = curve
    after = sum(curve[900:1000]) / 100
    print(f"{name}: rolling accuracy after the poison (rows 900-999) {after:.3f}")

# %%
# What the defended model reports
# -------------------------------
# The WARNING above was logged once, when the episode started; the
# episode's record says which steps it spanned, what the guard did and how
# far the step discrepancy went past the guard's bound. Rows 700 to 849 are
# mini-batches 29 to 34. river's logistic regression, one small step per
# row, is moved little by this crude poison too; the same network without
# the guard takes each flipped mini-batch in one full step.
estimator = models["dsc_sklearn, defaults (step guard)"]["RiverClassifier"].estimator_
print(pd.DataFrame(estimator.alarms_).to_string())

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.axvspan(POISONED.start, POISONED.stop, color="0.85", label="labels flipped")
for name, curve in curves.items():
    ax.plot(curve, label=name)
for episode in estimator.alarms_:
    ax.axvline((episode["first_step"] - 1) * 25, color="C3", linestyle="--", linewidth=1)
ax.plot([], [], color="C3", linestyle="--", linewidth=1, label="alarm episode starts")
ax.set_xlabel("rows of the stream")
ax.set_ylabel("rolling accuracy (100 rows)")
ax.set_title("Phishing with six poisoned mini-batches")
ax.legend(fontsize="small", loc="lower left")
fig.tight_layout()
