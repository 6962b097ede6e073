"""What read-only calls run on, so that they never touch the trained module.

A thread that predicts while another trains cannot use the trained module
itself: training swaps snapshot weights into it and flips its train/eval
flags, and a forward pass that did either for its own use would change
what the other thread computes. A read-only call runs instead on this
thread's own copy of the module, in eval mode, with the weights passed in
(:func:`~dsc_sklearn._torch.call_with_state` on the copy), or, for a
module that computes the same function in both modes, on the module
itself without writing anything to it.
"""

import copy
import threading
import weakref

import torch

__all__ = ["private_module"]

_LOCAL = threading.local()


def _structure(module):
    """A deep copy of ``module`` whose parameters and persistent buffers are empty.

    Their values are passed in at each call, and the module's own may be
    snapshot tensors that a training step swapped in (batched ones, under
    vmap, cannot be copied at all), so they are not copied.
    """
    memo = {id(tensor): torch.empty(0)
            for tensor in module.state_dict(keep_vars=True).values()}
    return copy.deepcopy(module, memo)


def private_module(module, lock=None):
    """This thread's eval-mode copy of ``module``, made once per thread and module.

    Its own weights are never used: callers pass the weights in. The copy
    lives as long as ``module`` does (a weak reference keys it), and only
    the thread that made it ever uses it.

    Parameters
    ----------
    module : torch.nn.Module
    lock : lock, default=None
        Held to copy the module again when the copy failed (a training step
        changed the module's tensors while they were being read).

    Returns
    -------
    copy : torch.nn.Module
        In eval mode, without gradients.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence._serving import private_module
    >>> module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    >>> copy = private_module(module)
    >>> copy is private_module(module), copy is module
    (True, False)
    >>> copy.training, module.training
    (False, True)
    """
    copies = getattr(_LOCAL, "copies", None)
    if copies is None:
        copies = _LOCAL.copies = weakref.WeakKeyDictionary()
    private = copies.get(module)
    if private is None:
        try:
            private = _structure(module)
        except Exception:
            if lock is None:
                raise
            with lock:
                private = _structure(module)
        for parameter in private.parameters():
            parameter.grad = None
            parameter.requires_grad_(False)
        copies[module] = private.eval()
    return private
