"""Checks of saved state, shared by the ``load_state_dict`` methods and ``load_params``.

A state handed to ``load_state_dict`` may come from a file that was
truncated, edited or forged. These helpers check one piece of it and raise
a :class:`ValueError` that says what is wrong; callers check everything
before they change anything, so a refused state leaves them as they were.
"""

import numbers

import torch

__all__ = ["check_count", "check_keys", "check_like"]


def check_count(value, name, owner):
    """``value`` as an int when it is a non-negative int (not a bool).

    ``owner`` names the object whose state holds the value: a string, or
    an object whose class name is used.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"The state of {_name(owner)} holds {name}={value!r}; it must be "
            "a non-negative int. The state is corrupt or was edited."
        )
    return int(value)


def check_keys(state, expected, owner):
    """Check that ``state`` is a dict with exactly the entries ``expected``."""
    if not isinstance(state, dict) or set(state) != set(expected):
        found = (sorted(state, key=repr) if isinstance(state, dict)
                 else f"a {type(state).__name__}")
        raise ValueError(
            f"The state of {_name(owner)} has the entries {sorted(expected)}, but "
            f"the one given has {found}. The state is corrupt, was edited, or "
            "belongs to another object."
        )


def check_like(tensors, reference, what):
    """Check that ``tensors`` has the names, shapes and dtypes of ``reference``.

    Parameters
    ----------
    tensors : object
        Should be a dict of tensors, e.g. a snapshot of a module's weights.
    reference : dict of str to torch.Tensor
        What it must look like, e.g. ``module.state_dict()``.
    what : str
        How the error message names ``tensors``.
    """
    if not isinstance(tensors, dict):
        raise ValueError(
            f"{what} is a {type(tensors).__name__}, not a dict of tensors like the "
            "module's state dict; the state is corrupt or was edited."
        )
    if set(tensors) != set(reference):
        missing = sorted(set(reference) - set(tensors))
        unexpected = sorted(set(tensors) - set(reference), key=repr)
        raise ValueError(
            f"{what} does not have the entries of the module's state dict (missing "
            f"{missing}, unexpected {unexpected}); the state is corrupt, was "
            "edited, or belongs to another architecture."
        )
    for name, expected in reference.items():
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"{what} holds a {type(tensor).__name__} as {name!r}, where the "
                "module has a tensor; the state is corrupt or was edited."
            )
        if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
            raise ValueError(
                f"{what} holds {name!r} with shape {tuple(tensor.shape)} and dtype "
                f"{tensor.dtype}, where the module has shape {tuple(expected.shape)} "
                f"and dtype {expected.dtype}; the state is corrupt, was edited, or "
                "belongs to another architecture."
            )


def _name(owner):
    if isinstance(owner, str):
        return owner
    name = type(owner).__name__
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"
