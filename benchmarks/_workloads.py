"""Workloads shared by the pytest-benchmark suites and ``ratios.py``.

A workload is a clean stream of scikit-learn's digits (64 features in
``[0, 1]``, 10 classes, reshuffled and repeated as needed) pushed through one
training configuration:

- ``raw``: a plain torch loop, the same module, SGD (lr 0.1, momentum 0.9)
  and :class:`torch.nn.CrossEntropyLoss` on the same batches;
- ``forward``: one eval-mode forward pass of that module per batch, without
  gradients: what the reference model's pass costs (``ratios.py`` only);
- ``floor``: ``raw`` plus the least that ``partial_fit``'s guarantees cost
  (:class:`GuaranteedLoop`): a finiteness check of the input, label
  encoding, a copy of the weights and the momentum to undo a failed call,
  the fused check of the step's loss and weights, one copy of the step's
  record to the host and a log entry (``ratios.py`` only);
- ``none``: every defence off (``correction="none", step_guard=None``):
  plain training through the estimator;
- ``default``: every default, which is ``correction="none"`` and
  ``step_guard="auto"``: the step guard alone (a 256-row probe evaluated
  after each optimizer step, one host synchronisation per batch);
- ``cumulative``: ``step_guard=CumulativeGuard()``, the step guard with the
  bound on the displacement of the last 5 accepted steps (the ring of past
  weights, optimizer states and probe logits it keeps);
- ``first-order``: ``step_guard=StepGuard(harm="first_order")``, the step
  guard with a too-large step's harm judged at a tenth of its length too
  (one more probe forward pass, only for the steps it judges);
- ``dsc-without-flags``: DSC with ``threshold=1e9`` and no guard, which
  computes the discrepancy and flags nothing;
- ``dsc-auto``: DSC with ``threshold="auto"`` and no guard (the defaults of
  0.1.0), which flags about 1 % of the samples of a trained model's clean
  stream and corrects them;
- ``dsc-with-correction``: DSC with ``threshold=0.0`` and no guard, every
  sample flagged and corrected (up to 10 steps).

Every trainer first trains plainly (every defence off) on
``PRETRAIN_BATCHES`` batches (an early model drifts fast: ``threshold="auto"``
then flags about 30 % of the samples, against about 1 % once trained), then
runs ``WARMUP_BATCHES``
batches through its configuration before it is timed. Set the environment
variable ``DSC_BENCH_QUICK=1`` to shrink every workload to a single short run
(``tests/test_benchmarks_smoke.py`` does), and ``DSC_BENCH_DEVICE=cuda`` to
run every workload on a GPU (``ratios.py --device cuda`` sets it too).
"""

import os
from collections import deque

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence.discrepancy import mark_non_finite, mark_out_of_range
from dsc_sklearn.defence.guards import CumulativeGuard, StepGuard
from dsc_sklearn.defence.modules import MLP, SmallCNN

QUICK = os.environ.get("DSC_BENCH_QUICK") == "1"
#: Where the estimators and the raw loop train; read at call time.
DEVICE = os.environ.get("DSC_BENCH_DEVICE", "cpu")
N_FEATURES, N_CLASSES = 64, 10
CLASSES = np.arange(N_CLASSES)
LR, MOMENTUM = 0.1, 0.9

#: Every defence off: how every trainer starts, and the ``none`` case.
PLAIN = dict(correction="none", step_guard=None)
#: Estimator parameters of each configuration (``raw`` is the torch loop).
CONFIGS = {
    "none": dict(PLAIN),
    "default": dict(),
    # The per-step check with the bound on the last k accepted steps (issue 21).
    "cumulative": dict(step_guard=CumulativeGuard()),
    # The per-step check with the window harm rule while the probe loss is
    # above half of ln K (issue 21, item 2).
    "window-harm": dict(step_guard=CumulativeGuard(k=10, step_harm="window",
                                                   window_harm_level=0.5,
                                                   cumulative_margin=None)),
    # The cumulative guard with the input-space shift test (issue 21, item 4).
    "cumulative-shift": dict(step_guard=CumulativeGuard(shift_epsilon=0.2)),
    # The step guard with harm judged at first order (issue 21, item 2).
    "first-order": dict(step_guard=StepGuard(harm="first_order")),
    "dsc-without-flags": dict(correction="dsc", threshold=1e9, step_guard=None),
    "dsc-auto": dict(correction="dsc", threshold="auto", step_guard=None),
    "dsc-with-correction": dict(correction="dsc", threshold=0.0, step_guard=None),
}
#: The cases that calibrate something online and need the full warm-up.
CALIBRATED = ("default", "cumulative", "window-harm", "cumulative-shift", "first-order",
              "dsc-auto")
_DEFAULTS = DiscrepancyAwareOnlineClassifier().get_params()
#: Every configuration, the torch loop first.
CASES = ("raw", *CONFIGS)
#: The cases of ``ratios.py``: those, the forward pass alone and the floor.
RATIO_CASES = ("raw", "forward", "floor", *CONFIGS)


class _ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return torch.relu(x + self.body(x))


class ResNetStyle(nn.Module):
    """A small ResNet for the 8 x 8 digits: a stem, residual blocks, BatchNorm.

    Its BatchNorm layers compute different functions in train and eval mode,
    so the estimator cannot reuse the training pass for the discrepancy and
    pays an extra eval-mode forward pass: the path a real ResNet takes.
    ``n_features`` is accepted because the estimator passes it; the input is
    always read as one 8 x 8 image.
    """

    def __init__(self, n_features=N_FEATURES, n_classes=N_CLASSES, channels=16, n_blocks=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*(_ResidualBlock(channels) for _ in range(n_blocks)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, n_classes))

    def forward(self, X):
        return self.head(self.blocks(self.stem(X.reshape(-1, 1, 8, 8))))


class MLP128x2(MLP):
    """The hot-path issue's MLP: 64-128-128-10."""

    def __init__(self, n_features=N_FEATURES, n_classes=N_CLASSES):
        super().__init__(n_features, n_classes, hidden_layer_sizes=(128, 128))


#: Modules benchmarked; the CNNs read the 64 features as a (1, 8, 8) image.
#: ``mlp`` is the estimator's default (64-100-10), ``mlp-128-128`` the MLP
#: of the hot-path issue.
MODULES = {"mlp": MLP, "mlp-128-128": MLP128x2, "cnn": SmallCNN, "resnet": ResNetStyle}
#: Modules the suites and ``ratios.py`` run unless told otherwise.
DEFAULT_MODULES = ("mlp", "cnn")
BATCH_SIZES = (32, 256, 1024)
#: Plain training batches before a configuration is switched on.
PRETRAIN_BATCHES = 0 if QUICK else 100
#: Batches through the configuration before timing: more than
#: AutoThreshold's warm-up (10 batches) and, in full runs, its window (20).
#: Quick runs warm up only the case that needs it.
WARMUP_BATCHES = 12 if QUICK else 30


def warmup_batches(case):
    """Batches ``case`` goes through before it is timed."""
    return 1 if QUICK and case not in CALIBRATED else WARMUP_BATCHES


def digits_stream(n_rows, seed=0):
    """``n_rows`` rows of digits in ``[0, 1]``, float32, reshuffled per pass."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    n_passes = -(-n_rows // len(y))
    order = np.concatenate([rng.permutation(len(y)) for _ in range(n_passes)])[:n_rows]
    return (X[order] / 16.0).astype(np.float32), y[order].astype(np.int64)


class BatchCycler:
    """Endless consecutive chunks of ``n_rows`` rows from a fixed stream."""

    def __init__(self, n_rows, n_chunks=64, seed=0):
        self.n_rows = n_rows
        self.X, self.y = digits_stream(n_rows * n_chunks, seed)
        self._start = 0

    def __call__(self):
        if self._start + self.n_rows > len(self.y):
            self._start = 0
        chunk = slice(self._start, self._start + self.n_rows)
        self._start += self.n_rows
        return self.X[chunk], self.y[chunk]


class RawLoop:
    """The plain torch training loop the estimator is compared with."""

    def __init__(self, module, batch_size, seed=0):
        torch.manual_seed(seed)
        self.module = MODULES[module](N_FEATURES, N_CLASSES).to(DEVICE)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=LR, momentum=MOMENTUM)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.batch_size = batch_size
        self.forward_only = False

    def partial_fit(self, X, y):
        """One SGD step per ``batch_size`` rows, as ``partial_fit`` does."""
        Xt, yt = torch.as_tensor(X, device=DEVICE), torch.as_tensor(y, device=DEVICE)
        for start in range(0, len(Xt), self.batch_size):
            X_batch = Xt[start:start + self.batch_size]
            y_batch = yt[start:start + self.batch_size]
            if self.forward_only:
                with torch.no_grad():
                    self.module(X_batch)
                continue
            self.step(X_batch, y_batch)
        # As the estimator's call ends with one copy to the host.
        synchronize()
        return self

    def step(self, X_batch, y_batch):
        """One SGD step on a batch; returns its loss."""
        self.optimizer.zero_grad()
        loss = self.criterion(self.module(X_batch), y_batch)
        loss.backward()
        self.optimizer.step()
        return loss


class GuaranteedLoop(RawLoop):
    """:class:`RawLoop` plus the least each guarantee of ``partial_fit`` costs.

    What is left between it and ``none`` is the estimator's own: scikit-learn's
    and skorch's bookkeeping, the lock, the snapshot clock, the full log.
    """

    classes = np.arange(N_CLASSES)

    def __init__(self, module, batch_size, seed=0):
        super().__init__(module, batch_size, seed)
        self.log = deque(maxlen=1000)

    def partial_fit(self, X, y):
        """``RawLoop.partial_fit`` inside a transaction, with its checks and its log."""
        X = np.asarray(X, dtype=np.float32)
        if not np.isfinite(X.sum()):
            raise ValueError("X holds NaN or an infinity.")
        y = np.searchsorted(self.classes, y)
        params = list(self.module.parameters())
        momentum = [state["momentum_buffer"] for state in self.optimizer.state.values()]
        saved = [tensor.detach().clone() for tensor in params + momentum]
        found = torch.zeros((), device=DEVICE)
        losses = []
        Xt, yt = torch.as_tensor(X, device=DEVICE), torch.as_tensor(y, device=DEVICE)
        for start in range(0, len(Xt), self.batch_size):
            loss = self.step(Xt[start:start + self.batch_size], yt[start:start + self.batch_size])
            mark_non_finite(found, [loss])
            mark_out_of_range(found, params)
            losses.append(loss.detach())
        record = torch.cat((torch.stack(losses), found.reshape(1))).cpu().numpy()
        if record[-1]:
            with torch.no_grad():
                for tensor, copy in zip(params + momentum, saved):
                    tensor.copy_(copy)
            raise ValueError("The call produced NaN or an infinity.")
        self.log.extend({"loss": float(loss)} for loss in record[:-1])
        return self


def make_trainer(case, module, batch_size, seed=0, pretrain=PRETRAIN_BATCHES,
                 warmup=None):
    """A trainer for ``case`` that has seen ``pretrain + warmup`` batches.

    The first ``pretrain`` batches train plainly (:data:`PLAIN`: every
    defence off), the next ``warmup`` (default: :func:`warmup_batches`) go
    through the configuration of ``case``.
    """
    warmup = warmup_batches(case) if warmup is None else warmup
    X, y = digits_stream(batch_size * (pretrain + warmup), seed + 1)
    chunks = [slice(start, start + batch_size) for start in range(0, len(y), batch_size)]
    if case in ("raw", "forward", "floor"):
        trainer = (GuaranteedLoop if case == "floor" else RawLoop)(module, batch_size, seed)
        for chunk in chunks:
            trainer.partial_fit(X[chunk], y[chunk])
        if case == "forward":
            trainer.forward_only = True
            trainer.module.eval()
        return trainer
    params = CONFIGS[case]
    # What PLAIN switches off, as the case has it.
    switched = {name: params.get(name, _DEFAULTS[name]) for name in PLAIN}
    trainer = DiscrepancyAwareOnlineClassifier(
        MODULES[module], batch_size=batch_size, random_state=seed, device=DEVICE,
        **{**params, **(PLAIN if pretrain else switched)},
    )
    for i, chunk in enumerate(chunks):
        if i == pretrain:
            trainer.set_params(**switched)
        trainer.partial_fit(X[chunk], y[chunk], classes=CLASSES)
    return trainer


def partial_fit_step(trainer, batch_size, batches_per_call=1, seed=2):
    """A callable that feeds ``trainer`` its next chunk of the stream.

    Each call is one ``partial_fit`` of ``batches_per_call`` batches.
    """
    cycler = BatchCycler(batch_size * batches_per_call, n_chunks=8, seed=seed)

    def step():
        trainer.partial_fit(*cycler())

    return step


def synchronize():
    """Wait for the device's queued work, so that a clock reads finished work."""
    if torch.device(DEVICE).type == "cuda":
        torch.cuda.synchronize()


def fitted_classifier(module="mlp", batch_size=256, history_size=4, seed=0, **params):
    """A classifier with a full buffer of ``history_size`` snapshots."""
    clf = DiscrepancyAwareOnlineClassifier(
        MODULES[module], batch_size=batch_size, history_size=history_size, device=DEVICE,
        snapshot_every=1, threshold=1e9, random_state=seed, **params,
    )
    X, y = digits_stream(batch_size * history_size, seed + 1)
    return clf.partial_fit(X, y, classes=CLASSES)
