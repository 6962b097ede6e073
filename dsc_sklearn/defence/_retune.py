"""Retuning mid-stream: a component built anew keeps what its predecessor learned.

When ``set_params`` changes the configuration of a stateful component (the
step guard, a threshold policy) between two ``partial_fit`` calls, the net
builds the component anew from the new configuration and starts it; then
:func:`carry_state` hands it the learned state of the one it replaces, through
their public ``state_dict()`` / ``load_state_dict()``, cut to what the new
configuration can hold. What had to be dropped is said in a
:class:`UserWarning`; a replacement by another kind of component starts
anew, with a warning when the old one had calibrated something.
"""

import logging
import warnings

import torch

from .guards import StepGuard
from .thresholds import AutoThreshold

__all__ = ["carry_state"]

logger = logging.getLogger("dsc_sklearn")


def _learned(state):
    """Whether a state holds calibration data (a window, a probe), beyond counters.

    A fixed threshold or a schedule counts updates only; replacing one
    drops nothing worth a warning.
    """
    return any(isinstance(value, int) and value > 0
               for key, value in state.items() if key.startswith("n_")) and any(
        _holds_data(value) for key, value in state.items()
        if not key.startswith("n_") and key != "generator")


def _holds_data(value):
    if isinstance(value, torch.Tensor):
        return value.numel() > 0
    if isinstance(value, dict):
        return any(_holds_data(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return value is not None


def carry_state(previous, component, name):
    """Give ``component`` the learned state of ``previous`` where it remains valid.

    Parameters
    ----------
    previous : object or None
        The component being replaced; ``None`` for the first build.
    component : object or None
        Its replacement, built and started from the new configuration.
    name : str
        The estimator's parameter, for the messages (``"step_guard"``).

    Returns
    -------
    component : object or None

    Warns
    -----
    UserWarning
        When part of the state had to be dropped to fit the new
        configuration, or when ``component`` is of another kind than
        ``previous``, which had calibrated something (a window, a probe):
        it then starts anew.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence._retune import carry_state
    >>> from dsc_sklearn.defence.thresholds import AutoThreshold
    >>> old = AutoThreshold(warmup=1)
    >>> old.update(torch.tensor([0.1, 0.3]), torch.tensor([False, False]))
    >>> new = carry_state(old, AutoThreshold(quantile=0.5, warmup=1), "threshold")
    >>> new.n_updates_, round(float(new.current()), 2)
    (1, 0.2)
    """
    if previous is None or component is None or not hasattr(previous, "state_dict"):
        return component
    state = previous.state_dict()
    if type(previous) is not type(component) or not hasattr(component, "load_state_dict"):
        if _learned(state):
            warnings.warn(
                f"{name} is now a {type(component).__name__}, another kind than the "
                f"{type(previous).__name__} it replaces: it starts anew, and what "
                f"that one had learned ({_summary(state)}) is dropped. Pass a "
                f"{type(previous).__name__} to keep it.",
                UserWarning, stacklevel=5)
        return component
    dropped = []
    if isinstance(component, StepGuard):
        state = _fit_guard_state(previous, component, state, dropped)
    elif isinstance(component, AutoThreshold):
        excess = len(state["window"]) - component.window
        if excess > 0:
            dropped.append(f"the {excess} oldest batches of the calibration window "
                           f"(window={component.window})")
    component.load_state_dict(state)
    if dropped:
        warnings.warn(
            f"{name} was retuned mid-stream and keeps what it had learned "
            f"({_summary(state)}), except {'; '.join(dropped)}, which the new "
            "configuration cannot hold.", UserWarning, stacklevel=5)
    else:
        logger.info("%s was retuned mid-stream and keeps what it had learned (%s).",
                    name, _summary(state))
    return component


def _summary(state):
    counts = [f"{key}={value}" for key, value in state.items()
              if key.startswith("n_") and isinstance(value, int)]
    if "window" in state:
        counts.append(f"{len(state['window'])} in the calibration window")
    if isinstance(state.get("probe"), dict):
        counts.append(f"{len(state['probe']['X'])} probe rows")
    return ", ".join(counts)


def _probe_kind(guard):
    return "trusted" if isinstance(guard.probe, (tuple, list)) else guard.probe


def _same_trusted_rows(previous, component):
    old, new = previous.probe_.state_dict(), component.probe_.state_dict()
    return (old["X"].shape == new["X"].shape and torch.equal(old["X"], new["X"])
            and torch.equal(old["y"], new["y"]))


def _fit_guard_state(previous, component, state, dropped):
    """The guard's state cut to the new guard's ``probe_size``, ``recent_size``, ``window``."""
    state = dict(state)
    kind = _probe_kind(component)
    if kind != _probe_kind(previous) or (kind == "trusted"
                                         and not _same_trusted_rows(previous, component)):
        if len(state["probe"]["X"]):
            dropped.append(f"the {len(state['probe']['X'])} probe rows (the probe is now "
                           f"{kind!r}, was {_probe_kind(previous)!r})")
        state["probe"], state["n_seen"] = component.probe_.state_dict(), 0
    elif kind != "trusted":
        state["probe"], state["n_seen"] = _fit_rows(
            state["probe"], state["n_seen"], previous.probe_size, component.probe_size,
            ring=kind == "recent", what="probe rows", dropped=dropped)
    state["recent"], state["n_seen_recent"] = _fit_rows(
        state["recent"], state["n_seen_recent"], previous.recent_size,
        component.recent_size, ring=True, what="recent rows", dropped=dropped)
    if component.random_state != previous.random_state:
        state["generator"] = component.generator_.get_state()  # the new seed's
    excess = len(state["window"]) - component.window
    if excess > 0:
        dropped.append(f"the {excess} oldest step discrepancies of the calibration "
                       f"window (window={component.window})")
        state["window"] = state["window"][excess:]
    if "ring" in state:
        _fit_ring(previous, component, state, dropped)
    return state


def _fit_ring(previous, component, state, dropped):
    """A cumulative guard's past models, kept while they still fit its probe and window.

    The ring holds each past model's logits of the probe rows and the
    calibration holds windows of ``k`` steps: a probe whose rows changed or
    another ``k`` makes both meaningless, and they start anew.
    """
    fresh = component.state_dict()
    same_rows = (len(state["probe"]["X"]) == len(previous.probe_.X)
                 and state["probe"]["X"] is previous.probe_.state_dict()["X"])
    if getattr(component, "k", None) != getattr(previous, "k", None) or not same_rows:
        if state["ring"] or state["cumulative_window"]:
            dropped.append(f"the {len(state['ring'])} past models and the "
                           f"{len(state['cumulative_window'])} windows of the cumulative "
                           "bound (its probe rows or k changed)")
        state["ring"], state["cumulative_window"] = fresh["ring"], fresh["cumulative_window"]


def _fit_rows(rows, n_seen, old_size, new_size, ring, what, dropped):
    """Rows of a probe, and their counter, in buffers of ``new_size`` slots.

    A ring buffer (``probe="recent"``, the recent rows) keeps its newest
    rows, oldest first, with the counter set so that the next row replaces
    the oldest; a reservoir keeps its first ``new_size`` slots (a uniform
    sample still) and, when it grows, counts its rows as the rows seen, so
    that the next rows fill the new slots.
    """
    n_rows = len(rows["X"])
    keep = min(n_rows, new_size)
    if ring:
        if new_size == old_size:
            return rows, n_seen
        order = [(n_seen - keep + i) % old_size for i in range(keep)] if old_size else []
        n_seen_kept = keep
    else:
        order = list(range(keep))
        # A reservoir that grows fills its new slots with the next rows.
        n_seen_kept = n_rows if new_size > n_rows and n_seen > n_rows else n_seen
        if keep == n_rows and n_seen_kept == n_seen:
            return rows, n_seen
    index = torch.as_tensor(order, dtype=torch.long, device=rows["X"].device)
    cut = {key: (value if value is None else value[index]) for key, value in rows.items()}
    if keep < n_rows:
        dropped.append(f"{n_rows - keep} of the {n_rows} {what} (size {new_size})")
    return cut, n_seen_kept
