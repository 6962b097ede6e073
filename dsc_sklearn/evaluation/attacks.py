"""Accumulative poisoning attacks on a streaming neural-network classifier.

White-box simulators of the attack of Pang et al. (2021) and a gradient-free
baseline.  An attack reads the victim's public ``module_`` and ``classes_``,
never changes them, and only returns poisoned copies of the arrays it is
given; the caller feeds those to ``estimator.partial_fit``.
"""

import contextlib
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

__all__ = ["AccumulativePoisoningAttack", "UniformNoiseAttack"]

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
        _check_real(self, "epsilon", self.epsilon, low=0)
        if not isinstance(self.n_steps, numbers.Integral) or isinstance(self.n_steps, bool) or (
            self.n_steps < 1
        ):
            raise _invalid(self, "n_steps", "an int in the range [1, inf)", self.n_steps)
        if self.step_size is not None:
            _check_real(self, "step_size", self.step_size, low=0, low_open=True)
        _check_real(self, "gamma", self.gamma, low=0)
        if not isinstance(self.objective, str) or self.objective not in _OBJECTIVES:
            raise _invalid(
                self, "objective", f"a str among {{{', '.join(map(repr, _OBJECTIVES))}}}",
                self.objective,
            )
        _check_real(
            self, "poison_fraction", self.poison_fraction, low=0, high=1,
            low_open=True, high_open=False,
        )
        bounds = _check_input_bounds(self, self.input_bounds)
        step_size = 2 * self.epsilon / self.n_steps if self.step_size is None else self.step_size
        return float(self.epsilon), float(step_size), bounds

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
