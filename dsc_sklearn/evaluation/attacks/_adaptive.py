"""Attacks that know the defence and keep their poison inside what it accepts."""

import numbers

import numpy as np
from sklearn.utils._param_validation import Interval

from ...defence._constraints import NumberInterval
from ._accumulative import AccumulativePoisoningAttack
from ._victim import _as_float_array, _guarded, _trial_call, _validation_loss, _Victim


def _scales(max_halvings):
    """The perturbation scales a line search tries: 1, 1/2, ..., then 0 (clean)."""
    return [0.5 ** k for k in range(max_halvings + 1)] + [0.0]


def _scaled(X, X_adv, scale):
    """``X + scale * (X_adv - X)``, as float32."""
    return (X + np.float32(scale) * (X_adv - X)).astype(np.float32)


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

    _parameter_constraints = {
        **AccumulativePoisoningAttack._parameter_constraints,
        "safety": [Interval(numbers.Real, 0, 1, closed="right")],
        "max_halvings": [NumberInterval(numbers.Integral, 0, None, closed="left")],
    }


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

    name = "guard_aware"
    legend = ("the accumulative attack keeping every poisoned step under the step guard's "
              "bound: the attacker runs each candidate batch through a copy of the victim, "
              "reads what its guards decide and shrinks the perturbation until every step "
              "passes unscaled; the trigger is the one that hurts most after the guards' "
              "pull-back")
    adapts = True
    adaptive_set = True

    def _passes(self, steps):
        """Whether every guard let every step pass unscaled, with ``safety`` to spare."""
        return all(decision.scale == 1.0 and (decision.statistic <= self.safety * decision.bound
                                              or not decision.harmful)
                   for decisions in steps for decision in decisions)

    def _largest_passing(self, estimator, X, y, X_adv, name):
        """``X`` moved towards ``X_adv`` as far as every guard lets its steps pass unscaled.

        Sets ``last_scale_`` and ``last_steps_``; a victim without a guard
        gets ``X_adv`` itself.
        """
        self.last_scale_, self.last_steps_ = 1.0, []
        if not _guarded(estimator):
            return X_adv
        X = _as_float_array(X, name)
        for scale in _scales(self.max_halvings):
            candidate = _scaled(X, X_adv, scale)
            _, steps = _trial_call(estimator, candidate, y)
            if scale == 0.0 or self._passes(steps):
                break
        self.last_scale_, self.last_steps_ = scale, steps
        return candidate

    def poison_batch(self, estimator, X, y, X_trigger, y_trigger, X_val, y_val):
        """Poison one stream batch, as large as the step guard lets pass unscaled.

        Parameters and returns are those of
        :meth:`AccumulativePoisoningAttack.poison_batch`.
        """
        X_adv, is_poison = super().poison_batch(estimator, X, y, X_trigger, y_trigger,
                                                X_val, y_val)
        X_fed = self._largest_passing(estimator, X, y, X_adv, "X")
        if self.last_scale_ == 0.0:
            is_poison = np.zeros_like(is_poison)
        return X_fed, is_poison

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
            candidate = _scaled(X_trigger, X_adv, scale)
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

    name = "multi_trigger"
    legend = ("guard_aware with the trigger split over 4 consecutive batches, each crafted "
              "on the model the previous one left")
    _parameter_constraints = {
        **GuardAwarePoisoningAttack._parameter_constraints,
        "n_trigger_batches": [NumberInterval(numbers.Integral, 1, None, closed="left")],
    }

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

    name = "window_aware"
    legend = ("guard_aware with the trigger spread over 12 consecutive batches, more than "
              "a cumulative guard's window, each as large as every check of the victim's "
              "guards lets pass unscaled")

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
        return self._largest_passing(estimator, X_trigger, y_trigger, X_adv, "X_trigger")


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


    name = "discrepancy_aware"
    legend = ("the accumulative attack keeping each poisoned row (the batch mean for a "
              "batch gate) under DSC's threshold on the memorization discrepancy against "
              "the snapshot buffer")
    adapts = True
    adaptive_set = True

    def _under_threshold(self, estimator, X, X_adv):
        """``X + t * (X_adv - X)`` with the largest ``t`` the gate lets through."""
        n_samples = len(X)
        self.last_scale_ = np.ones(n_samples)
        correction = getattr(getattr(estimator, "net_", None), "correction_", None)
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
