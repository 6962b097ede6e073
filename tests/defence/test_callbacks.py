"""skorch's callbacks on the streamed batches: events, gradient clipping, LR schedules."""

import math

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, GradientNormClipping, LRScheduler
from sklearn.datasets import load_digits
from torch.optim.lr_scheduler import StepLR

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence import DiscrepancyAwareNet
from dsc_sklearn.defence.modules import MLP

EVENTS = ("on_batch_begin", "on_grad_computed", "on_batch_end")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32), y


class _CountingCallback(Callback):
    def initialize(self):
        self.counts_ = dict.fromkeys(EVENTS, 0)
        return self

    def on_batch_begin(self, net, **kwargs):
        self.counts_["on_batch_begin"] += 1

    def on_grad_computed(self, net, named_parameters, **kwargs):
        assert all(param.grad is not None for _, param in named_parameters)
        self.counts_["on_grad_computed"] += 1

    def on_batch_end(self, net, **kwargs):
        self.counts_["on_batch_end"] += 1


def test_skorch_callbacks_hear_every_event_of_each_step(digits):
    X, y = digits
    counting = _CountingCallback()
    clf = DiscrepancyAwareOnlineClassifier(batch_size=50, callbacks=[counting], random_state=0)
    clf.partial_fit(X[:300], y[:300], classes=range(10))
    assert counting.counts_ == dict.fromkeys(EVENTS, 6)


def test_skorch_s_gradient_norm_clipping_is_clip_value(digits):
    X, y = digits
    clipping = GradientNormClipping(gradient_clip_value=0.01, gradient_clip_norm_type=math.inf)
    models = [DiscrepancyAwareOnlineClassifier(step_guard=None, random_state=0, **params)
              for params in ({"clip_value": 0.01}, {"callbacks": [clipping]}, {})]
    for clf in models:
        clf.partial_fit(X[:500], y[:500], classes=range(10))
    clip_value, callback, unclipped = (list(clf.module_.parameters()) for clf in models)
    for a, b in zip(clip_value, callback):
        torch.testing.assert_close(a, b)
    assert not torch.equal(unclipped[0], callback[0])


def _schedule():
    return LRScheduler(policy=StepLR, step_size=1, gamma=0.5, step_every="batch")


def test_an_lr_schedule_of_skorch_runs_as_on_skorch_s_own_net(digits):
    X, y = digits
    clf = DiscrepancyAwareOnlineClassifier(batch_size=100, lr=0.4, callbacks=[_schedule()],
                                           step_guard=None, random_state=0)
    net = NeuralNetClassifier(MLP(64, 10), batch_size=100, lr=0.4, max_epochs=1,
                              train_split=None, callbacks=[_schedule()],
                              optimizer__momentum=0.9, classes=list(range(10)))
    for start in (0, 200):
        clf.partial_fit(X[start:start + 200], y[start:start + 200], classes=range(10))
        net.partial_fit(X[start:start + 200], y[start:start + 200])
        lr = net.optimizer_.param_groups[0]["lr"]
        assert clf.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(lr)
    assert lr < 0.4 / 2 ** 3
    clf.set_params(lr=0.3, momentum=0.5)  # the user's new values take over
    clf.partial_fit(X[400:500], y[400:500])
    group = clf.net_.optimizer_.param_groups[0]
    assert group["momentum"] == 0.5 and group["lr"] < 0.3


def test_a_failed_call_puts_the_optimizer_s_lr_back(digits):
    X, y = digits
    clf = DiscrepancyAwareOnlineClassifier(random_state=0).partial_fit(
        X[:100], y[:100], classes=range(10))
    clf.set_params(lr=0.05)
    bad = X[100:200].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        clf.partial_fit(bad, y[100:200])
    clf.partial_fit(X[100:200], y[100:200])
    assert clf.net_.optimizer_.param_groups[0]["lr"] == 0.05


def test_the_net_steps_in_the_estimator_s_batch_size_and_labels(digits):
    X, y = digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                       "nine"])[y]
    clf = DiscrepancyAwareOnlineClassifier(batch_size=100, random_state=0)
    clf.partial_fit(X[:300], labels[:300], classes=np.unique(labels))
    clf.set_params(batch_size=50)
    clf.partial_fit(X[300:600], labels[300:600])
    assert len(clf.stream_log_) == 3 + 6 and clf.net_.batch_size == 50
    assert list(clf.net_.classes) == list(clf.classes_)
    assert clf.net_.encode_labels(["two", "eight"]).tolist() == [
        list(clf.classes_).index("two"), list(clf.classes_).index("eight")]


class _PenalisedNet(DiscrepancyAwareNet):
    """skorch's way to change the loss: override train_step_single, call super()."""

    calls = 0

    def train_step_single(self, batch, **fit_params):
        type(self).calls += 1
        result = super().train_step_single(batch, **fit_params)
        penalty = 10.0 * sum((param ** 2).sum() for param in self.module_.parameters())
        penalty.backward()
        return {**result, "loss": result["loss"] + penalty.detach()}


class _PenalisedClassifier(DiscrepancyAwareOnlineClassifier):
    net_class = _PenalisedNet


@pytest.mark.parametrize("step_guard", [None, "auto"])
def test_train_step_single_overrides_change_what_the_optimizer_steps_on(digits, step_guard):
    X, y = digits
    params = dict(hidden_layer_sizes=(16,), batch_size=64, random_state=0,
                  step_guard=step_guard)
    plain = DiscrepancyAwareOnlineClassifier(**params).partial_fit(X[:256], y[:256],
                                                                   classes=np.unique(y))
    _PenalisedNet.calls = 0
    penalised = _PenalisedClassifier(**params).partial_fit(X[:256], y[:256],
                                                           classes=np.unique(y))
    assert _PenalisedNet.calls == 4
    with torch.no_grad():
        weight_norm = [sum(float((p ** 2).sum()) for p in clf.net_.module_.parameters())
                       for clf in (plain, penalised)]
    assert weight_norm[1] < 0.5 * weight_norm[0]
    # The logged loss is what the override returned.
    assert penalised.stream_log_[-1]["loss"] > plain.stream_log_[-1]["loss"]


def test_train_step_single_without_a_step_is_skorchs(digits):
    X, y = digits
    clf = DiscrepancyAwareOnlineClassifier(hidden_layer_sizes=(16,), random_state=0)
    clf.partial_fit(X[:64], y[:64], classes=np.unique(y))
    net = clf.net_
    batch = (torch.as_tensor(X[:8]), torch.as_tensor(y[:8]))
    net.optimizer_.zero_grad()
    result = net.train_step_single(batch)
    expected = torch.nn.functional.cross_entropy(net.module_(batch[0]), batch[1])
    assert torch.allclose(result["loss"], expected)
    assert all(param.grad is not None for param in net.module_.parameters())
