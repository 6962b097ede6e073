"""Shared, cached runs behind the user guide's figures.

Matplotlib's plot directive runs each figure script in the Sphinx process
and puts this folder on ``sys.path``, so the scripts import this module and
share its cached results: the burnt-in model and the poisoned batches are
computed once per build.
"""

import copy
from functools import cache

import numpy as np

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.attacks import AccumulativePoisoningAttack
from dsc_sklearn.evaluation.datasets import load_stream_dataset

CLASSES = np.arange(10)


@cache
def digits():
    """Scikit-learn's digits, split for streaming."""
    return load_stream_dataset("digits", random_state=0)


def stream_batches(X, y, n_passes, batch_size=100, seed=0):
    """Mini-batches of ``(X, y)``, reshuffled at every pass."""
    rng = np.random.default_rng(seed)
    for _ in range(n_passes):
        order = rng.permutation(len(X))
        for start in range(0, len(X) - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            yield X[rows], y[rows]


@cache
def _burnt_in():
    data = digits()
    half = len(data.X_train) // 2
    clf = DiscrepancyAwareOnlineClassifier(
        correction="none", step_guard=None, hidden_layer_sizes=(128, 128),
        input_bounds=(0.0, 1.0), random_state=0,
    )
    for X, y in stream_batches(data.X_train[:half], data.y_train[:half], n_passes=10):
        clf.partial_fit(X, y, classes=CLASSES)
    for X, y in stream_batches(data.X_train[:half], data.y_train[:half], n_passes=1, seed=1):
        clf.partial_fit(X, y)
    return clf


def burnt_in_classifier():
    """A fresh copy of a plainly trained MLP (10 passes over half the data).

    Every defence is off: switch one on with ``set_params``.
    """
    return copy.deepcopy(_burnt_in())


def stream_split():
    """The half of the training split the burnt-in model has not seen."""
    data = digits()
    half = len(data.X_train) // 2
    return data.X_train[half:], data.y_train[half:]


@cache
def poisoned_batches(n_batches=4, batch_size=100):
    """Clean stream batches and their poisoned versions, on the burnt-in model.

    Returns
    -------
    X_clean, X_poisoned, y : ndarray
        ``n_batches * batch_size`` rows each.
    """
    data = digits()
    clf = _burnt_in()
    half = len(data.X_val) // 2
    X_trigger, y_trigger = data.X_val[:half], data.y_val[:half]
    X_target, y_target = data.X_val[half:], data.y_val[half:]
    attack = AccumulativePoisoningAttack(epsilon=0.2, random_state=0)
    X_trigger = attack.craft_trigger(clf, X_trigger, y_trigger, X_target, y_target)
    X_stream, y_stream = stream_split()
    rows = slice(0, n_batches * batch_size)
    X_clean, y = X_stream[rows], y_stream[rows]
    X_poisoned = np.concatenate([
        attack.poison_batch(clf, X_clean[start:start + batch_size],
                            y[start:start + batch_size], X_trigger, y_trigger,
                            X_target, y_target)[0]
        for start in range(0, len(X_clean), batch_size)
    ])
    return X_clean, X_poisoned, y
