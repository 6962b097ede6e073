"""Checkpoints of a fitted classifier that load without unpickling code.

:meth:`DiscrepancyAwareOnlineClassifier.save_params` writes one file with
:func:`torch.save`; it holds only tensors and plain Python containers,
numbers, strings and booleans, so ``torch.load(path, weights_only=True)``
reads it without running any code from the file. The layout, version 2::

    format, format_version, library_version
    params             the estimator's plain parameters (lr, threshold="auto", ...)
    classes            {"values": list, "dtype": numpy dtype string}
    n_features_in      int
    feature_names_in   list of str, or None
    counters           n_batches_seen, n_samples_seen, n_flagged
    stream_log         list of dict
    last_flagged       bool tensor
    net                module, optimizer (state dicts), history (skorch's
                       rows), state ({attribute: {"type", "state"}} for
                       each of the net's ``state_attributes``: the snapshot
                       buffer, the threshold policies, the generator, ...)

Everything that is configuration (the architecture, a threshold schedule,
the defence parameters) comes from the estimator that loads the file, which
must be constructed with the same parameters; the file brings the state,
and each component checks the state it is given
(``load_state_dict``), so a file cannot change a component's configuration.
"""

import warnings
from collections import deque

import numpy as np
import torch
from skorch.history import History

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "estimator_state",
    "load_estimator_state",
]

#: Value of the ``format`` entry of a checkpoint.
FORMAT = "dsc_sklearn.DiscrepancyAwareOnlineClassifier"
#: Version of the layout written by :func:`estimator_state`.
FORMAT_VERSION = 2

# Parameters that only matter for fit() or for where the net runs: a
# checkpoint may be loaded by an estimator whose values differ.
_UNCOMPARED_PARAMS = ("device", "verbose", "random_state", "max_epochs")
_PLAIN_SCALARS = (bool, int, float, str, type(None))


# ------------------------------------------------------------- plain values

def _plain(value, where):
    """Convert ``value`` to what ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, (list, tuple, deque)):
        return [_plain(item, where) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item, where) for key, item in value.items()}
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which a weights-only "
        "checkpoint cannot store. Give the object state_dict() and "
        "load_state_dict() methods that return and accept tensors and plain "
        "Python values, or persist the estimator with pickle."
    )


def _is_plain_param(value):
    if isinstance(value, (list, tuple)):
        return all(_is_plain_param(item) for item in value)
    return isinstance(value, _PLAIN_SCALARS) and not callable(value)


def _comparable_params(estimator):
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in estimator.get_params(deep=False).items()
        if name not in _UNCOMPARED_PARAMS and _is_plain_param(value)
    }


# --------------------------------------------------------- component state

def _kind(component):
    if component is None:
        return None
    return f"{type(component).__module__}.{type(component).__qualname__}"


def _component_state(component, name):
    """The learned state of one of the net's state attributes."""
    if component is None:
        return None
    if isinstance(component, torch.Generator):
        state = component.get_state()
    elif hasattr(component, "state_dict"):
        state = component.state_dict()
    else:
        raise TypeError(
            f"The net's {name} is a {type(component).__name__}, which has no "
            "state_dict() method: save_params cannot store what it learned. Give "
            "it state_dict() and load_state_dict() methods (subclass "
            "dsc_sklearn.defence.thresholds.ThresholdPolicy for a threshold "
            "policy), or persist the estimator with pickle."
        )
    return {"type": _kind(component), "state": _plain(state, f"The net's {name}")}


def _load_component_state(component, saved, name, source):
    kind = _kind(component)
    saved_kind = saved.get("type") if isinstance(saved, dict) else None
    if kind != saved_kind:
        raise ValueError(
            f"{source} holds a {saved_kind} as the net's {name}, but this "
            f"estimator's parameters build a {kind}. Construct the estimator with "
            "the parameters it was saved with, call load_params, then change them "
            "with set_params (a new threshold starts a fresh calibration)."
        )
    if component is None:
        return
    if isinstance(component, torch.Generator):
        component.set_state(saved["state"].cpu())
    else:
        component.load_state_dict(saved["state"])


# ---------------------------------------------------------------- save side

def _classes_entry(classes):
    values = classes.tolist()
    if not all(isinstance(value, _PLAIN_SCALARS) for value in values):
        raise TypeError(
            "save_params stores the class labels as plain Python values, but "
            f"classes_ holds {sorted({type(v).__name__ for v in values})}. Use "
            "int, float, bool or str labels, or persist the estimator with pickle."
        )
    return {"values": values, "dtype": classes.dtype.str}


def estimator_state(estimator):
    """Everything a fitted classifier has learned, as a weights-only payload.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        A fitted estimator.

    Returns
    -------
    state : dict
        Tensors (on the net's device, not copied) and plain Python values;
        the layout is described in this module's docstring.
    """
    from .. import __version__

    net = estimator.net_
    feature_names = getattr(estimator, "feature_names_in_", None)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "params": _comparable_params(estimator),
        "classes": _classes_entry(estimator.classes_),
        "n_features_in": int(estimator.n_features_in_),
        "feature_names_in": None if feature_names is None else feature_names.tolist(),
        "counters": {
            "n_batches_seen": int(estimator.n_batches_seen_),
            "n_samples_seen": int(estimator.n_samples_seen_),
            "n_flagged": int(estimator.n_flagged_),
        },
        "stream_log": _plain(list(estimator.stream_log_), "stream_log_"),
        "last_flagged": torch.from_numpy(
            np.asarray(getattr(estimator, "last_flagged_", np.zeros(0, bool)), dtype=bool)
        ),
        "net": {
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "history": _plain(net.history.to_list(), "net_.history"),
            "state": {name: _component_state(getattr(net, name), name)
                      for name in net.state_attributes},
        },
    }


# ---------------------------------------------------------------- load side

def _check_payload(payload, source):
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{source} is not a checkpoint written by "
            "DiscrepancyAwareOnlineClassifier.save_params (its 'format' entry is "
            f"missing or not {FORMAT!r}). Load a file written by save_params, or "
            "use torch.load for plain state dicts."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{source} uses checkpoint format version {version!r}, but this "
            f"version of dsc_sklearn reads versions up to {FORMAT_VERSION}. "
            "Upgrade dsc_sklearn to load it."
        )


def _check_matches_fitted(estimator, classes, n_features, source):
    if not hasattr(estimator, "classes_"):
        return
    if estimator.n_features_in_ != n_features:
        raise ValueError(
            f"{source} holds a model for {n_features} features, but this "
            f"estimator was fitted on {estimator.n_features_in_}. Load it into "
            "an unfitted estimator (sklearn.base.clone(estimator)) instead."
        )
    if not np.array_equal(estimator.classes_, classes):
        raise ValueError(
            f"{source} holds a model for the classes {classes.tolist()}, but this "
            f"estimator was fitted on {estimator.classes_.tolist()}. Load it into "
            "an unfitted estimator (sklearn.base.clone(estimator)) instead."
        )


def _warn_about_params(estimator, saved, source):
    current = _comparable_params(estimator)
    changed = {name: (saved[name], current[name]) for name in saved
               if name in current and saved[name] != current[name]}
    if changed:
        listed = ", ".join(f"{name}={old!r} (now {new!r})"
                           for name, (old, new) in sorted(changed.items()))
        warnings.warn(
            f"{source} was saved by an estimator with {listed}. The state is "
            "loaded and this estimator's values are in force, as after "
            "set_params; construct the estimator with the saved parameters "
            "(torch.load(path, weights_only=True)['params']) to continue the "
            "stream exactly.",
            UserWarning,
            stacklevel=4,
        )
    return changed


def _load_net_state(net, saved, source, changed):
    hint = ""
    if changed:
        hint = f" These parameters differ from the saved ones: {sorted(changed)}."
    try:
        net.module_.load_state_dict(saved["module"])
        net.optimizer_.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{source} holds a different architecture than the module this "
            "estimator builds: construct it with the same module and "
            f"hidden_layer_sizes as the saved one.{hint} torch said: {exc}"
        ) from exc
    reference = {name: tensor.shape for name, tensor in net.module_.state_dict().items()}
    for snapshot in saved["state"]["snapshots_"]["state"]["snapshots"]:
        if {name: tensor.shape for name, tensor in snapshot.items()} != reference:
            raise ValueError(
                f"{source} holds snapshots whose tensors do not match the "
                "module's state dict; the file is corrupt or was edited."
            )
    names = set(net.state_attributes) | set(saved["state"])
    for name in sorted(names):
        _load_component_state(getattr(net, name, None), saved["state"].get(name), name,
                              source)
    net.history = History(saved["history"])


def load_estimator_state(estimator, payload, source="The checkpoint"):
    """Make ``estimator`` the fitted classifier saved in ``payload``.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        Constructed with the parameters of the saved estimator; fitted or
        not. Left as it was when loading fails.
    payload : dict
        What :func:`estimator_state` returned, e.g. read back with
        ``torch.load(path, map_location=device, weights_only=True)``.
    source : str, default="The checkpoint"
        How error messages name the payload.

    Returns
    -------
    estimator : DiscrepancyAwareOnlineClassifier
    """
    _check_payload(payload, source)
    before = dict(estimator.__dict__)
    try:
        classes = np.asarray(payload["classes"]["values"],
                             dtype=np.dtype(payload["classes"]["dtype"]))
        n_features = int(payload["n_features_in"])
        _check_matches_fitted(estimator, classes, n_features, source)
        changed = _warn_about_params(estimator, payload["params"], source)
        estimator._reset()
        estimator.classes_ = classes
        estimator.n_features_in_ = n_features
        if payload["feature_names_in"] is not None:
            estimator.feature_names_in_ = np.asarray(payload["feature_names_in"],
                                                     dtype=object)
        estimator._initialize(np.zeros((2, n_features), dtype=np.float32))
        _load_net_state(estimator.net_, payload["net"], source, changed)
        counters = payload["counters"]
        estimator.n_batches_seen_ = counters["n_batches_seen"]
        estimator.n_samples_seen_ = counters["n_samples_seen"]
        estimator.n_flagged_ = counters["n_flagged"]
        estimator.stream_log_.extend(payload["stream_log"])
        estimator.last_flagged_ = payload["last_flagged"].cpu().numpy().astype(bool)
    except BaseException as exc:
        estimator.__dict__.clear()
        estimator.__dict__.update(before)
        if isinstance(exc, KeyError):
            raise ValueError(
                f"{source} lacks the entry {exc}: it is incomplete or was edited. "
                "Save the estimator again with save_params."
            ) from exc
        raise
    return estimator
