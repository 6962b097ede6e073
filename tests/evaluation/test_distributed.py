"""Grid searches and the benchmark fan out over a Dask cluster through joblib.

Both ``GridSearchCV`` and :func:`dsc_sklearn.evaluation.benchmark.run_benchmark` run
their jobs through :class:`joblib.Parallel`, so
``joblib.parallel_config(backend="dask")`` sends them to the workers of a
``dask.distributed`` cluster. The cluster here is a ``LocalCluster`` of two
single-threaded worker *processes*: each worker has its own torch random
state, so the results must equal those of a sequential run, as they would
on a real cluster.
"""

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.benchmark import run_benchmark
from dsc_sklearn.evaluation.datasets import load_stream_dataset

distributed = pytest.importorskip("dask.distributed")
pytestmark = pytest.mark.slow


def test_grid_search_and_benchmark_run_on_a_dask_cluster():
    """One test, one cluster: pytest-xdist never starts two."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        # One torch thread per worker: two workers already fill two cores.
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    with cluster, distributed.Client(cluster) as client:
        _check_grid_search(client)
        _check_benchmark(client)


def _run_on_cluster(client, run):
    """Run ``run()`` under joblib's dask backend; check that the workers ran it."""
    with distributed.get_task_stream(client) as stream, parallel_config(backend="dask"):
        result = run()
    workers = {task["worker"] for task in stream.data}
    assert workers and workers <= set(client.scheduler_info()["workers"])
    return result


def _search(n_jobs):
    return GridSearchCV(
        DiscrepancyAwareOnlineClassifier(hidden_layer_sizes=(32,), snapshot_every=2,
                                         input_bounds=(0.0, 1.0), random_state=0),
        {"threshold": ["auto", 0.5], "history_size": [1, 3]},
        cv=2, n_jobs=n_jobs,
    )


def _check_grid_search(client):
    """GridSearchCV's fits run on the workers and score as a sequential search."""
    data = load_stream_dataset("digits", n_samples=600, random_state=0)
    search = _run_on_cluster(client, lambda: _search(-1).fit(data.X_train, data.y_train))

    sequential = _search(1).fit(data.X_train, data.y_train)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               sequential.cv_results_["mean_test_score"])
    assert search.best_params_ == sequential.best_params_


def _check_benchmark(client):
    """run_benchmark's runs go to the workers and give the sequential records."""
    params = dict(defences=("GC", "DSC-default"), seeds=(0, 1), drifts=(), learning=False,
                  max_steps=2,
                  burn_in_epochs=1, defence_warmup=1, progress=False)
    records = _run_on_cluster(client, lambda: run_benchmark(**params))

    expected = run_benchmark(n_jobs=1, **params)
    assert len(records) == len(expected) == 4
    for got, want in zip(records, expected):
        assert {k: got[k] for k in ("defence", "attack", "seed")} == \
            {k: want[k] for k in ("defence", "attack", "seed")}
        for key in ("accuracy_burn_in", "accuracy_trigger", "accuracy_clean"):
            assert got[key] == pytest.approx(want[key])
