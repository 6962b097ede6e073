"""Cost of the step guard per training step, and of input validation per call.

``test_train_step`` times ``net_.train_step`` on fresh batches already on the
device, for every defence off (``none``) and for the defaults (``default``:
the step guard), so that their difference is the guard's cost per step
(``benchmarks/breakdown.py`` splits it into the guard's stages).
``test_validation`` times the checks of one ``partial_fit`` call on a plain
float32 batch: scikit-learn's ``validate_data`` against the estimator's fast
path, which gives the same arrays (``tests/defence/test_performance.py``).
"""

import numpy as np
import pytest
import torch
from _workloads import DEVICE, QUICK, BatchCycler, make_trainer
from sklearn.utils.validation import validate_data

from dsc_sklearn.defence._classifier import _validated_batch

BATCH_SIZE = 32 if QUICK else 256
MODULES = ("mlp-128-128",) if QUICK else ("mlp-128-128", "mlp")


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", ["none", "default"])
def test_train_step(benchmark, case, module):
    net = make_trainer(case, module, BATCH_SIZE).net_
    cycler = BatchCycler(BATCH_SIZE, n_chunks=16, seed=7)
    batches = [tuple(torch.as_tensor(a, device=DEVICE) for a in cycler()) for _ in range(16)]
    position = iter(range(10 ** 9))

    def step():
        net.train_step(batches[next(position) % len(batches)])

    benchmark.group = f"train_step {module} batch {BATCH_SIZE}"
    benchmark.extra_info.update(case=case)
    benchmark(step)
    assert (net.step_guard_ is None) == (case == "none")


@pytest.mark.parametrize("path", ["validate_data", "fast"])
def test_validation(benchmark, path):
    clf = make_trainer("none", "mlp", BATCH_SIZE, pretrain=0, warmup=1)
    X, y = BatchCycler(BATCH_SIZE)()
    if path == "fast":
        call = lambda: _validated_batch(clf, X, y, reset=False)  # noqa: E731
    else:
        call = lambda: validate_data(clf, X, y, dtype=np.float32,  # noqa: E731
                                     force_writeable=True, reset=False)
    benchmark.group = f"input validation, batch {BATCH_SIZE}"
    X_checked, y_checked = benchmark(call)
    assert X_checked is X and np.array_equal(y_checked, y)
