"""Poisoning attacks on a streaming neural-network classifier.

White-box simulators of the accumulative attack of Pang et al. (2021),
adaptive attacks that know the defence and keep their poison inside what
it accepts, and non-accumulative baselines:

- :class:`AccumulativePoisoningAttack`: the attack of Pang et al. (2021);
- :class:`GuardAwarePoisoningAttack`: every poisoned step kept under the
  step guard's bound, as the victim's own guard decides it on a copy of
  the victim;
- :class:`MultiBatchTriggerAttack`: the same, with the trigger's damage
  split over several consecutive batches;
- :class:`SlowPoisoningAttack`: a small budget over a long horizon;
- :class:`DiscrepancyAwarePoisoningAttack`: poison kept under the paper's
  gate (memorization discrepancy against the snapshot buffer);
- :class:`GradientAscentAttack`, :class:`LabelFlipAttack`,
  :class:`UniformNoiseAttack`: baselines that plan nothing ahead.

An attack reads the victim's public fitted state (``module_``,
``classes_`` and, for the adaptive ones, ``net_.optimizer_``,
``memorization_discrepancy`` and ``threshold_``), and the guard-aware ones
run candidate batches through ``partial_fit`` on a deep copy of the victim
and read its guards' :meth:`~dsc_sklearn.defence.guards.BaseGuard.decisions`,
so they attack the guard as it is, whatever its rule; none changes the
victim, and each only returns poisoned copies of the arrays it is given;
the caller feeds those to ``estimator.partial_fit``.
"""

import contextlib
import copy
import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_array, check_consistent_length, check_random_state, column_or_1d

from .._pgd import signed_steps
from .._torch import eval_mode

__all__ = [
    "AccumulativePoisoningAttack",
    "DiscrepancyAwarePoisoningAttack",
    "GradientAscentAttack",
    "GuardAwarePoisoningAttack",
    "LabelFlipAttack",
    "MultiBatchTriggerAttack",
    "SlowPoisoningAttack",
    "UniformNoiseAttack",
    "WindowAwarePoisoningAttack",
]

_OBJECTIVES = ("reg", "second", "normal")


def _invalid(owner, name, expected, value):
    return ValueError(
        f"The {name!r} parameter of {type(owner).__name__} must be {expected}. "
        f"Got {value!r} instead."
    )


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_real(owner, name, value, *, low, high=np.inf, low_open=False, high_open=True):
    expected = (
        f"a float in the range {'(' if low_open else '['}{low}, "
        f"{high}{')' if high_open else ']'}"
    )
    if not _is_real(value) or np.isnan(value):
        raise _invalid(owner, name, expected, value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise _invalid(owner, name, expected, value)


def _check_input_bounds(owner, value):
    if value is None:
        return None
    expected = "None or a pair (low, high) of floats with low < high"
    try:
        low, high = value
    except (TypeError, ValueError):
        raise _invalid(owner, "input_bounds", expected, value) from None
    if not (_is_real(low) and _is_real(high)) or not low < high:
        raise _invalid(owner, "input_bounds", expected, value)
    return float(low), float(high)


def _check_perturbation(owner):
    """Check the budget parameters; return ``(epsilon, step_size, input_bounds)``."""
    _check_real(owner, "epsilon", owner.epsilon, low=0)
    if not isinstance(owner.n_steps, numbers.Integral) or isinstance(owner.n_steps, bool) or (
        owner.n_steps < 1
    ):
        raise _invalid(owner, "n_steps", "an int in the range [1, inf)", owner.n_steps)
    if owner.step_size is not None:
        _check_real(owner, "step_size", owner.step_size, low=0, low_open=True)
    _check_real(
        owner, "poison_fraction", owner.poison_fraction, low=0, high=1,
        low_open=True, high_open=False,
    )
    bounds = _check_input_bounds(owner, owner.input_bounds)
    step_size = 2 * owner.epsilon / owner.n_steps if owner.step_size is None else owner.step_size
    return float(owner.epsilon), float(step_size), bounds


class _StreamRandomMixin:
    """Draws one generator from ``random_state`` and advances it across calls.

    ``set_params(random_state=...)`` (and :func:`sklearn.base.clone`) restart it.
    """

    def _generator(self):
        if getattr(self, "_rng_source", _StreamRandomMixin) is not self.random_state:
            self._rng = check_random_state(self.random_state)
            self._rng_source = self.random_state
        return self._rng

    def set_params(self, **params):
        if "random_state" in params:
            self.__dict__.pop("_rng_source", None)
        return super().set_params(**params)


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
        codes = np.searchsorted(self.classes, y)
        known = codes < len(self.classes)
        known[known] = self.classes[codes[known]] == y[known]
        if not known.all():
            raise ValueError(
                f"Labels {np.unique(y[~known]).tolist()} of {name} are not in the attacked "
                f"estimator's classes_ {self.classes.tolist()}."
            )
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


class AccumulativePoisoningAttack(_StreamRandomMixin, BaseEstimator):
    """White-box accumulative poisoning attack on a streaming classifier.

    The attack of Pang et al. (2021) has two parts. :meth:`craft_trigger`
    perturbs a *trigger* batch so that a single SGD step on it raises the
    validation loss. :meth:`poison_batch` perturbs every clean stream batch of
    the *accumulative phase* so that the training steps on them steer the model
    towards a state where that one trigger step does the most damage, while
    keeping the poisoned gradient close to the clean one so that accuracy does
    not visibly drop before the trigger.

    Both perturb inputs only (labels are kept) by projected signed-gradient
    steps inside the L-inf ball of radius ``epsilon`` around the clean inputs of
    the call, clamped to ``input_bounds``. Writing ``g_S_l`` for the gradient
    of the mean cross-entropy on batch ``S`` w.r.t. the ``l``-th trainable
    parameter tensor and ``n(.)`` for L2 normalisation per tensor:

    - the trigger descends ``sum_l cos(g_trigger_l, g_val_l)``;
    - a stream batch ascends, depending on ``objective``:

      - ``"reg"``: ``sum_l cos(g_poison_l, gamma * n(g_clean_l) + n(G_l))``,
      - ``"second"``: ``sum_l cos(g_poison_l, n(G_l))``,
      - ``"normal"``: ``sum_l cos(g_poison_l, -g_val_l)``,

      with ``G = grad_theta sum_l cos(g_trigger_l, g_val_l)`` (second order,
      computed by double backward on the poisoned trigger), ``g_clean`` the
      gradient on the clean batch and ``g_poison`` the gradient on the
      perturbed batch. A step ``theta - lr * g_poison`` then moves along
      ``-G``, lowering the trigger/validation alignment so that the later
      trigger step hurts more; ``gamma`` weighs the stealth term that keeps
      the step close to the clean one. ``"normal"`` is the paper's
      accumulation-free real-time poisoning baseline: maximising the first-order
      increase of the validation loss after one step,
      ``-lr * g_val . g_poison``, in the per-tensor cosine form used above.

    The victim is only read: gradients come from :func:`torch.autograd.grad`
    with the module temporarily in eval mode (BatchNorm uses its running
    statistics, dropout is off), so parameters, buffers, ``.grad`` fields and
    every submodule's training flag are as before the call.

    Parameters
    ----------
    epsilon : float, default=0.2
        Radius of the L-inf ball around the clean inputs of each call.
    n_steps : int, default=2
        Number of signed-gradient steps.
    step_size : float, default=None
        Size of each signed step; ``None`` means ``2 * epsilon / n_steps``.
    gamma : float, default=1.0
        Weight of the normalised clean gradient in the ``"reg"`` objective.
    objective : {"reg", "second", "normal"}, default="reg"
        Objective ascended by :meth:`poison_batch` (see above).
    poison_fraction : float, default=1.0
        Fraction in (0, 1] of the rows of each stream batch that are
        perturbed; the others are returned unchanged.
    input_bounds : tuple of (float, float) or None, default=(0.0, 1.0)
        Valid input range that perturbed inputs are clamped to; ``None`` for
        unbounded inputs such as standardised tabular data.
    random_state : int, RandomState instance or None, default=None
        Chooses the poisoned rows when ``poison_fraction < 1``. The generator
        is drawn from it at the first call and advanced by later calls, so two
        attacks with the same integer seed produce the same sequence;
        ``set_params(random_state=...)`` and ``clone`` restart it.

    See Also
    --------
    UniformNoiseAttack : Gradient-free baseline with the same budget.

    Notes
    -----
    The attacked ``estimator`` is any fitted object with ``module_`` (a
    :class:`torch.nn.Module` mapping a float tensor ``(n, n_features)`` to
    logits ``(n, n_classes)``) and ``classes_`` (sorted labels); labels are
    encoded with ``np.searchsorted(estimator.classes_, y)``. Inputs are sent
    to the device of the module's first trainable parameter and arrays are
    returned as float32 numpy arrays.

    The attack only bites when the trigger is crafted (again) on the model
    reached at the end of the accumulative phase, right before it is fed.

    References
    ----------
    .. [1] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from dsc_sklearn.evaluation.attacks import AccumulativePoisoningAttack
    >>> _ = torch.manual_seed(0)
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> victim = SimpleNamespace(module_=module, classes_=np.array([0, 1, 2]))
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((90, 8), dtype=np.float32), rng.integers(0, 3, 90)
    >>> trigger, val, stream = slice(0, 30), slice(30, 60), slice(60, 90)
    >>> attack = AccumulativePoisoningAttack(epsilon=0.1, poison_fraction=0.5,
    ...                                      random_state=0)
    >>> attack
    AccumulativePoisoningAttack(epsilon=0.1, poison_fraction=0.5, random_state=0)
    >>> X_trigger = attack.craft_trigger(victim, X[trigger], y[trigger],
    ...                                  X[val], y[val])
    >>> clean = attack.trigger_alignment(victim, X[trigger], y[trigger], X[val], y[val])
    >>> crafted = attack.trigger_alignment(victim, X_trigger, y[trigger], X[val], y[val])
    >>> bool(crafted < clean)
    True
    >>> X_poisoned, is_poison = attack.poison_batch(
    ...     victim, X[stream], y[stream], X_trigger, y[trigger], X[val], y[val])
    >>> int(is_poison.sum()), X_poisoned.dtype
    (15, dtype('float32'))
    >>> shift = np.abs(X_poisoned - X[stream])
    >>> bool(shift.max() <= 0.1 + 1e-6), bool(shift[~is_poison].max() == 0)
    (True, True)
    """

    def __init__(
        self,
        *,
        epsilon=0.2,
        n_steps=2,
        step_size=None,
        gamma=1.0,
        objective="reg",
        poison_fraction=1.0,
        input_bounds=(0.0, 1.0),
        random_state=None,
    ):
        self.epsilon = epsilon
        self.n_steps = n_steps
        self.step_size = step_size
        self.gamma = gamma
        self.objective = objective
        self.poison_fraction = poison_fraction
        self.input_bounds = input_bounds
        self.random_state = random_state

    def _check_params(self):
        _check_real(self, "gamma", self.gamma, low=0)
        if not isinstance(self.objective, str) or self.objective not in _OBJECTIVES:
            raise _invalid(
                self, "objective", f"a str among {{{', '.join(map(repr, _OBJECTIVES))}}}",
                self.objective,
            )
        return _check_perturbation(self)

    def trigger_alignment(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Alignment of the trigger and validation gradients.

        Parameters
        ----------
        estimator : object
            Fitted victim with ``module_`` and ``classes_``.
        X_trigger : array-like of shape (n_trigger, n_features)
            Trigger inputs.
        y_trigger : array-like of shape (n_trigger,)
            Trigger labels.
        X_val : array-like of shape (n_val, n_features)
            Validation inputs whose loss the attacker wants to raise.
        y_val : array-like of shape (n_val,)
            Validation labels.

        Returns
        -------
        alignment : float
            ``sum_l cos(g_trigger_l, g_val_l)``; :meth:`craft_trigger`
            lowers it, and a negative value means that an SGD step on the
            trigger raises the validation loss to first order.
        """
        victim = _Victim.from_estimator(estimator)
        Xt, yt = victim.data(X_trigger, y_trigger, "X_trigger")
        Xv, yv = victim.data(X_val, y_val, "X_val")
        with _inspection_mode(victim.module):
            g_trigger = _parameter_gradients(victim, Xt, yt)
            g_val = _parameter_gradients(victim, Xv, yv)
            return float(_cosine_sum(g_trigger, g_val))

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Craft the poisoned trigger batch.

        Signed-gradient descent of :meth:`trigger_alignment` w.r.t. the
        trigger inputs, within the ``epsilon`` ball around ``X_trigger``.

        Parameters
        ----------
        estimator : object
            Fitted victim with ``module_`` and ``classes_``; not modified.
        X_trigger : array-like of shape (n_trigger, n_features)
            Clean trigger inputs.
        y_trigger : array-like of shape (n_trigger,)
            Trigger labels (kept unchanged).
        X_val : array-like of shape (n_val, n_features)
            Validation inputs whose loss the trigger step should raise.
        y_val : array-like of shape (n_val,)
            Validation labels.

        Returns
        -------
        X_trigger_poisoned : ndarray of shape (n_trigger, n_features), dtype float32
            The poisoned trigger inputs.
        """
        epsilon, step_size, bounds = self._check_params()
        victim = _Victim.from_estimator(estimator)
        Xt, yt = victim.data(X_trigger, y_trigger, "X_trigger")
        Xv, yv = victim.data(X_val, y_val, "X_val")
        with _inspection_mode(victim.module):
            g_val = [g.detach() for g in _parameter_gradients(victim, Xv, yv)]

            def alignment(X):
                return _cosine_sum(
                    _parameter_gradients(victim, X, yt, create_graph=True), g_val
                )

            X_adv = signed_steps(
                alignment, Xt, Xt, ascent=False, epsilon=epsilon, step_size=step_size,
                n_steps=self.n_steps, input_bounds=bounds,
            )
        return X_adv.cpu().numpy().astype(np.float32, copy=False)

    def _target_direction(self, victim, g_clean, trigger, Xv, yv):
        if self.objective == "normal":
            return [-g.detach() for g in _parameter_gradients(victim, Xv, yv)]
        if trigger is None:
            raise ValueError(
                f"objective={self.objective!r} needs the poisoned trigger batch: pass "
                "X_trigger and y_trigger."
            )
        G = _normalize(_trigger_term(victim, *trigger, Xv, yv))
        if self.objective == "second":
            return G
        return [self.gamma * c + s for c, s in zip(_normalize(g_clean), G)]

    def objective_value(
        self, estimator, X, y, X_trigger, y_trigger, X_val, y_val, *, X_clean=None
    ):
        """Value of the accumulative objective for a (poisoned) stream batch.

        Parameters
        ----------
        estimator : object
            Fitted victim with ``module_`` and ``classes_``.
        X : array-like of shape (n_samples, n_features)
            Stream batch whose gradient ``g_poison`` is scored.
        y : array-like of shape (n_samples,)
            Its labels.
        X_trigger, y_trigger : array-like or None
            Poisoned trigger batch (ignored by ``objective="normal"``).
        X_val, y_val : array-like
            Validation batch.
        X_clean : array-like of shape (n_samples, n_features), default=None
            Clean batch giving ``g_clean`` for ``objective="reg"``; ``None``
            means ``X`` itself.

        Returns
        -------
        value : float
            The objective that :meth:`poison_batch` ascends.
        """
        self._check_params()
        victim = _Victim.from_estimator(estimator)
        Xp, yp = victim.data(X, y, "X")
        Xc = Xp if X_clean is None else victim.data(X_clean, y, "X_clean")[0]
        Xv, yv = victim.data(X_val, y_val, "X_val")
        trigger = self._trigger(victim, X_trigger, y_trigger)
        with _inspection_mode(victim.module):
            g_clean = _parameter_gradients(victim, Xc, yp)
            target = self._target_direction(victim, g_clean, trigger, Xv, yv)
            return float(_cosine_sum(_parameter_gradients(victim, Xp, yp), target))

    def _trigger(self, victim, X_trigger, y_trigger):
        if self.objective == "normal" or X_trigger is None:
            return None
        return victim.data(X_trigger, y_trigger, "X_trigger")

    def poison_batch(self, estimator, X, y, X_trigger, y_trigger, X_val, y_val):
        """Poison one clean stream batch of the accumulative phase.

        Signed-gradient ascent of the ``objective`` w.r.t. the inputs of the
        chosen rows, within the ``epsilon`` ball around ``X``.

        Parameters
        ----------
        estimator : object
            Fitted victim with ``module_`` and ``classes_``; not modified.
        X : array-like of shape (n_samples, n_features)
            Clean stream inputs.
        y : array-like of shape (n_samples,)
            Stream labels (kept unchanged).
        X_trigger : array-like of shape (n_trigger, n_features) or None
            Poisoned trigger inputs, from :meth:`craft_trigger`; may be
            ``None`` with ``objective="normal"``.
        y_trigger : array-like of shape (n_trigger,) or None
            Trigger labels.
        X_val : array-like of shape (n_val, n_features)
            Validation inputs.
        y_val : array-like of shape (n_val,)
            Validation labels.

        Returns
        -------
        X_poisoned : ndarray of shape (n_samples, n_features), dtype float32
            The batch to feed to ``estimator.partial_fit(X_poisoned, y)``.
        is_poison : ndarray of shape (n_samples,), dtype bool
            Rows that were perturbed.
        """
        epsilon, step_size, bounds = self._check_params()
        victim = _Victim.from_estimator(estimator)
        Xc, yc = victim.data(X, y, "X")
        Xv, yv = victim.data(X_val, y_val, "X_val")
        trigger = self._trigger(victim, X_trigger, y_trigger)

        n_samples = Xc.shape[0]
        is_poison = np.ones(n_samples, dtype=bool)
        rows = None
        if self.poison_fraction < 1:
            n_poison = min(n_samples, max(1, round(self.poison_fraction * n_samples)))
            chosen = self._generator().choice(n_samples, size=n_poison, replace=False)
            is_poison[:] = False
            is_poison[chosen] = True
            rows = torch.as_tensor(is_poison, dtype=Xc.dtype, device=Xc.device)[:, None]

        with _inspection_mode(victim.module):
            g_clean = [g.detach() for g in _parameter_gradients(victim, Xc, yc)]
            target = [t.detach() for t in self._target_direction(victim, g_clean, trigger, Xv, yv)]

            def objective(X_adv):
                return _cosine_sum(
                    _parameter_gradients(victim, X_adv, yc, create_graph=True), target
                )

            X_adv = signed_steps(
                objective, Xc, Xc, ascent=True, epsilon=epsilon, step_size=step_size,
                n_steps=self.n_steps, input_bounds=bounds, mask=rows,
            )
        return X_adv.cpu().numpy().astype(np.float32, copy=False), is_poison


class UniformNoiseAttack(_StreamRandomMixin, BaseEstimator):
    """Gradient-free baseline: uniform noise with the budget of the real attack.

    Every row of a stream batch gets independent noise drawn uniformly from
    ``[-epsilon, epsilon]`` per feature, clamped to ``input_bounds``. The
    trigger is returned unchanged, so feeding it measures what a clean trigger
    step does after a noisy (instead of an adversarial) stream.

    Parameters
    ----------
    epsilon : float, default=0.2
        Half-width of the uniform noise (L-inf budget).
    input_bounds : tuple of (float, float) or None, default=(0.0, 1.0)
        Valid input range; ``None`` for unbounded inputs.
    random_state : int, RandomState instance or None, default=None
        Source of the noise. The generator is drawn from it at the first call
        and advanced by later calls; ``set_params(random_state=...)`` and
        ``clone`` restart it.

    See Also
    --------
    AccumulativePoisoningAttack : The gradient-based attack.

    References
    ----------
    .. [1] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993.

    Examples
    --------
    >>> import numpy as np
    >>> from dsc_sklearn.evaluation.attacks import UniformNoiseAttack
    >>> X = np.full((4, 3), 0.5)
    >>> X_noisy, is_poison = UniformNoiseAttack(epsilon=0.1, random_state=0).poison_batch(
    ...     None, X, np.zeros(4))
    >>> bool(np.abs(X_noisy - X).max() <= 0.1 + 1e-6), bool(is_poison.all())
    (True, True)
    """

    def __init__(self, *, epsilon=0.2, input_bounds=(0.0, 1.0), random_state=None):
        self.epsilon = epsilon
        self.input_bounds = input_bounds
        self.random_state = random_state

    def poison_batch(self, estimator, X, y, *args, **kwargs):
        """Add uniform noise to every row of a stream batch.

        Parameters
        ----------
        estimator : object
            Ignored; present for API compatibility.
        X : array-like of shape (n_samples, n_features)
            Clean stream inputs.
        y : array-like of shape (n_samples,)
            Stream labels; only their length is checked.
        *args, **kwargs
            Ignored (trigger and validation batches of the real attack).

        Returns
        -------
        X_noisy : ndarray of shape (n_samples, n_features), dtype float32
            The noisy batch.
        is_poison : ndarray of shape (n_samples,), dtype bool
            All True.
        """
        _check_real(self, "epsilon", self.epsilon, low=0)
        bounds = _check_input_bounds(self, self.input_bounds)
        X = _as_float_array(X, "X")
        check_consistent_length(X, column_or_1d(y, warn=True))
        noise = self._generator().uniform(-self.epsilon, self.epsilon, size=X.shape)
        X_noisy = X + noise.astype(np.float32)
        if bounds is not None:
            np.clip(X_noisy, *bounds, out=X_noisy)
        return X_noisy, np.ones(X.shape[0], dtype=bool)

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Return the trigger unchanged.

        Parameters
        ----------
        estimator : object
            Ignored.
        X_trigger : array-like of shape (n_trigger, n_features)
            Trigger inputs.
        y_trigger, X_val, y_val : array-like
            Ignored.

        Returns
        -------
        X_trigger : ndarray of shape (n_trigger, n_features), dtype float32
            A copy of the trigger inputs.
        """
        return np.array(_as_float_array(X_trigger, "X_trigger"), dtype=np.float32, copy=True)


# ---------------------------------------------------------------------------
# What a white-box attacker predicts of the victim's next training step


def _estimator_net(estimator):
    return getattr(estimator, "net_", None)


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
    their rules; the victim is not changed.

    Returns
    -------
    trial : estimator
        The copy after the call.
    steps : list of list of GuardDecision
        Per optimizer step (one per ``batch_size`` chunk), the decisions of
        the guards about it.
    """
    trial = copy.deepcopy(estimator)
    size = getattr(trial, "batch_size", None) or len(X)
    steps = []
    for start in range(0, len(X), size):
        trial.partial_fit(X[start:start + size], y[start:start + size])
        steps.append(trial.net_.step_guard_.decisions())
    return trial, steps


def _validation_loss(estimator, X_val, y_val):
    """The estimator's eval-mode cross-entropy on the encoded validation batch."""
    victim = _Victim.from_estimator(estimator)
    with torch.no_grad(), eval_mode(victim.module):
        return float(F.cross_entropy(victim.module(X_val), y_val))


def _lerp(theta, new_theta, alpha):
    return {name: theta[name] + alpha * (new_theta[name] - theta[name]) for name in theta}


def _scales(max_halvings):
    """The perturbation scales a line search tries: 1, 1/2, ..., then 0 (clean)."""
    return [0.5 ** k for k in range(max_halvings + 1)] + [0.0]


class _LineSearchAttack(AccumulativePoisoningAttack):
    """The accumulative attack plus the parameters of a line search on its perturbation."""

    def __init__(
        self,
        *,
        epsilon=0.2,
        n_steps=2,
        step_size=None,
        gamma=1.0,
        objective="reg",
        poison_fraction=1.0,
        input_bounds=(0.0, 1.0),
        safety=0.9,
        max_halvings=4,
        random_state=None,
    ):
        super().__init__(
            epsilon=epsilon, n_steps=n_steps, step_size=step_size, gamma=gamma,
            objective=objective, poison_fraction=poison_fraction,
            input_bounds=input_bounds, random_state=random_state,
        )
        self.safety = safety
        self.max_halvings = max_halvings

    def _check_params(self):
        _check_real(self, "safety", self.safety, low=0, high=1, low_open=True,
                    high_open=False)
        if not isinstance(self.max_halvings, numbers.Integral) or isinstance(
                self.max_halvings, bool) or self.max_halvings < 0:
            raise _invalid(self, "max_halvings", "an int in the range [0, inf)",
                           self.max_halvings)
        return super()._check_params()


class GuardAwarePoisoningAttack(_LineSearchAttack):
    """Accumulative poisoning that keeps every poisoned step under the step guard.

    **Knows** everything :class:`AccumulativePoisoningAttack` knows (the
    weights, the trigger and validation batches) and, white-box, the whole
    defence: it runs each candidate batch through ``partial_fit`` on a deep
    copy of the victim and reads what the victim's own guards decided about
    each step (:meth:`~dsc_sklearn.defence.guards.BaseGuard.decisions`: the
    statistic, the bound, whether the step counted as harmful and the scale
    kept). So it predicts the victim's next call exactly, whatever the
    guards, their probes, their rules and the modules, and attacks a
    changed or new guard without a change of its own.

    **Optimises** the objective of :class:`AccumulativePoisoningAttack`
    (``objective``, ``gamma``) under the constraint that the guards let
    every poisoned step pass unscaled: after crafting a batch, a line
    search on the perturbation ``X + t * (X_adv - X)``, ``t = 1, 1/2, ...,
    1/2**max_halvings`` then ``0`` (the clean batch), keeps the largest
    ``t`` whose steps every guard kept whole with its statistic at most
    ``safety`` times its bound, or judged harmless (a step the
    ``"harmful"`` rule never scales). Unscaled poisoned steps also enter
    the guard's calibration window and their rows its probe, so the bound
    itself follows the poison. The trigger is chosen among the same scales
    as the one whose step, **after** the guards' pull-back, leaves the
    highest validation loss.

    Without a step guard it is :class:`AccumulativePoisoningAttack`.

    Parameters
    ----------
    epsilon, n_steps, step_size, gamma, objective, poison_fraction, input_bounds
        As in :class:`AccumulativePoisoningAttack`.
    safety : float, default=0.9
        The line search aims at ``safety`` times the guard's bound, in
        (0, 1], a margin for rounding.
    max_halvings : int, default=4
        Halvings of the perturbation tried before the clean batch is sent.
    random_state : int, RandomState instance or None, default=None
        As in :class:`AccumulativePoisoningAttack`.

    Attributes
    ----------
    last_scale_ : float
        The perturbation scale ``t`` the last :meth:`poison_batch` or
        :meth:`craft_trigger` call kept.
    last_steps_ : list of list of GuardDecision
        Per optimizer step of the kept candidate, the decisions of the
        victim's guards about it (on the copy).

    See Also
    --------
    MultiBatchTriggerAttack : The same, with the trigger split over several
        batches.

    Notes
    -----
    This is the adaptive attack of Tramèr, Carlini, Brendel and Madry
    (2020), applied to the library's step guard: the defence's own test is
    put into the attacker's loop, as Koh, Steinhardt and Liang (2022) keep
    their poison inside the feasible set of a data-sanitisation defence.

    References
    ----------
    .. [1] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993.
    .. [2] F. Tramèr, N. Carlini, W. Brendel and A. Madry, "On Adaptive
       Attacks to Adversarial Example Defenses", NeurIPS 2020,
       arXiv:2002.08347.
    .. [3] P. W. Koh, J. Steinhardt and P. Liang, "Stronger data poisoning
       attacks break data sanitization defenses", Machine Learning 111,
       2022, arXiv:1811.00741.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.evaluation.attacks import GuardAwarePoisoningAttack
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype(np.float32)
    >>> clf = DiscrepancyAwareOnlineClassifier(random_state=0)  # the step guard
    >>> for start in range(0, 1500, 100):
    ...     clf = clf.partial_fit(X[start:start + 100], y[start:start + 100],
    ...                           classes=range(10))
    >>> attack = GuardAwarePoisoningAttack(random_state=0)
    >>> trigger, val, batch = slice(1500, 1590), slice(1590, 1680), slice(1680, 1780)
    >>> X_trigger = attack.craft_trigger(clf, X[trigger], y[trigger], X[val], y[val])
    >>> X_poisoned, _ = attack.poison_batch(clf, X[batch], y[batch], X_trigger,
    ...                                     y[trigger], X[val], y[val])
    >>> predicted = attack.last_steps_[0][0].scale
    >>> clf = clf.partial_fit(X_poisoned, y[batch])
    >>> predicted, clf.stream_log_[-1]["step_scale"]  # the guard lets it pass
    (1.0, 1.0)
    """

    def _passes(self, steps):
        """Whether every guard let every step pass unscaled, with ``safety`` to spare."""
        return all(decision.scale == 1.0 and (decision.statistic <= self.safety * decision.bound
                                              or not decision.harmful)
                   for decisions in steps for decision in decisions)

    def poison_batch(self, estimator, X, y, X_trigger, y_trigger, X_val, y_val):
        """Poison one stream batch, as large as the step guard lets pass unscaled.

        Parameters and returns are those of
        :meth:`AccumulativePoisoningAttack.poison_batch`.
        """
        X_adv, is_poison = super().poison_batch(estimator, X, y, X_trigger, y_trigger,
                                                X_val, y_val)
        self.last_scale_, self.last_steps_ = 1.0, []
        if not _guarded(estimator):
            return X_adv, is_poison
        X = _as_float_array(X, "X")
        for scale in _scales(self.max_halvings):
            candidate = (X + np.float32(scale) * (X_adv - X)).astype(np.float32)
            _, steps = _trial_call(estimator, candidate, y)
            if scale == 0.0 or self._passes(steps):
                break
        self.last_scale_, self.last_steps_ = scale, steps
        if scale == 0.0:
            is_poison = np.zeros_like(is_poison)
        return candidate, is_poison

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Craft the trigger whose step, after the guard's pull-back, hurts most.

        Parameters and returns are those of
        :meth:`AccumulativePoisoningAttack.craft_trigger`.
        """
        X_adv = super().craft_trigger(estimator, X_trigger, y_trigger, X_val, y_val)
        self.last_scale_, self.last_steps_ = 1.0, []
        if not _guarded(estimator):
            return X_adv
        X_trigger = _as_float_array(X_trigger, "X_trigger")
        Xv, yv = _Victim.from_estimator(estimator).data(X_val, y_val, "X_val")
        best = None
        for scale in _scales(self.max_halvings):
            candidate = (X_trigger + np.float32(scale) * (X_adv - X_trigger)).astype(np.float32)
            trial, steps = _trial_call(estimator, candidate, y_trigger)
            damage = _validation_loss(trial, Xv, yv)
            if best is None or damage > best[0]:
                best = (damage, scale, candidate, steps)
        _, self.last_scale_, candidate, self.last_steps_ = best
        return candidate


class MultiBatchTriggerAttack(GuardAwarePoisoningAttack):
    """Guard-aware accumulative poisoning whose trigger is split over k batches.

    **Knows** what :class:`GuardAwarePoisoningAttack` knows.
    **Optimises** the same accumulative phase; then, instead of one trigger
    batch, it sends ``n_trigger_batches`` consecutive trigger batches, each
    crafted (:meth:`craft_trigger`) on the model the previous one produced,
    and each the candidate whose step leaves the highest validation loss
    after the guard's pull-back. A per-step bound limits what one batch can
    do, not what k batches do together; the stream protocol
    (:func:`~dsc_sklearn.evaluation.protocol.run_stream_protocol`) reads
    ``n_trigger_batches`` and feeds that many.

    Parameters
    ----------
    n_trigger_batches : int, default=4
        Trigger batches sent one after another, at least 1.
    epsilon, n_steps, step_size, gamma, objective, poison_fraction, input_bounds, \
safety, max_halvings, random_state
        As in :class:`GuardAwarePoisoningAttack`.

    References
    ----------
    .. [1] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993
       (the trigger, sent there as one batch).
    .. [2] F. Tramèr, N. Carlini, W. Brendel and A. Madry, "On Adaptive
       Attacks to Adversarial Example Defenses", NeurIPS 2020,
       arXiv:2002.08347.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.attacks import MultiBatchTriggerAttack
    >>> MultiBatchTriggerAttack(n_trigger_batches=3).n_trigger_batches
    3
    """

    def __init__(
        self,
        *,
        n_trigger_batches=4,
        epsilon=0.2,
        n_steps=2,
        step_size=None,
        gamma=1.0,
        objective="reg",
        poison_fraction=1.0,
        input_bounds=(0.0, 1.0),
        safety=0.9,
        max_halvings=4,
        random_state=None,
    ):
        super().__init__(
            epsilon=epsilon, n_steps=n_steps, step_size=step_size, gamma=gamma,
            objective=objective, poison_fraction=poison_fraction,
            input_bounds=input_bounds, safety=safety, max_halvings=max_halvings,
            random_state=random_state,
        )
        self.n_trigger_batches = n_trigger_batches

    def _check_params(self):
        value = self.n_trigger_batches
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise _invalid(self, "n_trigger_batches", "an int in the range [1, inf)", value)
        return super()._check_params()


class SlowPoisoningAttack(AccumulativePoisoningAttack):
    """Accumulative poisoning with a small budget over a long horizon.

    **Knows** what :class:`AccumulativePoisoningAttack` knows (white-box
    weights; not the defence). **Optimises** the same objectives, with half
    the reference budget (``epsilon=0.1`` on ``[0, 1]`` inputs) spread
    over ``horizon`` poisoned batches (200 by default; the protocol runs
    that many instead of its ``max_steps``): each step is close to a clean
    one, and what accumulates is the drift of many. The trigger has the
    same small budget. (With ``epsilon=0.05``, the low end of the range the
    evaluation asked for, plain training lost nothing in a trial on
    digits-mlp: the stream's learning outran the poison.)

    Parameters
    ----------
    epsilon : float, default=0.1
        Radius of the L-inf ball of every poisoned batch and of the trigger.
    horizon : int, default=200
        Poisoned batches the attacker plans to send before the trigger (the
        stealth stop of the protocol may end it sooner).
    n_steps, step_size, gamma, objective, poison_fraction, input_bounds, random_state
        As in :class:`AccumulativePoisoningAttack`.

    Notes
    -----
    Online-learning poisoning under a per-round budget over a horizon is
    the setting of Wang and Chaudhuri (2018); the accumulative objective is
    Pang et al.'s (2021).

    References
    ----------
    .. [1] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993.
    .. [2] Y. Wang and K. Chaudhuri, "Data Poisoning Attacks against Online
       Learning", arXiv:1808.08994, 2018.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.attacks import SlowPoisoningAttack
    >>> attack = SlowPoisoningAttack()
    >>> attack.epsilon, attack.horizon
    (0.1, 200)
    """

    def __init__(
        self,
        *,
        epsilon=0.1,
        horizon=200,
        n_steps=2,
        step_size=None,
        gamma=1.0,
        objective="reg",
        poison_fraction=1.0,
        input_bounds=(0.0, 1.0),
        random_state=None,
    ):
        super().__init__(
            epsilon=epsilon, n_steps=n_steps, step_size=step_size, gamma=gamma,
            objective=objective, poison_fraction=poison_fraction,
            input_bounds=input_bounds, random_state=random_state,
        )
        self.horizon = horizon

    def _check_params(self):
        if not isinstance(self.horizon, numbers.Integral) or isinstance(self.horizon, bool) or (
                self.horizon < 1):
            raise _invalid(self, "horizon", "an int in the range [1, inf)", self.horizon)
        return super()._check_params()


class DiscrepancyAwarePoisoningAttack(_LineSearchAttack):
    """Accumulative poisoning that keeps its memorization discrepancy under DSC's threshold.

    **Knows** what :class:`AccumulativePoisoningAttack` knows and the
    paper's gate, through the estimator's public API: the snapshot buffer
    (``memorization_discrepancy(X)``, the per-sample KL against
    ``snapshots_`` that the gate computes), the threshold in force
    (``threshold_``, i.e. ``net_.threshold_policy_.current()``), whether
    the gate decides per sample or on the batch mean (``granularity``) and
    whether a gated correction runs at all (``net_.correction_.gated``).

    **Optimises** the accumulative objective under the constraint that the
    gate does not flag: a line search on the perturbation, ``X + t *
    (X_adv - X)`` with ``t = 1, 1/2, ..., 1/2**max_halvings`` then ``0``,
    keeps for each row (``granularity="sample"``) or for the batch
    (``"batch"``, its mean) the largest ``t`` whose discrepancy is at most
    ``safety * threshold_``. The trigger is kept under the threshold the
    same way. Against a defence without a gated correction it is
    :class:`AccumulativePoisoningAttack`.

    Parameters
    ----------
    epsilon, n_steps, step_size, gamma, objective, poison_fraction, input_bounds
        As in :class:`AccumulativePoisoningAttack`.
    safety : float, default=0.9
        Aim at ``safety`` times the threshold, in (0, 1].
    max_halvings : int, default=4
        Halvings of the perturbation tried before a row (or the batch) is
        sent clean.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    last_scale_ : ndarray of shape (n_samples,)
        The scale kept for each row by the last call.

    Notes
    -----
    Zhu et al. (2023) flag a batch whose discrepancy exceeds the threshold
    and correct it; this attacker stays inside the gate's accepted set, as
    Koh, Steinhardt and Liang (2022) place poison inside a sanitiser's
    feasible set, which Tramèr et al. (2020) recommend for any detector.

    References
    ----------
    .. [1] J. Zhu et al., "Exploring Model Dynamics for Accumulative
       Poisoning Discovery", ICML 2023, arXiv:2306.03726.
    .. [2] P. W. Koh, J. Steinhardt and P. Liang, "Stronger data poisoning
       attacks break data sanitization defenses", Machine Learning 111,
       2022, arXiv:1811.00741.
    .. [3] F. Tramèr, N. Carlini, W. Brendel and A. Madry, "On Adaptive
       Attacks to Adversarial Example Defenses", NeurIPS 2020,
       arXiv:2002.08347.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.evaluation.attacks import DiscrepancyAwarePoisoningAttack
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype(np.float32)
    >>> clf = DiscrepancyAwareOnlineClassifier(correction="dsc", step_guard=None,
    ...                                        random_state=0)
    >>> for start in range(0, 1500, 100):
    ...     clf = clf.partial_fit(X[start:start + 100], y[start:start + 100],
    ...                           classes=range(10))
    >>> attack = DiscrepancyAwarePoisoningAttack(random_state=0)
    >>> trigger, val, batch = slice(1500, 1590), slice(1590, 1680), slice(1680, 1780)
    >>> X_trigger = attack.craft_trigger(clf, X[trigger], y[trigger], X[val], y[val])
    >>> X_poisoned, is_poison = attack.poison_batch(clf, X[batch], y[batch], X_trigger,
    ...                                             y[trigger], X[val], y[val])
    >>> discrepancy = clf.memorization_discrepancy(X_poisoned)
    >>> bool((discrepancy[is_poison] <= clf.threshold_).all())  # the gate lets them pass
    True

    Rows whose clean version already exceeds the threshold are sent clean.
    """

    def _under_threshold(self, estimator, X, X_adv):
        """``X + t * (X_adv - X)`` with the largest ``t`` the gate lets through."""
        n_samples = len(X)
        self.last_scale_ = np.ones(n_samples)
        correction = getattr(_estimator_net(estimator), "correction_", None)
        if not getattr(correction, "gated", False):
            return X_adv
        limit = self.safety * float(estimator.threshold_)
        per_sample = getattr(estimator, "granularity", "sample") != "batch"
        X = _as_float_array(X, "X")
        kept = np.zeros(n_samples)
        done = np.zeros(n_samples, dtype=bool)
        for scale in _scales(self.max_halvings):
            discrepancy = np.asarray(
                estimator.memorization_discrepancy(X + scale * (X_adv - X)))
            if discrepancy.ndim == 2:  # reference="all": the largest counts
                discrepancy = discrepancy.max(axis=1)
            accepted = (discrepancy <= limit if per_sample
                        else np.full(n_samples, discrepancy.mean() <= limit))
            accepted |= scale == 0.0
            new = accepted & ~done
            kept[new] = scale
            done |= accepted
            if done.all():
                break
        self.last_scale_ = kept
        return (X + kept[:, None].astype(np.float32) * (X_adv - X)).astype(np.float32)

    def poison_batch(self, estimator, X, y, X_trigger, y_trigger, X_val, y_val):
        """Poison one stream batch, each row (or the batch) under the gate's threshold.

        Parameters and returns are those of
        :meth:`AccumulativePoisoningAttack.poison_batch`; rows sent clean
        are not counted as poisoned.
        """
        X_adv, is_poison = super().poison_batch(estimator, X, y, X_trigger, y_trigger,
                                                X_val, y_val)
        X_fed = self._under_threshold(estimator, X, X_adv)
        return X_fed, is_poison & (self.last_scale_ > 0)

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Craft the trigger, kept under the gate's threshold.

        Parameters and returns are those of
        :meth:`AccumulativePoisoningAttack.craft_trigger`.
        """
        X_adv = super().craft_trigger(estimator, X_trigger, y_trigger, X_val, y_val)
        return self._under_threshold(estimator, X_trigger, X_adv)


class GradientAscentAttack(_StreamRandomMixin, BaseEstimator):
    """Non-accumulative baseline: every batch raises the validation loss at once.

    **Knows** the weights, the SGD optimizer and its momentum
    (``net_.optimizer_``, read as :class:`GuardAwarePoisoningAttack`
    reads it) and ``clip_value``; not the step guard or the gate.
    **Optimises**, for every stream batch and for the last (trigger)
    batch alike, the validation loss after the victim's simulated step on
    the batch, ``L_val(theta - lr * (momentum * buffer + g(X)))``, by
    ``n_steps`` projected signed-gradient ascent steps on the inputs
    within the L-inf ball of radius ``epsilon`` (the gradient goes through
    the step by double backward). There is no preparation of a later
    trigger: each batch does what damage it can on its own (Pang et al.'s
    "real-time" poisoning, here with the exact one-step look-ahead of
    back-gradient poisoning instead of its first-order cosine).

    Parameters
    ----------
    epsilon : float, default=0.2
        Radius of the L-inf ball around the clean inputs of each call.
    n_steps : int, default=2
        Signed-gradient steps.
    step_size : float, default=None
        ``None`` means ``2 * epsilon / n_steps``.
    poison_fraction : float, default=1.0
        Fraction of the rows of each stream batch that are perturbed.
    input_bounds : tuple of (float, float) or None, default=(0.0, 1.0)
        Valid input range; ``None`` for unbounded inputs.
    random_state : int, RandomState instance or None, default=None
        Chooses the poisoned rows when ``poison_fraction < 1``.

    References
    ----------
    .. [1] L. Muñoz-González et al., "Towards Poisoning of Deep Learning
       Algorithms with Back-gradient Optimization", AISec 2017,
       arXiv:1708.08689.
    .. [2] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from dsc_sklearn.evaluation.attacks import GradientAscentAttack
    >>> _ = torch.manual_seed(0)
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> victim = SimpleNamespace(module_=module, classes_=np.array([0, 1, 2]), lr=0.5)
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((60, 8), dtype=np.float32), rng.integers(0, 3, 60)
    >>> attack = GradientAscentAttack(epsilon=0.3)
    >>> X_poisoned, is_poison = attack.poison_batch(victim, X[:30], y[:30], None, None,
    ...                                             X[30:], y[30:])
    >>> bool(attack.loss_after_step(victim, X_poisoned, y[:30], X[30:], y[30:])
    ...      > attack.loss_after_step(victim, X[:30], y[:30], X[30:], y[30:]))
    True
    """

    def __init__(self, *, epsilon=0.2, n_steps=2, step_size=None, poison_fraction=1.0,
                 input_bounds=(0.0, 1.0), random_state=None):
        self.epsilon = epsilon
        self.n_steps = n_steps
        self.step_size = step_size
        self.poison_fraction = poison_fraction
        self.input_bounds = input_bounds
        self.random_state = random_state

    def _check_params(self):
        return _check_perturbation(self)

    def loss_after_step(self, estimator, X, y, X_val, y_val):
        """Validation loss after the victim's simulated step on ``(X, y)``.

        Parameters
        ----------
        estimator : object
            Fitted victim with ``module_`` and ``classes_``.
        X, y : array-like
            The batch the victim would train on.
        X_val, y_val : array-like
            Validation batch.

        Returns
        -------
        loss : float
        """
        victim = _Victim.from_estimator(estimator)
        Xb, yb = victim.data(X, y, "X")
        Xv, yv = victim.data(X_val, y_val, "X_val")
        unrolled = _UnrolledSGD(estimator, victim)
        with _inspection_mode(victim.module):
            theta = unrolled.run(Xb, yb)
            with torch.no_grad():
                return float(unrolled.loss(theta, Xv, yv))

    def _ascend(self, estimator, X, y, X_val, y_val, rows_mask=None):
        epsilon, step_size, bounds = self._check_params()
        victim = _Victim.from_estimator(estimator)
        Xc, yc = victim.data(X, y, "X")
        Xv, yv = victim.data(X_val, y_val, "X_val")
        unrolled = _UnrolledSGD(estimator, victim)  # not adaptive: no guard
        mask = None if rows_mask is None else torch.as_tensor(
            rows_mask, dtype=Xc.dtype, device=Xc.device)[:, None]

        def objective(X_adv):
            theta = unrolled.run(X_adv, yc, create_graph=True)
            return unrolled.loss(theta, Xv, yv)

        with _inspection_mode(victim.module):
            X_adv = signed_steps(objective, Xc, Xc, ascent=True, epsilon=epsilon,
                                 step_size=step_size, n_steps=self.n_steps,
                                 input_bounds=bounds, mask=mask)
        return X_adv.cpu().numpy().astype(np.float32, copy=False)

    def poison_batch(self, estimator, X, y, X_trigger=None, y_trigger=None, X_val=None,
                     y_val=None):
        """Perturb a stream batch so that the step on it raises the validation loss.

        Parameters
        ----------
        estimator : object
            Fitted victim; not modified.
        X, y : array-like
            Clean stream batch (labels kept).
        X_trigger, y_trigger : array-like or None
            Ignored (there is no planned trigger).
        X_val, y_val : array-like
            Validation batch whose loss the step should raise.

        Returns
        -------
        X_poisoned : ndarray of float32
        is_poison : ndarray of bool
        """
        if X_val is None or y_val is None:
            raise ValueError("GradientAscentAttack needs the validation batch X_val, y_val.")
        n_samples = len(X)
        is_poison = np.ones(n_samples, dtype=bool)
        if self.poison_fraction < 1:
            n_poison = min(n_samples, max(1, round(self.poison_fraction * n_samples)))
            chosen = self._generator().choice(n_samples, size=n_poison, replace=False)
            is_poison[:] = False
            is_poison[chosen] = True
        return (self._ascend(estimator, X, y, X_val, y_val,
                             None if is_poison.all() else is_poison), is_poison)

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """The last batch, poisoned like every other one.

        Parameters
        ----------
        estimator : object
        X_trigger, y_trigger, X_val, y_val : array-like

        Returns
        -------
        X_trigger_poisoned : ndarray of float32
        """
        return self._ascend(estimator, X_trigger, y_trigger, X_val, y_val)


class LabelFlipAttack(_StreamRandomMixin, BaseEstimator):
    """Non-accumulative baseline: flip the labels of a fraction of each batch.

    **Knows** only the label set (``classes_``); no gradients, no defence.
    **Does**: in every stream batch, ``flip_fraction`` of the rows, drawn
    at random, get a label drawn uniformly among the other classes; inputs
    are unchanged. The trigger is sent clean. :meth:`poison_batch` returns
    the new labels too: ``(X, y_flipped, is_poison)``, which the stream
    protocol feeds.

    Parameters
    ----------
    flip_fraction : float, default=0.3
        Share of each batch's rows whose label is flipped, in (0, 1].
    random_state : int, RandomState instance or None, default=None
        Which rows, and their new labels.

    References
    ----------
    .. [1] B. Biggio, B. Nelson and P. Laskov, "Support Vector Machines
       Under Adversarial Label Noise", ACML 2011.
    .. [2] H. Xiao, H. Xiao and C. Eckert, "Adversarial Label Flips Attack on
       Support Vector Machines", ECAI 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from dsc_sklearn.evaluation.attacks import LabelFlipAttack
    >>> victim = SimpleNamespace(classes_=np.array([0, 1, 2]))
    >>> X, y = np.zeros((10, 2)), np.zeros(10, dtype=int)
    >>> attack = LabelFlipAttack(flip_fraction=0.5, random_state=0)
    >>> _, y_new, is_poison = attack.poison_batch(victim, X, y)
    >>> int(is_poison.sum()), bool((y_new[is_poison] != 0).all())
    (5, True)
    >>> bool((y_new[~is_poison] == 0).all())
    True
    """

    def __init__(self, *, flip_fraction=0.3, random_state=None):
        self.flip_fraction = flip_fraction
        self.random_state = random_state

    def poison_batch(self, estimator, X, y, *args, **kwargs):
        """Flip the labels of ``flip_fraction`` of the rows.

        Parameters
        ----------
        estimator : object
            Fitted victim with ``classes_``.
        X : array-like of shape (n_samples, n_features)
            Stream inputs, returned unchanged (as float32).
        y : array-like of shape (n_samples,)
            Stream labels.
        *args, **kwargs
            Ignored (the trigger and validation batches of the other attacks).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features), dtype float32
        y_flipped : ndarray of shape (n_samples,)
        is_poison : ndarray of shape (n_samples,), dtype bool
            The rows whose label changed.
        """
        _check_real(self, "flip_fraction", self.flip_fraction, low=0, high=1,
                    low_open=True, high_open=False)
        classes = getattr(estimator, "classes_", None)
        if classes is None or len(classes) < 2:
            raise NotFittedError("LabelFlipAttack needs a fitted victim with classes_.")
        classes = np.asarray(classes)
        X = _as_float_array(X, "X")
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        rng = self._generator()
        n_samples = len(y)
        n_flip = min(n_samples, max(1, round(self.flip_fraction * n_samples)))
        rows = rng.choice(n_samples, size=n_flip, replace=False)
        codes = np.searchsorted(classes, y[rows])
        shift = rng.randint(1, len(classes), size=n_flip)
        y_flipped = y.copy()
        y_flipped[rows] = classes[(codes + shift) % len(classes)]
        is_poison = np.zeros(n_samples, dtype=bool)
        is_poison[rows] = True
        return np.array(X, dtype=np.float32, copy=True), y_flipped, is_poison

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Return the trigger unchanged (a clean last batch).

        Returns
        -------
        X_trigger : ndarray of float32
            A copy of the trigger inputs.
        """
        return np.array(_as_float_array(X_trigger, "X_trigger"), dtype=np.float32, copy=True)


class WindowAwarePoisoningAttack(MultiBatchTriggerAttack):
    """Guard-aware poisoning whose trigger is spread over more batches than a window.

    **Knows** what :class:`GuardAwarePoisoningAttack` knows: the victim's
    whole defence, whose decisions it reads on a copy of the victim, the
    bound on the last ``k`` steps of a
    :class:`~dsc_sklearn.defence.guards.CumulativeGuard` included.
    **Optimises** the same accumulative phase (every poisoned batch as large
    as every decision lets pass unscaled); then it spreads the trigger over
    ``n_trigger_batches`` consecutive batches, more than the guard's ``k``,
    each crafted on the model the previous one left and each the largest
    fraction of its perturbation (1, 1/2, ..., ``2**-max_halvings``, else
    the clean rows) that every decision lets pass unscaled with ``safety``
    to spare, so that no step and no window of ``k`` steps crosses its
    bound while the damage of all of them adds up. Where
    :class:`MultiBatchTriggerAttack` sends what hurts most after the
    pull-back, this attack is never pulled back.

    Parameters
    ----------
    n_trigger_batches : int, default=12
        Trigger batches sent one after another, at least 1 (more than the
        default ``k`` of 5 and the 10 of a longer window).
    epsilon, n_steps, step_size, gamma, objective, poison_fraction, input_bounds, \
safety, max_halvings, random_state
        As in :class:`GuardAwarePoisoningAttack`.

    Attributes
    ----------
    last_scale_, last_steps_
        As in :class:`GuardAwarePoisoningAttack`.

    See Also
    --------
    MultiBatchTriggerAttack : The trigger split over a few batches, each the
        most harmful after the pull-back.

    References
    ----------
    .. [1] T. Pang, X. Yang, Y. Dong, H. Su and J. Zhu, "Accumulative
       Poisoning Attacks on Real-time Data", NeurIPS 2021, arXiv:2106.09993.
    .. [2] F. Tramèr, N. Carlini, W. Brendel and A. Madry, "On Adaptive
       Attacks to Adversarial Example Defenses", NeurIPS 2020,
       arXiv:2002.08347.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.defence.guards import CumulativeGuard
    >>> from dsc_sklearn.evaluation.attacks import WindowAwarePoisoningAttack
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype(np.float32)
    >>> clf = DiscrepancyAwareOnlineClassifier(step_guard=CumulativeGuard(k=3),
    ...                                        random_state=0)
    >>> for start in range(0, 1500, 100):
    ...     clf = clf.partial_fit(X[start:start + 100], y[start:start + 100],
    ...                           classes=range(10))
    >>> attack = WindowAwarePoisoningAttack(random_state=0)
    >>> trigger, val = slice(1500, 1590), slice(1590, 1680)
    >>> X_trigger = attack.craft_trigger(clf, X[trigger], y[trigger], X[val], y[val])
    >>> predicted = [d.scale for d in attack.last_steps_[0]]
    >>> clf = clf.partial_fit(X_trigger, y[trigger])
    >>> predicted, clf.stream_log_[-1]["step_scale"]  # neither check pulls it back
    ([1.0, 1.0], 1.0)
    """

    def __init__(
        self,
        *,
        n_trigger_batches=12,
        epsilon=0.2,
        n_steps=2,
        step_size=None,
        gamma=1.0,
        objective="reg",
        poison_fraction=1.0,
        input_bounds=(0.0, 1.0),
        safety=0.9,
        max_halvings=4,
        random_state=None,
    ):
        super().__init__(
            n_trigger_batches=n_trigger_batches, epsilon=epsilon, n_steps=n_steps,
            step_size=step_size, gamma=gamma, objective=objective,
            poison_fraction=poison_fraction, input_bounds=input_bounds, safety=safety,
            max_halvings=max_halvings, random_state=random_state,
        )

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """Craft one trigger batch, as large as every decision lets pass unscaled.

        Parameters and returns are those of
        :meth:`AccumulativePoisoningAttack.craft_trigger`.
        """
        # The unconstrained trigger of the accumulative attack, not the
        # most-harmful-after-pull-back search of GuardAwarePoisoningAttack.
        X_adv = AccumulativePoisoningAttack.craft_trigger(self, estimator, X_trigger,
                                                          y_trigger, X_val, y_val)
        self.last_scale_, self.last_steps_ = 1.0, []
        if not _guarded(estimator):
            return X_adv
        X_trigger = _as_float_array(X_trigger, "X_trigger")
        for scale in _scales(self.max_halvings):
            candidate = (X_trigger + np.float32(scale) * (X_adv - X_trigger)).astype(np.float32)
            _, steps = _trial_call(estimator, candidate, y_trigger)
            if scale == 0.0 or self._passes(steps):
                break
        self.last_scale_, self.last_steps_ = scale, steps
        return candidate
