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
    alarms             list of dict (optional: files written before alarms_
                       existed load with no alarms)
    last_flagged       bool tensor
    net                module, optimizer (state dicts), history (skorch's
                       rows), state ({attribute: {"type", "state"}} for
                       each of the net's ``state_attributes``: the snapshot
                       buffer, the threshold policies, the generator, ...)

Everything that is configuration (the architecture, a threshold schedule,
the defence parameters, the optimizer's hyper-parameters) comes from the
estimator that loads the file, which must be constructed with the same
parameters; the file brings the state, and each component checks the state
it is given (``load_state_dict``), so a file cannot change a component's
configuration.

Loading never trusts the file. :func:`read_checkpoint` checks the zip
archive (every record's CRC-32) before :func:`torch.load` reads it, so an
empty, truncated or corrupt file is a :class:`ValueError` that chains the
original error; :func:`checked_state` checks every entry (types,
counts, shapes and dtypes against the module's state dict, the optimizer's
parameters) before the estimator changes, so a forged file is refused with
a :class:`ValueError` that names the entry, and the estimator is left as
it was.
"""

import io
import numbers
import os
import warnings
import zipfile
from collections import deque

import numpy as np
from sklearn.utils import Bunch
import torch

from ._alarms import check_alarms
from ._net import LOG_FIELDS, StreamHistory
from ._state import check_like
from .guards import StepGuard
from .history import SnapshotBuffer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "checked_state",
    "estimator_state",
    "load_net_state",
    "read_checkpoint",
    "warn_about_params",
]

#: Value of the ``format`` entry of a checkpoint.
FORMAT = "dsc_sklearn.DiscrepancyAwareOnlineClassifier"
#: Version of the layout written by :func:`estimator_state`.
FORMAT_VERSION = 2

# Parameters that only matter for fit() or for where the net runs: a
# checkpoint may be loaded by an estimator whose values differ.
_UNCOMPARED_PARAMS = ("device", "verbose", "random_state", "max_epochs")
_PLAIN_SCALARS = (bool, int, float, str, type(None))
# The entries of a checkpoint, and of its counters.
_ENTRIES = ("format", "format_version", "library_version", "params", "classes",
            "n_features_in", "feature_names_in", "counters", "stream_log",
            "last_flagged", "net")
_COUNTERS = ("n_batches_seen", "n_samples_seen", "n_flagged", "n_steps_scaled")
# Entries added to version 2 since; older files of that version lack them.
_OPTIONAL_ENTRIES = ("alarms",)


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


def _load_component_state(net, name, saved, source):
    """Load one state attribute; every failure is a ValueError naming it."""
    component = getattr(net, name, None)
    if saved is not None and (not isinstance(saved, dict) or set(saved) != {"type", "state"}):
        raise _corrupt(source, f"the net's {name} is saved as {_describe(saved)}, not "
                               "as an entry {'type': ..., 'state': ...}")
    kind = _kind(component)
    saved_kind = None if saved is None else saved["type"]
    if kind != saved_kind:
        raise ValueError(
            f"{source} holds a {saved_kind} as the net's {name}, but this "
            f"estimator's parameters build a {kind}. Construct the estimator with "
            "the parameters it was saved with, call load_params, then change them "
            "with set_params (a new threshold starts a fresh calibration)."
        )
    if component is None:
        return
    state = saved["state"]
    if isinstance(component, StepGuard):
        _check_guard_sizes(component, state, source)
    try:
        if isinstance(component, torch.Generator):
            expected = component.get_state()
            if not (isinstance(state, torch.Tensor) and state.dtype == expected.dtype
                    and state.shape == expected.shape):
                raise ValueError(
                    f"a generator state is a {expected.dtype} tensor of shape "
                    f"{tuple(expected.shape)}, not {_describe(state)}."
                )
            component.set_state(state.cpu())
        elif isinstance(component, SnapshotBuffer):
            component.load_state_dict(state, reference=net.module_.state_dict())
        else:
            component.load_state_dict(state)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        raise ValueError(
            f"{source} holds a state the net's {name} refuses: {exc} Save the "
            "estimator again with save_params."
        ) from exc


def _check_guard_sizes(guard, state, source):
    """Refuse guard rows that are not float32, or more than ``guard`` holds (naming the fix)."""
    sizes = (("probe", "probe_size", None if isinstance(guard.probe, (tuple, list))
              else guard.probe_size), ("recent", "recent_size", guard.recent_size))
    for entry, parameter, size in sizes:
        rows = state.get(entry) if isinstance(state, dict) else None
        X = rows.get("X") if isinstance(rows, dict) else None
        if not isinstance(X, torch.Tensor) or X.ndim != 2:
            continue  # the guard's load_state_dict refuses the shape
        if X.dtype != torch.float32:
            # A float64 probe loaded, then failed the first step (a matmul of
            # Double and Float); found by test_any_forged_entry_is_refused_....
            raise _corrupt(source, f"its step guard's {entry} rows are {X.dtype}, not the "
                                   "float32 the estimator trains on")
        if size is None or len(X) <= size:
            continue
        raise ValueError(
            f"{source} holds a step guard whose {entry} has {len(X)} rows, but this "
            f"estimator's step_guard has {parameter}={size}. Construct the estimator "
            f"with StepGuard({parameter}={len(X)}) (the size it was saved with), call "
            f"load_params, then set_params(step_guard__{parameter}={size}), which "
            f"keeps {size} of the rows."
        )


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
        "counters": {name: int(getattr(estimator, name + "_")) for name in _COUNTERS},
        "stream_log": _plain(list(estimator.stream_log_), "stream_log_"),
        "alarms": _plain(list(estimator.alarms_), "alarms_"),
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


# ---------------------------------------------------------------- read side

class _AtTheEnd(ValueError):
    """A file object read from its end: nothing to read."""


def _position(f):
    """``f.tell()``, or ``None`` for a stream that cannot tell."""
    try:
        return f.tell()
    except (AttributeError, OSError, ValueError):
        return None


def read_checkpoint(f, map_location=None, source="The checkpoint"):
    """The payload of a file written by ``save_params``, read without running code.

    The file is read once, checked as a zip archive (each record against
    the CRC-32 that :func:`torch.save` writes by default), then loaded
    with ``torch.load(..., weights_only=True)``.

    Parameters
    ----------
    f : str, os.PathLike or binary file-like object
        Read from its current position to its end.
    map_location : torch.device, default=None
        Where the tensors go, as in :func:`torch.load`.
    source : str, default="The checkpoint"
        How error messages name the file.

    Returns
    -------
    payload : object
        What the file holds; :func:`checked_state` checks it.

    Raises
    ------
    FileNotFoundError, PermissionError
        When the path names no file, or one that may not be read: these
        are left as :func:`open` raises them.
    ValueError
        For anything else that cannot be read: an empty, truncated or
        corrupt file, a directory, another zip archive, a pickle. The
        original exception is chained.
    """
    try:
        if isinstance(f, (str, os.PathLike)):
            with open(f, "rb") as file:
                data = file.read()
        else:
            position = _position(f)
            data = f.read()
            if data == b"" and position:
                raise _AtTheEnd(
                    f"{source} is a file object at position {position}, its end: "
                    "there is nothing left to read (save_params leaves a file object "
                    "at the end of what it wrote). Rewind it with f.seek(0), then "
                    "call load_params."
                )
        if not isinstance(data, bytes):
            raise TypeError(f"reading it returned a {type(data).__name__}, not bytes: "
                            "open the file in binary mode ('rb')")
        _check_archive(data)
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, MemoryError):
        raise
    except _AtTheEnd as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:
        raise ValueError(
            f"{source} is not a checkpoint written by save_params, or it is "
            f"truncated or corrupt: reading it failed with {type(exc).__name__}: {exc}. "
            "load_params reads files with torch.load(weights_only=True), which runs "
            "no code from them. A pickle or joblib file of the estimator loads with "
            "pickle.load or joblib.load, which run code from the file: use them only "
            "on files you trust."
        ) from exc


def _check_archive(data):
    """Check ``data`` as the uncompressed zip archive :func:`torch.save` writes."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        records = archive.infolist()
        compressed = [record.filename for record in records
                      if record.compress_type != zipfile.ZIP_STORED]
        if compressed:
            raise zipfile.BadZipFile(f"torch.save stores records uncompressed, but "
                                     f"{compressed[:3]} are compressed")
        # torch.save writes a CRC-32 of every record unless
        # torch.serialization.set_crc32_options(False); it then writes zeros.
        if any(record.CRC for record in records):
            for record in records:
                archive.read(record)  # BadZipFile on a CRC mismatch


# ---------------------------------------------------------------- load side

def _corrupt(source, problem):
    return ValueError(
        f"{source} is corrupt or was edited: {problem}. Save the estimator again "
        "with save_params."
    )


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{value!r}"[:80] if isinstance(value, _PLAIN_SCALARS) else (
        f"a {type(value).__name__}")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_payload(payload, source):
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{source} is not a checkpoint written by "
            "DiscrepancyAwareOnlineClassifier.save_params (its 'format' entry is "
            f"missing or not {FORMAT!r}). Load a file written by save_params, or "
            "use torch.load for plain state dicts."
        )
    version = payload.get("format_version")
    if not _is_int(version) or version < 1:
        raise _corrupt(source, f"its format version is {_describe(version)}, not an int")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source} uses checkpoint format version {version!r}, but this "
            f"version of dsc_sklearn reads versions up to {FORMAT_VERSION}. "
            "Upgrade dsc_sklearn to load it."
        )
    if version < FORMAT_VERSION:
        raise ValueError(
            f"{source} uses checkpoint format version {version!r}, written by "
            f"dsc_sklearn {payload.get('library_version')!r}; this version reads "
            f"version {FORMAT_VERSION} only. Load it with the version that wrote it, "
            "or train again."
        )
    missing = [name for name in _ENTRIES if name not in payload]
    if missing:
        raise ValueError(
            f"{source} lacks the entry {missing[0]!r}: it is incomplete or was "
            "edited. Save the estimator again with save_params."
        )
    unexpected = sorted(set(payload) - set(_ENTRIES) - set(_OPTIONAL_ENTRIES), key=repr)
    if unexpected:
        raise _corrupt(source, f"it holds the unexpected entries {unexpected}")
    if not isinstance(payload["library_version"], str):
        raise _corrupt(source, "its library_version is not a string")
    params = payload["params"]
    if not (isinstance(params, dict) and all(isinstance(name, str) for name in params)
            and all(_is_plain_param(value) for value in params.values())):
        raise _corrupt(source, "its params entry is not a dict of plain values "
                               "(numbers, strings, lists)")


def _checked_classes(entry, source):
    if not isinstance(entry, dict) or set(entry) != {"values", "dtype"}:
        raise _corrupt(source, "its classes entry is not {'values': list, 'dtype': str}")
    values, dtype = entry["values"], entry["dtype"]
    if not (isinstance(values, list) and isinstance(dtype, str) and all(
            isinstance(value, _PLAIN_SCALARS) and value is not None for value in values)):
        raise _corrupt(source, "its classes entry is not a list of plain labels and "
                               "a dtype string")
    try:
        dtype = np.dtype(dtype)
        if dtype.kind not in "biufUO":
            raise TypeError(f"{dtype} is not a dtype of class labels")
        classes = np.asarray(values, dtype=dtype)
        unique = np.unique(classes)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _corrupt(source, f"its classes cannot be read back ({exc})") from exc
    if len(classes) < 2:
        raise _corrupt(source, f"it holds the classes {values}; a classifier has at "
                               "least two")
    if dtype.kind == "f" and not np.isfinite(classes).all():
        raise _corrupt(source, f"its classes {values} hold NaN or infinity")
    if len(unique) != len(classes) or not np.array_equal(unique, classes):
        raise _corrupt(source, f"its classes {values} are not sorted and unique, as "
                               "classes_ always is")
    return classes


def _checked_features(payload, source):
    n_features = payload["n_features_in"]
    if not _is_int(n_features) or n_features < 1:
        raise _corrupt(source, f"its n_features_in is {_describe(n_features)}, not a "
                               "positive int")
    names = payload["feature_names_in"]
    if names is not None and not (
            isinstance(names, list) and len(names) == n_features
            and all(isinstance(name, str) for name in names)):
        raise _corrupt(source, f"its feature_names_in is not None nor a list of "
                               f"{n_features} strings")
    return int(n_features), names


def _checked_counters(counters, source):
    if not isinstance(counters, dict) or set(counters) != set(_COUNTERS):
        found = (f"the entries {sorted(counters, key=repr)}" if isinstance(counters, dict)
                 else _describe(counters))
        raise _corrupt(source, f"its counters are {found}, not the entries "
                               f"{list(_COUNTERS)}")
    for name in _COUNTERS:
        if not _is_int(counters[name]) or counters[name] < 0:
            raise _corrupt(source, f"its counters hold {name}={_describe(counters[name])}, "
                                   "not a non-negative int")
    values = {name: int(counters[name]) for name in _COUNTERS}
    if (max(values["n_batches_seen"], values["n_flagged"]) > values["n_samples_seen"]
            or values["n_steps_scaled"] > values["n_batches_seen"]):
        raise _corrupt(source, f"its counters {values} count more batches or flagged "
                               "samples than samples")
    return values


def _checked_stream_log(records, source):
    fields = {"step", *LOG_FIELDS}
    counts = ("step", "n_flagged", "n_correction_steps")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _corrupt(source, "its stream_log is not a list of dicts")
    for index, record in enumerate(records):
        unknown = sorted(set(record) - fields, key=repr)
        # Older files may lack fields added since; every record has a step.
        if unknown or "step" not in record:
            raise _corrupt(source, f"record {index} of its stream_log has the fields "
                                   f"{sorted(record, key=repr)}, not step and some of "
                                   f"{list(LOG_FIELDS)}")
        for name, value in record.items():
            if not (_is_int(value) and value >= 0 if name in counts else _is_number(value)):
                raise _corrupt(source, f"record {index} of its stream_log holds "
                                       f"{name}={_describe(value)}")
    return records


def _checked_last_flagged(flags, source):
    if not (isinstance(flags, torch.Tensor) and flags.dtype == torch.bool
            and flags.ndim == 1):
        raise _corrupt(source, f"its last_flagged is {_describe(flags)}, not a 1-D "
                               "bool tensor")
    return flags.cpu().numpy().astype(bool)


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


def _changed_params(estimator, saved):
    current = _comparable_params(estimator)
    return {name: (saved[name], current[name]) for name in saved
            if name in current and saved[name] != current[name]}


def warn_about_params(changed, source):
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


def _load_module(net, saved, source, changed):
    hint = ""
    if changed:
        hint = f" These parameters differ from the saved ones: {sorted(changed)}."
    try:
        check_like(saved, net.module_.state_dict(), "its module state dict")
        net.module_.load_state_dict(saved)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{source} holds a different architecture than the module this "
            "estimator builds (or the file was edited): construct it with the same "
            f"module and hidden_layer_sizes as the saved one.{hint} {exc}"
        ) from exc


def _same_ids(ids, expected):
    return (isinstance(ids, list) and all(_is_int(index) for index in ids)
            and ids == expected)


def _load_optimizer(optimizer, saved, source):
    """Load the optimizer's learned state; its hyper-parameters stay the estimator's.

    ``param_groups`` in the file (``lr``, ``momentum``, ``weight_decay``,
    ``maximize``, ...) are configuration: they are checked for the same
    parameters and otherwise ignored.
    """
    current = optimizer.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise _corrupt(source, "its optimizer entry is not {'state': ..., "
                               "'param_groups': ...}")
    groups, state = saved["param_groups"], saved["state"]
    if not (isinstance(groups, list) and len(groups) == len(current["param_groups"])
            and all(isinstance(group, dict) and _same_ids(group.get("params"), own["params"])
                    for group, own in zip(groups, current["param_groups"]))):
        raise _corrupt(source, "its optimizer's parameter groups are not those of "
                               "the module's parameters")
    params = {index: param
              for own, group in zip(current["param_groups"], optimizer.param_groups)
              for index, param in zip(own["params"], group["params"])}
    if not isinstance(state, dict):
        raise _corrupt(source, "its optimizer state is not a dict")
    for index, entries in state.items():
        if not _is_int(index) or index not in params:
            raise _corrupt(source, f"its optimizer holds a state for parameter "
                                   f"{index!r}, which the module does not have")
        if not isinstance(entries, dict):
            raise _corrupt(source, f"its optimizer state of parameter {index} is not "
                                   "a dict")
        param = params[index]
        for name, value in entries.items():
            if name == "step":
                valid = _is_number(value) or (isinstance(value, torch.Tensor)
                                              and value.numel() == 1)
            else:
                valid = value is None or (isinstance(value, torch.Tensor)
                                          and value.shape == param.shape
                                          and value.dtype == param.dtype)
            if not valid:
                raise _corrupt(source, f"its optimizer state of parameter {index} "
                                       f"holds {name!r} as {_describe(value)}, for a "
                                       f"{param.dtype} parameter of shape "
                                       f"{tuple(param.shape)}")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(source, f"torch refused its optimizer state ({exc})") from exc


def _checked_history(rows, source):
    if not (isinstance(rows, list) and all(
            isinstance(row, dict) and all(isinstance(key, str) for key in row)
            and isinstance(row.get("batches", []), list)
            and all(isinstance(batch, dict) for batch in row.get("batches", []))
            for row in rows)):
        raise _corrupt(source, "its skorch history is not a list of dicts (one per "
                               "epoch, each with a list of batch dicts)")
    return StreamHistory(rows)


def load_net_state(net, saved, source, changed):
    if not isinstance(saved, dict) or set(saved) != {"module", "optimizer", "history", "state"}:
        raise _corrupt(source, "its net entry is not {'module', 'optimizer', 'history', "
                               "'state'}")
    _load_module(net, saved["module"], source, changed)
    _load_optimizer(net.optimizer_, saved["optimizer"], source)
    history = _checked_history(saved["history"], source)
    states = saved["state"]
    if not isinstance(states, dict):
        raise _corrupt(source, "its net state is not a dict")
    unexpected = sorted(set(states) - set(net.state_attributes), key=repr)
    if unexpected:
        raise _corrupt(source, f"it holds a state for {unexpected}, which are not "
                               f"state attributes of the net {list(net.state_attributes)}")
    for name in net.state_attributes:
        _load_component_state(net, name, states.get(name), source)
    net.history = history


def checked_state(estimator, payload, source="The checkpoint"):
    """Check every entry of ``payload`` before any of it is loaded into ``estimator``.

    Whatever is wrong raises a :class:`ValueError` that names it. The
    configuration (parameters, the components' settings, the optimizer's
    hyper-parameters) is always the estimator's own: the payload only
    brings learned state.

    Parameters
    ----------
    estimator : DiscrepancyAwareOnlineClassifier
        Constructed with the parameters of the saved estimator; fitted or
        not (a fitted one must have the saved classes and features).
    payload : dict
        What :func:`estimator_state` returned, e.g. read back with
        :func:`read_checkpoint`.
    source : str, default="The checkpoint"
        How error messages name the payload.

    Returns
    -------
    state : Bunch
        ``classes``, ``n_features``, ``feature_names``, ``counters``,
        ``stream_log``, ``alarms``, ``last_flagged``, ``net`` (the net's
        entry, for :func:`load_net_state`) and ``changed`` (the parameters
        that differ from the saved ones, for :func:`warn_about_params`).
    """
    _check_payload(payload, source)
    classes = _checked_classes(payload["classes"], source)
    n_features, feature_names = _checked_features(payload, source)
    counters = _checked_counters(payload["counters"], source)
    stream_log = _checked_stream_log(payload["stream_log"], source)
    alarms = payload.get("alarms", [])
    problem = check_alarms(alarms)
    if problem:
        raise _corrupt(source, f"its alarms entry is wrong: {problem}")
    last_flagged = _checked_last_flagged(payload["last_flagged"], source)
    _check_matches_fitted(estimator, classes, n_features, source)
    return Bunch(classes=classes, n_features=n_features, feature_names=feature_names,
                 counters=counters, stream_log=stream_log, alarms=alarms,
                 last_flagged=last_flagged, net=payload["net"],
                 changed=_changed_params(estimator, payload["params"]))
