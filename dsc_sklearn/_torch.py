"""Private torch helpers shared by the defence and the evaluation toolkit.

They do what a plain torch call does, for less overhead per call; the
training step runs each of them several times per batch, where a small
model's forward pass costs well under a millisecond.
"""

import functools
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["call_with_state", "cast_floating", "constant", "eval_mode", "set_mode",
           "to_device"]


@functools.lru_cache(maxsize=128)
def constant(device, values, dtype):
    """A cached tensor of ``values`` on ``device``; do not modify it.

    Building a tensor from Python numbers is a synchronising host-to-device
    copy on CUDA; the training step needs a few such constants per batch.

    Parameters
    ----------
    device : torch.device, str or None
    values : float or tuple of float
    dtype : torch.dtype

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn._torch import constant
    >>> constant(None, 1.5, torch.float32) is constant(None, 1.5, torch.float32)
    True
    """
    return torch.tensor(values, dtype=dtype, device=device)


def to_device(data, device, dtype=None):
    """Host data (an array, a list) as a tensor on ``device``, without waiting for it.

    ``torch.as_tensor(data, device=device)`` onto a CUDA device copies from
    pageable memory and synchronises the host with the device. Here the
    data are staged in page-locked memory and copied asynchronously, in
    stream order, so the tensor is ready for every kernel queued after it;
    torch's caching host allocator keeps the staging buffer until the copy
    is done. On other devices this is ``torch.as_tensor``.

    Examples
    --------
    >>> import numpy as np
    >>> from dsc_sklearn._torch import to_device
    >>> to_device(np.arange(3), "cpu")
    tensor([0, 1, 2])
    """
    device = torch.device(device)
    if device.type != "cuda":
        return torch.as_tensor(data, dtype=dtype, device=device)
    return torch.as_tensor(data, dtype=dtype).pin_memory().to(device, non_blocking=True)


def cast_floating(state, dtype):
    """Cast the floating-point tensors of a state dict; ``None`` keeps them."""
    if dtype is None:
        return state
    return {
        name: tensor.to(dtype) if tensor.is_floating_point() else tensor
        for name, tensor in state.items()
    }


@functools.lru_cache(maxsize=256)
def _switches_plainly(cls):
    """Whether ``cls`` keeps :class:`torch.nn.Module`'s own mode switch."""
    return (cls.train is nn.Module.train and cls.eval is nn.Module.eval
            and cls.__setattr__ is nn.Module.__setattr__)


def _plain_tree(module):
    """``module`` and its submodules, or ``None`` if one customises ``train``."""
    tree, pending = [], [module]
    while pending:
        submodule = pending.pop()
        if not _switches_plainly(type(submodule)):
            return None
        tree.append(submodule)
        pending.extend(child for child in submodule._modules.values() if child is not None)
    return tree


def set_mode(module, training):
    """``module.train(training)``, faster for modules that do not customise it.

    :meth:`torch.nn.Module.train` recurses through ``children()`` and sets
    each flag through ``Module.__setattr__``, which for a small model costs
    a third of a forward pass. When no submodule overrides ``train``,
    ``eval`` or ``__setattr__``, the flags are written directly, with the
    same result; otherwise ``module.train(training)`` is called.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn._torch import set_mode
    >>> module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    >>> set_mode(module, False)
    >>> [m.training for m in module.modules()]
    [False, False, False]
    """
    tree = _plain_tree(module)
    if tree is None:
        module.train(training)
        return
    for submodule in tree:
        submodule.__dict__["training"] = training


@contextmanager
def eval_mode(module):
    """Put ``module`` in eval mode for the block, then restore every flag.

    Each submodule gets back the mode it had, also when the block raises,
    so a module whose parts were in different modes is left as it was.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn._torch import eval_mode
    >>> module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    >>> module[1].eval()
    Dropout(p=0.5, inplace=False)
    >>> with eval_mode(module):
    ...     module.training
    False
    >>> [m.training for m in module.modules()]
    [True, True, False]
    """
    tree = _plain_tree(module)
    if tree is None:
        flags = [(submodule, submodule.training) for submodule in module.modules()]
        module.eval()
        try:
            yield module
        finally:
            for submodule, flag in flags:
                submodule.training = flag
        return
    flags = [submodule.training for submodule in tree]
    for submodule in tree:
        submodule.__dict__["training"] = False
    try:
        yield module
    finally:
        for submodule, flag in zip(tree, flags):
            submodule.__dict__["training"] = flag


def call_with_state(module, state, X):
    """``functional_call(module, state, (X,))``, with less overhead per call.

    :func:`torch.func.functional_call` builds a member accessor and looks
    for tied weights at every call, which costs about as much as a small
    model's forward pass. This swaps the tensors of ``state`` into the
    submodules' ``_parameters`` and ``_buffers`` as functional_call does,
    runs ``module(X)``, puts the module's own tensors back (also on error)
    and, like functional_call, writes back into ``state`` any tensor the
    forward pass replaced. Entries that are not parameters or buffers go
    through functional_call itself.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn._torch import call_with_state
    >>> module = torch.nn.Linear(2, 1)
    >>> state = {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}
    >>> call_with_state(module, state, torch.tensor([[1.0, 2.0]]))
    tensor([[3.]])
    >>> isinstance(module.weight, torch.nn.Parameter)
    True
    """
    slots, submodules = [], {}
    for name in state:
        path, _, leaf = name.rpartition(".")
        submodule = submodules.get(path)
        if submodule is None:
            submodule = submodules[path] = module.get_submodule(path)
        if leaf in submodule._parameters:
            slots.append((submodule._parameters, leaf, name))
        elif leaf in submodule._buffers:
            slots.append((submodule._buffers, leaf, name))
        else:
            return functional_call(module, state, (X,))
    originals = []
    try:
        for table, leaf, name in slots:
            originals.append(table[leaf])
            table[leaf] = state[name]
        return module(X)
    finally:
        for (table, leaf, name), original in zip(slots, originals):
            current, table[leaf] = table[leaf], original
            if current is not state[name]:
                state[name] = current
