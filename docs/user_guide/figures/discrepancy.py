"""Memorization discrepancy: one sample's KL, and clean against poisoned samples."""

import matplotlib.pyplot as plt
import numpy as np
import torch
from guide_data import burnt_in_classifier, poisoned_batches
from torch.func import functional_call

clf = burnt_in_classifier()
X_clean, X_poisoned, y = poisoned_batches()
d_clean = clf.memorization_discrepancy(X_clean, reference="newest")
d_poisoned = clf.memorization_discrepancy(X_poisoned, reference="newest")

fig, (ax_one, ax_all) = plt.subplots(1, 2, figsize=(10, 3.6),
                                     gridspec_kw={"width_ratios": [1, 1.3]})

# Left: the two distributions behind one poisoned sample's discrepancy. A
# snapshot is a state dict of the module, evaluated with functional_call.
index = int(np.argmax(d_poisoned))
sample = X_poisoned[index:index + 1]
with torch.no_grad():
    logits = functional_call(clf.module_.eval(), clf.snapshots_[-1], (torch.as_tensor(sample),))
p_hist = torch.softmax(logits.double(), dim=1)[0].numpy()
p_cur = clf.predict_proba(sample)[0]
classes = np.arange(len(p_cur))
ax_one.bar(classes - 0.2, p_hist, width=0.4, label="newest snapshot, $p_{hist}$")
ax_one.bar(classes + 0.2, p_cur, width=0.4, label="current model, $p_{cur}$")
ax_one.set_xticks(classes)
ax_one.set_xlabel("class")
ax_one.set_ylabel("probability")
ax_one.set_title(f"A poisoned sample of label {y[index]}: KL = {d_poisoned[index]:.2f}")
ax_one.legend(fontsize="small")

# Right: the discrepancy of clean samples and of their poisoned versions.
floor = 1e-6
values = np.r_[d_clean, d_poisoned] + floor
bins = np.logspace(np.log10(values.min()), np.log10(values.max()), 30)
ax_all.hist(d_clean + floor, bins=bins, alpha=0.6, label="clean stream samples")
ax_all.hist(d_poisoned + floor, bins=bins, alpha=0.6, label="the same samples, poisoned")
ax_all.set_xscale("log")
ax_all.set_xlabel("memorization discrepancy against the newest snapshot")
ax_all.set_ylabel("samples")
ax_all.set_title(f"{len(d_clean)} stream samples")
ax_all.legend(fontsize="small")
