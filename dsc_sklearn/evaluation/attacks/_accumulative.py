"""The accumulative attack of Pang et al. (2021), its trigger-only baseline and its slow variant."""

import numbers

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..._pgd import signed_steps
from ...defence._constraints import NumberInterval
from ._base import _OBJECTIVES, _BudgetAttack
from ._victim import (
    _cosine_sum,
    _inspection_mode,
    _normalize,
    _parameter_gradients,
    _trigger_term,
    _Victim,
)


class AccumulativePoisoningAttack(_BudgetAttack):
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

    name = "accumulative"
    legend = ("the attack of Pang et al. (2021): every stream batch poisoned (L∞ 0.2), "
              "then a poisoned trigger batch re-crafted on the model reached")
    _parameter_constraints = {
        **_BudgetAttack._parameter_constraints,
        "gamma": [Interval(numbers.Real, 0, None, closed="left")],
        "objective": [StrOptions(set(_OBJECTIVES))],
    }

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
        super().__init__(
            epsilon=epsilon, n_steps=n_steps, step_size=step_size,
            poison_fraction=poison_fraction, input_bounds=input_bounds,
            random_state=random_state,
        )
        self.gamma = gamma
        self.objective = objective

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

        is_poison = self._poisoned_rows(Xc.shape[0])
        rows = None
        if self.poison_fraction < 1:
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


class TriggerOnlyAttack(AccumulativePoisoningAttack):
    """Baseline of the accumulative attack: a clean stream, then its poisoned trigger.

    **Knows** and **optimises** what :class:`AccumulativePoisoningAttack`
    does for its trigger; the stream batches are fed clean, so the trigger
    alone shows what the accumulative phase adds.

    Parameters
    ----------
    epsilon, n_steps, step_size, gamma, objective, poison_fraction, input_bounds, random_state
        As in :class:`AccumulativePoisoningAttack`.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.attacks import TriggerOnlyAttack
    >>> TriggerOnlyAttack().poisons_stream, TriggerOnlyAttack().poisons_trigger
    (False, True)
    """

    name = "trigger_only"
    legend = "a clean stream and the poisoned trigger (ST only, a baseline of the attack)"
    plain_training_only = True
    poisons_stream = False


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

    name = "slow"
    legend = ("the accumulative attack with a small budget (L∞ 0.1) over a long horizon "
              "(200 poisoned batches)")
    adaptive_set = True
    uses_protocol_budget = False
    _parameter_constraints = {
        **AccumulativePoisoningAttack._parameter_constraints,
        "horizon": [NumberInterval(numbers.Integral, 1, None, closed="left")],
    }

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

