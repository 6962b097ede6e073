"""``partial_fit`` per batch: the estimator's configurations and a torch loop.

Each benchmarked call of ``test_partial_fit`` is one ``partial_fit`` of
``BATCHES_PER_CALL`` batches of a clean digits stream, after warm-up (see
``_workloads``); divide by ``extra_info["batches_per_call"]`` for the time
per batch. The cases are ``raw`` (plain torch loop), ``none`` (every defence
off), ``default`` (the step guard), ``dsc-without-flags``
(``threshold=1e9``), ``dsc-auto`` and ``dsc-with-correction``
(``threshold=0.0``), the DSC cases without the guard.

``test_hot_path`` is the hot path of issue 15: the 64-128-128-10 MLP, batch
256, one batch per call, for ``raw``, ``none`` and ``default``: the figures
``none / raw`` (target 1.15) and ``default / none`` (target 1.5, goal 1.35).
``benchmarks/ratios.py`` prints the same comparisons as ratios measured side
by side, which is how docs/performance.md reports them.
"""

import pytest
from _workloads import (
    BATCH_SIZES,
    CASES,
    DEFAULT_MODULES,
    QUICK,
    make_trainer,
    partial_fit_step,
)

BATCHES_PER_CALL = 1 if QUICK else 8


@pytest.mark.parametrize("batch_size", BATCH_SIZES[:1] if QUICK else BATCH_SIZES)
@pytest.mark.parametrize("module", DEFAULT_MODULES)
@pytest.mark.parametrize("case", CASES)
def test_partial_fit(benchmark, case, module, batch_size):
    trainer = make_trainer(case, module, batch_size)
    step = partial_fit_step(trainer, batch_size, BATCHES_PER_CALL)
    benchmark.group = f"partial_fit {module} batch {batch_size}"
    benchmark.extra_info.update(case=case, batches_per_call=BATCHES_PER_CALL)
    benchmark(step)
    if case != "raw":
        assert trainer.n_batches_seen_ > 0


HOT_PATH_BATCH = BATCH_SIZES[0] if QUICK else 256


@pytest.mark.parametrize("case", ["raw", "none", "default"])
def test_hot_path(benchmark, case):
    trainer = make_trainer(case, "mlp-128-128", HOT_PATH_BATCH)
    step = partial_fit_step(trainer, HOT_PATH_BATCH, batches_per_call=1)
    benchmark.group = f"hot path: mlp-128-128 batch {HOT_PATH_BATCH}, one batch per call"
    benchmark.extra_info.update(case=case, batches_per_call=1)
    benchmark(step)
    if case == "default":
        assert trainer.net_.step_guard_.n_steps_ > 0
