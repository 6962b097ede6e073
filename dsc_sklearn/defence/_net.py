"""The skorch network whose training step runs the discrepancy defence."""

import copy
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from skorch.history import History
from skorch.utils import TeeGenerator
from torch import nn

from .._labels import encode_labels
from .._torch import call_with_state, cast_floating, constant, eval_mode, set_mode, to_device
from ._params import DEFENCE_PARAMETERS
from ._retune import carry_state
from .correction import CorrectionContext, _NetCorrection
from .discrepancy import (
    STATISTICS,
    NonFiniteError,
    mark_non_finite,
    mark_out_of_range,
    memorization_discrepancy,
    reduce_snapshots,
    weighted_mean,
)
from .guards import BaseGuard, GuardContext
from .history import SnapshotBuffer
from .modules import MLP, SmallCNN

__all__ = ["LOG_FIELDS", "DiscrepancyAwareNet", "StreamHistory", "Step", "check_logits",
           "is_mode_invariant"]

# Layers whose output does not depend on train/eval mode. A module built only
# from these can reuse its training forward pass for the discrepancy.
_MODE_INVARIANT_LAYERS = (
    MLP, SmallCNN, nn.Sequential, nn.ModuleList, nn.Linear, nn.Conv1d,
    nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SiLU,
    nn.Tanh, nn.Sigmoid, nn.Flatten, nn.Identity, nn.LayerNorm, nn.MaxPool1d,
    nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)

#: Fields of one stream-log record, in the order of the record tensor.
LOG_FIELDS = (
    "loss",
    "mean_discrepancy",
    "max_discrepancy",
    "threshold",
    "n_flagged",
    "n_correction_steps",
    "step_discrepancy",
    "step_scale",
    "step_bound",
    "rewound",
)

# The statistic each threshold parameter's policy reads unless it names one.
_GATES = (("threshold_policy_", "discrepancy"), ("loss_threshold_policy_", "loss"))


class StreamHistory(History):
    """skorch's :class:`~skorch.history.History` whose writes cost the same at any length.

    skorch's writes (``new_batch``, ``record``, ``record_batch``) reach the
    last row through ``History.__getitem__``, which copies the whole list
    first (``to_list``): a stream of ``partial_fit`` calls, one row each,
    then pays for every row it ever kept at every write, about 30 µs per
    write at the 10 000 rows the estimator keeps. These write into the last
    row directly; reading (``history[:, "train_loss"]``) is skorch's.

    Examples
    --------
    >>> from dsc_sklearn.defence._net import StreamHistory
    >>> history = StreamHistory()
    >>> history.new_epoch()
    >>> history.new_batch()
    >>> history.record_batch("train_loss", 0.5)
    >>> history.record("train_batch_count", 1)
    >>> history[-1, "batches", 0, "train_loss"], history[-1, "train_batch_count"]
    (0.5, 1)
    """

    def _last_row(self):
        if not self:
            raise ValueError("Call new_epoch before recording for the first time.")
        return list.__getitem__(self, -1)

    def new_batch(self):
        """Register a new batch row for the current epoch."""
        self._last_row()["batches"].append({})

    def record(self, attr, value):
        """Set ``attr`` of the current epoch to ``value``."""
        self._last_row()[attr] = value

    def record_batch(self, attr, value):
        """Set ``attr`` of the current batch to ``value``."""
        self._last_row()["batches"][-1][attr] = value


def _same_value(old, new):
    """Whether a parameter is unchanged; copies of one schedule count as equal."""
    if old is new:
        return True
    if type(old) is not type(new):
        return False
    try:
        return bool(old == new) or repr(old) == repr(new)
    except (TypeError, ValueError):
        return False


def _configuration(value):
    """The parameters of a configured object (``get_params``), else ``None``."""
    get_params = getattr(value, "get_params", None)
    return None if get_params is None or isinstance(value, type) else get_params(deep=False)


def _component_state(component):
    """``(component, its learned state)`` for :meth:`DiscrepancyAwareNet.capture_state`."""
    if component is None:
        return None, None
    if isinstance(component, torch.Generator):
        return component, component.get_state()
    if hasattr(component, "state_dict") and hasattr(component, "load_state_dict"):
        return component, component.state_dict()
    return None, copy.deepcopy(component)


def _shallow_copy(value):
    """A copy of a list, dict, set or deque; anything else as it is."""
    return copy.copy(value) if isinstance(value, (list, dict, set, deque)) else value


def _load_component_state(net, name, saved):
    component, state = saved
    if component is None:
        setattr(net, name, state)  # None, or the deep copy of a plain object
    elif isinstance(component, torch.Generator):
        component.set_state(state)
        setattr(net, name, component)
    else:
        component.load_state_dict(state)
        setattr(net, name, component)


def _union(masks):
    """Rows flagged by any gate; a single gate's mask is returned as is."""
    return masks[0] if len(masks) == 1 else torch.stack(masks).any(dim=0)


def _to_host(records, flags, non_finite):
    """The steps' records and flags as arrays, in one device-to-host copy.

    Returns ``(values, flagged, bad)``: a float32 array of shape ``(n_steps,
    len(LOG_FIELDS))``, a boolean array with one entry per row trained, and
    one boolean per step, true when it was not finite.
    """
    records, flags = torch.stack(records), torch.cat(flags)
    n_values, n_flags = records.numel(), flags.numel()
    packed = torch.cat((records.flatten(), flags.to(records.dtype),
                        torch.stack(non_finite).to(records.dtype))).cpu().numpy()
    return (packed[:n_values].reshape(records.shape),
            packed[n_values:n_values + n_flags] != 0, packed[n_values + n_flags:] != 0)


def _record_batch(history, loss, batch_size):
    """The batch entries skorch's ``run_single_epoch`` writes."""
    history.record_batch("train_loss", loss)
    history.record_batch("train_batch_size", batch_size)


def check_logits(logits, n_classes, when):
    """Refuse logits that are not one column per class (a module whose output changed)."""
    if logits is not None and (logits.ndim != 2 or logits.shape[1] != n_classes):
        raise ValueError(
            f"The module returned logits of shape {tuple(logits.shape)} {when}, but "
            f"there are {n_classes} classes: it must return (n_samples, "
            f"{n_classes}) at every call, and its output shape changed since the "
            "first call. Fix its forward so that its last layer keeps one output "
            "per class."
        )


def _non_finite_batch(index):
    """The error of the training step on batch ``index`` (its ``batch_index``)."""
    error = NonFiniteError(f"Training on batch {index + 1} produced NaN or an infinity.")
    error.batch_index = index
    return error


def is_mode_invariant(module):
    """Whether ``module`` computes the same function in train and eval mode."""
    return all(type(layer) in _MODE_INVARIANT_LAYERS for layer in module.modules())


@dataclass
class Step:
    """What one training step knows about its batch, stage by stage.

    :meth:`DiscrepancyAwareNet.train_step` creates it and each hook fills
    in its part; a hook may read everything the hooks before it wrote.

    Attributes
    ----------
    X, y : torch.Tensor
        The batch as it arrived (inputs and encoded labels).
    logits : torch.Tensor or None
        Training-mode logits of ``X`` when they could be computed before
        the gate (mode-invariant modules), else ``None``.
    statistic, threshold : torch.Tensor or None
        The first gate's per-sample statistic and threshold in force.
    thresholds : list of torch.Tensor
        The threshold in force of every gate (its policy's ``current()``),
        in gate order.
    gates : list of tuple
        ``(policy, units, unit_flags, rows)`` per gate: the units' statistic
        and the policy's flags, for its update, and the rows flagged.
    flagged : torch.Tensor of bool or None
        Rows flagged by any gate; ``None`` when no gate ran.
    X_train, y_train : torch.Tensor
        What the optimizer step trains on (``X``, ``y`` unless corrected).
    splice : callable or None
        Turns the training logits of ``X`` into those of ``X_train`` by
        recomputing the changed rows only; ``None`` recomputes them all.
    n_correction_steps : int
        Correction steps taken.
    train_logits : torch.Tensor or None
        Training-mode logits of ``X_train``; ``None`` when it is empty.
    loss : torch.Tensor
        The training loss (NaN when nothing was trained on).
    step_discrepancy, step_scale : float
        What the step guard measured (the first guard of a chain that
        measured the step) and the fraction of the step the guards kept,
        the product of each one's (NaN without a guard or without a step).
    step_bound : float
        The bound the guard that acted held the step to; NaN for a step no
        guard acted on (from the guards' :meth:`decisions
        <dsc_sklearn.defence.guards.BaseGuard.decisions>`, unless a guard set
        it).
    sample_weight, sample_weight_train : torch.Tensor or None
        The rows' sample weights, of ``X`` and of ``X_train`` (a correction
        that keeps a subset of the rows keeps their weights); ``None`` for
        an unweighted batch.
    weight_total : float or None
        The batch's total weight, known on the host; ``0`` trains on
        nothing.
    trained : bool
        Whether the optimizer stepped.
    rewound : bool
        Whether a guard pulled back the displacement of several steps, not
        only this one's (:class:`~dsc_sklearn.defence.guards.CumulativeGuard`);
        its ``step_scale`` is then the fraction of that displacement kept,
        0 for a rewind to the weights of ``k`` steps ago.
    non_finite : torch.Tensor or None
        Set by :meth:`~DiscrepancyAwareNet.record`: a 0-d float tensor on
        the device, 1 when the gate statistics, the loss or the weights
        after the step hold NaN or an infinity.
    """

    X: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor = None
    statistic: torch.Tensor = None
    threshold: torch.Tensor = None
    thresholds: list = None
    gates: list = None
    flagged: torch.Tensor = None
    X_train: torch.Tensor = None
    y_train: torch.Tensor = None
    splice: Callable = None
    n_correction_steps: int = 0
    train_logits: torch.Tensor = None
    loss: Any = None
    step_discrepancy: float = math.nan
    step_scale: float = math.nan
    step_bound: float = math.nan
    sample_weight: torch.Tensor = None
    sample_weight_train: torch.Tensor = None
    weight_total: float = None
    trained: bool = False
    rewound: bool = False
    non_finite: torch.Tensor = None

    def __post_init__(self):
        self.X_train, self.y_train = self.X, self.y
        self.sample_weight_train = self.sample_weight


class DiscrepancyAwareNet(NeuralNetClassifier):
    """A skorch classifier whose ``train_step`` runs the defence.

    One training step (:meth:`train_step`) runs these hooks on its batch,
    each named by its role and safe to override in a subclass:

    1. :meth:`gate`: the decision statistics against the snapshot buffer
       (``snapshots_``) and the flags of the threshold policies;
    2. :meth:`correct`: the correction strategy (``correction_``) turns
       the batch into what the optimizer trains on;
    3. :meth:`optimizer_step`: the loss (:meth:`training_loss`), its
       gradient (skorch's ``on_grad_computed`` event for the callbacks,
       e.g. ``GradientNormClipping``), optional L-infinity clipping
       (``clip_value``) and the
       optimizer's step, watched by the step guard (``step_guard_``), which
       may pull the step back;
    4. :meth:`snapshot`: a snapshot every ``snapshot_every`` training
       batches (a batch that ``"drop"`` emptied counts too, so a model that
       stopped learning is eventually compared with itself and recovers);
    5. :meth:`record`: the policies learn from the batch, and the step's
       :data:`LOG_FIELDS` are packed into one tensor.

    It is the engine of
    :class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier`, which owns it as
    ``net_`` and feeds it batches; its defence parameters (those of
    :data:`~dsc_sklearn.defence._params.DEFENCE_PARAMETERS`) have the
    meaning documented there. The module must return logits, and the
    criterion is :class:`torch.nn.CrossEntropyLoss`.
    """

    #: Attributes holding learned state besides skorch's ``module_`` and
    #: ``optimizer_``: ``save_params`` saves them, pickling maps their
    #: tensors to the device.
    state_attributes = ("snapshots_", "generator_") + tuple(
        param.component for param in DEFENCE_PARAMETERS if param.stateful
    )

    def __init__(self, module, *args, **kwargs):
        defence = {param.name: kwargs.pop(param.name, param.default)
                   for param in DEFENCE_PARAMETERS}
        super().__init__(module, *args, **kwargs)
        vars(self).update(defence)

    def initialize_history(self):
        """Start an empty :class:`StreamHistory` (skorch's, minus its cost per row)."""
        self.history_ = StreamHistory()
        return self

    def initialize(self):
        """Initialise the skorch components, the buffer and the defence's parts."""
        super().initialize()
        self.generator_ = torch.Generator().manual_seed(
            int(torch.randint(2**31 - 1, (1,)))
        )
        self.snapshots_ = SnapshotBuffer(self.history_size, self.snapshot_every)
        self.snapshots_.snapshot(self.module_)
        self.mode_invariant_ = is_mode_invariant(self.module_)
        self._built_from_ = {}
        for param in DEFENCE_PARAMETERS:
            if param.build is not None:
                self._build(param, getattr(self, param.name))
        self._register_device_state()
        return self

    def _build(self, param, value, previous=None):
        """Build the component of a defence parameter; start it if it starts.

        ``previous``, the component it replaces mid-stream, hands over what
        it learned where the new configuration can hold it
        (:func:`~dsc_sklearn.defence._retune.carry_state`).
        """
        component = param.build(value)
        if isinstance(component, BaseGuard):
            component.start(self.guard_context())
        if param.stateful:
            component = carry_state(previous, component, param.name)
        setattr(self, param.component, component)
        # A configured object (a StepGuard) may change in place through the
        # estimator's nested set_params: remember what it was built from.
        self._built_from_[param.name] = _configuration(value)

    def guard_context(self):
        """The narrow view of the net that a step guard's hooks receive.

        Returns
        -------
        context : ~dsc_sklearn.defence.guards.GuardContext
            The module, the optimizer, the device, the generator, the
            eval-mode forward pass and the label encoding.
        """
        return GuardContext(module=self.module_, optimizer=self.optimizer_,
                            device=torch.device(self.device), generator=self.generator_,
                            forward=self._eval_logits, encode_labels=self.encode_labels)

    def encode_labels(self, y, name="y"):
        """Encode labels as the training step sees them (``0 .. n_classes - 1``).

        skorch's ``classes`` (the estimator passes its ``classes_``) lists
        the labels in encoded order; without it the labels are taken as
        encoded already.

        Raises
        ------
        ValueError
            When a label is unknown.
        """
        if self.classes is None:
            return np.asarray(y).astype(np.int64)
        return encode_labels(self.classes, y, name=name)

    def _register_device_state(self):
        """Pickle the defence state the way skorch pickles the module.

        skorch pickles the attributes named by a prefix in
        ``cuda_dependent_attributes_`` apart and loads them back with
        ``map_location``, so a net trained on CUDA unpickles on a machine
        without CUDA. The state attributes hold tensors too, and so does
        ``module``: the estimator passes an instance, which skorch keeps as
        ``module_`` and moves to the device.
        """
        names = ("module",) + self.state_attributes
        missing = [name for name in names if name not in self.cuda_dependent_attributes_]
        self.cuda_dependent_attributes_ = self.cuda_dependent_attributes_[:] + missing

    def _set_training(self, training=True):
        """skorch's mode switch of every module and criterion, made cheaper.

        It runs at every training step; a direct write of the mode flags
        gives the result of ``module.train(training)`` for less.
        """
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, nn.Module):
                set_mode(module, training)

    def configure(self, **params):
        """Change defence or optimizer parameters between training steps.

        Plain attributes (``reference``, ``epsilon``, ...) take effect at
        the next step; a parameter that builds a component (``threshold``,
        ``step_guard``, ``correction``) builds it anew, and a stateful one
        (a threshold policy, the step guard) keeps what its predecessor
        learned where it fits (:func:`~dsc_sklearn.defence._retune.carry_state`);
        ``history_size`` and ``snapshot_every`` adjust the
        buffer and keep its snapshots; ``lr`` and ``momentum`` update the
        optimizer; ``batch_size`` sets the rows of each step of
        :meth:`stream_epoch`.
        """
        by_name = {param.name: param for param in DEFENCE_PARAMETERS}
        self._configure_optimizer(params.pop("lr", None), params.pop("momentum", None))
        batch_size = params.pop("batch_size", self.batch_size)
        if batch_size != self.batch_size:
            self.set_params(batch_size=batch_size)
        for name, value in params.items():
            param = by_name[name]
            if (_same_value(getattr(self, name), value) and (
                    param.build is None or self._built_from_[name] == _configuration(value))):
                continue
            setattr(self, name, value)
            if param.build is not None:
                self._build(param, value, getattr(self, param.component, None))
            elif param.adjust is not None:
                param.adjust(self, value)
        return self

    def _configure_optimizer(self, lr=None, momentum=None):
        """Set ``lr`` and the momentum through skorch's virtual parameters, when changed.

        ``None`` leaves a value as it is.
        Only a changed value is written, so that an LR or momentum schedule
        of a skorch callback (``LRScheduler``) keeps what it set between
        two calls.
        """
        changed = {}
        if lr is not None and not _same_value(self.lr, lr):
            changed["lr"] = lr
        if momentum is not None and not _same_value(
                getattr(self, "optimizer__momentum", None), momentum):
            changed["optimizer__momentum"] = momentum
        if changed:
            self.set_params(**changed)
            # skorch's virtual parameter writes the param groups only.
            vars(self).update({key: value for key, value in changed.items()
                               if key.startswith("optimizer__")})

    # -------------------------------------------------------- transactions

    def capture_state(self):
        """What a ``partial_fit`` call may change, captured to undo the call.

        The estimator captures it before each call and hands it to
        :meth:`restore_state` when the call fails (an exception, a
        ``KeyboardInterrupt``, a non-finite step), so that a call either
        completes or changes nothing. It is cheap enough for every call
        (about two copies of the weights):

        - the module's parameters and buffers and the optimizer's
          per-parameter state (momentum) are copied, since training writes
          them in place;
        - the optimizer's hyper-parameters, the defence parameters and the
          components built from them (what :meth:`configure` may change),
          by reference;
        - the learned state of each of :attr:`state_attributes` through its
          ``state_dict()`` (the snapshot buffer, the threshold policies, the
          step guard; a generator's ``get_state()``), which must hold
          tensors that later steps replace rather than write in place, as
          the components here do (an object without ``state_dict`` is
          deep-copied);
        - the number of rows of skorch's history, and the attributes of
          each skorch callback (lists, dicts, sets and deques copied, one
          level deep; what a callback did outside the net, such as printing
          or writing a file, stays done).

        Gradients are not state (every step zeroes them first); a restore
        clears them.

        Returns
        -------
        state : dict
            For :meth:`restore_state` only; its layout is private.
        """
        module = self.module_
        optimizer = self.optimizer_
        attributes = vars(self)
        with torch.no_grad():
            return {
                "attributes": {name: attributes[name] for name in self._configured_attributes()
                               if name in attributes},
                "built_from": dict(self._built_from_),
                "training": module.training,
                "parameters": [param.clone() for param in self._parameters()],
                "buffers": {name: module.get_buffer(name).clone()
                            for name in self._buffer_names()},
                "groups": [{key: value for key, value in group.items() if key != "params"}
                           for group in optimizer.param_groups],
                "optimizer": {param: {key: (value.clone() if isinstance(value, torch.Tensor)
                                            else copy.deepcopy(value))
                                      for key, value in state.items()}
                              for param, state in optimizer.state.items()},
                "components": {name: _component_state(getattr(self, name, None))
                               for name in self.state_attributes},
                "history": len(self.history),
                # skorch callbacks keep what they learn in attributes (a
                # best score, a patience counter, a list of scores).
                "callbacks": [(callback, {key: _shallow_copy(value)
                                          for key, value in vars(callback).items()})
                              for _, callback in self.callbacks_ or ()],
            }

    def restore_state(self, state):
        """Put back what :meth:`capture_state` captured; the call never happened."""
        vars(self).update(state["attributes"])
        self._built_from_ = state["built_from"]
        for param in DEFENCE_PARAMETERS:
            if param.adjust is not None:  # the buffer's size and period
                param.adjust(self, getattr(self, param.name))
        module = self.module_
        with torch.no_grad():
            for param, saved in zip(self._parameters(), state["parameters"]):
                param.copy_(saved)
                param.grad = None
            for name, saved in state["buffers"].items():
                owner, _, attribute = name.rpartition(".")
                owner = module.get_submodule(owner)
                current = owner._buffers.get(attribute)
                if current is not None and current.shape == saved.shape:
                    current.copy_(saved)
                else:  # the module replaced it by one of another shape
                    owner._buffers[attribute] = saved
        set_mode(module, state["training"])
        optimizer = self.optimizer_
        for group, saved in zip(optimizer.param_groups, state["groups"]):
            group.update(saved)
        optimizer.state.clear()
        optimizer.state.update(state["optimizer"])
        for name, saved in state["components"].items():
            _load_component_state(self, name, saved)
        del self.history[state["history"]:]
        for callback, attributes in state["callbacks"]:
            vars(callback).clear()
            vars(callback).update(attributes)

    def _parameters(self):
        """The optimizer's parameters (the module's), as a flat list."""
        return [param for group in self.optimizer_.param_groups for param in group["params"]]

    def _buffer_names(self):
        """The module's buffer names, found once per module (a traversal per step costs)."""
        cached = vars(self).get("_buffer_names_")
        if cached is None or cached[0] != id(self.module_):
            cached = (id(self.module_), tuple(name for name, _ in self.module_.named_buffers()))
            self._buffer_names_ = cached
        return cached[1]

    def _configured_attributes(self):
        """The defence and optimizer parameters, the components built from them, the state attributes."""
        names = type(self).__dict__.get("_configured_names")
        if names is None:
            names = [param.name for param in DEFENCE_PARAMETERS]
            names += ["lr", "optimizer__momentum", "batch_size"]
            names += [param.component for param in DEFENCE_PARAMETERS if param.component]
            names = tuple(names + [name for name in self.state_attributes
                                   if name not in names])
            type(self)._configured_names = names  # per class: state_attributes may differ
        return names

    # ----------------------------------------------------------- the pass

    def stream_epoch(self, X, y, sample_weight=None, *, X_raw=None, y_raw=None):
        """One skorch epoch over ``X`` in batches of ``batch_size``: one ``partial_fit`` call.

        It runs :meth:`train_step` on each batch and notifies skorch's
        callbacks as ``NeuralNet.partial_fit`` does (``on_train_begin``,
        ``on_epoch_begin``, per batch ``on_batch_begin``,
        ``on_grad_computed`` and ``on_batch_end``, then ``on_epoch_end``
        and ``on_train_end``); ``history`` gains one row with an entry per
        batch. Without callbacks, the batch entries are written after the
        pass from the values copied to the host once, so that the training
        step never waits for the device; the steps' non-finite flags come
        back in the same copy (with callbacks, each batch is checked before
        ``on_batch_end``).

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
            The call's inputs, on the net's device.
        y : torch.Tensor of shape (n_samples,)
            Their encoded labels, on the device.
        sample_weight : tuple of (torch.Tensor, list of float), default=None
            The rows' weights on the device and each batch's total on the
            host; ``None`` weighs the rows alike.
        X_raw, y_raw : array-like, default=None
            What ``on_train_begin`` and ``on_train_end`` receive as ``X`` and
            ``y`` (the caller's arrays).

        Returns
        -------
        values : ndarray of shape (n_batches, len(LOG_FIELDS))
            Each step's :data:`LOG_FIELDS`.
        flagged : ndarray of bool, shape (n_samples,)
            The rows the gate flagged.

        Raises
        ------
        NonFiniteError
            When a step produced NaN or an infinity; its ``batch_index`` is
            the batch's index in the call.
        """
        notify, batch_size = bool(self.callbacks_), self.batch_size
        self.notify("on_train_begin", X=X_raw, y=y_raw)
        self.notify("on_epoch_begin", dataset_train=None, dataset_valid=None)
        records, flags, non_finite = [], [], []
        for index, start in enumerate(range(0, len(X), batch_size)):
            batch = (X[start:start + batch_size], y[start:start + batch_size])
            if notify:
                self.notify("on_batch_begin", batch=batch, training=True)
            try:
                if sample_weight is None:
                    step = self.train_step(batch)
                else:
                    step = self.train_step(
                        batch, sample_weight=sample_weight[0][start:start + batch_size],
                        weight_total=sample_weight[1][index])
            except NonFiniteError as exc:
                # Without callbacks an earlier batch's flag is not read yet:
                # the first batch that was not finite is the culprit.
                earlier = [i for i, flag in enumerate(non_finite) if bool(flag)]
                exc.batch_index = earlier[0] if earlier else index
                raise
            if self.classes is not None:
                check_logits(step["y_pred"], len(self.classes),
                             f"in training batch {index + 1} of this call")
            records.append(step["record"])
            flags.append(step["flagged"])
            non_finite.append(step["non_finite"])
            if notify:
                if bool(step["non_finite"]):
                    raise _non_finite_batch(index)
                _record_batch(self.history, step["loss"].item(), len(batch[0]))
                self.notify("on_batch_end", batch=batch, training=True, **step)
        values, flagged, bad = _to_host(records, flags, non_finite)
        if bad.any():
            raise _non_finite_batch(int(np.argmax(bad)))
        if not notify:
            for loss, batch_flags in zip(values[:, 0].tolist(), flags):
                self.history.new_batch()
                _record_batch(self.history, loss, len(batch_flags))
        self.history.record("train_batch_count", len(records))
        self.notify("on_epoch_end", dataset_train=None, dataset_valid=None)
        self.notify("on_train_end", X=X_raw, y=y_raw)
        return values, flagged

    # ------------------------------------------------------------ the step

    def train_step(self, batch, sample_weight=None, weight_total=None, **fit_params):
        """Run the defence and one optimizer step on ``batch``.

        Parameters
        ----------
        batch : tuple of (torch.Tensor, torch.Tensor)
            Inputs of shape ``(n_samples, n_features)`` and encoded labels,
            on the net's device.
        sample_weight : torch.Tensor of shape (n_samples,), default=None
            Non-negative weights of the rows, on the net's device: the loss
            is their weighted mean, and the threshold policies and the step
            guard's probe weigh the rows by them. ``None`` weighs every row
            alike.
        weight_total : float, default=None
            ``sample_weight.sum()`` as the host knows it (the estimator
            passes it, which saves a device synchronisation); ``0`` makes
            the step train on nothing.
        **fit_params : dict
            Unused; kept for skorch's signature.

        Returns
        -------
        step : dict
            ``loss`` and ``y_pred`` as in skorch, plus ``record``: a float
            tensor with the values of :data:`LOG_FIELDS`, ``flagged``: the
            boolean mask of the rows the gate flagged, and ``non_finite``: a
            0-d float tensor, 1 when the step produced NaN or an infinity
            (the estimator then refuses the call and restores its state).
        """
        step = self.begin_step(*batch)
        if sample_weight is not None:
            step.sample_weight = step.sample_weight_train = sample_weight
            step.weight_total = (float(sample_weight.sum()) if weight_total is None
                                 else weight_total)
        self.gate(step)
        self.correct(step)
        self.optimizer_step(step)
        self.snapshot(step)
        return self.record(step)

    def begin_step(self, X, y):
        """Start a :class:`Step`: train mode, and the training pass when it can go first.

        For a mode-invariant module the training-mode logits of the batch
        equal the eval-mode ones the gate needs, so one forward pass serves
        both.
        """
        self._set_training(True)
        step = Step(X, y)
        if self.mode_invariant_:
            step.logits = self.infer_training(X)
        return step

    def gate(self, step):
        """Compute the gate statistics and flag the rows, unless the correction needs no gate.

        Each threshold policy's ``flag`` decides on its gate's units (the
        samples, or the batch with ``granularity="batch"``). Fills in
        ``statistic``, ``threshold``, ``thresholds`` (each policy's
        ``current()``, for the log), ``gates`` and ``flagged``; the policies
        learn from the batch in :meth:`record`.
        """
        if not self.correction_.gated:
            return
        X, y = step.X, step.y
        current = (step.logits.detach() if step.logits is not None
                   else self._eval_logits(X))
        policies = self.gate_policies()
        statistics = self.gate_statistics(X, y, current)
        step.thresholds = [policy.current(X.device) for policy, _ in policies]
        step.gates = []
        for (policy, _), statistic in zip(policies, statistics):
            units, unit_flags, rows = self._flag(policy, statistic, step.sample_weight)
            step.gates.append((policy, units, unit_flags, rows))
        step.flagged = _union([gate[3] for gate in step.gates])
        step.statistic, step.threshold = statistics[0], step.thresholds[0]

    def correct(self, step):
        """Let the correction strategy choose what the optimizer trains on.

        The strategy (``correction_``, a
        :class:`~dsc_sklearn.defence.correction.BaseCorrection`) runs when
        it is ``gated``, and sees the step through a
        :class:`~dsc_sklearn.defence.correction.CorrectionContext`.
        """
        correction = self.correction_
        if not correction.gated:
            return
        if isinstance(correction, _NetCorrection):  # the deprecated protocol
            correction.correct(self, step)
            return
        correction.correct(self.correction_context(), step)

    def correction_context(self):
        """What a correction may use, as a
        :class:`~dsc_sklearn.defence.correction.CorrectionContext`."""
        return CorrectionContext(
            module=self.module_, epsilon=self.epsilon, step_size=self.step_size,
            max_steps=self.max_correction_steps, input_bounds=self.input_bounds,
            generator=self.generator_, flag_rows=self.flag_rows,
            training_logits=self.infer_training,
        )

    def optimizer_step(self, step):
        """One optimizer step on ``step.X_train``; NaN loss when nothing is left.

        Nothing is left when the correction emptied the batch, or when its
        rows weigh 0 in all (``step.weight_total``).
        """
        step.train_logits = self._training_logits(step)
        if step.train_logits is None or step.weight_total == 0:
            step.loss = constant(step.y.device, math.nan, torch.get_default_dtype())
            return
        guard = self.step_guard_
        if guard is not None:
            context = self.guard_context()
            guard.before_step(context, step)
        self.optimizer_.zero_grad()
        loss = self.train_step_single((step.X_train, step.y_train), step=step)["loss"]
        if self.callbacks_:  # skorch's event, e.g. for GradientNormClipping
            self.notify("on_grad_computed",
                        named_parameters=TeeGenerator(self.get_all_learnable_params()),
                        batch=(step.X_train, step.y_train), training=True)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_norm_(
                self.module_.parameters(), self.clip_value, norm_type=math.inf
            )
        self.optimizer_.step()
        step.loss = loss.detach()
        step.trained = True
        if guard is not None:
            step.step_scale, step.step_discrepancy = 1.0, math.nan
            guard.after_step(context, step)

    def train_step_single(self, batch, step=None, **fit_params):
        """skorch's hook: the loss on ``batch`` and its gradients, ``{"loss", "y_pred"}``.

        :meth:`optimizer_step` calls it with the defence's ``step``: the
        logits are the step's training logits (the gate's forward pass
        when the module is mode-invariant, or what the correction spliced),
        the loss is :meth:`training_loss` (skorch's :meth:`get_loss`,
        weighted by the rows' ``sample_weight``). Called as skorch calls
        it, without ``step``, it is skorch's own (``infer``, ``get_loss``,
        ``backward``). A subclass may override it as in skorch, e.g. to add
        a penalty to the loss, and call ``super().train_step_single(batch,
        **fit_params)``; the gradients it leaves are what the optimizer
        steps on.
        """
        if step is None:
            return super().train_step_single(batch, **fit_params)
        loss = self.training_loss(step)
        loss.backward()
        return {"loss": loss, "y_pred": step.train_logits}

    def snapshot(self, step):
        """Count the training batch in the buffer's clock; snapshot when due."""
        self.snapshots_.maybe_snapshot(self.module_)

    def record(self, step):
        """Let the policies learn from the batch; return skorch's step dict.

        Returns
        -------
        step : dict
            ``loss``, ``y_pred`` (the training logits), ``record`` (the
            :data:`LOG_FIELDS` as one float32 tensor on the device),
            ``flagged`` (the rows the gate flagged) and ``non_finite``
            (:meth:`check_finite`).
        """
        weighted = step.sample_weight is not None and self.granularity != "batch"
        for policy, units, unit_flags, _ in step.gates or ():
            if weighted:
                policy.update(units, unit_flags, sample_weight=step.sample_weight)
            else:
                policy.update(units, unit_flags)
        flagged = step.flagged
        if flagged is None:
            flagged = torch.zeros(len(step.X), dtype=torch.bool, device=step.X.device)
        step.non_finite = self.check_finite(step)
        intervened = step.step_scale < 1 or step.rewound
        if intervened and math.isnan(step.step_bound):
            step.step_bound = self._guard_bound()
        return {"loss": step.loss, "y_pred": step.train_logits,
                "record": self._record_tensor(step), "flagged": flagged,
                "non_finite": step.non_finite}

    def check_finite(self, step):
        """A 0-d float tensor, 1 when the step produced NaN or an infinity.

        It looks at the gate statistics, the loss (when the optimizer
        stepped) and the module's buffers, and at the **squares** of the
        parameters as the step left them (a non-finite gradient makes them
        non-finite too), in fused kernels and without a host
        synchronisation: the estimator reads the flags of a whole call at
        once. The squares flag a parameter of magnitude
        ``sqrt(finfo.max)`` or more (1.8e19 in float32): one row of 1e38
        leaves the loss and the weights finite, but so large that the next
        forward pass overflows and nothing could be trained or predicted
        afterwards. The loss itself is only required to be finite: a bound
        on it (tried: 4.3e9 and 1.8e19) also refused the clean batches
        after a large but finite row, which otherwise bring the model back
        (docs/reliability.md, section 7).
        """
        found = torch.zeros((), device=step.X.device)
        tensors = [units for _, units, _, _ in step.gates or ()]
        if step.trained:
            tensors.append(step.loss)
        tensors.extend(self.module_.get_buffer(name) for name in self._buffer_names())
        mark_non_finite(found, tensors)
        mark_out_of_range(found, self._parameters())
        return found

    # ------------------------------------------------------- gate helpers

    def gate_policies(self):
        """The gates in force: ``(policy, statistic name)``, discrepancy first."""
        gates = []
        for attribute, default in _GATES:
            policy = getattr(self, attribute)
            if policy is not None:
                gates.append((policy, getattr(policy, "statistic", None) or default))
        return gates

    def gate_statistics(self, X, y, logits):
        """One per-sample statistic per gate, from one reference pass.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
        y : torch.Tensor of shape (n_samples,)
        logits : torch.Tensor of shape (n_samples, n_classes)
            The current model's eval-mode logits of ``X``.

        Returns
        -------
        statistics : list of torch.Tensor of shape (n_samples,)
            In the order of :meth:`gate_policies`.
        """
        reference_logits = self.snapshots_.reference_logits(self.module_, X, self.reference)
        return [STATISTICS[name](logits, reference_logits, y, self.reference)
                for _, name in self.gate_policies()]

    def flag_rows(self, X, y, logits, *, sample_weight=None):
        """Re-apply the gates: one flag per row.

        The correction calls it (as ``CorrectionContext.flag_rows``) on the
        rows it moved, with their eval-mode ``logits`` (and, for a whole
        batch, its ``sample_weight``). The policies have not learned from
        the batch yet, so their thresholds are the ones the gate used.
        """
        statistics = self.gate_statistics(X, y, logits)
        return _union([self._flag(policy, statistic, sample_weight)[2]
                       for (policy, _), statistic in zip(self.gate_policies(), statistics)])

    def _flag(self, policy, statistic, sample_weight=None):
        """Let ``policy`` flag the decision units; return them, their flags and a row mask.

        A unit is a sample, or the whole batch (its mean statistic, weighted
        by ``sample_weight`` when given) with ``granularity="batch"``.
        """
        units = (weighted_mean(statistic, sample_weight).reshape(1)
                 if self.granularity == "batch" else statistic)
        unit_flags = policy.flag(units)
        return units, unit_flags, unit_flags.expand(statistic.shape[0])

    def discrepancy(self, X, current_logits=None, reference=None, dtype=None, *,
                    module=None, state=None, snapshots=None):
        """Memorization discrepancy of ``X`` against the snapshot buffer.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
        current_logits : torch.Tensor, default=None
            The current module's eval-mode logits for ``X`` when already
            computed.
        reference : str, default=None
            Overrides the net's ``reference``.
        dtype : torch.dtype, default=None
            Evaluate the models in this precision, e.g. ``torch.float64``
            for results that do not depend on the batch size.
        module : torch.nn.Module, default=None
            The module to evaluate the weights with, ``module_`` by default;
            a read-only call passes its thread's private copy (see
            :func:`~dsc_sklearn.defence._serving.private_module`).
        state : dict of str to torch.Tensor, default=None
            The current weights, ``module_``'s by default.
        snapshots : SnapshotBuffer, default=None
            The snapshots to compare with, ``snapshots_`` by default.

        Returns
        -------
        discrepancy : torch.Tensor of shape (n_samples,) or \
                (n_samples, n_snapshots)
        """
        reference = reference or self.reference
        module = self.module_ if module is None else module
        buffer = self.snapshots_ if snapshots is None else snapshots
        if dtype is not None:
            X = X.to(dtype)
        if current_logits is None:
            state = cast_floating(module.state_dict() if state is None else dict(state),
                                  dtype)
            with torch.no_grad(), eval_mode(module):
                current_logits = call_with_state(module, state, X)
        reference_logits = buffer.reference_logits(module, X, reference, dtype=dtype)
        return reduce_snapshots(memorization_discrepancy(reference_logits, current_logits),
                                reference)

    # ------------------------------------------------------ forward passes

    def _eval_logits(self, X):
        """Eval-mode logits of the current model, without gradients."""
        with torch.no_grad():
            if self.mode_invariant_:
                return self.module_(X)  # the same function in either mode
            with eval_mode(self.module_):
                return self.module_(X)

    def _training_logits(self, step):
        """Training-mode logits of ``X_train``; ``None`` when it is empty.

        The logits of the arriving batch, when computed before the gate,
        are kept when nothing changed, spliced when the correction says
        how, and computed afresh otherwise.
        """
        if not len(step.X_train):
            return None
        if step.logits is None:
            return self.infer_training(step.X_train)
        if step.X_train is step.X:
            return step.logits
        if step.splice is not None:
            return step.splice(step.logits)
        return self.infer_training(step.X_train)

    def _to_device(self, tensor):
        """``tensor`` on the net's device, as skorch's ``to_tensor`` puts it."""
        return tensor if self.device is None else tensor.to(self.device)

    def infer_training(self, X):
        """Training-mode logits of ``X``: ``infer(X)`` minus skorch's conversions.

        They cost a few percent of a small model's training step; a
        subclass that overrides :meth:`infer` gets its own.
        """
        if type(self).infer is not NeuralNet.infer:
            return self.infer(X)
        return self.module_(self._to_device(X))

    def training_loss(self, step):
        """The loss the optimizer minimises: ``get_loss`` on the training batch.

        skorch's :meth:`get_loss` with ``training=True``, minus its input
        conversions unless a subclass overrides it.
        """
        logits, y, X = step.train_logits, step.y_train, step.X_train
        weight = step.sample_weight_train
        if weight is not None:
            return self._weighted_loss(logits, y, X, weight)
        if (type(self).get_loss is not NeuralNetClassifier.get_loss
                or isinstance(self.criterion_, nn.NLLLoss)):
            return self.get_loss(logits, y, X=X, training=True)
        return self.criterion_(logits, self._to_device(y))

    def _weighted_loss(self, logits, y, X, weight):
        """The mean of the per-sample losses weighted by ``weight`` (0 if they weigh 0).

        The criterion runs with ``reduction="none"`` for the call, through
        ``get_loss`` when a subclass overrides it.
        """
        if len(weight) != len(X):
            raise ValueError(
                f"The training batch has {len(X)} rows but {len(weight)} sample "
                "weights: a correction that changes the rows must set "
                "step.sample_weight_train to their weights."
            )
        criterion = self.criterion_
        if not hasattr(criterion, "reduction"):
            raise TypeError(
                f"sample_weight needs a criterion with a 'reduction' attribute, as "
                f"torch's losses have; {type(criterion).__name__} has none."
            )
        reduction, criterion.reduction = criterion.reduction, "none"
        try:
            if (type(self).get_loss is not NeuralNetClassifier.get_loss
                    or isinstance(criterion, nn.NLLLoss)):
                losses = self.get_loss(logits, y, X=X, training=True)
            else:
                losses = criterion(logits, self._to_device(y))
        finally:
            criterion.reduction = reduction
        return weighted_mean(losses, weight)

    def _guard_bound(self):
        """The bound of the first guard that acted on the last step; NaN if none says."""
        for decision in self.step_guard_.decisions() if self.step_guard_ is not None else ():
            if decision.scale < 1 or decision.acts:
                return float(decision.bound)
        return math.nan

    @staticmethod
    def _record_tensor(step):
        """The step's :data:`LOG_FIELDS` as one float32 tensor on the device."""
        loss = step.loss
        guard = (step.step_discrepancy, step.step_scale, step.step_bound, float(step.rewound))
        if all(math.isnan(value) for value in guard[:3]):  # no guard measured the step
            guard = constant(loss.device, guard, torch.float32)
        else:
            guard = to_device(guard, loss.device, torch.float32)  # no sync on CUDA
        if step.statistic is None:
            rest = (math.nan, math.nan, math.nan, 0.0, float(step.n_correction_steps))
            return torch.cat((loss.reshape(1).to(torch.float32),
                              constant(loss.device, rest, torch.float32), guard))
        # torch.stack promotes the dtypes, so one conversion suffices.
        values = (
            loss,
            step.statistic.mean(),
            step.statistic.max(),
            step.threshold,
            step.flagged.sum(),
            constant(loss.device, float(step.n_correction_steps), torch.float32),
        )
        return torch.cat((torch.stack(values).to(torch.float32), guard))
