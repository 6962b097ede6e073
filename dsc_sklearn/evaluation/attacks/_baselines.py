"""Baselines that plan nothing ahead: noise, no attack, gradient ascent, label flips."""

import numbers

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils._param_validation import Interval

from ..._pgd import signed_steps
from ._base import (
    _BUDGET_CONSTRAINTS,
    PoisoningAttack,
    _BudgetAttack,
    _check_input_bounds,
    _StreamRandomMixin,
)
from ._victim import _as_float_array, _inspection_mode, _UnrolledSGD, _Victim


class UniformNoiseAttack(_StreamRandomMixin, PoisoningAttack):
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

    name = "noise"
    legend = ("uniform noise of the same budget on every batch and a clean trigger (ST only, "
              "a baseline of the attack)")
    plain_training_only = True
    poisons_trigger = False
    _parameter_constraints = {name: _BUDGET_CONSTRAINTS[name]
                              for name in ("epsilon", "input_bounds", "random_state")}

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
        self._validate_params()
        bounds = _check_input_bounds(self, self.input_bounds)
        X = _as_float_array(X, "X")
        check_consistent_length(X, column_or_1d(y, warn=True))
        noise = self._generator().uniform(-self.epsilon, self.epsilon, size=X.shape)
        X_noisy = X + noise.astype(np.float32)
        if bounds is not None:
            np.clip(X_noisy, *bounds, out=X_noisy)
        return X_noisy, np.ones(X.shape[0], dtype=bool)


class NoAttack(PoisoningAttack):
    """A clean stream and a clean trigger: the protocol's run without an attacker.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.attacks import NoAttack
    >>> NoAttack().poisons_stream, NoAttack().poisons_trigger
    (False, False)
    """

    name = "none"
    legend = "a clean stream and a clean trigger"
    poisons_stream = False
    poisons_trigger = False


class GradientAscentAttack(_BudgetAttack):
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

    name = "gradient_ascent"
    legend = ("every batch, the last one included, perturbed (L∞ 0.2) to raise the "
              "validation loss after the victim's simulated step on it (no planning)")
    adaptive_set = True

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
        is_poison = self._poisoned_rows(len(X))
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


class LabelFlipAttack(_StreamRandomMixin, PoisoningAttack):
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

    name = "label_flip"
    legend = ("30 % of each batch's labels flipped to another class at random, a clean "
              "last batch (no planning)")
    adaptive_set = True
    _parameter_constraints = {
        "flip_fraction": [Interval(numbers.Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
    }

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
        self._validate_params()
        classes = getattr(estimator, "classes_", None)
        if classes is None or len(classes) < 2:
            raise NotFittedError("LabelFlipAttack needs a fitted victim with classes_.")
        classes = np.asarray(classes)
        X = _as_float_array(X, "X")
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        rows = self._draw_rows(len(y), self.flip_fraction)
        codes = np.searchsorted(classes, y[rows])
        shift = self._generator().randint(1, len(classes), size=len(rows))
        y_flipped = y.copy()
        y_flipped[rows] = classes[(codes + shift) % len(classes)]
        is_poison = np.zeros(len(y), dtype=bool)
        is_poison[rows] = True
        return np.array(X, dtype=np.float32, copy=True), y_flipped, is_poison
