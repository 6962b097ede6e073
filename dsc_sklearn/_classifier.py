"""DiscrepancyAwareOnlineClassifier: the scikit-learn shell around the net."""

import copy
import inspect
import numbers
from collections import deque
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    unique_labels,
)
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._net import LOG_FIELDS, DiscrepancyAwareNet
from .correction import CORRECTIONS
from .discrepancy import REFERENCES
from .modules import MLP

__all__ = ["DiscrepancyAwareOnlineClassifier"]

#: Number of per-batch records kept in ``stream_log_``.
MAX_LOG_RECORDS = 10_000

# Parameters a fitted estimator picks up at its next partial_fit call.
_LIVE_PARAMS = (
    "lr", "momentum", "history_size", "snapshot_every", "reference", "threshold",
    "granularity", "correction", "epsilon", "step_size", "max_correction_steps",
    "clip_value", "input_bounds",
)


@contextmanager
def _torch_seed(seed, device):
    """Seed torch inside the block without touching the caller's RNG state."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class DiscrepancyAwareOnlineClassifier(ClassifierMixin, BaseEstimator):
    """Online neural-network classifier guarded by memorization discrepancy.

    Each streamed batch is compared with historical snapshots of the model:
    the per-sample memorization discrepancy ``KL(p_hist(x) || p_cur(x))``
    flags the samples the model's memory disagrees on, the flagged samples
    are corrected (Discrepancy-aware Sample Correction, DSC, by default), and
    only then does the model take its training step [1]_. This defends
    against accumulative poisoning, where small perturbations in a stream of
    batches prepare the model for one destructive trigger batch [2]_.

    The torch training runs in a skorch network (``net_``) whose
    ``train_step`` carries the defence; this estimator adds what
    scikit-learn expects: input validation, label encoding, ``classes=``,
    seeding, and one training pass per :meth:`partial_fit` call.

    The defence can be switched or retuned in the middle of a stream:
    ``set_params`` between two :meth:`partial_fit` calls changes the
    learning rate, momentum, threshold (a new threshold starts a fresh
    calibration), correction, reference, buffer size and the other
    defence parameters from the next call on, keeping the weights, the
    snapshots and the optimizer state. ``module``, ``hidden_layer_sizes``,
    ``device`` and ``random_state`` take effect at the next :meth:`fit`.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The network; it maps a float32 tensor ``(n_samples, n_features)`` to
        logits ``(n_samples, n_classes)``. A class (or any callable) is called
        with ``n_features`` and ``n_classes`` as keywords when it accepts
        them; an instance is deep-copied at the first fit. ``None`` builds a
        :class:`~dsc_sklearn.modules.MLP` with ``hidden_layer_sizes``.
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
    snapshot_every : int, default=10
        Training batches between two snapshots. The initial weights are the
        first snapshot, so a reference always exists.
    reference : {"oldest", "newest", "mean", "max", "all"}, default="oldest"
        Which snapshot(s) the current model is compared with. ``"mean"`` and
        ``"max"`` reduce the discrepancies over all snapshots; ``"all"``
        flags like ``"max"`` and makes :meth:`memorization_discrepancy`
        return one column per snapshot.
    threshold : float, "auto" or callable, default="auto"
        When a discrepancy is too high: an absolute KL value, ``"auto"``
        (calibrated online from recent unflagged batches with robust
        statistics after a warm-up of 10 batches, see
        :class:`~dsc_sklearn.thresholds.AutoThreshold`) or a callable
        ``step -> float`` such as
        :func:`~dsc_sklearn.thresholds.linear_schedule`.
    granularity : {"sample", "batch"}, default="sample"
        Flag samples one by one, or the whole batch on its mean discrepancy
        as the reference implementation does.
    correction : {"dsc", "none", "drop", "descent", "adversarial"}, \
            default="dsc"
        What happens before the training step: ``"dsc"`` corrects flagged
        samples by signed descent of the current model's cross-entropy until
        their discrepancy is under the threshold; ``"none"`` trains plainly
        (no discrepancy is computed); ``"drop"`` trains on unflagged samples
        only; ``"descent"`` is the reference code's "AT" baseline (always
        ``max_correction_steps`` descent steps, no gate); ``"adversarial"``
        is Madry-style PGD adversarial training.
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
        Range corrected inputs are clamped to, e.g. ``(0.0, 1.0)`` for
        images; ``None`` for unbounded (standardised) inputs.
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
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column
        names.
    net_ : DiscrepancyAwareNet
        The skorch network; ``net_.module_`` is the trained module.
    device_ : torch.device
        The device the network lives on.
    n_batches_seen_ : int
        Training batches processed.
    n_samples_seen_ : int
        Training samples processed.
    n_flagged_ : int
        Samples flagged so far.
    last_flagged_ : ndarray of shape (n_samples,), dtype=bool
        Which rows of the last :meth:`partial_fit` call (or the last pass of
        :meth:`fit`) were flagged.
    stream_log_ : collections.deque of dict
        One record per training batch (``step``, ``loss``,
        ``mean_discrepancy``, ``max_discrepancy``, ``threshold``,
        ``n_flagged``, ``n_correction_steps``), the last 10 000 only;
        ``pandas.DataFrame(clf.stream_log_)`` tabulates it.

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
    >>> for start in range(0, 1500, 100):
    ...     clf = clf.partial_fit(X[start:start + 100], y[start:start + 100],
    ...                           classes=range(10))
    >>> clf.n_batches_seen_
    15
    >>> print(f"{clf.score(X[1500:], y[1500:]):.2f}")
    0.92
    """

    _parameter_constraints = {
        "module": [None, callable, torch.nn.Module],
        "hidden_layer_sizes": ["array-like"],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "history_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "snapshot_every": [Interval(numbers.Integral, 1, None, closed="left")],
        "reference": [StrOptions(set(REFERENCES))],
        "threshold": [
            Interval(numbers.Real, 0, None, closed="left"),
            StrOptions({"auto"}),
            callable,
        ],
        "granularity": [StrOptions({"sample", "batch"})],
        "correction": [StrOptions(set(CORRECTIONS))],
        "epsilon": [Interval(numbers.Real, 0, None, closed="left")],
        "step_size": [Interval(numbers.Real, 0, None, closed="left")],
        "max_correction_steps": [Interval(numbers.Integral, 0, None, closed="left")],
        "clip_value": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "input_bounds": [None, tuple, list],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        module=None,
        *,
        hidden_layer_sizes=(100,),
        lr=0.1,
        momentum=0.9,
        batch_size=100,
        max_epochs=1,
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
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.module = module
        self.hidden_layer_sizes = hidden_layer_sizes
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_epochs = max_epochs
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
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit

    def fit(self, X, y):
        """Reset, then make ``max_epochs`` ordered passes over ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Labels.

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier
            The fitted estimator.
        """
        self._validate_params()
        self._reset()
        try:
            X, y = validate_data(self, X, y, dtype=np.float32, reset=True)
            check_classification_targets(y)
            classes = unique_labels(y)
            for _ in range(self.max_epochs):
                self._partial_fit(X, y, classes)
        except Exception:
            self._reset()
            raise
        return self

    def partial_fit(self, X, y, classes=None):
        """Train on one pass over ``(X, y)`` in chunks of ``batch_size``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of the stream.
        y : array-like of shape (n_samples,)
            Its labels; every label must be in ``classes``.
        classes : array-like of shape (n_classes,), default=None
            All labels the stream can carry. Required on the first call,
            ignored-if-equal afterwards.

        Returns
        -------
        self : DiscrepancyAwareOnlineClassifier
            The updated estimator.
        """
        first_call = not hasattr(self, "classes_")
        try:
            if first_call:
                self._validate_params()
            X, y = validate_data(self, X, y, dtype=np.float32, reset=first_call)
            check_classification_targets(y)
            if classes is not None:
                classes = unique_labels(column_or_1d(classes))
            self._partial_fit(X, y, classes)
        except Exception:
            if first_call:
                self._reset()
            raise
        return self

    def _reset(self):
        for attribute in ("classes_", "net_", "device_", "n_batches_seen_",
                          "n_samples_seen_", "n_flagged_", "stream_log_", "last_flagged_",
                          "n_features_in_", "feature_names_in_"):
            self.__dict__.pop(attribute, None)

    def _partial_fit(self, X, y, classes):
        first_call = _check_partial_fit_first_call(self, classes)
        if first_call and len(self.classes_) < 2:
            raise ValueError(
                "The classifier needs at least two classes, but only one class "
                f"({self.classes_[0]!r}) is known. Pass every label of the stream "
                "with classes=, or fit on data holding at least two classes."
            )
        y_encoded = self._encode(y)
        if first_call:
            self._initialize(X)
        else:
            self.net_.configure(**self._live_params())
        Xt = torch.as_tensor(X, device=self.device_)
        yt = torch.as_tensor(y_encoded, device=self.device_)
        records, flags = [], []
        for start in range(0, len(Xt), self.batch_size):
            batch = (Xt[start:start + self.batch_size], yt[start:start + self.batch_size])
            step = self.net_.train_step(batch)
            records.append(step["record"])
            flags.append(step["flagged"])
        self.last_flagged_ = torch.cat(flags).cpu().numpy()
        self._log(records, n_samples=len(Xt))

    def _encode(self, y):
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(
                f"y holds labels {unknown.tolist()} that are not in the classes "
                f"{self.classes_.tolist()}. Pass every "
                "label the stream can carry with classes= on the first "
                "partial_fit call, or refit."
            )
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _initialize(self, X):
        self.device_ = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu")
            if self.device == "auto" else self.device
        )
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with _torch_seed(seed, self.device_):
            self.net_ = DiscrepancyAwareNet(
                module=self._build_module(),
                criterion=torch.nn.CrossEntropyLoss,
                optimizer=torch.optim.SGD,
                optimizer__momentum=self.momentum,
                batch_size=self.batch_size,
                max_epochs=1,
                train_split=None,
                callbacks="disable",
                device=self.device_,
                classes=list(range(len(self.classes_))),
                **{name: getattr(self, name) for name in _LIVE_PARAMS if name != "momentum"},
            ).initialize()
        self._check_output_width(X)
        self.n_batches_seen_ = 0
        self.n_samples_seen_ = 0
        self.n_flagged_ = 0
        self.stream_log_ = deque(maxlen=MAX_LOG_RECORDS)

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
        accepted = inspect.signature(module).parameters
        sizes = {"n_features": self.n_features_in_, "n_classes": len(self.classes_)}
        return module(**{key: value for key, value in sizes.items() if key in accepted})

    def _check_output_width(self, X):
        with torch.no_grad():
            shape = tuple(self._forward(X[:1]).shape)
        n_classes = len(self.classes_)
        if shape != (1, n_classes):
            raise ValueError(
                f"The module maps one sample to an output of shape {shape}, but "
                f"there are {n_classes} classes: it must return logits of shape "
                f"(n_samples, n_classes), here (1, {n_classes}). Give its last "
                "layer one output per class."
            )

    def _log(self, records, n_samples):
        values = torch.stack(records).cpu().numpy()
        for row in values:
            self.n_batches_seen_ += 1
            record = {"step": self.n_batches_seen_}
            record.update(zip(LOG_FIELDS, row.tolist()))
            record["n_flagged"] = int(record["n_flagged"])
            record["n_correction_steps"] = int(record["n_correction_steps"])
            self.stream_log_.append(record)
        self.n_samples_seen_ += n_samples
        n_flagged = int(values[:, LOG_FIELDS.index("n_flagged")].sum())
        self.n_flagged_ += n_flagged
        if self.verbose:
            print(
                f"[{type(self).__name__}] batches={self.n_batches_seen_} "
                f"samples={self.n_samples_seen_} flagged={n_flagged} "
                f"loss={values[-1, 0]:.4f}"
            )

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
    def threshold_(self):
        """float: the threshold in force (``inf`` during the warm-up)."""
        check_is_fitted(self)
        return float(self.net_.threshold_policy_.current())

    def _forward(self, X):
        """Eval-mode logits for a float32 array, in chunks of ``batch_size``."""
        module = self.net_.module_
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                Xt = torch.as_tensor(X, device=self.device_)
                chunks = [module(chunk) for chunk in Xt.split(max(self.batch_size, 1024))]
        finally:
            module.train(was_training)
        return torch.cat(chunks)

    def _validated_input(self, X):
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float32, reset=False)

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
        logits = self._forward(self._validated_input(X))
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
        logits = self._forward(self._validated_input(X))
        return self.classes_[logits.argmax(dim=1).cpu().numpy()]

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
        X = self._validated_input(X)
        reference = reference or self.reference
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}.")
        Xt = torch.as_tensor(X, device=self.device_)
        chunks = [
            self.net_.discrepancy(chunk, reference=reference, dtype=torch.float64)
            for chunk in Xt.split(max(self.batch_size, 1024))
        ]
        return torch.cat(chunks).double().cpu().numpy()
