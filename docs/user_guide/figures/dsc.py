"""DSC on one poisoned batch: flagged samples descend until they pass the gate."""

import matplotlib.pyplot as plt
import numpy as np
import torch
from guide_data import burnt_in_classifier, poisoned_batches

from dsc_sklearn.defence.correction import discrepancy_aware_correction

clf = burnt_in_classifier()
X_clean, X_poisoned, y = poisoned_batches()
X_batch, y_batch = X_poisoned[:100], y[:100]
d_clean = clf.memorization_discrepancy(X_clean, reference="newest")
threshold = float(np.quantile(d_clean, 0.9))  # flags about 10 % of clean samples

# The gate is re-applied after every step to the rows still being corrected,
# in their order in the batch; record what it sees for each of them.
trajectory = [clf.memorization_discrepancy(X_batch, reference="newest")]
flagged = torch.as_tensor(trajectory[0] > threshold)
active = np.flatnonzero(flagged.numpy())


def still_flagged(X_rows, y_rows, current_logits):
    global active
    discrepancy = clf.memorization_discrepancy(X_rows.numpy(), reference="newest")
    seen = np.full(len(X_batch), np.nan)
    seen[active] = discrepancy
    trajectory.append(seen)
    active = active[discrepancy > threshold]
    return torch.as_tensor(discrepancy > threshold)


X_corrected, n_steps = discrepancy_aware_correction(
    clf.module_, torch.as_tensor(X_batch), torch.as_tensor(clf._encode(y_batch)), flagged,
    still_flagged, epsilon=0.2, step_size=0.02, max_steps=10, input_bounds=(0.0, 1.0),
)
trajectory = np.array(trajectory)  # (n_checks, n_samples)
moved = np.abs(X_corrected.numpy() - X_batch).max(axis=1)

fig, (ax_path, ax_move) = plt.subplots(1, 2, figsize=(10, 3.6))
for sample in np.flatnonzero(flagged.numpy()):
    ax_path.plot(range(len(trajectory)), trajectory[:, sample] + 1e-6, color="C3", alpha=0.5)
ax_path.axhline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
ax_path.set_yscale("log")
ax_path.set_xlabel("correction step")
ax_path.set_ylabel("discrepancy")
ax_path.set_title(f"{int(flagged.sum())} flagged samples of a poisoned batch, {n_steps} steps")
ax_path.legend(fontsize="small")

ax_move.hist([moved[flagged.numpy()], moved[~flagged.numpy()]], bins=np.linspace(0, 0.2, 11),
             label=["flagged", "not flagged"], color=["C3", "C0"])
ax_move.set_xlabel("largest pixel change made by DSC (L-infinity)")
ax_move.set_ylabel("samples")
ax_move.set_title("Only flagged samples move, at most epsilon = 0.2")
ax_move.legend(fontsize="small")
