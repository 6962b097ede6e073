"""``partial_fit`` per batch: the estimator's configurations and a torch loop.

Each benchmarked call is one ``partial_fit`` of ``BATCHES_PER_CALL`` batches
of a clean digits stream, after warm-up (see ``_workloads``); divide by
``extra_info["batches_per_call"]`` for the time per batch. The cases are
``raw`` (plain torch loop), ``none``, ``dsc-without-flags``
(``threshold=1e9``), ``default`` and ``dsc-with-correction``
(``threshold=0.0``). ``benchmarks/ratios.py`` prints the same comparison as
ratios measured side by side.
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
