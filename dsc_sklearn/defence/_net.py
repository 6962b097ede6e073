"""The skorch network whose training step runs the discrepancy defence."""

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from torch import nn

from .._torch import call_with_state, cast_floating, constant, eval_mode, set_mode, to_device
from ._params import DEFENCE_PARAMETERS
from .discrepancy import STATISTICS, memorization_discrepancy, reduce_snapshots
from .history import SnapshotBuffer
from .modules import MLP, SmallCNN

__all__ = ["LOG_FIELDS", "DiscrepancyAwareNet", "Step", "is_mode_invariant"]

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
)

# The statistic each threshold parameter's policy reads unless it names one.
_GATES = (("threshold_policy_", "discrepancy"), ("loss_threshold_policy_", "loss"))


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


def _union(masks):
    """Rows flagged by any gate; a single gate's mask is returned as is."""
    return masks[0] if len(masks) == 1 else torch.stack(masks).any(dim=0)


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
        The threshold of every gate, in gate order.
    gates : list of tuple
        ``(policy, units, unit_flags)`` per gate, for the policies' update.
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
        What the step guard measured and the scale it kept (NaN without a
        guard or without a step).
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

    def __post_init__(self):
        self.X_train, self.y_train = self.X, self.y


class DiscrepancyAwareNet(NeuralNetClassifier):
    """A skorch classifier whose ``train_step`` runs the defence.

    One training step (:meth:`train_step`) runs these hooks on its batch,
    each named by its role and safe to override in a subclass:

    1. :meth:`gate`: the decision statistics against the snapshot buffer
       (``snapshots_``) and the flags of the threshold policies;
    2. :meth:`correct`: the correction strategy (``correction_``) turns
       the batch into what the optimizer trains on;
    3. :meth:`optimizer_step`: the loss (:meth:`training_loss`), its
       gradient, optional L-infinity clipping (``clip_value``) and the
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

    def initialize(self):
        """Initialise the skorch components, the buffer and the defence's parts."""
        super().initialize()
        self.generator_ = torch.Generator().manual_seed(
            int(torch.randint(2**31 - 1, (1,)))
        )
        self.snapshots_ = SnapshotBuffer(self.history_size, self.snapshot_every)
        self.snapshots_.snapshot(self.module_)
        self._built_from_ = {}
        for param in DEFENCE_PARAMETERS:
            if param.build is not None:
                self._build(param, getattr(self, param.name))
        self.mode_invariant_ = is_mode_invariant(self.module_)
        self._register_device_state()
        return self

    def _build(self, param, value):
        """Build the component of a defence parameter; start it if it starts."""
        component = param.build(value)
        if hasattr(component, "start"):
            component.start(self)
        setattr(self, param.component, component)
        # A configured object (a StepGuard) may change in place through the
        # estimator's nested set_params: remember what it was built from.
        self._built_from_[param.name] = _configuration(value)

    def encode_labels(self, y):
        """Encode labels as the training step sees them (``0 .. n_classes - 1``).

        ``labels_``, set by the estimator, lists the labels in encoded
        order; without it the labels are taken as encoded already.

        Raises
        ------
        ValueError
            When a label is unknown.
        """
        labels = getattr(self, "labels_", None)
        y = np.asarray(y)
        if labels is None:
            return y.astype(np.int64)
        encoded = np.searchsorted(labels, y).clip(0, len(labels) - 1)
        if not np.array_equal(labels[encoded], y):
            raise ValueError(
                f"Labels {sorted(set(y.tolist()) - set(labels.tolist()))} are not among "
                f"the classes {labels.tolist()}."
            )
        return encoded.astype(np.int64)

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
        the next step; a parameter that builds a component (a new
        ``threshold`` starts a fresh policy, ``correction`` a new strategy)
        builds it anew; ``history_size`` and ``snapshot_every`` adjust the
        buffer and keep its snapshots; ``lr`` and ``momentum`` update the
        optimizer.
        """
        by_name = {param.name: param for param in DEFENCE_PARAMETERS}
        for name, value in params.items():
            if name in ("lr", "momentum"):
                for group in self.optimizer_.param_groups:
                    group[name] = value
                continue
            param = by_name[name]
            if (_same_value(getattr(self, name), value) and (
                    param.build is None or self._built_from_[name] == _configuration(value))):
                continue
            setattr(self, name, value)
            if param.build is not None:
                self._build(param, value)
            elif param.adjust is not None:
                param.adjust(self, value)
        return self

    # ------------------------------------------------------------ the step

    def train_step(self, batch, **fit_params):
        """Run the defence and one optimizer step on ``batch``.

        Parameters
        ----------
        batch : tuple of (torch.Tensor, torch.Tensor)
            Inputs of shape ``(n_samples, n_features)`` and encoded labels,
            on the net's device.
        **fit_params : dict
            Unused; kept for skorch's signature.

        Returns
        -------
        step : dict
            ``loss`` and ``y_pred`` as in skorch, plus ``record``: a float
            tensor with the values of :data:`LOG_FIELDS`, and ``flagged``: the
            boolean mask of the rows the gate flagged.
        """
        step = self.begin_step(*batch)
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

        Fills in ``statistic``, ``threshold``, ``thresholds``, ``gates`` and
        ``flagged``; the policies learn from the batch in :meth:`record`.
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
        for (policy, _), statistic, threshold in zip(policies, statistics, step.thresholds):
            units, unit_flags, rows = self._flag(statistic, threshold)
            step.gates.append((policy, units, unit_flags, rows))
        step.flagged = _union([gate[3] for gate in step.gates])
        step.statistic, step.threshold = statistics[0], step.thresholds[0]

    def correct(self, step):
        """Let the correction strategy choose what the optimizer trains on."""
        if self.correction_.gated:
            self.correction_.correct(self, step)

    def optimizer_step(self, step):
        """One optimizer step on ``step.X_train``; NaN loss when nothing is left."""
        step.train_logits = self._training_logits(step)
        if step.train_logits is None:
            step.loss = constant(step.y.device, math.nan, torch.get_default_dtype())
            return
        guard = self.step_guard_
        if guard is not None:
            guard.before_step(self, step)
        self.optimizer_.zero_grad()
        loss = self.training_loss(step)
        loss.backward()
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_norm_(
                self.module_.parameters(), self.clip_value, norm_type=math.inf
            )
        self.optimizer_.step()
        step.loss = loss.detach()
        if guard is not None:
            guard.after_step(self, step)

    def snapshot(self, step):
        """Count the training batch in the buffer's clock; snapshot when due."""
        self.snapshots_.maybe_snapshot(self.module_)

    def record(self, step):
        """Let the policies learn from the batch; return skorch's step dict.

        Returns
        -------
        step : dict
            ``loss``, ``y_pred`` (the training logits), ``record`` (the
            :data:`LOG_FIELDS` as one float32 tensor on the device) and
            ``flagged`` (the rows the gate flagged).
        """
        for policy, units, unit_flags, _ in step.gates or ():
            policy.update(units, unit_flags)
        flagged = step.flagged
        if flagged is None:
            flagged = torch.zeros(len(step.X), dtype=torch.bool, device=step.X.device)
        return {"loss": step.loss, "y_pred": step.train_logits,
                "record": self._record_tensor(step), "flagged": flagged}

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

    def flag_rows(self, X, y, logits, thresholds):
        """Re-apply the gates with the given thresholds: one flag per row.

        The correction calls it on the rows it moved, with their eval-mode
        ``logits``.
        """
        statistics = self.gate_statistics(X, y, logits)
        return _union([self._flag(statistic, threshold)[2]
                       for statistic, threshold in zip(statistics, thresholds)])

    def _flag(self, statistic, threshold):
        """Flag the decision units; return them, their flags and a row mask.

        A unit is a sample, or the whole batch (its mean statistic) with
        ``granularity="batch"``.
        """
        units = statistic.mean().reshape(1) if self.granularity == "batch" else statistic
        unit_flags = units > threshold
        return units, unit_flags, unit_flags.expand(statistic.shape[0])

    def discrepancy(self, X, current_logits=None, reference=None, dtype=None):
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

        Returns
        -------
        discrepancy : torch.Tensor of shape (n_samples,) or \
                (n_samples, n_snapshots)
        """
        reference = reference or self.reference
        if dtype is not None:
            X = X.to(dtype)
        if current_logits is None:
            state = cast_floating(self.module_.state_dict(), dtype)
            with torch.no_grad(), eval_mode(self.module_):
                current_logits = call_with_state(self.module_, state, X)
        reference_logits = self.snapshots_.reference_logits(
            self.module_, X, reference, dtype=dtype
        )
        return reduce_snapshots(memorization_discrepancy(reference_logits, current_logits),
                                reference)

    # ------------------------------------------------------ forward passes

    def _eval_logits(self, X):
        """Eval-mode logits of the current model, without gradients."""
        with torch.no_grad(), eval_mode(self.module_):
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
        if (type(self).get_loss is not NeuralNetClassifier.get_loss
                or isinstance(self.criterion_, nn.NLLLoss)):
            return self.get_loss(logits, y, X=X, training=True)
        return self.criterion_(logits, self._to_device(y))

    @staticmethod
    def _record_tensor(step):
        """The step's :data:`LOG_FIELDS` as one float32 tensor on the device."""
        loss = step.loss
        guard = (step.step_discrepancy, step.step_scale)
        if math.isnan(step.step_discrepancy) and math.isnan(step.step_scale):
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
