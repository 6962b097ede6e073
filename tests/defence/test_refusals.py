"""Every bad configuration of issue 19 is refused with an error naming it and the fix.

Each case was silent or unclear on main (the comment says what it did);
docs/reliability.md (section "Refused up front") shows the messages.
"""

import functools
import io
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from dsc_sklearn import DiscrepancyAwareOnlineClassifier, MemorizationDiscrepancyScorer
from dsc_sklearn.defence._classifier import MAX_HISTORY_ROWS
from dsc_sklearn.defence.guards import StepGuard

rng = np.random.RandomState(0)
X = rng.rand(200, 8).astype(np.float32)
y = rng.randint(3, size=200)
CLASSES = [0, 1, 2]


def fitted(**params):
    return DiscrepancyAwareOnlineClassifier(random_state=0, **params).partial_fit(
        X[:100], y[:100], classes=CLASSES)


# ------------------------------------------------------------ parameters

@pytest.mark.parametrize("params, message", [
    # Trained a constant model on main.
    ({"hidden_layer_sizes": (0,)}, r"'hidden_layer_sizes'.*tuple of positive int.*Got \(0,\)"),
    # RuntimeError: Trying to create tensor with negative dimension -1.
    ({"hidden_layer_sizes": (-1,)}, r"'hidden_layer_sizes'.*Got \(-1,\)"),
    ({"hidden_layer_sizes": (10, True)}, r"'hidden_layer_sizes'"),
    # RuntimeError: value cannot be converted to type float without overflow.
    ({"lr": 1e39}, r"'lr'.*range \(0.0, 3.40282\d*e\+38\]. Got 1e\+39"),
    ({"epsilon": 1e39}, r"'epsilon'.*Got 1e\+39"),
    # "The module cannot process one sample": Overflow when unpacking long long.
    ({"batch_size": 2**63}, r"'batch_size'.*\[1, 9223372036854775807\]. Got 9223372036854775808"),
    # OverflowError: Python int too large to convert to C ssize_t.
    ({"history_size": 2**63}, r"'history_size'.*Got 9223372036854775808"),
    ({"max_correction_steps": 2**63}, r"'max_correction_steps'"),
    ({"step_guard": StepGuard(window=2**63)}, r"'window' parameter of StepGuard.*Got 9223"),
    ({"step_guard": StepGuard(probe_size=2**63)}, r"'probe_size' parameter of StepGuard"),
    # RuntimeError: manual_seed expected a long, but got bool.
    ({"step_guard": StepGuard(random_state=True)},
     r"'random_state' parameter of StepGuard.*Got True"),
])
def test_out_of_range_parameters_are_refused_naming_them(params, message):
    with pytest.raises(InvalidParameterError, match=message):
        fitted(**params)


def test_the_largest_c_size_is_accepted():
    clf = fitted(batch_size=sys.maxsize, history_size=sys.maxsize,
                 step_guard=StepGuard(window=sys.maxsize))
    clf.partial_fit(X[100:], y[100:])
    assert clf.n_batches_seen_ == 2


@pytest.mark.parametrize("probe", [(X, y, None), (), [X]])
def test_a_trusted_probe_that_is_not_a_pair_is_refused(probe):
    # Fell back to the reservoir silently on main.
    with pytest.raises(ValueError, match=r"trusted probe must be a pair \(X, y\).*"
                                         r"StepGuard\(probe=\(X_trusted, y_trusted\)\)"):
        fitted(step_guard=StepGuard(probe=probe))
    with pytest.raises(InvalidParameterError, match=r"'probe' parameter of StepGuard"):
        StepGuard(probe=probe)._validate_params()


def test_a_trusted_probe_of_the_wrong_width_is_refused():
    # RuntimeError: mat1 and mat2 shapes cannot be multiplied (20x5 and 8x100).
    with pytest.raises(ValueError, match=r"trusted probe has 5 features, but X has 8.*"
                                         r"shape \(n_rows, 8\)"):
        fitted(step_guard=StepGuard(probe=(X[:20, :5], y[:20])))
    clf = fitted()
    clf.set_params(step_guard=StepGuard(probe=(X[:20, :5], y[:20])))
    with pytest.raises(ValueError, match="trusted probe has 5 features, but X has 8"):
        clf.partial_fit(X[100:], y[100:])
    assert clf.n_batches_seen_ == 1


def test_input_bounds_edited_in_place_are_validated_again():
    # Main kept training with input_bounds=[5.0, 1.0] (low > high).
    bounds = [0.0, 1.0]
    clf = fitted(input_bounds=bounds, check_input_bounds="clip")
    clf.partial_fit(X[100:], y[100:])
    bounds[0] = 5.0
    with pytest.raises(ValueError, match=r"input_bounds must be.*low < high.*\[5.0, 1.0\]"):
        clf.partial_fit(X[100:], y[100:])
    assert clf.n_batches_seen_ == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_cuda_is_refused_naming_the_fix(device):
    # AssertionError: Torch not compiled with CUDA enabled.
    with pytest.raises(ValueError, match=r"device=.*cuda.*CUDA is not available.*"
                                         r"device='auto'.*device='cpu'"):
        fitted(device=device)


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device.*'cpu'"):
        fitted(device="gpu")


# ----------------------------------------------------------------- module

class NeedsWidth(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.layer = torch.nn.Linear(8, 3)

    def forward(self, X):
        return self.layer(X)


def test_a_module_class_that_needs_other_arguments_is_refused_naming_the_fix():
    # TypeError: NeedsWidth.__init__() missing 1 required positional argument.
    with pytest.raises(ValueError, match=r"module=NeedsWidth.*n_features=8 and n_classes=3 "
                                         r"\(neither\).*'width'.*functools.partial"):
        fitted(module=NeedsWidth)
    clf = fitted(module=functools.partial(NeedsWidth, width=4))
    assert clf.n_batches_seen_ == 1


class LinearNet(torch.nn.Module):
    """One linear layer, of the sizes the estimator passes."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.layer = torch.nn.Linear(n_features, n_classes)

    def forward(self, X):
        return self.layer(X)


class FailsOnce(LinearNet):
    failed = False

    def forward(self, X):
        if not type(self).failed:
            type(self).failed = True
            raise RuntimeError("device busy, try again")
        return super().forward(X)


def test_an_error_of_the_first_forward_is_not_blamed_on_the_features_alone():
    with pytest.raises(ValueError, match=r"first forward pass raised RuntimeError: device "
                                         r"busy.*its forward's own.*call again if it was "
                                         r"transient") as caught:
        fitted(module=FailsOnce)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert fitted(module=FailsOnce).n_batches_seen_ == 1


class BatchNormNet(torch.nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(n_features, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
            torch.nn.Linear(16, n_classes))

    def forward(self, X):
        return self.layers(X)


def test_batch_norm_with_a_one_row_last_chunk_is_refused_before_training():
    # Main: torch's "Expected more than 1 value per channel when training".
    with pytest.raises(ValueError, match=r"BatchNorm layers \(BatchNorm1d\).*101 row\(s\).*"
                                         r"batch_size=100.*last chunk of 1 row"):
        DiscrepancyAwareOnlineClassifier(BatchNormNet, random_state=0).partial_fit(
            X[:101], y[:101], classes=CLASSES)
    clf = DiscrepancyAwareOnlineClassifier(BatchNormNet, random_state=0).partial_fit(
        X[:100], y[:100], classes=CLASSES)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match="last chunk of 1 row"):
        clf.partial_fit(X[:1], y[:1])
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    clf.partial_fit(X[:2], y[:2])
    assert clf.n_batches_seen_ == 2


class Widens(LinearNet):
    """Adds a column to its output once ``wide`` is set."""

    wide = False

    def forward(self, X):
        out = super().forward(X)
        return torch.cat([out, out[:, :1]], 1) if type(self).wide else out


def test_an_output_shape_that_changes_mid_stream_is_refused():
    # Main trained on, and predict_proba returned 4 columns for 3 classes.
    Widens.wide = False
    clf = fitted(module=Widens)
    Widens.wide = True
    try:
        # The step guard's probe notices first (a shape error deep in the step).
        with pytest.raises(ValueError, match=r"maps one sample to an output of shape \(1, 4\), "
                                             r"but there are 3 classes") as caught:
            clf.partial_fit(X[100:], y[100:])
        assert isinstance(caught.value.__cause__, RuntimeError)
        assert clf.n_batches_seen_ == 1
        clf.set_params(step_guard=None)
        with pytest.raises(ValueError, match=r"logits of shape \(100, 4\) in training batch "
                                             r"1 of this call, but there are 3 classes"):
            clf.partial_fit(X[100:], y[100:])
        assert clf.n_batches_seen_ == 1
        with pytest.raises(ValueError, match=r"logits of shape \(200, 4\) for these rows"):
            clf.predict_proba(X)
    finally:
        Widens.wide = False


# ----------------------------------------------------------------- labels

@pytest.mark.parametrize("call", ["fit", "partial_fit", "classes"])
def test_labels_mixing_strings_and_numbers_are_refused(call):
    # TypeError: '<' not supported between instances of 'int' and 'str'.
    mixed = np.array(["a", 1] * 50, dtype=object)
    clf = DiscrepancyAwareOnlineClassifier(random_state=0)
    name = "classes" if call == "classes" else "y"
    with pytest.raises(ValueError, match=rf"{name} mixes strings and numbers \(e.g. 'a' and "
                                         r"1\).*astype\(str\)"):
        if call == "fit":
            clf.fit(X[:100], mixed)
        elif call == "partial_fit":
            clf.partial_fit(X[:100], mixed, classes=mixed[:2])
        else:
            clf.partial_fit(X[:100], y[:100], classes=np.array(["a", 1], dtype=object))


# ------------------------------------------------------------ checkpoints

def test_a_stream_not_rewound_before_load_params_says_so():
    # Main: "not a checkpoint written by save_params ... BadZipFile".
    buffer = io.BytesIO()
    fitted().save_params(buffer)
    with pytest.raises(ValueError, match=r"file object at position \d+, its end.*f.seek\(0\)"):
        DiscrepancyAwareOnlineClassifier().load_params(buffer)
    buffer.seek(0)
    assert DiscrepancyAwareOnlineClassifier().load_params(buffer).n_batches_seen_ == 1


def test_a_checkpoint_into_a_smaller_probe_names_the_parameter_and_the_fix():
    # Main: "refuses: ... do not match. Save the estimator again with save_params."
    clf = fitted(step_guard=StepGuard(probe_size=64))
    clf.partial_fit(X[100:], y[100:])
    buffer = io.BytesIO()
    clf.save_params(buffer)
    buffer.seek(0)
    with pytest.raises(ValueError, match=r"probe has 64 rows, but this estimator's "
                                         r"step_guard has probe_size=16.*StepGuard\(probe_size"
                                         r"=64\).*set_params\(step_guard__probe_size=16\)"):
        DiscrepancyAwareOnlineClassifier(
            random_state=0, step_guard=StepGuard(probe_size=16)).load_params(buffer)
    # The fix the message names works, and keeps 16 rows.
    buffer.seek(0)
    restored = DiscrepancyAwareOnlineClassifier(
        random_state=0, step_guard=StepGuard(probe_size=64)).load_params(buffer)
    restored.set_params(step_guard__probe_size=16)
    with pytest.warns(UserWarning, match="48 of the 64 probe rows"):
        restored.partial_fit(X[:10], y[:10])
    assert len(restored.net_.step_guard_.probe_) == 16


# ------------------------------------------------------------------ scorer

def test_a_prefit_scorer_refuses_the_classifiers_parameters():
    # Main: a clone passed estimator__lr through to the user's classifier.
    clf = fitted()
    for scorer in (MemorizationDiscrepancyScorer(clf, prefit=True),
                   clone(MemorizationDiscrepancyScorer(clf, prefit=True))):
        with pytest.raises(ValueError, match=r"Cannot set \['estimator__lr'\] with "
                                             r"prefit=True.*set_params on the classifier"):
            scorer.set_params(estimator__lr=5.0)
        assert clf.lr == 0.1
        scorer.set_params(reference="newest")
    trained = MemorizationDiscrepancyScorer(DiscrepancyAwareOnlineClassifier())
    trained.set_params(estimator__lr=0.5)
    assert trained.estimator.lr == 0.5
    MemorizationDiscrepancyScorer(clf, prefit=True).set_params(
        prefit=False, estimator=DiscrepancyAwareOnlineClassifier(), estimator__lr=0.5)


# ----------------------------------------------------------------- memory

def test_the_net_history_is_bounded_like_the_stream_log(monkeypatch):
    # Main: one row per call forever, in memory and in every checkpoint.
    from dsc_sklearn.defence import _classifier

    monkeypatch.setattr(_classifier, "MAX_HISTORY_ROWS", 5)
    clf = fitted()
    for _ in range(8):
        clf.partial_fit(X[:10], y[:10])
    assert len(clf.net_.history) == 5
    assert clf.net_.history[-1]["train_batch_count"] == 1
    buffer = io.BytesIO()
    clf.save_params(buffer)
    buffer.seek(0)
    monkeypatch.setattr(_classifier, "MAX_HISTORY_ROWS", 3)
    restored = DiscrepancyAwareOnlineClassifier(random_state=0).load_params(buffer)
    assert len(restored.net_.history) == 3
    assert MAX_HISTORY_ROWS == 10_000


def test_a_checkpoint_with_float64_probe_rows_is_refused():
    # Main loaded it, then failed the next step with a Double/Float matmul
    # (found by the forged-entry property test, which it made flaky).
    clf = fitted()
    clf.partial_fit(X[100:], y[100:])
    buffer = io.BytesIO()
    clf.save_params(buffer)
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    probe = payload["net"]["state"]["step_guard_"]["state"]["probe"]
    probe["X"] = probe["X"].double()
    forged = io.BytesIO()
    torch.save(payload, forged)
    forged.seek(0)
    with pytest.raises(ValueError, match=r"step guard's probe rows are torch.float64"):
        DiscrepancyAwareOnlineClassifier(random_state=0).load_params(forged)


def test_a_refit_on_other_features_checks_the_trusted_probe_against_the_new_data():
    from dsc_sklearn.defence.guards import StepGuard

    rng = np.random.RandomState(0)
    X4, X6, y = rng.rand(60, 4), rng.rand(60, 6), rng.randint(0, 2, 60)
    clf = DiscrepancyAwareOnlineClassifier(batch_size=20, random_state=0).fit(X4, y)
    clf.set_params(step_guard=StepGuard(probe=(X6[:10], y[:10])))
    assert clf.fit(X6, y).n_features_in_ == 6
