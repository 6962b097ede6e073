"""
Tuning ``threshold`` and ``history_size`` with ``GridSearchCV``
===============================================================

:class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier` is a scikit-learn
estimator, so its defence parameters can be tuned like any others. Two
matter most:

- ``threshold``: the KL value above which a sample is flagged, or
  ``"auto"`` to calibrate it online;
- ``history_size``: how many snapshots are kept, i.e. how far back the
  oldest reference model lies (``history_size * snapshot_every`` batches).

Accuracy alone would pick the defence that does least, so the search also
scores the *false-alarm rate*: the fraction of clean held-out samples that
the fitted model would flag. As for any detector, the false alarms have a
budget: the refit keeps the most accurate candidate among those that flag
some clean samples, but at most 5 %. A candidate that flags no clean
sample at all is left out: its threshold lies above every clean
discrepancy, and nothing says that the poison it should catch lies above
it too.
"""

# %%
# The search
# ----------
# ``snapshot_every=2`` takes a snapshot every other batch, so that a
# ``history_size`` of 2 or 6 puts the oldest reference about 4 or 12
# batches back. ``fit`` makes ``max_epochs`` ordered passes in batches of
# ``batch_size``, through the same path as ``partial_fit``.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset

data = load_stream_dataset("digits", random_state=0)


def false_alarm_rate(estimator, X, y):
    """Fraction of the (clean) held-out samples the fitted model flags."""
    discrepancy = estimator.memorization_discrepancy(X)
    if discrepancy.ndim == 2:  # reference="all": one column per snapshot
        discrepancy = discrepancy.max(axis=1)
    return float(np.mean(discrepancy > estimator.threshold_))


def most_accurate_within_budget(cv_results, budget=0.05):
    """Best accuracy among candidates that flag some, but few, clean samples."""
    accuracy = np.asarray(cv_results["mean_test_accuracy"])
    false_alarms = np.asarray(cv_results["mean_test_false_alarm_rate"])
    armed = (false_alarms > 0) & (false_alarms <= budget)
    return int(np.argmax(np.where(armed, accuracy, -np.inf)))


search = GridSearchCV(
    DiscrepancyAwareOnlineClassifier(max_epochs=4, snapshot_every=2,
                                     input_bounds=(0.0, 1.0), random_state=0),
    param_grid={"threshold": ["auto", 0.01, 0.1, 1.0], "history_size": [2, 6]},
    scoring={"accuracy": "accuracy", "false_alarm_rate": false_alarm_rate},
    refit=most_accurate_within_budget,
    cv=3,
)
search.fit(data.X_train, data.y_train)
print("chosen:", search.best_params_)
print(f"test accuracy of the refitted model: "
      f"{search.best_estimator_.score(data.X_test, data.y_test):.3f}")

# %%
# The results
# -----------
# ``cv_results_`` holds every candidate's scores on every fold.
results = pd.DataFrame(search.cv_results_)
results["threshold"] = results["param_threshold"].astype(str)
columns = ["threshold", "param_history_size", "mean_test_accuracy",
           "mean_test_false_alarm_rate", "mean_fit_time"]
results[columns].round(3)

# %%
# A low fixed threshold flags most clean samples and costs accuracy, since
# the flagged samples are corrected before the model learns from them; the
# further back the oldest snapshot (larger ``history_size``), the larger the
# discrepancies and the more a fixed threshold flags. A high threshold flags
# little or nothing. ``"auto"`` sits at a high quantile of the recent
# discrepancies, so its false alarms stay low whatever their scale.
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, metric, title in zip(
    axes, ("mean_test_accuracy", "mean_test_false_alarm_rate"),
    ("accuracy", "false-alarm rate on clean samples"),
):
    table = results.pivot(index="threshold", columns="param_history_size", values=metric)
    image = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("history_size")
    ax.set_ylabel("threshold")
    ax.set_title(title)
    middle = np.nanmean(table.to_numpy())
    for (row, col), value in np.ndenumerate(table.to_numpy()):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center",
                color="k" if value > middle else "w")
    fig.colorbar(image, ax=ax)
fig.tight_layout()

# %%
# Running the search on a cluster
# -------------------------------
# ``n_jobs`` spreads the fits over local processes. The same search runs on
# a Dask cluster through joblib's dask backend (``pip install
# "dsc-sklearn[distributed]"``)::
#
#     from dask.distributed import Client
#     from joblib import parallel_config
#
#     client = Client("tcp://scheduler:8786")  # or Client(LocalCluster())
#     with parallel_config(backend="dask"):
#         search.fit(data.X_train, data.y_train)
#
# The user guide's section on distributed search has the details.
