"""Cost of the input corrections, per correction step.

Every sample is flagged (threshold 0), so ``"dsc"`` takes all its steps; the
per-step cost is the time of the call divided by ``extra_info["steps"]``, or
the difference between the ``steps=10`` and ``steps=1`` rows. A ``"dsc"``
step is a forward and backward pass of the current model plus, from the
second step on, the discrepancy of the moved inputs (a reference forward
pass and the divergence); ``"descent"`` and ``"adversarial"`` skip the
discrepancy.
"""

import pytest
import torch
from _workloads import DEFAULT_MODULES, QUICK, digits_stream, fitted_classifier

from dsc_sklearn.defence.correction import (
    adversarial_examples,
    discrepancy_aware_correction,
    loss_descent,
)

BATCH_SIZE = 32 if QUICK else 256
OPTIONS = dict(epsilon=0.2, step_size=0.02, input_bounds=(0.0, 1.0))


def _correction(name, net, X, y, steps):
    module = net.module_
    if name == "dsc":
        flagged = torch.ones(len(X), dtype=torch.bool)

        def still_flagged(X_rows, y_rows, logits):
            return net.discrepancy(X_rows, logits) > 0.0

        return lambda: discrepancy_aware_correction(
            module, X, y, flagged, still_flagged, max_steps=steps, **OPTIONS
        )
    if name == "descent":
        return lambda: loss_descent(module, X, y, max_steps=steps, **OPTIONS)
    generator = torch.Generator().manual_seed(0)
    return lambda: adversarial_examples(
        module, X, y, max_steps=steps, generator=generator, **OPTIONS
    )


@pytest.mark.parametrize("steps", [2] if QUICK else [1, 10])
@pytest.mark.parametrize("module", DEFAULT_MODULES)
@pytest.mark.parametrize("name", ["dsc", "descent", "adversarial"])
def test_correction(benchmark, name, module, steps):
    net = fitted_classifier(module, BATCH_SIZE, history_size=2).net_
    X, y = (torch.as_tensor(a) for a in digits_stream(BATCH_SIZE, seed=6))
    benchmark.group = f"correction {module}"
    benchmark.extra_info.update(correction=name, steps=steps, batch_size=BATCH_SIZE)
    X_corrected, n_steps = benchmark(_correction(name, net, X, y, steps))
    assert X_corrected.shape == X.shape and n_steps <= steps
