"""DiscrepancyAwareOnlineClassifier: the scikit-learn shell around the net."""

import contextlib
import copy
import functools
import inspect
import itertools
import math
import numbers
import os
import threading
import weakref
from collections import deque
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    unique_labels,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_is_fitted,
    validate_data,
)

from .._labels import encode_labels
from .._torch import call_with_state, eval_mode, to_device
from ._alarms import MAX_ALARMS, announce, interventions, record_interventions
from ._net import LOG_FIELDS, DiscrepancyAwareNet, check_logits
from ._params import DEFENCE_PARAMETERS, PARAMETERS, estimator_init
from ._persistence import (
    checked_state,
    estimator_state,
    load_net_state,
    read_checkpoint,
    warn_about_params,
)
from ._serving import private_module
from .discrepancy import REFERENCES, NonFiniteError
from .modules import MLP

__all__ = ["DiscrepancyAwareOnlineClassifier"]

#: Number of per-batch records kept in ``stream_log_``.
MAX_LOG_RECORDS = 10_000
#: Number of rows (calls, or passes of fit) kept in ``net_.history``.
MAX_HISTORY_ROWS = 10_000

# Parameters a fitted estimator picks up at its next partial_fit call.
_LIVE_PARAMS = tuple(param.name for param in PARAMETERS if param.role != "estimator")
# The counters; a failed partial_fit call restores them.
_COUNTERS = ("n_batches_seen_", "n_samples_seen_", "n_flagged_", "n_steps_scaled_")
# Everything fit() builds; a failed fit() restores them as they were.
_FITTED_ATTRIBUTES = ("classes_", "net_", "device_", *_COUNTERS, "stream_log_",
                      "last_flagged_", "n_features_in_", "feature_names_in_",
                      "_validated_live_params", "alarms_")
# What the threads contract keeps per object; never pickled, cloned or copied.
_THREAD_ATTRIBUTES = ("_lock", "_writers", "_generation", "_pre_call")


# module -> the names of each of its net's optimizer parameters, found once.
_PARAMETER_NAMES = weakref.WeakKeyDictionary()


def _parameter_names(net):
    """The names (several when tied) of each parameter of ``net._parameters()``.

    Found by identity, once per module, by a writing call (no snapshot is
    swapped into the module then).
    """
    module, parameters = net.module_, net._parameters()
    names = _PARAMETER_NAMES.get(module)
    if names is None or len(names) != len(parameters):
        by_id = {}
        for name, parameter in module.named_parameters(remove_duplicate=False):
            by_id.setdefault(id(parameter), []).append(name)
        names = _PARAMETER_NAMES[module] = [by_id.get(id(parameter), [])
                                            for parameter in parameters]
    return names


def _serialised(method):
    """Run ``method`` holding the estimator's lock: one writing call at a time."""
    @functools.wraps(method)
    def serialised(self, *args, **kwargs):
        with self._write_lock():
            return method(self, *args, **kwargs)
    return serialised


def _checked_sample_weight(sample_weight, X):
    """scikit-learn's checks of ``sample_weight``: finite, non-negative, one positive."""
    return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)


def _check_label_types(labels, name):
    """Refuse labels that mix strings with numbers (they cannot be sorted)."""
    labels = np.asarray(labels)
    if labels.dtype != object:
        return
    kinds = {}
    for label in labels.ravel().tolist():
        if label is not None and label == label:  # None and NaN have their own errors
            kinds.setdefault(isinstance(label, str), label)
    if len(kinds) > 1:
        raise ValueError(
            f"{name} mixes strings and numbers (e.g. {kinds[True]!r} and "
            f"{kinds[False]!r}): labels must be all strings or all numbers, since "
            f"classes_ is sorted. Convert them first, e.g. {name} = "
            f"np.asarray({name}).astype(str)."
        )


def _integer_labels(y):
    """Whether ``y`` is a 1-D array of integer or boolean labels."""
    return isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "biu"


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _plain_float32(estimator, X):
    """``X`` as ``validate_data(reset=False)`` returns it, when that is sure to pass.

    For a fitted estimator without feature names and a plain, C-contiguous
    2-D float32 or float64 ndarray of ``n_features_in_`` columns and at
    least one row, ``validate_data`` converts to float32 and checks that
    the values are finite, and nothing else can fail or warn. That is done
    here, the same way (``np.asarray`` for the conversion, the sum for the
    finiteness, as scikit-learn's first pass): a float32 array is returned
    as it is, a float64 one converted. Any other input, and values whose
    sum is not finite, return ``(None, X)`` with ``X`` converted as far as
    it was, for ``validate_data`` to give its own result, error or warning.

    Returns
    -------
    (X_checked, X) : the checked array or ``None``, and the input.
    """
    if (type(X) is not np.ndarray or X.ndim != 2 or X.dtype not in _FAST_DTYPES
            or not X.flags.c_contiguous or not len(X)
            or X.shape[1] != getattr(estimator, "n_features_in_", None)
            or getattr(estimator, "feature_names_in_", None) is not None):
        return None, X
    if X.dtype != np.float32:
        X = np.asarray(X, dtype=np.float32)
    elif not X.flags.writeable:
        return None, X  # validate_data's force_writeable copy
    with np.errstate(over="ignore"):
        if not np.isfinite(np.sum(X)):
            return None, X  # validate_data gives the error, or passes an overflow
    return X, X


def _validated_batch(estimator, X, y, reset):
    """``validate_data(estimator, X, y, dtype=np.float32, force_writeable=True, reset)``.

    Plain arrays after the first call take :func:`_plain_float32`'s path
    (with 1-D integer labels, C-contiguous, one per row), which gives the
    same arrays for a fraction of the time; everything else, and every
    error, goes through ``validate_data``.
    """
    if not reset:
        checked, X = _plain_float32(estimator, X)
        if (checked is not None and type(y) is np.ndarray and y.ndim == 1
                and y.dtype.kind in "biu" and y.flags.c_contiguous and len(y) == len(X)):
            return checked, y
    return validate_data(estimator, X, y, dtype=np.float32, force_writeable=True,
                         reset=reset)


@contextmanager
def _torch_seed(seed, device):
    """Seed torch inside the block without touching the caller's RNG state."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class DiscrepancyAwareOnlineClassifier(ClassifierMixin, BaseEstimator):
    """Online neural-network classifier guarded by memorization discrepancy.

    Each streamed batch can be compared with historical snapshots of the
    model: the per-sample memorization discrepancy ``KL(p_hist(x) ||
    p_cur(x))`` flags the samples the model's memory disagrees on, and with
    ``correction="dsc"`` the flagged samples are corrected
    (Discrepancy-aware Sample Correction, DSC) before the model takes its
    training step [1]_. By default (``correction="none"``) no discrepancy is
    computed, and the step guard (``step_guard="auto"``) bounds what one
    training step may change. This defends against accumulative poisoning,
    where small perturbations in a stream of batches prepare the model for
    one destructive trigger batch [2]_.

    The torch training runs in a skorch network (``net_``) whose
    ``train_step`` carries the defence; this estimator adds what
    scikit-learn expects: input validation, label encoding, ``classes=``,
    seeding, and one training pass per :meth:`partial_fit` call.

    The defence can be switched or retuned in the middle of a stream:
    ``set_params`` between two :meth:`partial_fit` calls changes the
    learning rate, momentum, threshold, step guard, correction, reference,
    buffer size and the other defence parameters from the next call on,
    keeping the weights, the snapshots and the optimizer state. A
    threshold policy or step guard retuned (``step_guard__margin=3.0``) or
    replaced by one of its kind keeps its calibration window, probe and
    counters, cut to what the new configuration holds (a
    :class:`UserWarning` says what was dropped); one of another kind
    starts anew (with a warning). ``module``, ``hidden_layer_sizes``,
    ``device``, ``random_state`` and ``callbacks`` take effect at the next
    :meth:`fit`.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The network; it maps a float32 tensor ``(n_samples, n_features)`` to
        logits ``(n_samples, n_classes)``. A class (or any callable) is called
        with ``n_features`` and ``n_classes`` as keywords when it accepts
        them; an instance is deep-copied at the first fit. ``None`` builds a
        :class:`~dsc_sklearn.defence.modules.MLP` with ``hidden_layer_sizes``.
    hidden_layer_sizes : tuple of int, default=(100,)
        Hidden widths of the default MLP; ignored when ``module`` is given.
    lr : float, default=0.1
        Learning rate of SGD.
    momentum : float, default=0.9
        Momentum of SGD.
    batch_size : int, default=100
        Rows per training step; larger calls are split in order.
    max_epochs : int, default=1
        Passes over the data made by :meth:`fit`.
    history_size : int, default=4
        Number of weight snapshots kept.
    snapshot_every : int or None, default=10
        Training batches between two snapshots. The initial weights are the
        first snapshot, so a reference always exists. ``None`` takes no
        periodic snapshot: the buffer then holds the initial weights and
        whatever :meth:`take_snapshot` stores, e.g. one frozen historical
        model taken halfway through a burn-in, as the paper's reference code
        does (``history_size=1``).
    reference : {"oldest", "newest", "mean", "max", "all"}, default="oldest"
        Which snapshot(s) the current model is compared with. ``"mean"`` and
        ``"max"`` reduce the discrepancies over all snapshots; ``"all"``
        flags like ``"max"`` and makes :meth:`memorization_discrepancy`
        return one column per snapshot.
    threshold : float, "auto", callable or policy, default="auto"
        When a discrepancy is too high: an absolute KL value, ``"auto"``
        (calibrated online as a high quantile of the discrepancies of recent
        batches, after a warm-up of 10 batches, see
        :class:`~dsc_sklearn.defence.thresholds.AutoThreshold`), a callable
        ``step -> float`` such as
        :func:`~dsc_sklearn.defence.thresholds.linear_schedule`, a configured
        policy such as ``AutoThreshold(quantile=0.995)`` (the net calibrates
        a clone), or a name registered in
        :data:`~dsc_sklearn.defence.thresholds.THRESHOLDS`.
    granularity : {"sample", "batch"}, default="sample"
        Flag samples one by one, or the whole batch on its mean discrepancy
        as the reference implementation does.
    correction : {"none", "dsc", "drop", "descent", "adversarial"} or \
            BaseCorrection, default="none"
        What happens before the training step: ``"none"`` trains plainly
        (no discrepancy is computed); ``"dsc"`` corrects flagged samples by
        signed descent of the current model's cross-entropy until their
        discrepancy is under the threshold; ``"drop"`` trains on unflagged
        samples only; ``"descent"`` is the reference code's "AT" baseline
        (always ``max_correction_steps`` descent steps, no gate);
        ``"adversarial"`` is Madry-style PGD adversarial training. Also a
        name registered in
        :data:`~dsc_sklearn.defence.correction.CORRECTIONS`, or a
        :class:`~dsc_sklearn.defence.correction.BaseCorrection` instance
        (the net trains with a clone; its parameters are nested
        parameters, e.g. ``correction__factor``).
    epsilon : float, default=0.2
        Radius of the L-infinity ball a correction stays in.
    step_size : float, default=0.02
        Size of one signed correction step.
    max_correction_steps : int, default=10
        Maximum number of correction steps per batch.
    clip_value : float, default=None
        Clip the L-infinity norm of the gradient to this value before each
        step (the "GC" baseline); ``None`` disables clipping.
    input_bounds : tuple of (float, float), default=None
        Range of the inputs, e.g. ``(0.0, 1.0)`` for images; corrected
        inputs are clamped to it, and rows outside it are handled by
        ``check_input_bounds``. ``None`` for unbounded (standardised)
        inputs.
    check_input_bounds : {"raise", "clip", "ignore"}, default="raise"
        What :meth:`partial_fit` and :meth:`fit` do with input values
        outside ``input_bounds`` (ignored when it is ``None``): refuse the
        call with a :class:`ValueError` before anything changes (an input
        outside the range the model is meant for is an error, or an attack),
        clip them into the bounds, or train on them as they are.
    loss_threshold : float, "auto", callable or policy, default=None
        Also flag the units whose cross-entropy under the current model
        exceeds this threshold (same forms as ``threshold``, its own
        calibration); a unit is flagged when either gate fires. ``None``
        gates on the discrepancy alone.
    step_guard : "auto", BaseGuard or None, default="auto"
        Bound what one optimizer step may do to what the model knows (this
        library's extension of the method, see
        :class:`~dsc_sklearn.defence.guards.StepGuard`): after each step,
        the KL divergence between the model before and after the step on a
        probe of rows it trained on; a step too large and harmful is pulled
        back towards the weights before it. ``"auto"`` is ``StepGuard()``;
        pass a configured ``StepGuard(...)`` to tune it (then
        ``step_guard__margin`` and its other parameters are nested
        parameters, e.g. for ``GridSearchCV``), any other
        :class:`~dsc_sklearn.defence.guards.BaseGuard`, several in a
        :class:`~dsc_sklearn.defence.guards.GuardChain`, or ``None`` to
        disable it. The estimator trains with a clone, ``step_guard_``.
    callbacks : list or None, default=None
        skorch callbacks for the net (instances, or ``(name, callback)``
        tuples), which then also gets skorch's default callbacks
        (``epoch_timer``, ``train_loss``, ``print_log``; the latter prints
        when ``verbose`` is positive). Every :meth:`partial_fit` call, and
        every pass of :meth:`fit`, is one skorch epoch. ``None`` runs no
        callback at all, which keeps the training step free of host
        synchronisations; ``net_.history`` has one row per call either way.
    device : str or torch.device, default="auto"
        Torch device; ``"auto"`` picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation and the random starts of
        ``"adversarial"``; an int makes CPU runs reproducible.
    verbose : int, default=0
        Print one line per :meth:`partial_fit` call when positive.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column
        names.
    net_ : DiscrepancyAwareNet
        The skorch network; ``net_.module_`` is the trained module and
        ``net_.history`` skorch's :class:`~skorch.history.History`, one row
        per :meth:`partial_fit` call with one entry per batch
        (``train_loss``, ``train_batch_size``), the last 10 000 rows only
        (as ``stream_log_``, and so in a checkpoint).
    device_ : torch.device
        The device the network lives on.
    n_batches_seen_ : int
        Training batches processed.
    n_samples_seen_ : int
        Training samples processed.
    n_flagged_ : int
        Samples flagged so far.
    step_guard_ : BaseGuard or None
        The guard that watches the training steps, a clone of
        ``step_guard`` (``StepGuard()`` for ``"auto"``), with its learned
        state; ``None`` without a guard.
    n_steps_scaled_ : int
        Training steps of the stream that a guard pulled back (refused
        batches included), whichever guard was in force: it counts across a
        ``set_params(step_guard=...)`` and over every guard of a
        :class:`~dsc_sklearn.defence.guards.GuardChain`, while a guard's own
        counters (``step_guard_.n_scaled_``) count its decisions since it
        was built.
    last_flagged_ : ndarray of shape (n_samples,), dtype=bool
        Which rows of the last :meth:`partial_fit` call (or the last pass of
        :meth:`fit`) were flagged.
    stream_log_ : collections.deque of dict
        One record per training batch (``step``, ``loss``,
        ``mean_discrepancy``, ``max_discrepancy``, ``threshold``,
        ``n_flagged``, ``n_correction_steps``), the last 10 000 only;
        ``pandas.DataFrame(clf.stream_log_)`` tabulates it. With
        ``sample_weight``, ``loss`` is the weighted mean (NaN for a batch
        that weighs 0); the other fields count or summarise rows.
        ``step_bound`` is the step guard's bound on the steps it pulled
        back, NaN on the others; ``rewound`` is 1.0 on a step where a guard
        (a ``CumulativeGuard``) rewound earlier steps, else 0.0.
    alarms_ : collections.deque of dict
        One record per intervention episode, the last 1 000 only: a run of
        steps the defence acted on, an episode ending after 5 steps without
        intervention. Fields: ``first_step``, ``last_step``, ``n_steps``
        (steps acted on), ``kind`` (the most severe: ``"flagged"``, the
        gate flagged more than 10 % of a batch's rows; ``"pulled back"``,
        the step guard kept part of a step; ``"refused"``, it kept none;
        ``"rewound"``, a guard undid earlier steps), and at the episode's
        peak (its most severe step, then the one furthest past its bound)
        ``peak_step``, ``statistic`` and ``bound`` (the step discrepancy and
        the guard's bound, or for ``"flagged"`` the batch's largest
        discrepancy and the threshold). When an episode starts, a WARNING
        goes to the ``logging`` logger ``"dsc_sklearn"``; every
        intervention calls ``on_intervention(net, step=, kind=, statistic=,
        bound=, episode=)`` on each skorch callback (``callbacks``) that
        defines it, once the call's batches have trained. See
        :ref:`alarms`.

    See Also
    --------
    MemorizationDiscrepancyScorer : Discrepancy scores as a transformer.

    References
    ----------
    .. [1] Zhu et al. "Exploring Model Dynamics for Accumulative Poisoning
       Discovery". ICML 2023. https://arxiv.org/abs/2306.03726
    .. [2] Pang et al. "Accumulative Poisoning Attacks on Real-time Data".
       NeurIPS 2021. https://arxiv.org/abs/2106.09993

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> clf = DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0), random_state=0)
    >>> for epoch in range(3):
    ...     for start in range(0, 1500, 100):
    ...         clf = clf.partial_fit(X[start:start + 100], y[start:start + 100],
    ...                               classes=range(10))
    >>> clf.n_batches_seen_
    45
    >>> print(f"{clf.score(X[1500:], y[1500:]):.2f}")
    0.84
    """

    _parameter_constraints = {param.name: list(param.constraints) for param in PARAMETERS}

    #: The skorch net the estimator builds as ``net_``. A subclass may name a
    #: :class:`~dsc_sklearn.defence.DiscrepancyAwareNet` subclass that
    #: overrides hooks of the training step.
    net_class = DiscrepancyAwareNet

    __init__ = estimator_init(PARAMETERS)

    # ------------------------------------------------------------------ fit

    @_serialised
    def fit(self, X, y, sample_weight=None):
        """Reset, then make ``max_epochs`` ordered passes over ``(X, y)``.

        When it fails (invalid input, a non-finite step, any exception or a
        ``KeyboardInterrupt``), the estimator is left as it was before the
        call: the previous model when it was fitted, unfitted otherwise.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows, as in :meth:`partial_fit`.
            Rows of weight 0 are left out before training, so ``classes_``
            holds the labels of the rows of positive weight, and a weight of
            0 is the same as removing the row. At least one weight must be
            positive.

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier
            The fitted estimator.
        """
        self._validate_params(rebuild=True)
        with self._rebuilding():
            X, y = validate_data(
                self, X, y, dtype=np.float32, force_writeable=True, reset=True
            )
            _check_label_types(y, "y")
            check_classification_targets(y)
            if sample_weight is not None:
                sample_weight = _checked_sample_weight(sample_weight, X)
                kept = sample_weight > 0
                if not kept.all():
                    X, y, sample_weight = X[kept], y[kept], sample_weight[kept]
            classes = unique_labels(y)
            with self._writing():
                for _ in range(self.max_epochs):
                    self._partial_fit(X, y, classes, sample_weight)
                self._bound_history()
        return self

    @_serialised
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train on one pass over ``(X, y)`` in chunks of ``batch_size``.

        A call either completes or changes nothing. Invalid input is refused
        before anything changes; a failure during training (a batch that
        makes the loss, the weights or the gate statistics non-finite, any
        exception raised by the module, the correction, the step guard or a
        callback, or a ``KeyboardInterrupt``) restores the state as it was
        before the call, every batch of the call included, then raises (a
        non-finite batch as a :class:`ValueError` naming it). The state is
        the weights, the optimizer's momentum, the snapshot buffer, the
        threshold policies, the step guard, the adversarial generator, the
        counters, ``stream_log_``, ``last_flagged_`` and ``net_.history``;
        a failed first call leaves the estimator unfitted.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of the stream.
        y : array-like of shape (n_samples,)
            Its labels; every label must be in ``classes``.
        classes : array-like of shape (n_classes,), default=None
            All labels the stream can carry. Required on the first call,
            ignored-if-equal afterwards.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows; ``None`` weighs them alike.
            Each training batch minimises the weighted mean of the
            per-sample cross-entropy (a batch whose rows weigh 0 in all
            takes no step); the threshold policies calibrate on weighted
            quantiles, and the step guard's probe keeps each row's weight
            and weighs its measurements by them. Weights are relative
            within a call (they are rescaled to a mean of 1). Rows of
            weight 0 are gated and counted but not trained on, and never
            enter the guard's probe. At least one weight must be positive.

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier
            The updated estimator.
        """
        first_call = not hasattr(self, "classes_")
        saved = None
        try:
            if first_call:
                self._validate_params()
            else:
                self._validate_changed_params()
            X, y = _validated_batch(self, X, y, reset=first_call)
            if not _integer_labels(y):
                # 1-D integer labels always pass; the check costs a sort.
                _check_label_types(y, "y")
                check_classification_targets(y)
            if classes is not None:
                # unique_labels alone drops duplicates, sorts None and NaN in,
                # and leaves an empty or single class to fail later.
                listed = np.asarray(classes)
                _check_label_types(listed, "classes")
                if listed.ndim != 1 or len(listed) < 2:
                    raise ValueError(
                        "classes must be a 1-D array-like of at least two labels "
                        f"(every label the stream can carry); got {classes!r}."
                    )
                if any(label is None or label != label for label in listed.tolist()):
                    raise ValueError(
                        f"classes holds NaN or None: {listed.tolist()}. Pass the "
                        "labels the stream can carry."
                    )
                classes = unique_labels(listed)
                if len(classes) < len(listed):
                    labels, counts = np.unique(listed, return_counts=True)
                    raise ValueError(
                        f"classes holds duplicates {labels[counts > 1].tolist()}; "
                        "pass each label once."
                    )
            if sample_weight is not None:
                sample_weight = _checked_sample_weight(sample_weight, X)
            if not first_call:
                saved = self._begin_call()
            with self._writing(saved):
                self._partial_fit(X, y, classes, sample_weight, saved)
                self._bound_history()
        except BaseException as exc:
            # KeyboardInterrupt included: the call never happened.
            if first_call:
                self._reset()
            elif saved is not None:
                self._undo_call(saved)
                if isinstance(exc, (RuntimeError, IndexError)):
                    # A shape error deep in the step: say so when the module's
                    # output changed shape since the first call.
                    try:
                        self._check_output_width(X)
                    except ValueError as diagnosis:
                        raise diagnosis from exc
            raise
        return self

    @_serialised
    def set_params(self, **params):
        """Set the parameters; between two writing calls when another thread trains.

        As :meth:`sklearn.base.BaseEstimator.set_params`, holding the
        estimator's lock, so that a running :meth:`partial_fit` call ends
        with the parameters it started with. A nested parameter
        (``step_guard__margin``) needs a configured object: with
        ``step_guard="auto"`` pass ``step_guard=StepGuard(margin=...)``.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier
        """
        for key in params:
            name, nested, sub = key.partition("__")
            value = params.get(name, getattr(self, name, None))
            if nested and name in self._parameter_constraints and not hasattr(
                    value, "set_params"):
                example = ("StepGuard" if name == "step_guard" else "a configured object")
                raise ValueError(
                    f"Invalid parameter {key!r}: {name}={value!r} has no parameters of "
                    f"its own to set. Pass a configured object instead, e.g. "
                    f"set_params({name}={example}({sub}=...))."
                )
        return super().set_params(**params)

    def _validate_params(self, rebuild=False):
        """scikit-learn's validation, then what its constraints cannot say.

        ``rebuild`` (``fit``, ``load_params``): the model is built anew, so a
        trusted probe is checked against the new data, not the fitted width.
        """
        super()._validate_params()
        bounds = self.input_bounds
        if bounds is not None and not (
            len(bounds) == 2
            and all(isinstance(b, numbers.Real) and np.isfinite(b) for b in bounds)
            and bounds[0] < bounds[1]
        ):
            raise ValueError(
                "input_bounds must be None or a pair (low, high) of finite "
                f"numbers with low < high, e.g. (0.0, 1.0); got {bounds!r}."
            )
        self._check_device()
        self._check_trusted_probe(None if rebuild else self.__dict__.get("n_features_in_"))

    def _check_device(self):
        """Refuse a ``device`` torch does not know or cannot use here."""
        try:
            device = self._resolve_device()
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(
                f"device={self.device!r} is not a torch device ({exc}). Pass 'auto', "
                "'cpu', 'cuda' or 'cuda:<index>'."
            ) from exc
        if device.type != "cuda":
            return
        if not torch.cuda.is_available():
            raise ValueError(
                f"This estimator has device={self.device!r}, but CUDA is not available "
                f"to this torch ({torch.__version__}). Pass device='auto', which picks "
                "CUDA when there is one, or device='cpu'."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={self.device!r}, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s). Pass device='cuda' or "
                "'auto' for the current one."
            )

    def _check_trusted_probe(self, n_features):
        """Refuse a step guard's trusted probe that is not rows of ``n_features`` columns."""
        guard = self.step_guard
        probe = getattr(guard, "probe", None)
        if not isinstance(probe, (tuple, list)):
            return
        if len(probe) != 2:
            raise ValueError(
                f"The step guard's trusted probe must be a pair (X, y); got a "
                f"{type(probe).__name__} of {len(probe)} item(s). Pass "
                "StepGuard(probe=(X_trusted, y_trusted))."
            )
        if n_features is None:
            return  # the guard checks the rest when it starts
        X = check_array(probe[0], dtype=np.float32, input_name="step_guard probe X")
        if X.shape[1] != n_features:
            raise ValueError(
                f"The step guard's trusted probe has {X.shape[1]} features, but X has "
                f"{n_features}: pass probe rows of the stream's features, "
                f"StepGuard(probe=(X_trusted, y_trusted)) with X_trusted of shape "
                f"(n_rows, {n_features})."
            )

    def _validate_changed_params(self):
        """Validate the parameters again when set_params changed them.

        A full validation costs about as much as a small training step, so
        it runs only when the parameters that take effect mid-stream (and
        ``batch_size``) differ from those seen at the previous call.
        """
        params = {name: getattr(self, name) for name in (*_LIVE_PARAMS, "batch_size")}
        try:
            unchanged = params == self.__dict__.get("_validated_live_params")
        except (TypeError, ValueError):
            unchanged = False
        if not unchanged:
            self._validate_params()
            # Copies: a list edited in place must compare unequal next time.
            self._validated_live_params = {name: copy.copy(value) if isinstance(value, list)
                                           else value for name, value in params.items()}

    @contextlib.contextmanager
    def _rebuilding(self):
        """Build the model anew in the block; a failure puts the previous one back.

        ``fit`` and ``load_params`` replace the fitted attributes wholesale,
        so references to the previous ones are their undo (KeyboardInterrupt
        included: the previous model, never a half-built one). A
        ``partial_fit`` call writes the model in place and captures copies
        instead (:meth:`_begin_call`).
        """
        previous = {name: vars(self)[name] for name in _FITTED_ATTRIBUTES if name in vars(self)}
        self._reset()
        try:
            yield
        except BaseException:
            self._reset()
            vars(self).update(previous)
            raise

    def _reset(self):
        for attribute in _FITTED_ATTRIBUTES:
            self.__dict__.pop(attribute, None)

    def _begin_call(self):
        """Capture what a call on a fitted estimator may change (see :meth:`_undo_call`).

        About two copies of the weights: the net's :meth:`capture_state`,
        the counters and the references of ``last_flagged_``; ``stream_log_``
        is appended to at the very end of the call, and that append is
        recorded here (``"log"``) so it can be taken back. ``"model"`` is
        what read-only calls use while the call runs (see :meth:`_read`):
        the net, the names of its parameters, the copies of its weights
        the capture took, and its snapshots; nothing more is copied.
        """
        net = self.net_
        captured = net.capture_state()
        return {
            "net": captured,
            "counters": {name: vars(self)[name] for name in _COUNTERS},
            "last_flagged": vars(self).get("last_flagged_"),
            "model": (net, _parameter_names(net), captured["parameters"],
                      captured["buffers"], tuple(net.snapshots_._snapshots)),
        }

    def _bound_history(self):
        """Keep the last :data:`MAX_HISTORY_ROWS` rows of ``net_.history``.

        Run once a call has succeeded: a failed call's undo counts the rows
        it added from the end.
        """
        history = self.net_.history
        if len(history) > MAX_HISTORY_ROWS:
            del history[:len(history) - MAX_HISTORY_ROWS]

    def _write_lock(self):
        """The estimator's lock, made at its first use; never pickled or cloned.

        A :class:`threading.RLock`, so that a callback may call back into
        the estimator from the thread that holds it.
        """
        lock = self.__dict__.get("_lock")
        if lock is None:
            # dict.setdefault is atomic: two threads get the same lock.
            lock = self.__dict__.setdefault("_lock", threading.RLock())
        return lock

    @contextmanager
    def _writing(self, saved=None):
        """Mark the model as being changed for the block; the caller holds the lock.

        A read-only call reads ``_generation`` before and after its forward
        pass: an odd value, or a change, means a writing call ran meanwhile,
        and the read is made again from ``saved["model"]`` (the weights as
        the call found them), or, without it (``fit``, ``load_params``, a
        first call), under the lock. Nested blocks count once.
        """
        depth = self.__dict__.get("_writers", 0)
        if not depth:
            self._pre_call = None if saved is None else saved["model"]
            self._generation = self.__dict__.get("_generation", 0) + 1
        self._writers = depth + 1
        try:
            yield
        finally:
            self._writers = depth
            if not depth:
                self._generation += 1
                self._pre_call = None

    def _undo_call(self, saved):
        """Restore the state :meth:`_begin_call` captured: the call never happened."""
        self.net_.restore_state(saved["net"])
        vars(self).update(saved["counters"])
        if saved["last_flagged"] is None:
            self.__dict__.pop("last_flagged_", None)
        else:
            self.last_flagged_ = saved["last_flagged"]
        records, dropped = saved.get("log", ((), ()))
        log = self.stream_log_
        if records and log and log[-1] is records[-1]:
            for _ in records:
                log.pop()
            log.extendleft(reversed(dropped))
        if "alarms" in saved:
            self.alarms_.clear()
            self.alarms_.extend(saved["alarms"])

    def _check_bounds(self, X):
        """``X``, or refused, or clipped, by ``check_input_bounds``."""
        bounds = self.input_bounds
        if bounds is None or self.check_input_bounds == "ignore" or not X.size:
            return X
        low, high = bounds
        smallest, largest = X.min(), X.max()
        if smallest >= low and largest <= high:
            return X
        if self.check_input_bounds == "clip":
            return np.clip(X, low, high).astype(np.float32, copy=False)
        rows = np.flatnonzero(((X < low) | (X > high)).any(axis=1))
        raise ValueError(
            f"{len(rows)} row(s) of X hold values outside input_bounds={tuple(bounds)} "
            f"(rows {rows[:5].tolist()}{', ...' if len(rows) > 5 else ''}; values "
            f"from {smallest:.6g} to {largest:.6g}), which training refuses by default "
            "(check_input_bounds='raise'). Clip or fix the rows, widen input_bounds, "
            "or set check_input_bounds='clip' to clip them into the bounds or "
            "'ignore' to train on them as they are."
        )

    def _partial_fit(self, X, y, classes, sample_weight=None, transaction=None):
        X = self._check_bounds(X)
        first_call = _check_partial_fit_first_call(self, classes)
        if first_call and len(self.classes_) < 2:
            raise ValueError(
                "The classifier needs at least two classes, but only one class "
                f"{self.classes_.tolist()} is known. Pass every label of the stream "
                "with classes=, or fit on data holding at least two classes."
            )
        y_encoded = self._encode(y)
        if first_call:
            self._initialize(X)
        else:
            self.net_.configure(batch_size=self.batch_size, **self._live_params())
        self._check_last_chunk(len(X))
        # Without waiting for the device (CUDA): the call's one wait is the log's copy back.
        Xt, yt = to_device(X, self.device_), to_device(y_encoded, self.device_)
        weights = None
        if sample_weight is not None:
            weights = self._batch_weights(sample_weight)
        self._train_pass(Xt, yt, X, y, weights, transaction)

    def _check_last_chunk(self, n_rows):
        """Refuse a one-row training chunk for a module with BatchNorm, before training."""
        last = n_rows % self.batch_size or self.batch_size
        if last != 1 or n_rows == 0:
            return
        batch_norm = [type(layer).__name__ for layer in self.net_.module_.modules()
                      if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)]
        if batch_norm:
            raise ValueError(
                f"The module has BatchNorm layers ({batch_norm[0]}), which cannot "
                f"train on a single row, but this call's {n_rows} row(s) in chunks of "
                f"batch_size={self.batch_size} leave a last chunk of 1 row. Pass a "
                "number of rows that is not one more than a multiple of batch_size "
                "(hold the row back for the next call), or set another batch_size."
            )

    def _batch_weights(self, sample_weight):
        """The call's weights on the device (mean 1) and each batch's total on the host."""
        # Scaled by the largest first, so that the sum cannot overflow.
        scaled = sample_weight / sample_weight.max()
        scaled = (scaled / scaled.mean()).astype(np.float32)
        starts = np.arange(0, len(scaled), self.batch_size)
        totals = np.add.reduceat(scaled.astype(np.float64), starts).tolist()
        return to_device(scaled, self.device_), totals

    def _train_pass(self, Xt, yt, X, y, weights=None, transaction=None):
        """One pass of ``batch_size`` chunks through the net (its :meth:`stream_epoch`).

        The counters and ``stream_log_`` are updated only once every batch
        has trained; a batch that was not finite fails the call with an
        error that names it.
        """
        try:
            values, last_flagged = self.net_.stream_epoch(Xt, yt, weights, X_raw=X, y_raw=y)
        except NonFiniteError as exc:
            index = getattr(exc, "batch_index", None)
            if index is None:
                raise
            start = index * self.batch_size
            raise self._non_finite_error(X, index, start, start + self.batch_size) from exc
        self._log(values, last_flagged, transaction)

    def _non_finite_error(self, X, index, start, stop):
        """The error of a batch whose training produced NaN or an infinity."""
        rows = X[start:stop]
        largest = float(np.abs(rows).max()) if rows.size else math.nan
        return NonFiniteError(
            f"Training on batch {index + 1} of this call (rows {start} to "
            f"{min(stop, len(X)) - 1}) produced NaN or an infinity (in the loss, the "
            "weights after the step, the gate statistics or the step guard's "
            "measurements), so the call is refused: the estimator is left as it "
            f"was before it. The largest absolute input value in that batch is "
            f"{largest:.3g}; values this large overflow the model. Scale the "
            "inputs (e.g. with StandardScaler), set input_bounds (which refuses "
            "rows outside them), or lower lr."
        )

    def _encode(self, y):
        return encode_labels(self.classes_, y, hint=(
            "Pass every label the stream can carry with classes= on the first "
            "partial_fit call, or refit."))

    def _resolve_device(self):
        """The torch device the ``device`` parameter names now."""
        return torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu")
            if self.device == "auto" else self.device
        )

    def _initialize(self, X):
        self._check_trusted_probe(X.shape[1])
        self.device_ = self._resolve_device()
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with _torch_seed(seed, self.device_):
            net = self.net_class(
                module=self._build_module(),
                criterion=torch.nn.CrossEntropyLoss,
                optimizer=torch.optim.SGD,
                optimizer__momentum=self.momentum,
                batch_size=self.batch_size,
                max_epochs=1,
                train_split=None,
                callbacks=self.callbacks or "disable",
                verbose=self.verbose,
                device=self.device_,
                classes=self.classes_,
                lr=self.lr,
                **{param.name: getattr(self, param.name) for param in DEFENCE_PARAMETERS},
            )
            self.net_ = net.initialize()
        self._check_output_width(X)
        self.n_batches_seen_ = 0
        self.n_samples_seen_ = 0
        self.n_flagged_ = 0
        self.n_steps_scaled_ = 0
        self.stream_log_ = deque(maxlen=MAX_LOG_RECORDS)
        self.alarms_ = deque(maxlen=MAX_ALARMS)

    def _live_params(self):
        """Parameters that ``set_params`` may change between two calls."""
        return {name: getattr(self, name) for name in _LIVE_PARAMS}

    def _build_module(self):
        module = self.module
        if module is None:
            return MLP(self.n_features_in_, len(self.classes_),
                       hidden_layer_sizes=tuple(self.hidden_layer_sizes))
        if isinstance(module, torch.nn.Module):
            return copy.deepcopy(module)
        signature = inspect.signature(module)
        sizes = {"n_features": self.n_features_in_, "n_classes": len(self.classes_)}
        sizes = {key: value for key, value in sizes.items() if key in signature.parameters}
        try:
            signature.bind(**sizes)
        except TypeError as exc:
            name = getattr(module, "__name__", repr(module))
            raise ValueError(
                f"module={name} is called with the keywords it takes among "
                f"n_features={self.n_features_in_} and n_classes={len(self.classes_)} "
                f"({', '.join(sizes) or 'neither'}), but it needs other arguments "
                f"too: {exc}. Pass an instance, module={name}(...), or a callable "
                f"that builds one from n_features and n_classes, e.g. "
                f"functools.partial({name}, ...)."
            ) from exc
        return module(**sizes)

    def _check_output_width(self, X):
        try:
            with torch.no_grad():
                shape = tuple(self._forward(X[:1]).shape)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"The module cannot process one sample of {X.shape[1]} features: its "
                f"first forward pass raised {type(exc).__name__}: {exc}. If it was "
                f"built for another number of features, build it for "
                f"n_features={X.shape[1]} (pass the module class, which is called "
                "with n_features and n_classes); otherwise the error is its forward's "
                "own (see the exception chained above): fix it, or call again if it "
                "was transient. Nothing was fitted."
            ) from exc
        n_classes = len(self.classes_)
        if shape != (1, n_classes):
            raise ValueError(
                f"The module maps one sample to an output of shape {shape}, but "
                f"there are {n_classes} classes: it must return logits of shape "
                f"(n_samples, n_classes), here (1, {n_classes}). Give its last "
                "layer one output per class."
            )
        if len(X) > 1:
            with torch.no_grad():
                shape = tuple(self._forward(X[:2]).shape)
            if shape != (2, n_classes):
                raise ValueError(
                    f"The module maps two samples to an output of shape {shape}: "
                    f"it must return one row of logits per sample, here (2, "
                    f"{n_classes}). Do not reduce or reshape over the batch "
                    "dimension in forward."
                )

    def _log(self, values, last_flagged, transaction=None):
        """Count the call's batches and append their records (the :data:`LOG_FIELDS`).

        The records are built first and appended in one step, which
        ``transaction`` (from :meth:`_begin_call`) records so that
        :meth:`_undo_call` can take them back.
        """
        first_step = self.n_batches_seen_ + 1
        records = []
        for step, row in enumerate(values.tolist(), start=first_step):
            record = {"step": step}
            record.update(zip(LOG_FIELDS, row))
            record["n_flagged"] = int(record["n_flagged"])
            record["n_correction_steps"] = int(record["n_correction_steps"])
            records.append(record)
        n_flagged = int(values[:, LOG_FIELDS.index("n_flagged")].sum())
        n_scaled = int((values[:, LOG_FIELDS.index("step_scale")] < 1).sum())
        log = self.stream_log_
        if transaction is not None:
            overflow = max(0, len(log) + len(records) - (log.maxlen or math.inf))
            transaction["log"] = (records, list(itertools.islice(log, int(overflow))))
        log.extend(records)
        n_rows = [self.batch_size] * len(records)
        n_rows[-1] = len(last_flagged) - self.batch_size * (len(records) - 1)
        found = interventions(records, n_rows)
        if found and transaction is not None:
            transaction["alarms"] = list(self.alarms_)
        events = record_interventions(self.alarms_, found)
        self.last_flagged_ = last_flagged
        self.n_batches_seen_ += len(records)
        self.n_samples_seen_ += len(last_flagged)
        self.n_flagged_ += n_flagged
        self.n_steps_scaled_ += n_scaled
        if self.verbose:
            print(
                f"[{type(self).__name__}] batches={self.n_batches_seen_} "
                f"samples={self.n_samples_seen_} flagged={n_flagged} "
                f"loss={values[-1, 0]:.4f}"
            )
        announce(self.net_, events, type(self).__name__)

    @_serialised
    def take_snapshot(self):
        """Store the current weights in the snapshot buffer now.

        The oldest snapshot leaves a full buffer. With ``snapshot_every=None``
        and ``history_size=1`` this freezes the reference: the memorization
        discrepancy is then measured against the model of this moment, as
        in the paper's reference code (a checkpoint from halfway through
        the burn-in).

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier

        Examples
        --------
        >>> import numpy as np
        >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
        >>> rng = np.random.RandomState(0)
        >>> X, y = rng.rand(200, 4), rng.randint(2, size=200)
        >>> clf = DiscrepancyAwareOnlineClassifier(snapshot_every=None, history_size=1,
        ...                                        random_state=0).fit(X, y)
        >>> frozen = clf.take_snapshot().snapshots_[0]
        >>> clf = clf.partial_fit(X, y)
        >>> clf.snapshots_[0] is frozen
        True
        """
        check_is_fitted(self)
        self.net_.snapshots_.snapshot(self.net_.module_)
        return self

    # --------------------------------------------------------- persistence

    @_serialised
    def save_params(self, f):
        """Save the fitted state to a file that loads without running code.

        The file holds the module's weights, the optimizer state (momentum),
        the snapshot buffer, the threshold calibration, the random generator
        of ``correction="adversarial"``, ``classes_``, ``n_features_in_``,
        ``feature_names_in_``, the counters and ``stream_log_``: only tensors
        and plain Python values, so ``torch.load(f, weights_only=True)``
        reads it without unpickling code. The parameters are not stored
        (bar a copy of the plain ones, for checks): :meth:`load_params` on an
        estimator constructed with the same parameters restores the state.
        Unlike pickle, such a file is safe to load from an untrusted source.

        Parameters
        ----------
        f : str, os.PathLike or file-like object
            Where to write, with :func:`torch.save`.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
        >>> rng = np.random.RandomState(0)
        >>> X, y = rng.rand(300, 4), rng.randint(3, size=300)
        >>> clf = DiscrepancyAwareOnlineClassifier(random_state=0)
        >>> clf = clf.partial_fit(X[:200], y[:200], classes=[0, 1, 2])
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
        >>> clf.save_params(path)
        >>> restored = DiscrepancyAwareOnlineClassifier(random_state=0).load_params(path)
        >>> restored.n_batches_seen_, restored.classes_
        (2, array([0, 1, 2]))
        >>> clf = clf.partial_fit(X[200:], y[200:])
        >>> restored = restored.partial_fit(X[200:], y[200:])
        >>> bool(np.allclose(clf.predict_proba(X), restored.predict_proba(X), atol=1e-6))
        True
        """
        check_is_fitted(self)
        torch.save(estimator_state(self), f)

    @_serialised
    def load_params(self, f):
        """Restore the state saved by :meth:`save_params`; the stream continues.

        Construct the estimator with the parameters of the saved one (fitted
        or not), then load: the stream then continues exactly as it would
        have without the interruption. The tensors are mapped to this
        estimator's ``device``, so a model trained on CUDA loads on a
        machine without CUDA when ``device`` is ``"auto"`` or ``"cpu"``.
        Plain parameters (``lr``, ``threshold``, ...) that differ from the
        saved ones raise a warning and are in force, as after
        ``set_params``.

        Parameters
        ----------
        f : str, os.PathLike or binary file-like object
            A file written by :meth:`save_params`; read with
            ``torch.load(f, weights_only=True)``, which runs no code from it.

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier
            The restored estimator.

        Raises
        ------
        FileNotFoundError, PermissionError
            When ``f`` names no file, or one that may not be read.
        ValueError
            When the file is not a checkpoint of this class (an empty,
            truncated or corrupt file, a directory, a pickle, an edited
            checkpoint), or does not match the estimator: another
            architecture, threshold policy, or, for a fitted estimator,
            other classes or number of features. The estimator is then left
            as it was. A checkpoint never changes the configuration: every
            parameter, including the optimizer's, stays this estimator's.

        Examples
        --------
        >>> import io
        >>> import numpy as np
        >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
        >>> rng = np.random.RandomState(0)
        >>> X, y = rng.rand(100, 4), rng.choice(["cat", "dog"], size=100)
        >>> buffer = io.BytesIO()
        >>> DiscrepancyAwareOnlineClassifier(random_state=0).fit(X, y).save_params(buffer)
        >>> _ = buffer.seek(0)
        >>> DiscrepancyAwareOnlineClassifier().load_params(buffer).classes_
        array(['cat', 'dog'], dtype='<U3')
        """
        self._validate_params(rebuild=True)
        device = self._resolve_device()
        source = (f"The file {os.fspath(f)!r}" if isinstance(f, (str, os.PathLike))
                  else "The checkpoint")
        payload = read_checkpoint(f, map_location=device, source=source)
        with self._writing():
            state = checked_state(self, payload, source)
            with self._rebuilding():
                self.classes_ = state.classes
                self.n_features_in_ = state.n_features
                if state.feature_names is not None:
                    self.feature_names_in_ = np.asarray(state.feature_names, dtype=object)
                self._initialize(np.zeros((2, state.n_features), dtype=np.float32))
                load_net_state(self.net_, state.net, source, state.changed)
                for name, value in state.counters.items():
                    setattr(self, name + "_", value)
                self.stream_log_.extend(state.stream_log)
                self.alarms_.extend(state.alarms)
                self.last_flagged_ = state.last_flagged
            warn_about_params(state.changed, source)
            self._bound_history()
        return self

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in _THREAD_ATTRIBUTES:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        state = {name: value for name, value in state.items()
                 if name not in _THREAD_ATTRIBUTES}
        super().__setstate__(state)
        self._lock = threading.RLock()  # this object's own
        net = self.__dict__.get("net_")
        if net is not None and "device_" in self.__dict__:
            # skorch maps a net pickled on CUDA to the CPU when CUDA is missing.
            self.device_ = torch.device(net.device)

    # ------------------------------------------------------------- predict

    @property
    def module_(self):
        """torch.nn.Module: the trained network (``net_.module_``)."""
        check_is_fitted(self)
        return self.net_.module_

    @property
    def snapshots_(self):
        """list of dict: the weight snapshots, oldest first."""
        check_is_fitted(self)
        return self.net_.snapshots_.snapshots

    @property
    def step_guard_(self):
        """BaseGuard or None: the fitted step guard (``net_.step_guard_``)."""
        check_is_fitted(self)
        return self.net_.step_guard_

    @property
    def threshold_(self):
        """float: the threshold in force (``inf`` during the warm-up)."""
        check_is_fitted(self)
        return float(self.net_.threshold_policy_.current())

    def _forward(self, X):
        """Eval-mode logits for a float32 array, in chunks; for writing calls only."""
        module = self.net_.module_
        with torch.no_grad(), eval_mode(module):
            Xt = torch.as_tensor(X, device=self.device_)
            chunks = [module(chunk) for chunk in Xt.split(max(self.batch_size, 1024))]
        return torch.cat(chunks)

    def _read(self, compute):
        """``compute(net, weights, snapshots)`` on one consistent state of the model.

        The read-only calls go through here; they never write to the module
        or the net, so they may run in any number of threads while one
        thread trains (the threads contract, docs/reliability.md). The
        model is read as it is (``weights`` and ``snapshots`` ``None``:
        the live ones) when no writing call runs, which ``_generation``
        tells before and after; otherwise the result is computed again on
        the weights and snapshots the running :meth:`partial_fit` call
        started from, or, while ``fit`` or ``load_params`` builds a new
        model, once that call has finished (under the lock).

        Returns
        -------
        (result, classes) : what ``compute`` returned, and the ``classes_``
            of the model it read.
        """
        attributes = vars(self)
        for attempt in range(2):
            generation = attributes.get("_generation", 0)
            net, classes = attributes.get("net_"), attributes.get("classes_")
            if net is None or classes is None:
                break
            weights = snapshots = None
            if attempt or generation % 2:
                model = attributes.get("_pre_call")
                if model is None or model[0] is not net:
                    break
                _, names, parameters, buffers, snapshots = model
                weights = {name: parameter for names_of, parameter in zip(names, parameters)
                           for name in names_of}
                weights.update(buffers)
                snapshots = net.snapshots_.frozen(snapshots)
            try:
                result = compute(net, weights, snapshots)
            except Exception:
                # Reading the live module just as a call began may fail (the
                # step swaps snapshot tensors into it, batched under vmap for
                # reference="all"): then read the weights that call started from.
                if weights is not None or attributes.get("_generation", 0) == generation:
                    raise
                continue
            if weights is not None or attributes.get("_generation", 0) == generation:
                return result, classes
        with self._write_lock():
            check_is_fitted(self)
            return compute(self.net_, None, None), self.classes_

    def _logits(self, X):
        """Eval-mode logits of a checked float32 array, by :meth:`_read`, in chunks."""
        def compute(net, weights, snapshots):
            module = net.module_
            if weights is None and getattr(net, "mode_invariant_", False):
                forward = module  # the same function in train mode: read it as it is
            else:
                if weights is None:
                    weights = module.state_dict(keep_vars=True)
                private = private_module(module, vars(self).get("_lock"))

                def forward(chunk):
                    return call_with_state(private, dict(weights), chunk)
            with torch.no_grad():
                Xt = torch.as_tensor(X, device=torch.device(net.device))
                return torch.cat([forward(chunk)
                                  for chunk in Xt.split(max(self.batch_size, 1024))])
        logits, classes = self._read(compute)
        check_logits(logits, len(classes), "for these rows")
        return logits, classes

    def _validated_input(self, X):
        check_is_fitted(self)
        # torch warns about read-only arrays, which pandas may hand out.
        checked, X = _plain_float32(self, X)
        if checked is not None:
            return checked
        return validate_data(self, X, dtype=np.float32, force_writeable=True, reset=False)

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Softmax of the logits, in float64.
        """
        logits, _ = self._logits(self._validated_input(X))
        return torch.softmax(logits.double(), dim=1).cpu().numpy()

    def predict(self, X):
        """Most probable class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        logits, classes = self._logits(self._validated_input(X))
        return classes[logits.argmax(dim=1).cpu().numpy()]

    def memorization_discrepancy(self, X, reference=None):
        """Per-sample discrepancy against the snapshots, without training.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        reference : {"oldest", "newest", "mean", "max", "all"}, default=None
            Overrides the estimator's ``reference``.

        Returns
        -------
        discrepancy : ndarray of shape (n_samples,) or (n_samples, n_snapshots)
            ``KL(p_snapshot || p_current)`` in float64; one column per
            snapshot (oldest first) with ``reference="all"``.
        """
        return self._memorization_discrepancy(self._validated_input(X), reference)

    def _memorization_discrepancy(self, X, reference=None):
        """:meth:`memorization_discrepancy` of a checked float32 array."""
        reference = reference or self.reference
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}.")

        def compute(net, weights, snapshots):
            module = net.module_
            if weights is None:
                weights = module.state_dict(keep_vars=True)
            if snapshots is None:
                snapshots = net.snapshots_.frozen()
            private = private_module(module, vars(self).get("_lock"))
            Xt = torch.as_tensor(X, device=torch.device(net.device))
            return torch.cat([
                net.discrepancy(chunk, reference=reference, dtype=torch.float64,
                                module=private, state=weights, snapshots=snapshots)
                for chunk in Xt.split(max(self.batch_size, 1024))
            ])

        discrepancy, _ = self._read(compute)
        return discrepancy.double().cpu().numpy()
