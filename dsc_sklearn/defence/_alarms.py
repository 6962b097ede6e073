"""Alarms: the episodes in which the defence intervened, derived from the stream log.

Each training step's record (:data:`~dsc_sklearn.defence._net.LOG_FIELDS`)
says whether the defence acted on it; this module turns those records into
*interventions* (one per step that was acted on) and groups them into
*episodes*, the estimator's ``alarms_``. An operator learns of an episode
from a WARNING on the ``logging`` logger ``"dsc_sklearn"`` when it starts,
and of every intervention from the skorch callback event
``on_intervention``.
"""

import contextlib
import logging
import math

__all__ = [
    "ALARM_FIELDS",
    "ALARM_KINDS",
    "EPISODE_GAP",
    "FLAGGED_FRACTION",
    "MAX_ALARMS",
    "announce",
    "check_alarms",
    "held_back",
    "interventions",
    "record_interventions",
]

#: The logger the alarms are written to.
logger = logging.getLogger("dsc_sklearn")

#: The kinds of intervention, from the mildest to the most severe. An
#: episode's kind is the most severe of its steps'.
ALARM_KINDS = ("flagged", "pulled back", "refused", "rewound")

#: The fields of an episode's record in ``alarms_``.
ALARM_FIELDS = ("first_step", "last_step", "kind", "n_steps", "peak_step",
                "statistic", "bound")

#: Steps without intervention that end an episode: an intervention at most
#: this many steps after the last one continues its episode.
EPISODE_GAP = 5

#: A step is a ``"flagged"`` intervention when the gate flags more than this
#: fraction of its rows: ten times the rate at which the default ``"auto"``
#: threshold (its 0.99 quantile) flags rows of a clean stream.
FLAGGED_FRACTION = 0.1

#: Number of episodes kept in ``alarms_``.
MAX_ALARMS = 1_000


def _float(value):
    return math.nan if value is None else float(value)


def interventions(records, n_rows):
    """The steps of ``records`` that the defence acted on.

    Parameters
    ----------
    records : list of dict
        Stream-log records (``step`` and the :data:`LOG_FIELDS`).
    n_rows : list of int
        The rows each step trained on (or tried to).

    Returns
    -------
    interventions : list of dict
        One ``{"step", "kind", "statistic", "bound"}`` per step acted on, in
        order. A step is ``"rewound"`` when its record says so (a
        ``rewound`` field, set by a guard that undoes earlier steps),
        ``"refused"`` when the step guard kept none of it (``step_scale``
        0), ``"pulled back"`` when it kept part of it, and ``"flagged"``
        when the gate flagged more than :data:`FLAGGED_FRACTION` of its
        rows. The statistic and the bound are the step discrepancy and the
        guard's bound for the guard's kinds, and the largest discrepancy of
        the batch and the threshold for ``"flagged"``.
    """
    found = []
    for record, rows in zip(records, n_rows):
        scale = record.get("step_scale", math.nan)
        if record.get("rewound"):
            kind = "rewound"
        elif scale == 0:
            kind = "refused"
        elif scale < 1:
            kind = "pulled back"
        elif rows and record.get("n_flagged", 0) > FLAGGED_FRACTION * rows:
            kind = "flagged"
        else:
            continue
        if kind == "flagged":
            statistic, bound = record.get("max_discrepancy"), record.get("threshold")
        else:
            statistic, bound = record.get("step_discrepancy"), record.get("step_bound")
        found.append({"step": int(record["step"]), "kind": kind,
                      "statistic": _float(statistic), "bound": _float(bound)})
    return found


def _excess(intervention):
    """How far the statistic went past the bound (the peak is the largest)."""
    statistic, bound = intervention["statistic"], intervention["bound"]
    if math.isnan(statistic):
        return -math.inf
    return statistic / bound if bound > 0 and math.isfinite(bound) else statistic


def _is_new_peak(intervention, episode):
    rank, peak = ALARM_KINDS.index(intervention["kind"]), ALARM_KINDS.index(episode["kind"])
    if rank != peak:
        return rank > peak
    current = {"statistic": episode["statistic"], "bound": episode["bound"]}
    return _excess(intervention) > _excess(current)


def record_interventions(alarms, found):
    """Add interventions to the episodes of ``alarms``; return the events to announce.

    An intervention continues the last episode when it comes at most
    :data:`EPISODE_GAP` steps after its last step, and starts a new one
    otherwise. The last episode is replaced, never changed in place, so a
    copy of the list taken before the call still holds the episodes as
    they were.

    Parameters
    ----------
    alarms : collections.deque of dict
        The estimator's ``alarms_``, updated in place.
    found : list of dict
        What :func:`interventions` returned.

    Returns
    -------
    events : list of tuple
        ``(intervention, episode, started)`` per intervention, where
        ``episode`` is the episode's record after it and ``started`` says
        whether it opened the episode.
    """
    events = []
    for intervention in found:
        step = intervention["step"]
        last = alarms[-1] if alarms else None
        started = last is None or step - last["last_step"] > EPISODE_GAP
        if started:
            episode = {"first_step": step, "last_step": step, "kind": intervention["kind"],
                       "n_steps": 1, "peak_step": step,
                       "statistic": intervention["statistic"],
                       "bound": intervention["bound"]}
            alarms.append(episode)
        else:
            episode = dict(last, last_step=step, n_steps=last["n_steps"] + 1)
            if _is_new_peak(intervention, last):
                episode.update(kind=intervention["kind"], peak_step=step,
                               statistic=intervention["statistic"],
                               bound=intervention["bound"])
            alarms[-1] = episode
        events.append((intervention, episode, started))
    return events


def announce(net, events, owner):
    """Log each episode that starts, and send every intervention to the callbacks.

    Parameters
    ----------
    net : skorch.NeuralNet
        Its callbacks (``callbacks_``) that define ``on_intervention`` get
        ``on_intervention(net, step=..., kind=..., statistic=..., bound=...,
        episode=...)`` per intervention, with a copy of the episode's record.
    events : list of tuple
        What :func:`record_interventions` returned.
    owner : str
        How the WARNING names the estimator.
    """
    for intervention, episode, started in events:
        if started:
            logger.warning(
                "%s: the defence %s step %d (%s %.4g, bound %.4g); an alarm episode "
                "starts, recorded in alarms_.", owner, _verb(intervention["kind"]),
                intervention["step"], _statistic(intervention["kind"]),
                intervention["statistic"], intervention["bound"])
        for _, callback in net.callbacks_:
            handler = getattr(callback, "on_intervention", None)
            if handler is not None:
                handler(net, **intervention, episode=dict(episode))


def _verb(kind):
    return {"flagged": "flagged the rows of", "pulled back": "pulled back",
            "refused": "refused", "rewound": "rewound to before"}[kind]


def _statistic(kind):
    return "largest discrepancy" if kind == "flagged" else "step discrepancy"


def check_alarms(alarms):
    """Whether ``alarms`` is a list of episode records (for loading a checkpoint).

    Returns
    -------
    problem : str or None
        What is wrong, or ``None``.
    """
    if not isinstance(alarms, list):
        return "it is not a list"
    for index, episode in enumerate(alarms):
        if not isinstance(episode, dict) or set(episode) != set(ALARM_FIELDS):
            return f"episode {index} does not have the fields {list(ALARM_FIELDS)}"
        if episode["kind"] not in ALARM_KINDS:
            return f"episode {index} has the kind {episode['kind']!r}"
        steps = [episode[name] for name in ("first_step", "last_step", "n_steps", "peak_step")]
        if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0
                   for value in steps):
            return f"episode {index} has steps {steps} that are not counts"
        if not all(isinstance(episode[name], float) for name in ("statistic", "bound")):
            return f"episode {index} has a statistic or bound that is not a float"
    return None


def _drop(record):
    return False


@contextlib.contextmanager
def held_back():
    """No alarm line reaches the ``"dsc_sklearn"`` logger's handlers in the block.

    A filter on the logger, added and removed (the logger's level is left
    alone, so blocks in several threads do not undo each other); alarms
    are still recorded in ``alarms_``.
    """
    logger.addFilter(_drop)
    try:
        yield
    finally:
        logger.removeFilter(_drop)
