"""Three threshold policies on the same stream after burn-in."""

import matplotlib.pyplot as plt
import pandas as pd
from guide_data import burnt_in_classifier, stream_batches, stream_split

from dsc_sklearn.defence.thresholds import linear_schedule

X_stream, y_stream = stream_split()
policies = {
    "fixed: 0.05": 0.05,
    "schedule: linear_schedule()": linear_schedule(),
    'auto: "auto"': "auto",
}
fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
for index, (name, threshold) in enumerate(policies.items()):
    clf = burnt_in_classifier().set_params(correction="dsc", threshold=threshold)
    for X, y in stream_batches(X_stream, y_stream, n_passes=6, seed=2):
        clf.partial_fit(X, y)
    # The burn-in ran without a defence: its discrepancy columns are NaN. (Not
    # dropna() on every column: the step guard's columns are NaN throughout.)
    log = pd.DataFrame(clf.stream_log_).dropna(subset=["mean_discrepancy"])
    log = log.reset_index(drop=True)
    if threshold == "auto":  # the run that corrects least: closest to the plain stream
        ax.plot(log.index + 1, log["mean_discrepancy"], color="grey", alpha=0.6,
                label="batch mean discrepancy")
        ax.plot(log.index + 1, log["max_discrepancy"], color="grey", alpha=0.3,
                label="batch max discrepancy")
    flagged = 100 * log["n_flagged"].sum() / (len(log) * len(X))
    ax.plot(log.index + 1, log["threshold"], color=f"C{index}", linewidth=2,
            label=f"{name} ({flagged:.0f} % flagged)")
ax.set_yscale("log")
ax.set_xlabel("online batch after burn-in")
ax.set_ylabel("KL")
fig.legend(fontsize="small", ncols=2, loc="outside upper center")
