"""The threads contract (docs/reliability.md, section "Threads").

Read-only calls (``predict``, ``predict_proba``, ``score``,
``memorization_discrepancy``, the scorer's ``transform``) never write to the
module and may run while another thread streams; writing calls
(``partial_fit``, ``fit``, ``load_params``, ``set_params``, ``take_snapshot``)
on one estimator are serialised by its lock. Each test hammers an estimator
from several threads and compares it with a serial twin.
"""

import copy
import functools
import io
import pickle
import threading

import numpy as np
import pytest
import torch
from sklearn.base import clone

from dsc_sklearn import DiscrepancyAwareOnlineClassifier, MemorizationDiscrepancyScorer
from dsc_sklearn.defence.modules import MLP

N_FEATURES, CLASSES = 6, [0, 1, 2]


#: A module whose training differs from its evaluation (not mode invariant).
DropoutNet = functools.partial(MLP, hidden_layer_sizes=(16,), dropout=0.5)


def stream(n_batches, seed=0, batch_size=40):
    rng = np.random.RandomState(seed)
    X = rng.rand(n_batches * batch_size, N_FEATURES).astype(np.float32)
    y = rng.randint(len(CLASSES), size=len(X))
    return [(X[i:i + batch_size], y[i:i + batch_size])
            for i in range(0, len(X), batch_size)]


def first_call(module=None, seed=0, **params):
    X, y = stream(1, seed=99)[0]
    torch.manual_seed(seed)
    return DiscrepancyAwareOnlineClassifier(module, batch_size=20, random_state=0,
                                            **params).partial_fit(X, y, classes=CLASSES)


def run_threads(*targets):
    errors = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def module_fingerprint(clf):
    """The module's tensors, their identities and types, and its mode flags."""
    module = clf.module_
    return ([(name, id(tensor), type(tensor), tensor.dtype, tensor.detach().clone())
             for name, tensor in module.state_dict(keep_vars=True).items()],
            [submodule.training for submodule in module.modules()])


def assert_same_fingerprint(before, after):
    assert [entry[:4] for entry in before[0]] == [entry[:4] for entry in after[0]]
    for entry_before, entry_after in zip(before[0], after[0]):
        torch.testing.assert_close(entry_before[4], entry_after[4], rtol=0, atol=0)
    assert before[1] == after[1]


@pytest.mark.parametrize("module", [None, DropoutNet])
def test_read_only_calls_in_threads_leave_the_module_untouched(module):
    # On main, two threads calling memorization_discrepancy left the module's
    # parameters as float64 tensors that were no longer Parameters.
    clf = first_call(module)
    X = stream(1, seed=1)[0][0]
    expected = (clf.predict_proba(X), clf.memorization_discrepancy(X))
    before = module_fingerprint(clf)
    results = []

    def read():
        for _ in range(20):
            results.append((clf.predict_proba(X), clf.memorization_discrepancy(X)))

    run_threads(read, read, read)
    assert_same_fingerprint(before, module_fingerprint(clf))
    assert all(isinstance(p, torch.nn.Parameter) for p in clf.module_.parameters())
    assert {id(p) for p in clf.module_.parameters()} == {
        id(p) for group in clf.net_.optimizer_.param_groups for p in group["params"]}
    for proba, discrepancy in results:
        np.testing.assert_array_equal(proba, expected[0])
        np.testing.assert_array_equal(discrepancy, expected[1])


def test_scorer_transform_in_threads_leaves_the_module_untouched():
    clf = first_call()
    scorer = MemorizationDiscrepancyScorer(clf, prefit=True).fit(stream(1)[0][0])
    X = stream(1, seed=1)[0][0]
    expected, before = scorer.transform(X), module_fingerprint(clf)
    results = []

    def read():
        for _ in range(20):
            results.append(scorer.transform(X))

    run_threads(read, read)
    assert_same_fingerprint(before, module_fingerprint(clf))
    for scores in results:
        np.testing.assert_array_equal(scores, expected)


def boundary_states(module, batches, X, **params):
    """A serial twin's predictions and discrepancies after each call."""
    twin = first_call(module, **params)
    states = [(twin.predict_proba(X), twin.memorization_discrepancy(X))]
    for Xb, yb in batches:
        twin.partial_fit(Xb, yb)
        states.append((twin.predict_proba(X), twin.memorization_discrepancy(X)))
    return twin, states


def matches_a_boundary(result, states, index):
    return any(result.shape == state[index].shape
               and np.allclose(result, state[index], rtol=0, atol=1e-6) for state in states)


# The gate swaps snapshot tensors into the module (batched under vmap for
# reference="all") while the reads run: they must not notice.
GATED = {"correction": "dsc", "reference": "all", "snapshot_every": 2}


@pytest.mark.slow
@pytest.mark.parametrize("module, params", [(None, {}), (DropoutNet, {}), (None, GATED)])
@pytest.mark.parametrize("trial", range(2))
def test_reads_while_streaming_see_the_model_between_two_calls(module, params, trial):
    """Every read during the stream equals the serial twin's at a call boundary.

    The stream trains exactly as without readers (Dropout included: on
    main, ``predict`` flipped the shared training flag mid-step).
    """
    batches = stream(15, seed=trial + 2)
    X = stream(1, seed=1)[0][0][:10]
    twin, states = boundary_states(module, batches, X, **params)
    clf = first_call(module, **params)
    done = threading.Event()
    reads = []

    def write():
        for Xb, yb in batches:
            clf.partial_fit(Xb, yb)
        done.set()

    def read():
        while not done.is_set():
            reads.append((clf.predict_proba(X), clf.memorization_discrepancy(X)))

    run_threads(write, read, read)
    assert reads
    for proba, discrepancy in reads:
        assert matches_a_boundary(proba, states, 0)
        assert matches_a_boundary(discrepancy, states, 1)
    np.testing.assert_allclose(clf.predict_proba(X), twin.predict_proba(X), rtol=0,
                               atol=1e-6)
    assert clf.n_batches_seen_ == twin.n_batches_seen_ == len(clf.stream_log_)


class OrderRecorder(DiscrepancyAwareOnlineClassifier):
    """Records the batches in the order its partial_fit calls ran."""

    order = None

    def _partial_fit(self, X, y, classes, sample_weight=None, transaction=None):
        type(self).order.append(int(X[0, 0] * 1e6))
        return super()._partial_fit(X, y, classes, sample_weight, transaction)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_concurrent_partial_fit_calls_end_as_made_one_after_another(trial):
    """Three threads stream into one estimator; a twin replays their order serially.

    On main, this crashed the interpreter (SIGSEGV in ``zero_grad``), or
    desynchronised the counters from ``stream_log_``.
    """
    batches = stream(24, seed=10 + trial)
    by_key = {int(Xb[0, 0] * 1e6): (Xb, yb) for Xb, yb in batches}
    assert len(by_key) == len(batches)
    OrderRecorder.order = []
    X0, y0 = stream(1, seed=99)[0]
    clf = OrderRecorder(batch_size=20, random_state=0)
    clf.partial_fit(X0, y0, classes=CLASSES)
    OrderRecorder.order.clear()

    def write(part):
        def run():
            for Xb, yb in batches[part::3]:
                clf.partial_fit(Xb, yb)
        return run

    run_threads(write(0), write(1), write(2))
    order = list(OrderRecorder.order)
    assert sorted(order) == sorted(by_key)
    twin = first_call()
    for key in order:
        twin.partial_fit(*by_key[key])
    X = stream(1, seed=1)[0][0]
    np.testing.assert_allclose(clf.predict_proba(X), twin.predict_proba(X), rtol=0,
                               atol=1e-6)
    assert clf.n_batches_seen_ == twin.n_batches_seen_ == len(clf.stream_log_)
    assert clf.n_samples_seen_ == twin.n_samples_seen_
    assert [r["loss"] for r in clf.stream_log_] == pytest.approx(
        [r["loss"] for r in twin.stream_log_], abs=1e-6)
    optimizer_params = {id(p) for g in clf.net_.optimizer_.param_groups for p in g["params"]}
    assert optimizer_params == {id(p) for p in clf.module_.parameters()}


def test_writing_calls_wait_for_each_other():
    """A partial_fit call waits while another thread holds the estimator's lock."""
    clf = first_call()
    Xb, yb = stream(1, seed=3)[0]
    started, finished = threading.Event(), threading.Event()

    def write():
        started.set()
        clf.partial_fit(Xb, yb)
        finished.set()

    with clf._write_lock():
        thread = threading.Thread(target=write)
        thread.start()
        started.wait()
        assert not finished.wait(0.2)
        assert clf.n_batches_seen_ == 2
    thread.join()
    assert finished.is_set() and clf.n_batches_seen_ == 4


def test_reads_during_fit_wait_for_the_new_model():
    """While fit rebuilds the model, a read waits for it instead of mixing two models."""
    clf = first_call()
    X = stream(1, seed=1)[0][0]
    Xf, yf = stream(1, seed=5)[0]
    twin = clone(clf).fit(Xf, yf)
    result = []
    with clf._write_lock(), clf._writing():
        reader = threading.Thread(target=lambda: result.append(clf.predict_proba(X)))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive()  # the model is being changed without a copy to read
        clf.fit(Xf, yf)
    reader.join()
    np.testing.assert_allclose(result[0], twin.predict_proba(X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("duplicate", [
    lambda clf: pickle.loads(pickle.dumps(clf)),
    copy.deepcopy,
    copy.copy,
])
def test_the_lock_is_never_copied(duplicate):
    clf = first_call()
    clf.partial_fit(*stream(1, seed=3)[0])
    lock = clf._write_lock()
    duplicated = duplicate(clf)
    assert "_pre_call" not in vars(duplicated) and "_generation" not in vars(duplicated)
    assert duplicated._write_lock() is not lock  # made anew on unpickling
    assert isinstance(duplicated._write_lock(), type(threading.RLock()))
    # The copy's own lock serialises its own calls.
    with duplicated._write_lock():
        duplicated.partial_fit(*stream(1, seed=4)[0])
    assert "_lock" not in vars(clone(clf))


def test_load_params_is_serialised_with_partial_fit():
    clf = first_call()
    buffer = io.BytesIO()
    clf.save_params(buffer)
    batches = stream(6, seed=7)
    restored = DiscrepancyAwareOnlineClassifier(batch_size=20, random_state=0)

    def load():
        buffer.seek(0)
        restored.load_params(buffer)

    def write():
        for Xb, yb in batches:
            try:
                restored.partial_fit(Xb, yb)
            except ValueError:  # not fitted yet: classes= missing
                pass

    run_threads(load, write)
    assert restored.n_batches_seen_ == len(restored.stream_log_)
    assert restored.n_batches_seen_ % 2 == 0


@pytest.mark.parametrize("module", [None, DropoutNet])
def test_a_read_during_a_call_sees_the_weights_the_call_started_from(module):
    """A reader thread started in the middle of a call gets the model before the call."""
    from skorch.callbacks import Callback

    X = stream(1, seed=1)[0][0]
    seen = []

    class ReadMidCall(Callback):
        enabled = False  # not during the first call: a read then waits for it

        def on_batch_end(self, net, **kwargs):
            if not self.enabled:
                return
            reader = threading.Thread(target=lambda: seen.append(
                (clf.predict_proba(X), clf.memorization_discrepancy(X))))
            reader.start()
            reader.join()

    torch.manual_seed(0)
    callback = ReadMidCall()
    clf = DiscrepancyAwareOnlineClassifier(module, batch_size=20, random_state=0,
                                           callbacks=[callback])
    X0, y0 = stream(1, seed=99)[0]
    clf.partial_fit(X0, y0, classes=CLASSES)
    callback.enabled = True
    before = (clf.predict_proba(X), clf.memorization_discrepancy(X))
    seen.clear()
    clf.partial_fit(*stream(1, seed=3)[0])  # two batches: two reads mid-call
    assert len(seen) == 2
    assert not np.allclose(clf.predict_proba(X), before[0])
    for proba, discrepancy in seen:
        np.testing.assert_array_equal(proba, before[0])
        np.testing.assert_array_equal(discrepancy, before[1])
