"""The training step's stages, each box a hook, captioned by its own docstring."""

import re
import textwrap

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from dsc_sklearn.defence import DiscrepancyAwareNet

HOOKS = ["begin_step", "gate", "correct", "optimizer_step", "snapshot", "record"]


def summary(hook):
    """The first line of the hook's docstring, without reST markup."""
    line = getattr(DiscrepancyAwareNet, hook).__doc__.strip().splitlines()[0]
    return re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", lambda m: m.group(1) or m.group(2), line)


fig, ax = plt.subplots(figsize=(11, 3.0))
width, gap = 1.6, 0.35
for i, hook in enumerate(HOOKS):
    left = i * (width + gap)
    guarded = hook == "optimizer_step"
    ax.add_patch(FancyBboxPatch((left, 0), width, 1, boxstyle="round,pad=0.05",
                                facecolor="C1" if guarded else "C0", alpha=0.25,
                                edgecolor="C1" if guarded else "C0"))
    ax.text(left + width / 2, 0.82, hook, ha="center", va="center",
            fontsize=10, family="monospace", weight="bold")
    ax.text(left + width / 2, 0.40, textwrap.fill(summary(hook), 24), ha="center",
            va="center", fontsize=7.5)
    if i:
        ax.annotate("", xy=(left - 0.05, 0.5), xytext=(left - gap + 0.05, 0.5),
                    arrowprops=dict(arrowstyle="->", color="grey"))
ax.text(3 * (width + gap) + width / 2, -0.22, "the step guard runs here", ha="center",
        fontsize=8, color="C1")
ax.set_xlim(-0.1, len(HOOKS) * (width + gap))
ax.set_ylim(-0.35, 1.1)
ax.axis("off")
ax.set_title("DiscrepancyAwareNet.train_step: one Step passed through six hooks")
fig.tight_layout()
