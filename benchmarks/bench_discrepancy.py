"""Cost of the memorization discrepancy against the size of the buffer.

``test_discrepancy`` times what a training step pays for the discrepancy
(the current logits are given, as the step reuses its training pass);
``test_reference_logits`` times the snapshots' forward pass alone. With
``reference="oldest"`` one snapshot is evaluated whatever the buffer holds;
with ``"mean"`` all of them, in one vectorised call.
"""

import pytest
import torch
from _workloads import DEFAULT_MODULES, QUICK, digits_stream, fitted_classifier

HISTORY_SIZES = (1, 16) if QUICK else (1, 2, 4, 8, 16)
BATCH_SIZE = 32 if QUICK else 256


def _net_and_inputs(module, history_size):
    net = fitted_classifier(module, BATCH_SIZE, history_size=history_size).net_
    X = torch.as_tensor(digits_stream(BATCH_SIZE, seed=5)[0])
    with torch.no_grad():
        logits = net.module_(X)
    assert len(net.snapshots_) == history_size
    return net, X, logits


@pytest.mark.parametrize("reference", ["oldest", "mean"])
@pytest.mark.parametrize("history_size", HISTORY_SIZES)
@pytest.mark.parametrize("module", DEFAULT_MODULES)
def test_discrepancy(benchmark, module, history_size, reference):
    net, X, logits = _net_and_inputs(module, history_size)
    benchmark.group = f"discrepancy {module} {reference}"
    benchmark.extra_info.update(history_size=history_size, batch_size=BATCH_SIZE)
    result = benchmark(net.discrepancy, X, logits, reference)
    assert result.shape == (BATCH_SIZE,)


@pytest.mark.parametrize("history_size", HISTORY_SIZES)
@pytest.mark.parametrize("module", DEFAULT_MODULES)
def test_reference_logits(benchmark, module, history_size):
    net, X, _ = _net_and_inputs(module, history_size)
    benchmark.group = f"reference logits {module}"
    benchmark.extra_info.update(history_size=history_size, batch_size=BATCH_SIZE)
    result = benchmark(net.snapshots_.reference_logits, net.module_, X, "mean")
    assert result.shape[0] == history_size
