"""A bounded buffer of historical weight snapshots of a torch module."""

import functools
from collections import deque
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, vmap

from .discrepancy import REFERENCES

__all__ = ["SnapshotBuffer", "call_with_state", "cast_floating", "eval_mode", "set_mode"]


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


def _plain_tree(module, tree):
    """Collect ``module`` and its submodules; False if one customises ``train``."""
    pending = [module]
    while pending:
        submodule = pending.pop()
        if not _switches_plainly(type(submodule)):
            return False
        tree.append(submodule)
        pending.extend(child for child in submodule._modules.values() if child is not None)
    return True


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
    >>> from dsc_sklearn.history import set_mode
    >>> module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    >>> set_mode(module, False)
    >>> [m.training for m in module.modules()]
    [False, False, False]
    """
    tree = []
    if not _plain_tree(module, tree):
        module.train(training)
        return
    for submodule in tree:
        submodule.__dict__["training"] = training


@contextmanager
def eval_mode(module):
    """Put ``module`` in eval mode for the block, then restore its mode.

    As ``module.eval()`` then ``module.train(was_training)``: on exit every
    submodule takes the mode ``module`` had.
    """
    was_training = module.training
    set_mode(module, False)
    try:
        yield module
    finally:
        set_mode(module, was_training)


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
    >>> from dsc_sklearn.history import call_with_state
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


class SnapshotBuffer:
    """Keep the last ``history_size`` weight snapshots of a module.

    A snapshot is a detached copy of the module's parameters and buffers,
    taken every ``snapshot_every`` training steps. Reference predictions are
    computed as :func:`torch.func.functional_call` computes them (by
    :func:`call_with_state`, which costs less per call), so the live module
    is left as it was, and all snapshots are evaluated in one vectorised call
    (the snapshots are stacked once per snapshot, as
    :func:`torch.func.stack_module_state` does, and evaluated with
    :func:`torch.func.vmap`) rather than in a Python loop.

    Parameters
    ----------
    history_size : int, default=4
        Maximum number of snapshots kept; the oldest is dropped first.
    snapshot_every : int, default=10
        Number of training steps between two snapshots.

    Attributes
    ----------
    n_steps_ : int
        Training steps counted by :meth:`maybe_snapshot`.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.history import SnapshotBuffer
    >>> module = torch.nn.Linear(3, 2)
    >>> buffer = SnapshotBuffer(history_size=2, snapshot_every=1)
    >>> buffer.snapshot(module)
    >>> with torch.no_grad():
    ...     _ = module.weight.add_(1.0)
    >>> buffer.snapshot(module)
    >>> len(buffer)
    2
    >>> buffer.reference_logits(module, torch.zeros(5, 3), "all").shape
    torch.Size([2, 5, 2])
    """

    def __init__(self, history_size=4, snapshot_every=10):
        self.history_size = history_size
        self.snapshot_every = snapshot_every
        self.n_steps_ = 0
        self._snapshots = deque(maxlen=history_size)
        self._stacked = None

    def __len__(self):
        return len(self._snapshots)

    @property
    def snapshots(self):
        """list of dict: the snapshots' state dicts, oldest first."""
        return list(self._snapshots)

    def snapshot(self, module):
        """Store a detached copy of ``module``'s parameters and buffers."""
        state = {
            name: tensor.detach().clone()
            for name, tensor in module.state_dict(keep_vars=True).items()
        }
        self._snapshots.append(state)
        self._stacked = None

    def maybe_snapshot(self, module):
        """Count one training step; snapshot when the period is reached.

        Returns
        -------
        taken : bool
            Whether a snapshot was taken.
        """
        self.n_steps_ += 1
        if self.n_steps_ % self.snapshot_every:
            return False
        self.snapshot(module)
        return True

    def reference_logits(self, module, X, reference="all", dtype=None):
        """Logits of the snapshots for ``X``, without touching ``module``.

        Parameters
        ----------
        module : torch.nn.Module
            A module of the architecture the snapshots were taken from; its
            own weights are not used and its train/eval mode is restored.
        X : torch.Tensor of shape (n_samples, n_features)
            Inputs on the snapshots' device.
        reference : {"oldest", "newest", "mean", "max", "all"}, default="all"
            ``"oldest"`` and ``"newest"`` evaluate one snapshot; the others
            evaluate every snapshot in one vectorised call.
        dtype : torch.dtype, default=None
            Evaluate with the snapshots' floating-point tensors cast to this
            type (``X`` must have it too), e.g. ``torch.float64`` for results
            that do not depend on the batch size.

        Returns
        -------
        logits : torch.Tensor of shape (n_snapshots, n_samples, n_classes)
            ``n_snapshots`` is 1 for ``"oldest"`` and ``"newest"``.
        """
        if not self._snapshots:
            raise ValueError(
                "The snapshot buffer is empty; call snapshot(module) first."
            )
        if reference not in REFERENCES:
            raise ValueError(
                f"reference must be one of {REFERENCES}, got {reference!r}."
            )
        with torch.no_grad(), eval_mode(module):
            if reference in ("oldest", "newest"):
                state = self._snapshots[0 if reference == "oldest" else -1]
                state = cast_floating(state, dtype)
                return call_with_state(module, state, X).unsqueeze(0)

            def call(state):
                return call_with_state(module, state, X)

            return vmap(call)(cast_floating(self._stacked_state(), dtype))

    def _stacked_state(self):
        if self._stacked is None:
            self._stacked = {
                name: torch.stack([state[name] for state in self._snapshots])
                for name in self._snapshots[0]
            }
        return self._stacked

    def resize(self, history_size):
        """Keep at most ``history_size`` snapshots from now on (newest kept)."""
        self.history_size = history_size
        self._snapshots = deque(self._snapshots, maxlen=history_size)
        self._stacked = None

    def to(self, device):
        """Move every snapshot to ``device`` in place and return ``self``."""
        for state in self._snapshots:
            for name, tensor in state.items():
                state[name] = tensor.to(device)
        self._stacked = None
        return self

    def state_dict(self):
        """The buffer's state as tensors and plain Python values.

        Returns
        -------
        state : dict
            ``n_steps`` (the snapshot clock), ``snapshots`` (the state dicts,
            oldest first, not copied) and, for reference, ``history_size`` and
            ``snapshot_every``. It can be saved with :func:`torch.save` and
            read back with ``torch.load(..., weights_only=True)``.

        Examples
        --------
        >>> import torch
        >>> from dsc_sklearn.history import SnapshotBuffer
        >>> buffer = SnapshotBuffer(history_size=2, snapshot_every=1)
        >>> buffer.snapshot(torch.nn.Linear(3, 2))
        >>> restored = SnapshotBuffer(history_size=2, snapshot_every=1)
        >>> restored.load_state_dict(buffer.state_dict())
        >>> len(restored), sorted(restored.snapshots[0])
        (1, ['bias', 'weight'])
        """
        return {
            "history_size": self.history_size,
            "snapshot_every": self.snapshot_every,
            "n_steps": self.n_steps_,
            "snapshots": [dict(state) for state in self._snapshots],
        }

    def load_state_dict(self, state):
        """Restore the snapshots and the clock saved by :meth:`state_dict`.

        The buffer keeps its own ``history_size`` and ``snapshot_every``;
        when it holds fewer snapshots than ``state``, the newest are kept.
        The tensors are copied as they are: move them to the module's device
        first (``torch.load(..., map_location=device)``).
        """
        self.n_steps_ = int(state["n_steps"])
        self._snapshots = deque(
            ({name: tensor.detach().clone() for name, tensor in snapshot.items()}
             for snapshot in state["snapshots"]),
            maxlen=self.history_size,
        )
        self._stacked = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_stacked"] = None
        return state
