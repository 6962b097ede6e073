"""What a white-box attacker reads of its victim and predicts of its next training call."""

import contextlib
import copy
import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_array, check_consistent_length, column_or_1d

from ..._labels import encode_labels
from ..._torch import eval_mode
from ...defence._alarms import held_back


def _as_float_array(X, name):
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.size and X.dtype.kind in "fiub":
        X = X.astype(np.float32, copy=False)
        if not np.isfinite(X).all():
            raise ValueError(f"Input {name} contains NaN or infinity.")
        return X
    return check_array(X, dtype=np.float32, input_name=name)


@dataclass
class _Victim:
    """The parts of a fitted estimator that a white-box attacker reads."""

    module: torch.nn.Module
    params: list
    classes: np.ndarray
    device: torch.device
    dtype: torch.dtype
    n_features: int | None

    @classmethod
    def from_estimator(cls, estimator):
        module = getattr(estimator, "module_", None)
        classes = getattr(estimator, "classes_", None)
        if not isinstance(module, torch.nn.Module) or classes is None:
            raise NotFittedError(
                f"The attacked estimator {type(estimator).__name__} must be fitted: it needs "
                "a torch.nn.Module `module_` and a `classes_` array."
            )
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("The attacked module has no trainable parameters.")
        return cls(
            module=module,
            params=params,
            classes=np.asarray(classes),
            device=params[0].device,
            dtype=params[0].dtype,
            n_features=getattr(estimator, "n_features_in_", None),
        )

    def data(self, X, y, name):
        X = _as_float_array(X, name)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        if self.n_features is not None and X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but the attacked estimator expects "
                f"{self.n_features}."
            )
        codes = encode_labels(self.classes, y, name=name)
        return (
            torch.as_tensor(X, dtype=self.dtype, device=self.device),
            torch.as_tensor(codes, dtype=torch.long, device=self.device),
        )


@contextlib.contextmanager
def _inspection_mode(module):
    """Evaluate ``module`` in eval mode with gradients on; every flag is restored."""
    with eval_mode(module), torch.enable_grad():
        yield


def _grad_list(value, params, *, create_graph=False):
    grads = torch.autograd.grad(value, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _parameter_gradients(victim, X, y, *, create_graph=False):
    """Gradients of the mean cross-entropy on ``(X, y)`` w.r.t. the trainable parameters."""
    loss = F.cross_entropy(victim.module(X), y)
    return _grad_list(loss, victim.params, create_graph=create_graph)


def _cosine_sum(grads, others):
    """Sum over parameter tensors of the cosine similarity of two gradient lists."""
    return sum(
        F.cosine_similarity(g.reshape(-1), h.reshape(-1), dim=0, eps=1e-12)
        for g, h in zip(grads, others)
    )


def _normalize(grads):
    return [g / g.norm().clamp_min(1e-12) for g in grads]


def _trigger_term(victim, X_trigger, y_trigger, X_val, y_val):
    """``G = grad_theta sum_l cos(g_trigger_l, g_val_l)``, by double backward."""
    g_trigger = _parameter_gradients(victim, X_trigger, y_trigger, create_graph=True)
    g_val = _parameter_gradients(victim, X_val, y_val, create_graph=True)
    return _grad_list(_cosine_sum(g_trigger, g_val), victim.params)


class _UnrolledSGD:
    """The victim's plain optimizer steps on a batch, differentiable in the inputs.

    It reads the estimator's public fitted state and never changes it:
    ``module_`` and the SGD optimizer ``net_.optimizer_`` (each parameter
    group's ``lr``, ``momentum``, ``dampening``, ``weight_decay`` and
    ``nesterov``, and the momentum buffers), ``clip_value`` (the L-inf
    gradient clipping of GC) and ``batch_size`` (a call trains one step per
    chunk of that many rows). It knows no guard and no gate: an attack that
    adapts to the defence runs the defence itself on a copy of the victim
    (:func:`_trial_call`).

    Exact for modules that compute the same function in train and eval
    mode (no BatchNorm, no dropout: the MLPs of the benchmark) and for
    SGD; another optimizer is unrolled as a plain gradient step of its
    first group's learning rate.
    """

    def __init__(self, estimator, victim):
        module = victim.module
        named = dict(module.named_parameters())
        self.names = [name for name, p in named.items() if p.requires_grad]
        self.module = module
        self.params = {name: named[name].detach() for name in self.names}
        self.buffers = {name: b.detach() for name, b in module.named_buffers()}
        optimizer = getattr(getattr(estimator, "net_", None), "optimizer_", None)
        default = (float(getattr(estimator, "lr", 0.1)), 0.0, 0.0, 0.0, False)
        self.hyper = dict.fromkeys(self.names, default)
        self.momentum = {}
        if optimizer is not None:
            by_id = {id(named[name]): name for name in self.names}
            for group in optimizer.param_groups:
                for param in group["params"]:
                    name = by_id.get(id(param))
                    if name is None:
                        continue
                    if isinstance(optimizer, torch.optim.SGD):
                        self.hyper[name] = (group["lr"], group["momentum"], group["dampening"],
                                            group["weight_decay"], group["nesterov"])
                        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
                        if buffer is not None:
                            self.momentum[name] = buffer.detach()
                    else:
                        self.hyper[name] = (group["lr"], 0.0, 0.0, 0.0, False)
        self.clip_value = getattr(estimator, "clip_value", None)
        batch_size = getattr(estimator, "batch_size", None)
        self.batch_size = batch_size if isinstance(batch_size, numbers.Integral) else None

    def logits(self, theta, X):
        return torch.func.functional_call(self.module, {**theta, **self.buffers}, (X,))

    def _gradients(self, theta, X, y, create_graph):
        loss = F.cross_entropy(self.logits(theta, X), y)
        grads = _grad_list(loss, [theta[name] for name in self.names],
                           create_graph=create_graph)
        if self.clip_value is not None:
            total = torch.stack([g.detach().abs().max() for g in grads]).max()
            coef = torch.clamp(self.clip_value / (total + 1e-6), max=1.0)
            grads = [g * coef for g in grads]
        return grads

    def _sgd(self, theta, momentum, grads):
        new_theta, new_momentum = {}, {}
        for name, grad in zip(self.names, grads):
            lr, mu, dampening, decay, nesterov = self.hyper[name]
            direction = grad + decay * theta[name] if decay else grad
            if mu:
                buffer = momentum.get(name)
                buffer = direction if buffer is None else (
                    mu * buffer + (1 - dampening) * direction)
                new_momentum[name] = buffer
                direction = direction + mu * buffer if nesterov else buffer
            new_theta[name] = theta[name] - lr * direction
        return new_theta, new_momentum

    def run(self, X, y, *, create_graph=False):
        """Unroll ``partial_fit(X, y)`` without a defence, one step per ``batch_size`` chunk.

        Returns
        -------
        theta : dict of torch.Tensor
            The parameters the call would leave (differentiable in ``X``
            with ``create_graph=True``).
        """
        theta = {name: p.detach().requires_grad_(True) for name, p in self.params.items()}
        momentum = dict(self.momentum)
        size = self.batch_size or len(X)
        for start in range(0, len(X), size):
            rows = slice(start, start + size)
            grads = self._gradients(theta, X[rows], y[rows], create_graph)
            theta, momentum = self._sgd(theta, momentum, grads)
            if not create_graph:
                theta = {name: t.detach().requires_grad_(True) for name, t in theta.items()}
                momentum = {name: m.detach() for name, m in momentum.items()}
        return theta

    def loss(self, theta, X, y):
        return F.cross_entropy(self.logits(theta, X), y)


def _guarded(estimator):
    """Whether a step guard watches the estimator's training steps."""
    return getattr(getattr(estimator, "net_", None), "step_guard_", None) is not None


def _trial_call(estimator, X, y):
    """The victim's next ``partial_fit(X, y)``, run on a copy of it.

    The copy runs the defence as it is, so an adaptive attacker reads what
    the victim's guards would decide (:meth:`BaseGuard.decisions
    <dsc_sklearn.defence.guards.BaseGuard.decisions>`) without a model of
    their rules; the victim is not changed. Nothing of the trial reaches
    the outside: torch's global random state is restored afterwards (a
    Dropout module draws from it), the ``"dsc_sklearn"`` logger's alarms
    and the ``verbose`` lines are held back, and the victim's skorch
    callbacks run as deep copies (what they write to files or the console
    is the one thing a trial cannot take back).

    Returns
    -------
    trial : estimator
        The copy after the call.
    steps : list of list of GuardDecision
        Per optimizer step (one per ``batch_size`` chunk), the decisions of
        the guards about it.
    """
    trial = copy.deepcopy(estimator)
    if "verbose" in trial.get_params():
        trial.set_params(verbose=0)
    size = getattr(trial, "batch_size", None) or len(X)
    steps = []
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), held_back():
        for start in range(0, len(X), size):
            trial.partial_fit(X[start:start + size], y[start:start + size])
            steps.append(trial.net_.step_guard_.decisions())
    return trial, steps


def _validation_loss(estimator, X_val, y_val):
    """The estimator's eval-mode cross-entropy on the encoded validation batch."""
    victim = _Victim.from_estimator(estimator)
    with torch.no_grad(), eval_mode(victim.module):
        return float(F.cross_entropy(victim.module(X_val), y_val))
