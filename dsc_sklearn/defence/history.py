"""A bounded buffer of historical weight snapshots of a torch module."""

from collections import deque

import torch
from torch.func import vmap

from .._torch import call_with_state, cast_floating, eval_mode
from ._state import check_count, check_keys, check_like
from .discrepancy import REFERENCES

__all__ = ["SnapshotBuffer"]


class SnapshotBuffer:
    """Keep the last ``history_size`` weight snapshots of a module.

    A snapshot is a detached copy of the module's parameters and buffers,
    taken every ``snapshot_every`` training steps. Reference predictions are
    computed as :func:`torch.func.functional_call` computes them (by a
    leaner equivalent that costs less per call), so the live module
    is left as it was, and all snapshots are evaluated in one vectorised call
    (the snapshots are stacked once per snapshot, as
    :func:`torch.func.stack_module_state` does, and evaluated with
    :func:`torch.func.vmap`) rather than in a Python loop.

    Parameters
    ----------
    history_size : int, default=4
        Maximum number of snapshots kept; the oldest is dropped first.
    snapshot_every : int or None, default=10
        Number of training steps between two snapshots; ``None`` takes none
        (the buffer then holds what :meth:`snapshot` stores, e.g. one frozen
        historical model, as in the paper's reference code).

    Attributes
    ----------
    n_steps_ : int
        Training steps counted by :meth:`maybe_snapshot`.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.history import SnapshotBuffer
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
        if self.snapshot_every is None or self.n_steps_ % self.snapshot_every:
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

    def frozen(self, snapshots=None):
        """A copy of the buffer for a reader thread: later training does not change it.

        It shares the snapshot tensors (which are never written in place)
        but has its own list of them and its own cache, so evaluating it
        writes nothing to this buffer.

        Parameters
        ----------
        snapshots : sequence of dict, default=None
            The snapshots it holds, oldest first; ``None`` takes the ones
            this buffer holds now.

        Returns
        -------
        buffer : SnapshotBuffer
        """
        frozen = SnapshotBuffer(self.history_size, self.snapshot_every)
        frozen.n_steps_ = self.n_steps_
        # tuple() of a deque copies it in one step, with the GIL held.
        frozen._snapshots = deque(tuple(self._snapshots) if snapshots is None else snapshots,
                                  maxlen=self.history_size)
        return frozen

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
            ``n_steps`` (the snapshot clock) and ``snapshots`` (the state
            dicts, oldest first, not copied); the buffer's configuration
            (``history_size``, ``snapshot_every``) is not part of it. It can be
            saved with :func:`torch.save` and read back with
            ``torch.load(..., weights_only=True)``.

        Examples
        --------
        >>> import torch
        >>> from dsc_sklearn.defence.history import SnapshotBuffer
        >>> buffer = SnapshotBuffer(history_size=2, snapshot_every=1)
        >>> buffer.snapshot(torch.nn.Linear(3, 2))
        >>> restored = SnapshotBuffer(history_size=2, snapshot_every=1)
        >>> restored.load_state_dict(buffer.state_dict())
        >>> len(restored), sorted(restored.snapshots[0])
        (1, ['bias', 'weight'])
        """
        return {
            "n_steps": self.n_steps_,
            "snapshots": [dict(state) for state in self._snapshots],
        }

    def load_state_dict(self, state, reference=None):
        """Restore the snapshots and the clock saved by :meth:`state_dict`.

        The state is checked before anything changes, so a state that is
        refused leaves the buffer as it was. The buffer keeps its own
        ``history_size`` and ``snapshot_every`` (a state never carries
        configuration); when ``state`` holds more than ``history_size``
        snapshots, the newest are kept.

        Parameters
        ----------
        state : dict
            What :meth:`state_dict` returned: ``n_steps``, a non-negative
            int, and ``snapshots``, a non-empty list of state dicts.
        reference : dict of str to torch.Tensor, default=None
            The state dict every snapshot must match, entry for entry, in
            shape and dtype, e.g. ``module.state_dict()``; the snapshots are
            copied to its tensors' devices. ``None`` compares them with the
            newest snapshot the buffer holds (the module's weights when the
            buffer was filled from it), or, in an empty buffer, with one
            another; the tensors are then copied as they are: move them to
            the module's device first (``torch.load(...,
            map_location=device)``).

        Raises
        ------
        ValueError
            When an entry is missing, unexpected, of the wrong type, or a
            snapshot does not match the reference; the buffer is then left
            as it was.
        """
        check_keys(state, {"n_steps", "snapshots"}, self)
        n_steps = check_count(state["n_steps"], "n_steps", self)
        snapshots = state["snapshots"]
        if not isinstance(snapshots, (list, tuple)):
            raise ValueError(
                f"The state of a {type(self).__name__} holds a "
                f"{type(snapshots).__name__} where a list of snapshots belongs; the "
                "state is corrupt or was edited."
            )
        if not snapshots:
            raise ValueError(
                f"The state of a {type(self).__name__} holds no snapshot, but the "
                "defence needs at least one to compare the model with (the buffer "
                "always holds the initial weights); the state is corrupt or was "
                "edited."
            )
        if reference is None and self._snapshots:
            reference = self._snapshots[-1]
        for index, snapshot in enumerate(snapshots):
            check_like(snapshot, snapshot if reference is None else reference,
                       f"Snapshot {index} of the state of a {type(self).__name__}")
            if reference is None:
                reference = snapshot
        self._snapshots = deque(
            ({name: tensor.detach().to(reference[name].device, copy=True)
              for name, tensor in snapshot.items()}
             for snapshot in snapshots[-self.history_size:]),
            maxlen=self.history_size,
        )
        self.n_steps_ = n_steps
        self._stacked = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_stacked"] = None
        return state
