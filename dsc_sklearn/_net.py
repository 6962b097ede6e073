"""The skorch network whose training step runs the discrepancy defence."""

import functools
import math

import torch
from skorch import NeuralNet, NeuralNetClassifier
from torch import nn
from torch.nn.functional import cross_entropy

from .correction import adversarial_examples, correct_rows, loss_descent
from .discrepancy import decision_statistic, memorization_discrepancy, reduce_snapshots
from .history import SnapshotBuffer, call_with_state, cast_floating, eval_mode, set_mode
from .modules import MLP, SmallCNN
from .thresholds import make_threshold

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
)


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


def _union(masks):
    """Rows flagged by any gate; a single gate's mask is returned as is."""
    return masks[0] if len(masks) == 1 else torch.stack(masks).any(dim=0)


@functools.lru_cache(maxsize=64)
def _constant(device, values, dtype):
    """A cached tensor of ``values`` on ``device``; do not modify it.

    Building a tensor from Python numbers is a synchronising host-to-device
    copy on CUDA; the log record of every step needs a few such constants.
    """
    return torch.tensor(values, dtype=dtype, device=device)


def is_mode_invariant(module):
    """Whether ``module`` computes the same function in train and eval mode."""
    return all(type(layer) in _MODE_INVARIANT_LAYERS for layer in module.modules())


class DiscrepancyAwareNet(NeuralNetClassifier):
    """A skorch classifier whose ``train_step`` corrects suspicious samples.

    One training step (:meth:`train_step`) does, on the batch it is given:

    1. reference logits from the snapshot buffer (``snapshots_``);
    2. the per-sample memorization discrepancy against them;
    3. the flags of the threshold policy (``threshold_policy_``);
    4. the correction of the flagged samples (``correction``);
    5. an ordinary optimizer step on the corrected batch, with optional
       L-infinity gradient clipping (``clip_value``);
    6. a snapshot every ``snapshot_every`` training batches (a batch that
       ``"drop"`` emptied counts too, so a model that stopped learning is
       eventually compared with itself and recovers).

    It is the engine of
    :class:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier`, which owns it as
    ``net_`` and feeds it batches; its extra parameters have the meaning
    documented there. The module must return logits, and the criterion is
    :class:`torch.nn.CrossEntropyLoss`.
    """

    def __init__(
        self,
        module,
        *args,
        history_size=4,
        snapshot_every=10,
        reference="oldest",
        threshold="auto",
        granularity="sample",
        correction="dsc",
        epsilon=0.2,
        step_size=0.02,
        max_correction_steps=10,
        clip_value=None,
        input_bounds=None,
        loss_threshold=None,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.history_size = history_size
        self.snapshot_every = snapshot_every
        self.reference = reference
        self.threshold = threshold
        self.granularity = granularity
        self.correction = correction
        self.epsilon = epsilon
        self.step_size = step_size
        self.max_correction_steps = max_correction_steps
        self.clip_value = clip_value
        self.input_bounds = input_bounds
        self.loss_threshold = loss_threshold

    def initialize(self):
        """Initialise the skorch components, the buffer and the threshold."""
        super().initialize()
        self.snapshots_ = SnapshotBuffer(self.history_size, self.snapshot_every)
        self.snapshots_.snapshot(self.module_)
        self.threshold_policy_ = make_threshold(self.threshold)
        self.loss_threshold_policy_ = self._loss_policy(self.loss_threshold)
        self.mode_invariant_ = is_mode_invariant(self.module_)
        self.generator_ = torch.Generator().manual_seed(
            int(torch.randint(2**31 - 1, (1,)))
        )
        self._register_device_state()
        return self

    #: Attributes besides skorch's ``module_``, ``criterion_`` and
    #: ``optimizer_`` that may hold tensors on the net's device.
    device_state_attributes = (
        "module", "snapshots_", "threshold_policy_", "loss_threshold_policy_",
        "generator_",
    )

    def _register_device_state(self):
        """Pickle the defence state the way skorch pickles the module.

        skorch pickles the attributes named by a prefix in
        ``cuda_dependent_attributes_`` apart and loads them back with
        ``map_location``, so a net trained on CUDA unpickles on a machine
        without CUDA. The snapshots, the threshold windows and the generator
        hold tensors too, and so does ``module``: the estimator passes an
        instance, which skorch keeps as ``module_`` and moves to the device.
        """
        missing = [name for name in self.device_state_attributes
                   if name not in self.cuda_dependent_attributes_]
        self.cuda_dependent_attributes_ = self.cuda_dependent_attributes_[:] + missing

    def _set_training(self, training=True):
        """skorch's mode switch of every module and criterion, made cheaper.

        It runs at every training step; :func:`~dsc_sklearn.history.set_mode`
        gives the result of ``module.train(training)`` for less.
        """
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, nn.Module):
                set_mode(module, training)

    def configure(self, **params):
        """Change defence or optimizer parameters between training steps.

        Plain attributes (``correction``, ``reference``, ``epsilon``, ...)
        take effect at the next step; a new ``threshold`` starts a fresh
        policy; ``history_size`` and ``snapshot_every`` adjust the buffer and
        keep its snapshots; ``lr`` and ``momentum`` update the optimizer.
        """
        for name, value in params.items():
            if name in ("lr", "momentum"):
                for group in self.optimizer_.param_groups:
                    group[name] = value
                continue
            if _same_value(getattr(self, name), value):
                continue
            setattr(self, name, value)
            if name == "threshold":
                self.threshold_policy_ = make_threshold(value)
            elif name == "loss_threshold":
                self.loss_threshold_policy_ = self._loss_policy(value)
            elif name == "history_size":
                self.snapshots_.resize(value)
            elif name == "snapshot_every":
                self.snapshots_.snapshot_every = value
        return self

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
        discrepancy = memorization_discrepancy(reference_logits, current_logits)
        if reference in ("oldest", "newest"):
            return discrepancy[0]
        return reduce_snapshots(discrepancy, reference)

    def _flag(self, statistic, threshold):
        """Flag the decision units; return them, their flags and a row mask.

        A unit is a sample, or the whole batch (its mean statistic) with
        ``granularity="batch"``.
        """
        units = statistic.mean().reshape(1) if self.granularity == "batch" else statistic
        unit_flags = units > threshold
        return units, unit_flags, unit_flags.expand(statistic.shape[0])

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
        X, y = batch
        self._set_training(True)
        train_logits = self._infer(X) if self.mode_invariant_ else None
        X_train, y_train = X, y
        statistic = flagged = threshold = splice = None
        n_steps = 0
        if self.correction != "none":
            current = self._current_logits(X, train_logits)
            statistics = self._statistics(X, y, current)
            policies = self._policies()
            thresholds = [policy.current(X.device) for policy in policies]
            gates = [self._flag(stat, tau) for stat, tau in zip(statistics, thresholds)]
            flagged = _union([gate[2] for gate in gates])
            X_train, y_train, n_steps, splice = self._correct(X, y, flagged, thresholds)
            for policy, (units, unit_flags, _) in zip(policies, gates):
                policy.update(units, unit_flags)
            statistic, threshold = statistics[0], thresholds[0]
        train_logits = self._training_logits(X, X_train, train_logits, splice)
        loss = self._optimizer_step(train_logits, y_train, X_train)
        record = self._record(loss, statistic, flagged, threshold, n_steps)
        if flagged is None:
            flagged = torch.zeros(len(X), dtype=torch.bool, device=X.device)
        return {"loss": loss, "y_pred": train_logits, "record": record, "flagged": flagged}

    def _training_logits(self, X, X_train, logits, splice):
        """Training-mode logits of ``X_train``; ``None`` when it is empty.

        ``logits`` are those of the arriving batch ``X`` when the training
        pass could be run before the gate (mode-invariant modules); they are
        kept when nothing changed, spliced when the correction says how, and
        computed afresh otherwise.
        """
        if not len(X_train):
            return None
        if logits is None:
            return self._infer(X_train)
        if X_train is X:
            return logits
        return splice(logits) if splice is not None else self._infer(X_train)

    def _to_device(self, tensor):
        """``tensor`` on the net's device, as skorch's ``to_tensor`` puts it."""
        return tensor if self.device is None else tensor.to(self.device)

    def _infer(self, X):
        """``infer(X)`` for a tensor, minus skorch's input conversions.

        They cost a few percent of a small model's training step; a
        subclass that overrides :meth:`infer` gets its own.
        """
        if type(self).infer is not NeuralNet.infer:
            return self.infer(X)
        return self.module_(self._to_device(X))

    def _loss(self, logits, y, X):
        """``get_loss(logits, y, X=X, training=True)``, minus the conversions."""
        if (type(self).get_loss is not NeuralNetClassifier.get_loss
                or isinstance(self.criterion_, nn.NLLLoss)):
            return self.get_loss(logits, y, X=X, training=True)
        return self.criterion_(logits, self._to_device(y))

    @staticmethod
    def _loss_policy(loss_threshold):
        return None if loss_threshold is None else make_threshold(loss_threshold)

    def _policies(self):
        """The threshold policies in force: discrepancy, then loss if gated."""
        if self.loss_threshold_policy_ is None:
            return [self.threshold_policy_]
        return [self.threshold_policy_, self.loss_threshold_policy_]

    def _current_logits(self, X, train_logits):
        """Eval-mode logits of the current model, reusing the training pass when equal."""
        if train_logits is not None:
            return train_logits.detach()
        with torch.no_grad(), eval_mode(self.module_):
            return self.module_(X)

    def _statistics(self, X, y, logits):
        """Per-sample decision statistics: the discrepancy, and the loss if gated."""
        statistics = [decision_statistic(self.discrepancy(X, logits))]
        if self.loss_threshold_policy_ is not None:
            statistics.append(cross_entropy(logits, y, reduction="none"))
        return statistics

    def _correct(self, X, y, flagged, thresholds):
        """Return the inputs and labels to train on, the steps taken, and a splice.

        The splice, when not ``None``, turns the training logits of ``X``
        into those of the returned inputs by recomputing only the rows that
        changed; the corrections that move every row return ``None``.
        """
        options = dict(
            epsilon=self.epsilon,
            step_size=self.step_size,
            max_steps=self.max_correction_steps,
            input_bounds=self.input_bounds,
        )
        if self.correction == "dsc":
            def still_flagged(X_rows, y_rows, logits):
                statistics = self._statistics(X_rows, y_rows, logits)
                masks = [self._flag(stat, tau)[2] for stat, tau in zip(statistics, thresholds)]
                return _union(masks)

            rows = flagged.nonzero().squeeze(1)
            X_new, n_steps = correct_rows(self.module_, X, y, rows, still_flagged, **options)

            def splice(logits):
                return logits.index_put((rows,), self._infer(X_new[rows]))

            return X_new, y, n_steps, splice
        if self.correction == "drop":
            # One synchronisation: integer indices, unlike a boolean mask,
            # index X, y and the logits without asking the device again.
            kept = (~flagged).nonzero().squeeze(1)
            if len(kept) == len(X):
                return X, y, 0, None
            return X[kept], y[kept], 0, lambda logits: logits[kept]
        if self.correction == "descent":
            X_new, n_steps = loss_descent(self.module_, X, y, **options)
            return X_new, y, n_steps, None
        X_new, n_steps = adversarial_examples(
            self.module_, X, y, generator=self.generator_, **options
        )
        return X_new, y, n_steps, None

    def _optimizer_step(self, logits, y, X):
        """One optimizer step on ``logits``; NaN loss when nothing is left."""
        if logits is None:
            self.snapshots_.maybe_snapshot(self.module_)
            return _constant(y.device, math.nan, torch.get_default_dtype())
        self.optimizer_.zero_grad()
        loss = self._loss(logits, y, X)
        loss.backward()
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_norm_(
                self.module_.parameters(), self.clip_value, norm_type=math.inf
            )
        self.optimizer_.step()
        self.snapshots_.maybe_snapshot(self.module_)
        return loss.detach()

    @staticmethod
    def _record(loss, statistic, flagged, threshold, n_steps):
        """The step's :data:`LOG_FIELDS` as one float32 tensor on the device."""
        if statistic is None:
            rest = (math.nan, math.nan, math.nan, 0.0, float(n_steps))
            return torch.cat((loss.reshape(1).to(torch.float32),
                              _constant(loss.device, rest, torch.float32)))
        # torch.stack promotes the dtypes, so one conversion suffices.
        values = (
            loss,
            statistic.mean(),
            statistic.max(),
            threshold,
            flagged.sum(),
            _constant(loss.device, float(n_steps), torch.float32),
        )
        return torch.stack(values).to(torch.float32)
