"""The attack-and-defence stream protocol, its metrics and detection report.

One run of :func:`run_stream_protocol`:

1. **burn-in**: the estimator trains plainly on part of the training split
   (the stream then carries *new* data) or on all of it (``stream="seen"``,
   the reference code's setting), ``burn_in_epochs`` ordered passes; then
   the defence is switched on, the optimizer restarts, and the estimator
   sees ``defence_warmup`` clean batches;
2. **accumulative phase**: each clean stream batch is poisoned by the attack
   and fed through ``partial_fit``, until the test error exceeds the
   burn-in error by ``stealth_slack`` (the attacker's stealth stop) or
   ``max_steps`` batches;
3. **trigger**: the poisoned trigger batch, re-crafted on the model reached
   (default) or crafted once after burn-in (``trigger="fixed"``), is fed as
   one more batch (or as ``n_trigger_batches`` batches, each crafted on
   the model the previous one left, for an attack that splits it);
4. **clean twin**: a copy of the burnt-in estimator sees all ``max_steps``
   stream batches unpoisoned and the clean trigger batch: what the defence
   costs when nothing is wrong, over the same horizon for every defence.

The attacker is white-box on the estimator's public fitted state and feeds
the victim only through ``partial_fit``.

:func:`run_learning_protocol` trains from scratch with the defence on from
the first call, against the same model with every defence off: what the
defence costs while a model still learns.

:func:`run_drift_protocol` feeds clean batches whose inputs drift (noise,
brightness, translation); :func:`run_concept_drift_protocol` feeds, in
order, a stream whose concept really drifts (river's generators, from
:func:`~dsc_sklearn.evaluation.datasets.load_drift_stream`).
"""

import copy
import math
import numbers
import time

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.utils import Bunch, check_random_state, check_scalar

from .._labels import encode_labels
from .attacks import ADAPTIVE_ATTACKS, ATTACK_REGISTRY, ATTACKS
from .drifts import DRIFTS, apply_drift

__all__ = [
    "ADAPTIVE_ATTACKS",
    "ATTACKS",
    "DRIFTS",
    "LEARNING",
    "apply_drift",
    "detection_report",
    "run_concept_drift_protocol",
    "run_drift_protocol",
    "run_learning_protocol",
    "run_stream_protocol",
]

#: The ``attack`` of the benchmark's record of a learning-from-scratch run
#: (:func:`run_learning_protocol`).
LEARNING = "learning"


def detection_report(is_poison, flagged):
    """Confusion counts and rates of a poison detector, ART-style.

    Parameters
    ----------
    is_poison : array-like of bool, shape (n_samples,)
        Ground truth: which samples were poisoned.
    flagged : array-like of bool, shape (n_samples,)
        Which samples the defence flagged.

    Returns
    -------
    report : dict
        ``true_positive``, ``false_positive``, ``true_negative`` and
        ``false_negative``, each a dict with ``rate``, ``numerator`` and
        ``denominator`` (rates are NaN when the denominator is 0, as in the
        Adversarial Robustness Toolbox's ``evaluate_defence``), plus
        ``precision``, ``recall`` and ``f1``.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.protocol import detection_report
    >>> report = detection_report([1, 1, 0, 0], [1, 0, 1, 0])
    >>> report["true_positive"]
    {'rate': 0.5, 'numerator': 1, 'denominator': 2}
    >>> round(report["f1"], 3)
    0.5
    """
    is_poison = np.asarray(is_poison, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    if is_poison.shape != flagged.shape:
        raise ValueError(
            f"is_poison has shape {is_poison.shape} but flagged has shape "
            f"{flagged.shape}; pass one value per sample to both."
        )
    counts = {
        "true_positive": (flagged & is_poison).sum(),
        "false_negative": (~flagged & is_poison).sum(),
        "false_positive": (flagged & ~is_poison).sum(),
        "true_negative": (~flagged & ~is_poison).sum(),
    }
    n_poison, n_clean = int(is_poison.sum()), int((~is_poison).sum())
    denominators = {"true_positive": n_poison, "false_negative": n_poison,
                    "false_positive": n_clean, "true_negative": n_clean}
    report = {
        name: {
            "rate": _ratio(count, denominators[name]),
            "numerator": int(count),
            "denominator": denominators[name],
        }
        for name, count in counts.items()
    }
    precision = _ratio(counts["true_positive"], int(flagged.sum()))
    recall = report["true_positive"]["rate"]
    report["precision"] = precision
    report["recall"] = recall
    report["f1"] = _ratio(2 * precision * recall, precision + recall)
    return report


def _ratio(numerator, denominator):
    return float(numerator) / denominator if denominator else float("nan")


def _check_attack(attack):
    if isinstance(attack, str) and attack not in ATTACK_REGISTRY:
        raise ValueError(
            f"attack must be one of {tuple(ATTACK_REGISTRY)} or an attack object; "
            f"got {attack!r}."
        )


def _make_attack(attack, epsilon, input_bounds, random_state, params=None):
    """The attack object of a registered name (an object is returned as it is).

    ``epsilon`` and ``input_bounds`` go to the classes that take them, but
    an attack with a budget of its own (``uses_protocol_budget = False``)
    keeps it; ``params`` (a dict) overrides.
    """
    _check_attack(attack)
    if not isinstance(attack, str):
        return attack
    attack_class = ATTACK_REGISTRY[attack]
    names = attack_class().get_params()
    kwargs = {"epsilon": epsilon, "input_bounds": input_bounds, "random_state": random_state}
    if not attack_class.uses_protocol_budget:
        del kwargs["epsilon"]
    kwargs = {name: value for name, value in kwargs.items() if name in names}
    return attack_class(**{**kwargs, **(params or {})})


_BURN_IN_OFF = {"correction": "none", "clip_value": None, "step_guard": None}


def _split_data(data, stream, burn_in_fraction, validation, rng):
    """Burn-in set, stream set, trigger batch and the attacker's validation batch."""
    X, y = data.X_train, data.y_train
    order = rng.permutation(len(X))
    if stream == "new":
        n_burn_in = int(round(burn_in_fraction * len(X)))
        burn_in, stream_rows = order[:n_burn_in], order[n_burn_in:]
    elif stream == "seen":
        burn_in, stream_rows = order, order
    else:
        raise ValueError(f"stream must be 'new' or 'seen'; got {stream!r}.")
    half = len(data.X_val) // 2
    X_trigger, y_trigger = data.X_val[:half], data.y_val[:half]
    if validation == "heldout":
        X_target, y_target = data.X_val[half:], data.y_val[half:]
    elif validation == "test":
        X_target, y_target = data.X_test[:half], data.y_test[:half]
    else:
        raise ValueError(f"validation must be 'heldout' or 'test'; got {validation!r}.")
    return Bunch(
        X_burn_in=X[burn_in], y_burn_in=y[burn_in],
        X_stream=X[stream_rows], y_stream=y[stream_rows],
        X_trigger=X_trigger, y_trigger=y_trigger,
        X_target=X_target, y_target=y_target,
    )


def _burn_in(estimator, split, classes, n_epochs, batch_size, seed, defend=True):
    """Plain training on the burn-in set, then the defence on and a fresh optimizer.

    ``defend=False`` keeps plain training on (the plain twin of a drift run).
    """
    model = copy.deepcopy(estimator).set_params(random_state=seed)
    defence = {name: model.get_params()[name] for name in _BURN_IN_OFF}
    model.set_params(**_BURN_IN_OFF)
    for epoch in range(n_epochs):
        for start in range(0, len(split.X_burn_in), batch_size):
            rows = slice(start, start + batch_size)
            model.partial_fit(split.X_burn_in[rows], split.y_burn_in[rows], classes=classes)
        if defend and model.snapshot_every is None and epoch + 1 == max(n_epochs // 2, 1):
            # The paper's historical model: a checkpoint halfway through the
            # burn-in (the reference code's epoch 20 of 40), frozen.
            model.take_snapshot()
    if defend:
        model.set_params(**defence)
    # The online phase starts from the burn-in weights with a fresh optimizer,
    # as the reference code does: a warm momentum buffer would keep moving a
    # model whose gradients are clipped to 0.01 (digits: 0.93 -> 0.68 in six
    # clean steps), a protocol artefact rather than a property of the defence.
    model.net_.initialize_optimizer()
    return model


def _start_online_phase(estimator, data, rng, *, stream, burn_in_fraction, burn_in_epochs,
                        defence_warmup, n_steps, batch_size, validation="heldout",
                        plain_twin=False):
    """The protocols' common start: split, burn-in, switch-over and warm-up.

    Draws the run's seed and the split from ``rng``, burns in a copy of
    ``estimator`` (and, with ``plain_twin``, a copy that stays on plain
    training), draws ``defence_warmup + n_steps`` stream batches and feeds
    the first ``defence_warmup`` of them to every model.

    Returns
    -------
    start : Bunch
        ``seed``, ``split`` (see :func:`_split_data`), ``models`` (the
        defended model, then the plain twin if asked for), ``batches`` (the
        ``n_steps`` online batches after the warm-up) and
        ``accuracy_burn_in`` (the defended model's test accuracy after the
        warm-up).
    """
    seed = int(rng.randint(np.iinfo(np.int32).max))
    split = _split_data(data, stream, burn_in_fraction, validation, rng)
    classes = np.arange(data.n_classes)
    models = [_burn_in(estimator, split, classes, burn_in_epochs, batch_size, seed)]
    if plain_twin:
        models.append(_burn_in(estimator, split, classes, burn_in_epochs, batch_size, seed,
                               defend=False))
    batches = _stream_batches(split.X_stream, split.y_stream, batch_size,
                              defence_warmup + n_steps, rng)
    for X_batch, y_batch in batches[:defence_warmup]:
        for model in models:
            model.partial_fit(X_batch, y_batch)
    return Bunch(seed=seed, split=split, models=models, batches=batches[defence_warmup:],
                 accuracy_burn_in=models[0].score(data.X_test, data.y_test))


def _stream_batches(X, y, batch_size, n_batches, rng):
    """``n_batches`` batches from ``(X, y)``, reshuffled at every pass."""
    batches = []
    while len(batches) < n_batches:
        order = rng.permutation(len(X))
        for start in range(0, len(X) - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            batches.append((X[rows], y[rows]))
    return batches[:n_batches]


def _per_sample_loss(estimator, X, y):
    proba = estimator.predict_proba(X)
    rows = encode_labels(estimator.classes_, y)
    return -np.log(np.clip(proba[np.arange(len(y)), rows], 1e-12, None))


def _auc(negatives, positives):
    if len(negatives) == 0 or len(positives) == 0:
        return float("nan")
    labels = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    return float(roc_auc_score(labels, np.r_[negatives, positives]))


def run_stream_protocol(
    estimator,
    data,
    *,
    attack="accumulative",
    stream="new",
    burn_in_fraction=0.5,
    burn_in_epochs=10,
    defence_warmup=10,
    max_steps=40,
    stealth_slack=0.05,
    trigger="recraft",
    validation="heldout",
    epsilon=0.2,
    batch_size=100,
    random_state=None,
    attack_params=None,
):
    """Run burn-in, the (attacked) online phase, the trigger and a clean twin.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        Unfitted estimator holding the defence to evaluate; it is cloned.
    data : Bunch
        As returned by :func:`~dsc_sklearn.evaluation.datasets.load_stream_dataset`.
    attack : str or object, default="accumulative"
        A name of :data:`ATTACKS`. ``"accumulative"`` poisons the stream
        (Pang et al. 2021, :class:`~dsc_sklearn.evaluation.attacks.AccumulativePoisoningAttack`);
        ``"trigger_only"`` streams clean batches and sends the poisoned
        trigger; ``"noise"`` adds uniform noise of the same ``epsilon`` and
        sends the clean trigger; ``"none"`` is a clean run. The attacks that
        adapt to the defence: ``"guard_aware"``
        (:class:`~dsc_sklearn.evaluation.attacks.GuardAwarePoisoningAttack`),
        ``"multi_trigger"``
        (:class:`~dsc_sklearn.evaluation.attacks.MultiBatchTriggerAttack`, a
        trigger of 4 batches), ``"slow"``
        (:class:`~dsc_sklearn.evaluation.attacks.SlowPoisoningAttack`:
        ``epsilon`` 0.1 over 200 batches), ``"discrepancy_aware"``
        (:class:`~dsc_sklearn.evaluation.attacks.DiscrepancyAwarePoisoningAttack`);
        the baselines that plan nothing ahead: ``"label_flip"``
        (:class:`~dsc_sklearn.evaluation.attacks.LabelFlipAttack`) and
        ``"gradient_ascent"``
        (:class:`~dsc_sklearn.evaluation.attacks.GradientAscentAttack`).
        An object with ``craft_trigger`` and ``poison_batch`` methods is
        used as is; ``poison_batch`` returns ``(X, is_poison)``, or
        ``(X, y, is_poison)`` when it changes labels too. An attack's
        ``horizon`` attribute, when it has one, replaces ``max_steps``; its
        ``n_trigger_batches`` (default 1) is the number of trigger batches.
    stream : {"new", "seen"}, default="new"
        Whether the stream carries data held out of the burn-in, or the
        burn-in data again (the reference code's setting).
    burn_in_fraction : float, default=0.5
        Share of the training split used for burn-in with ``stream="new"``.
    burn_in_epochs : int, default=10
        Passes over the burn-in data, with plain training (``correction``
        ``"none"``, no gradient clipping, no step guard) whatever the
        defence, as in the reference protocol. A defence with
        ``snapshot_every=None`` gets its frozen historical model halfway
        through (:meth:`~dsc_sklearn.DiscrepancyAwareOnlineClassifier.take_snapshot`
        after pass ``burn_in_epochs // 2``), as the reference code takes
        epoch 20 of 40.
    defence_warmup : int, default=10
        Clean stream batches fed with the defence switched on before the
        attack starts, so that an ``"auto"`` threshold is calibrated.
    max_steps : int, default=40
        Maximum number of accumulative (online) batches, unless the attack
        sets its own ``horizon``.
    stealth_slack : float or None, default=0.05
        A poisoned stream stops once the test accuracy falls more than this
        below its value when the attack started; ``None`` always runs
        ``max_steps``. Clean streams always run ``max_steps``.
    trigger : {"recraft", "fixed"}, default="recraft"
        Re-craft the poisoned trigger on the model reached at the end of the
        accumulative phase, or keep the one crafted after burn-in.
    validation : {"heldout", "test"}, default="heldout"
        Where the attacker's validation batch comes from: half of the
        validation split, or the test split as the reference code does.
    epsilon : float, default=0.2
        L-infinity budget of the named attacks (``"slow"`` keeps its own
        0.1).
    batch_size : int, default=100
        Rows per stream batch.
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the stream order, the attack and the estimator.
    attack_params : dict, default=None
        Parameters of a named attack's class, e.g. ``{"horizon": 400}``
        for ``"slow"`` or ``{"n_trigger_batches": 2}`` for
        ``"multi_trigger"``; they override ``epsilon``.

    Returns
    -------
    result : Bunch
        Accuracies (``accuracy_burn_in``, ``accuracy_accumulative``,
        ``accuracy_trigger``, ``accuracy_clean``), ``accuracy_curve`` (test
        accuracy after every online batch and the trigger),
        ``n_accumulative_steps``, ``stealth_stop`` (whether the attacker
        stopped early, its accuracy drop past ``stealth_slack``),
        ``n_trigger_batches``, flagged fractions
        (``flagged_fraction_clean`` on the clean twin,
        ``flagged_fraction_poison`` on the attacked batches,
        ``flagged_fraction_trigger`` on the trigger batch), what the step
        guard did (``scaled_fraction_poison``: the share of attacked batches
        it scaled, ``scaled_fraction_attack``: the share of all the
        attack's optimizer steps, trigger included, it scaled,
        ``scaled_fraction_clean``: the same on the clean twin,
        ``trigger_scale``: the scale it kept for the trigger, the mean over
        the trigger batches when there are several; NaN without a
        guard), when the defence raised an alarm (an episode of
        ``alarms_``): ``alarm_delay``, the poisoned batches (trigger
        batches included) fed before the first one the defence intervened
        on (0: it acted on the first; NaN: on none, or nothing was
        poisoned), and ``alarm_rate_clean``, the alarm episodes that
        started on the clean twin per batch it was fed, ROC AUCs for
        poison detection (``auc_discrepancy_sample``,
        ``auc_discrepancy_batch``, ``auc_loss_sample``, ``auc_loss_batch``),
        the raw ``discrepancy_clean`` and ``discrepancy_poison`` samples,
        ``detection`` (:func:`detection_report` of the attacked run's flags)
        and ``wall_time``.

    Examples
    --------
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.evaluation.datasets import load_stream_dataset
    >>> from dsc_sklearn.evaluation.protocol import run_stream_protocol
    >>> data = load_stream_dataset("digits", random_state=0)
    >>> result = run_stream_protocol(
    ...     DiscrepancyAwareOnlineClassifier(correction="none"), data,
    ...     attack="noise", max_steps=3, burn_in_epochs=1, defence_warmup=1,
    ...     stealth_slack=None, random_state=0)
    >>> result.n_accumulative_steps
    3
    >>> len(result.accuracy_curve)
    4
    """
    started = time.perf_counter()
    _check_attack(attack)  # before the burn-in, not after it
    if trigger not in ("recraft", "fixed"):
        raise ValueError(f"trigger must be 'recraft' or 'fixed'; got {trigger!r}.")
    attacker = _make_attack(attack, epsilon, data.input_bounds, None, attack_params)
    horizon = getattr(attacker, "horizon", None)
    n_trigger = int(getattr(attacker, "n_trigger_batches", 1))
    start = _start_online_phase(
        estimator, data, check_random_state(random_state), stream=stream,
        burn_in_fraction=burn_in_fraction, burn_in_epochs=burn_in_epochs,
        defence_warmup=defence_warmup, n_steps=max_steps if horizon is None else horizon,
        batch_size=batch_size, validation=validation)
    if isinstance(attack, str) and "random_state" in attacker.get_params():
        attacker.set_params(random_state=start.seed)
    victim, = start.models
    twin = copy.deepcopy(victim)
    threat = _Threat(attacker, start)
    steps_before, scaled_before = victim.n_batches_seen_, victim.n_steps_scaled_

    X_trigger = threat.trigger(victim)
    log = _accumulative_phase(victim, threat, X_trigger, start, data, stealth_slack)
    n_steps = len(log.curve)
    accuracy_accumulative = log.curve[-1] if log.curve else start.accuracy_burn_in
    flagged, scales = [], []
    for _ in range(n_trigger):
        if trigger == "recraft":
            X_trigger = threat.trigger(victim)
        before = victim.n_batches_seen_
        victim.partial_fit(X_trigger, start.split.y_trigger)
        if threat.poisons_trigger:
            log.alarmed.append(_alarmed_since(victim, before))
        flagged.append(float(victim.last_flagged_.mean()))
        scales.append(victim.stream_log_[-1]["step_scale"])
        log.curve.append(victim.score(data.X_test, data.y_test))
    accuracy_trigger = log.curve[-1]

    twin_scaled_before, twin_steps_before = twin.n_steps_scaled_, twin.n_batches_seen_
    flagged_fraction_clean = _clean_twin(twin, start, n_trigger)
    n_twin_batches = len(start.batches) + n_trigger
    return _summarise(log, Bunch(
        accuracy_burn_in=start.accuracy_burn_in,
        accuracy_accumulative=accuracy_accumulative,
        accuracy_trigger=accuracy_trigger,
        accuracy_clean=twin.score(data.X_test, data.y_test),
        n_accumulative_steps=n_steps,
        stealth_stop=log.stealth_stop,
        n_trigger_batches=n_trigger,
        flagged_fraction_clean=flagged_fraction_clean,
        flagged_fraction_trigger=float(np.mean(flagged)),
        trigger_scale=float(np.mean(scales)),
        scaled_fraction_poison=_guarded_ratio(log.n_scaled, n_steps, victim),
        scaled_fraction_attack=_guarded_ratio(victim.n_steps_scaled_ - scaled_before,
                                              victim.n_batches_seen_ - steps_before, victim),
        scaled_fraction_clean=_guarded_ratio(
            twin.n_steps_scaled_ - twin_scaled_before, n_twin_batches, twin),
        alarm_delay=float(log.alarmed.index(True)) if True in log.alarmed else math.nan,
        alarm_rate_clean=_ratio(_alarms_started_since(twin, twin_steps_before),
                                n_twin_batches),
        started=started,
    ))


def _alarmed_since(estimator, step):
    """Whether the defence intervened on a step after ``step`` (its ``alarms_``)."""
    alarms = getattr(estimator, "alarms_", None)
    return bool(alarms) and alarms[-1]["last_step"] > step


def _alarms_started_since(estimator, step):
    """The alarm episodes of ``estimator`` that started after ``step``."""
    return sum(episode["first_step"] > step for episode in getattr(estimator, "alarms_", ()))


def _guarded_ratio(n_scaled, n_batches, estimator):
    """The share of batches the step guard scaled; NaN without a guard."""
    if estimator.step_guard is None:
        return float("nan")
    return _ratio(n_scaled, n_batches)


class _Threat:
    """What the attack of a stream run does to the trigger and to each batch."""

    def __init__(self, attacker, start):
        self.attacker = attacker
        self.split = start.split
        # An attack object of another kind poisons what its methods allow.
        self.poisons_stream = getattr(attacker, "poisons_stream",
                                      hasattr(attacker, "poison_batch"))
        self.poisons_trigger = getattr(attacker, "poisons_trigger", True)

    def trigger(self, victim):
        """The trigger batch to feed: crafted on ``victim``, or the clean one."""
        split = self.split
        if not self.poisons_trigger:
            return split.X_trigger
        return self.attacker.craft_trigger(victim, split.X_trigger, split.y_trigger,
                                           split.X_target, split.y_target)

    def poison(self, victim, X_clean, y_batch, X_trigger):
        """The batch to feed instead of ``(X_clean, y_batch)``: ``(X, y, is_poison)``."""
        if not self.poisons_stream:
            return X_clean, y_batch, np.zeros(len(X_clean), dtype=bool)
        split = self.split
        fed = self.attacker.poison_batch(victim, X_clean, y_batch, X_trigger,
                                         split.y_trigger, split.X_target, split.y_target)
        if len(fed) == 3:  # an attack that changes labels too
            return fed
        X_fed, is_poison = fed
        return X_fed, y_batch, is_poison


def _accumulative_phase(victim, threat, X_trigger, start, data, stealth_slack):
    """Feed the (poisoned) online batches until the stealth stop; log what is seen."""
    log = Bunch(curve=[], d_clean=[], d_poison=[], loss_clean=[], loss_poison=[],
                is_poison=[], flagged=[], n_scaled=0, alarmed=[], stealth_stop=False)
    scaled_before = victim.n_steps_scaled_
    for X_clean, y_batch in start.batches:
        X_fed, y_fed, is_poison = threat.poison(victim, X_clean, y_batch, X_trigger)
        _record_detection(log, victim, X_clean, X_fed, y_batch, y_fed, is_poison)
        before = victim.n_batches_seen_
        victim.partial_fit(X_fed, y_fed)
        if is_poison.any():
            log.alarmed.append(_alarmed_since(victim, before))
        log.is_poison.append(is_poison)
        log.flagged.append(victim.last_flagged_)
        log.n_scaled = victim.n_steps_scaled_ - scaled_before
        accuracy = victim.score(data.X_test, data.y_test)
        log.curve.append(accuracy)
        if (threat.poisons_stream and stealth_slack is not None
                and accuracy < start.accuracy_burn_in - stealth_slack):
            log.stealth_stop = True
            break
    return log


def _clean_twin(twin, start, n_trigger=1):
    """Every online batch and the trigger batches, clean; the share of samples flagged."""
    n_flagged = n_seen = 0
    for X_clean, y_batch in start.batches:
        twin.partial_fit(X_clean, y_batch)
        n_flagged += int(twin.last_flagged_.sum())
        n_seen += len(X_clean)
    for _ in range(n_trigger):
        twin.partial_fit(start.split.X_trigger, start.split.y_trigger)
    return _ratio(n_flagged, n_seen)


def _record_detection(log, victim, X_clean, X_fed, y_batch, y_fed, is_poison):
    """Scores of the clean and the fed batch on the same model state."""
    if not is_poison.any():
        return
    log.d_clean.append(victim.memorization_discrepancy(X_clean))
    log.d_poison.append(victim.memorization_discrepancy(X_fed[is_poison]))
    log.loss_clean.append(_per_sample_loss(victim, X_clean, y_batch))
    log.loss_poison.append(_per_sample_loss(victim, X_fed[is_poison], y_fed[is_poison]))


def _summarise(log, result):
    if log.d_clean:
        d_clean, d_poison = np.concatenate(log.d_clean), np.concatenate(log.d_poison)
        result.auc_discrepancy_sample = _auc(d_clean, d_poison)
        result.auc_discrepancy_batch = _auc([d.mean() for d in log.d_clean],
                                            [d.mean() for d in log.d_poison])
        result.auc_loss_sample = _auc(np.concatenate(log.loss_clean),
                                      np.concatenate(log.loss_poison))
        result.auc_loss_batch = _auc([v.mean() for v in log.loss_clean],
                                     [v.mean() for v in log.loss_poison])
    else:
        d_clean = d_poison = np.empty(0)
        result.auc_discrepancy_sample = result.auc_discrepancy_batch = float("nan")
        result.auc_loss_sample = result.auc_loss_batch = float("nan")
    result.discrepancy_clean, result.discrepancy_poison = d_clean, d_poison
    is_poison = np.concatenate(log.is_poison) if log.is_poison else np.empty(0, bool)
    flagged = np.concatenate(log.flagged) if log.flagged else np.empty(0, bool)
    result.flagged_fraction_poison = _ratio(flagged[is_poison].sum(), is_poison.sum())
    result.detection = detection_report(is_poison, flagged)
    result.accuracy_curve = np.asarray(log.curve)
    result.wall_time = time.perf_counter() - result.pop("started")
    return result


def run_learning_protocol(estimator, data, *, n_passes=5, batch_size=100, random_state=None):
    """Train from scratch with the defence on from the first call, as a user does.

    A copy of ``estimator`` (the defence as configured) and a copy with
    every defence off (``correction="none"``, no gradient clipping, no step
    guard) learn the same training split from scratch: ``n_passes``
    passes of ``partial_fit`` in batches of ``batch_size``, each pass in a
    new random order, the same for both. Nothing is poisoned and nothing
    drifts: what the defended model ends below the undefended one is what
    the defence costs while a model is still learning (the benchmark's
    burn-in runs with every defence off and never shows it).

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        The defence; it is cloned (a fitted one starts from scratch too) and
        not changed.
    data : Bunch
        From :func:`~dsc_sklearn.evaluation.datasets.load_stream_dataset`.
    n_passes : int, default=5
        Passes over the training split.
    batch_size : int, default=100
        Rows per ``partial_fit`` call.
    random_state : int, RandomState instance or None, default=None
        Seeds the order of the rows and both models' weights (the same).

    Returns
    -------
    result : Bunch
        ``accuracy_learned`` and ``accuracy_plain`` (test accuracy of the
        defended and the undefended model after the last pass),
        ``learning_cost`` (the second minus the first, as a fraction),
        ``curve_learned`` and ``curve_plain`` (test accuracy after each
        pass), ``scaled_fraction_learning`` (the share of the defended
        model's steps the step guard pulled back, NaN without a guard),
        ``n_steps`` and ``wall_time``.

    Examples
    --------
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.evaluation.datasets import load_stream_dataset
    >>> from dsc_sklearn.evaluation.protocol import run_learning_protocol
    >>> data = load_stream_dataset("digits", random_state=0)
    >>> result = run_learning_protocol(DiscrepancyAwareOnlineClassifier(), data,
    ...                                n_passes=1, random_state=0)
    >>> len(result.curve_learned), bool(result.accuracy_plain > 0.5)
    (1, True)
    """
    started = time.perf_counter()
    check_scalar(n_passes, "n_passes", numbers.Integral, min_val=1)
    check_scalar(batch_size, "batch_size", numbers.Integral, min_val=1)
    rng = check_random_state(random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    # Clones: from scratch even when ``estimator`` is fitted.
    defended = clone(estimator).set_params(random_state=seed)
    plain = clone(estimator).set_params(random_state=seed, **_BURN_IN_OFF)
    models, curves = (defended, plain), ([], [])
    classes = np.arange(data.n_classes)
    for _ in range(n_passes):
        order = rng.permutation(len(data.X_train))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            for model in models:
                model.partial_fit(data.X_train[rows], data.y_train[rows], classes=classes)
        for curve, model in zip(curves, models):
            curve.append(model.score(data.X_test, data.y_test))
    return Bunch(
        accuracy_learned=curves[0][-1],
        accuracy_plain=curves[1][-1],
        learning_cost=curves[1][-1] - curves[0][-1],
        curve_learned=np.asarray(curves[0]),
        curve_plain=np.asarray(curves[1]),
        scaled_fraction_learning=_guarded_ratio(defended.n_steps_scaled_,
                                                defended.n_batches_seen_, defended),
        n_steps=defended.n_batches_seen_,
        wall_time=time.perf_counter() - started,
    )


def _accuracies_after_drift(start, X_test, y_test):
    """Accuracy before the drift, and each twin's on the drifted test set, with their gap."""
    defended, plain = start.models
    accuracy_drift = defended.score(X_test, y_test)
    accuracy_plain = plain.score(X_test, y_test)
    return dict(accuracy_burn_in=start.accuracy_burn_in, accuracy_drift=accuracy_drift,
                accuracy_plain=accuracy_plain, accuracy_gap=accuracy_plain - accuracy_drift)


def run_drift_protocol(
    estimator,
    data,
    *,
    kind="noise",
    strength=None,
    stream="new",
    burn_in_fraction=0.5,
    burn_in_epochs=10,
    defence_warmup=10,
    n_steps=40,
    batch_size=100,
    random_state=None,
):
    """A clean stream whose inputs drift gradually: what the defence costs.

    Burn-in and warm-up are those of :func:`run_stream_protocol`; then
    ``n_steps`` clean batches arrive with a drift whose level grows linearly
    from 0 to ``strength``. A plain-training twin (same burn-in, same
    batches, ``correction="none"``, no clipping) shows what the data alone
    allows. Accuracies are measured on the test split drifted to the final
    level.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        Unfitted estimator holding the defence to evaluate; it is copied.
    data : Bunch
        As returned by :func:`~dsc_sklearn.evaluation.datasets.load_stream_dataset`.
    kind : {"noise", "brightness", "translation"}, default="noise"
        The drift, see :func:`apply_drift`.
    strength : float, default=None
        Final drift level; ``None`` uses :data:`DRIFTS`.
    stream, burn_in_fraction, burn_in_epochs, defence_warmup, batch_size
        As in :func:`run_stream_protocol`.
    n_steps : int, default=40
        Drifting batches.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``accuracy_burn_in`` (clean test set), ``accuracy_drift`` and
        ``accuracy_plain`` (drifted test set, defence and plain twin),
        ``accuracy_gap`` (plain minus defence), ``flagged_fraction_drift``,
        ``scaled_fraction_drift`` (the share of drifting batches the step
        guard scaled, NaN without a guard)
        and ``wall_time``.

    Examples
    --------
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.evaluation.datasets import load_stream_dataset
    >>> from dsc_sklearn.evaluation.protocol import run_drift_protocol
    >>> data = load_stream_dataset("digits", random_state=0)
    >>> result = run_drift_protocol(
    ...     DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0)), data,
    ...     kind="brightness", n_steps=3, burn_in_epochs=1, defence_warmup=1,
    ...     random_state=0)
    >>> 0.0 <= result.flagged_fraction_drift <= 1.0
    True
    """
    started = time.perf_counter()
    if kind not in DRIFTS:
        raise ValueError(f"kind must be one of {tuple(DRIFTS)}; got {kind!r}.")
    strength = DRIFTS[kind] if strength is None else strength
    rng = check_random_state(random_state)
    start = _start_online_phase(
        estimator, data, rng, stream=stream, burn_in_fraction=burn_in_fraction,
        burn_in_epochs=burn_in_epochs, defence_warmup=defence_warmup, n_steps=n_steps,
        batch_size=batch_size, plain_twin=True)
    defended, plain = start.models
    drift = dict(image_shape=data.image_shape, input_bounds=data.input_bounds)
    n_flagged = n_seen = 0
    scaled_before = defended.n_steps_scaled_
    for step, (X_batch, y_batch) in enumerate(start.batches, start=1):
        X_drifted = apply_drift(X_batch, kind, strength * step / n_steps,
                                random_state=rng, **drift)
        defended.partial_fit(X_drifted, y_batch)
        plain.partial_fit(X_drifted, y_batch)
        n_flagged += int(defended.last_flagged_.sum())
        n_seen += len(X_batch)
    X_test = apply_drift(data.X_test, kind, strength, random_state=rng, **drift)
    return Bunch(
        **_accuracies_after_drift(start, X_test, data.y_test),
        flagged_fraction_drift=_ratio(n_flagged, n_seen),
        scaled_fraction_drift=_guarded_ratio(defended.n_steps_scaled_ - scaled_before,
                                             len(start.batches), defended),
        wall_time=time.perf_counter() - started,
    )


def run_concept_drift_protocol(
    estimator,
    data,
    *,
    stream="new",
    burn_in_fraction=0.5,
    burn_in_epochs=10,
    defence_warmup=10,
    batch_size=100,
    random_state=None,
):
    """A real concept drift, fed in order: what the defence costs when the world changes.

    Burn-in and warm-up are those of :func:`run_stream_protocol`, on the
    concept before the drift (``data.X_train``), for the defended estimator
    and for a plain-training twin (same burn-in, same batches, no defence).
    Then both are fed the drifting stream ``data.X_stream`` **in order**, in
    ``batch_size`` batches, each batch first scored and then trained on
    (prequential, test-then-train evaluation). Nothing is poisoned: every
    step the guard scales, every sample the gate flags, is a false alarm.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        Unfitted estimator holding the defence to evaluate; it is copied.
    data : Bunch
        As returned by :func:`~dsc_sklearn.evaluation.datasets.load_drift_stream`.
    stream, burn_in_fraction, burn_in_epochs, defence_warmup, batch_size
        As in :func:`run_stream_protocol`; the warm-up batches come from the
        concept before the drift.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``accuracy_burn_in`` (test set before the drift, after the warm-up),
        ``accuracy_drift`` and ``accuracy_plain`` (test set after the drift,
        ``data.X_test_after``, at the end of the stream: defence and plain
        twin), ``accuracy_gap`` (plain minus defence),
        ``prequential_accuracy`` and ``prequential_plain`` (the share of
        stream rows predicted right before being trained on),
        ``prequential_gap``, the per-batch ``prequential_curve``,
        ``prequential_curve_plain`` and ``drift_curve`` (mean
        ``drift_progress`` of each batch), ``flagged_fraction_drift``,
        ``scaled_fraction_drift`` (the share of the stream's optimizer steps
        the step guard scaled; NaN without a guard) and ``wall_time``.

    Examples
    --------
    >>> from dsc_sklearn import DiscrepancyAwareOnlineClassifier
    >>> from dsc_sklearn.evaluation.datasets import load_drift_stream
    >>> from dsc_sklearn.evaluation.protocol import run_concept_drift_protocol
    >>> data = load_drift_stream("sea", n_samples=600, n_stream=400, position=200,
    ...                          width=100, random_state=0)
    >>> result = run_concept_drift_protocol(
    ...     DiscrepancyAwareOnlineClassifier(), data, burn_in_epochs=1,
    ...     defence_warmup=1, random_state=0)
    >>> len(result.prequential_curve), 0.0 <= result.scaled_fraction_drift <= 1.0
    (4, True)
    """
    started = time.perf_counter()
    missing = [key for key in ("X_stream", "y_stream", "X_test_after", "y_test_after")
               if key not in data]
    if missing:
        raise ValueError(f"data has no {', '.join(missing)}: pass a Bunch from "
                         "dsc_sklearn.evaluation.datasets.load_drift_stream.")
    start = _start_online_phase(
        estimator, data, check_random_state(random_state), stream=stream,
        burn_in_fraction=burn_in_fraction, burn_in_epochs=burn_in_epochs,
        defence_warmup=defence_warmup, n_steps=0, batch_size=batch_size, plain_twin=True)
    defended, plain = start.models
    steps_before, scaled_before = defended.n_batches_seen_, defended.n_steps_scaled_
    curves = ([], [])
    sizes, drift_curve = [], []
    n_flagged = 0
    for begin in range(0, len(data.y_stream), batch_size):
        rows = slice(begin, begin + batch_size)
        X_batch, y_batch = data.X_stream[rows], data.y_stream[rows]
        for model, curve in zip((defended, plain), curves):
            curve.append(model.score(X_batch, y_batch))  # test, then train
            model.partial_fit(X_batch, y_batch)
        n_flagged += int(defended.last_flagged_.sum())
        sizes.append(len(y_batch))
        drift_curve.append(float(np.mean(data.drift_progress[rows])))
    prequential = [float(np.average(curve, weights=sizes)) for curve in curves]
    return Bunch(
        **_accuracies_after_drift(start, data.X_test_after, data.y_test_after),
        prequential_accuracy=prequential[0],
        prequential_plain=prequential[1],
        prequential_gap=prequential[1] - prequential[0],
        prequential_curve=np.asarray(curves[0]),
        prequential_curve_plain=np.asarray(curves[1]),
        drift_curve=np.asarray(drift_curve),
        flagged_fraction_drift=_ratio(n_flagged, sum(sizes)),
        scaled_fraction_drift=_guarded_ratio(defended.n_steps_scaled_ - scaled_before,
                                             defended.n_batches_seen_ - steps_before,
                                             defended),
        wall_time=time.perf_counter() - started,
    )
