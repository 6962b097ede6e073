"""The snapshot buffer: discrepancy against snapshots of increasing age."""

import matplotlib.pyplot as plt
import numpy as np
from guide_data import CLASSES, digits, stream_batches

from dsc_sklearn import DiscrepancyAwareOnlineClassifier

data = digits()
clf = DiscrepancyAwareOnlineClassifier(correction="none", history_size=6, snapshot_every=5,
                                       input_bounds=(0.0, 1.0), random_state=0)
accuracy, snapshot_steps = [], []
for X, y in stream_batches(data.X_train, data.y_train, n_passes=6):
    clf.partial_fit(X, y, classes=CLASSES)
    accuracy.append(clf.score(data.X_test, data.y_test))
    if clf.n_batches_seen_ % clf.snapshot_every == 0:
        snapshot_steps.append(clf.n_batches_seen_)
kept = snapshot_steps[-clf.history_size:]

fig, (ax_time, ax_age) = plt.subplots(1, 2, figsize=(10, 3.6))
steps = np.arange(1, len(accuracy) + 1)
ax_time.plot(steps, accuracy, color="C0", label="test accuracy")
ax_time.vlines(snapshot_steps, 0, 1, color="grey", alpha=0.3, label="snapshot taken")
ax_time.vlines(kept, 0, 1, color="C3", label="snapshot still kept")
ax_time.set_ylim(0, 1)
ax_time.set_xlabel("training batch")
ax_time.set_title(f"history_size={clf.history_size}, snapshot_every={clf.snapshot_every}")
ax_time.legend(fontsize="small", loc="lower right")

scores = clf.memorization_discrepancy(data.X_test, reference="all")
ages = [clf.n_batches_seen_ - step for step in kept]
ax_age.boxplot(scores + 1e-8, positions=range(len(ages)), showfliers=False)
ax_age.set_xticks(range(len(ages)), ages)
ax_age.set_yscale("log")
ax_age.set_xlabel("age of the snapshot in batches (oldest first)")
ax_age.set_ylabel("discrepancy of test samples")
ax_age.set_title('reference="all": one column per snapshot')
