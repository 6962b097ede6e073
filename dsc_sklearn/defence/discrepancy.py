"""Memorization discrepancy: stateless torch functions.

The memorization discrepancy of a sample is the Kullback-Leibler divergence
``KL(p_ref(x) || p_cur(x))`` between the class probabilities of a *historical*
(reference) model and of the current model, both computed with a softmax at
temperature 1 [1]_. Every function here works on logits and is batched over
an optional leading snapshot axis, so the discrepancies against all
snapshots of a :class:`~dsc_sklearn.defence.history.SnapshotBuffer` come out of one
call.

References
----------
.. [1] Zhu, J., Guo, X., Yao, J., Du, C., He, L., Yuan, S., Liu, T., Wang, L.,
   Han, B. "Exploring Model Dynamics for Accumulative Poisoning Discovery".
   ICML 2023. https://arxiv.org/abs/2306.03726
"""

import torch
from torch.nn.functional import cross_entropy, log_softmax

from .._torch import constant

__all__ = [
    "REFERENCES",
    "STATISTICS",
    "NonFiniteError",
    "decision_statistic",
    "mark_non_finite",
    "mark_out_of_range",
    "memorization_discrepancy",
    "reduce_snapshots",
    "weighted_mean",
]

#: Ways of turning the discrepancies against several snapshots into one value.
REFERENCES = ("oldest", "newest", "mean", "max", "all")


def _class_dim(logits):
    """The axis the classes should lie on while the divergence is computed.

    On the CPU, a softmax over a short last axis (a few classes) runs row by
    row and costs several times more than the rest of the divergence; over
    the classes of a transposed view it runs vectorised across samples,
    about four times faster, with results equal to float32 rounding.
    """
    n_samples, n_classes = logits.shape[-2:]
    if (logits.device.type == "cpu" and logits.dtype == torch.float32
            and n_classes <= 16 and n_samples >= 64):
        return -2
    return -1


def memorization_discrepancy(reference_logits, current_logits):
    """Per-sample ``KL(p_ref || p_cur)`` computed from logits.

    Both distributions come from a log-softmax over the last axis, so large
    logits neither overflow nor lose precision.

    Parameters
    ----------
    reference_logits : torch.Tensor of shape (n_samples, n_classes) or \
            (n_snapshots, n_samples, n_classes)
        Logits of the historical model(s).
    current_logits : torch.Tensor of shape (n_samples, n_classes)
        Logits of the current model; broadcast over the snapshot axis.

    Returns
    -------
    discrepancy : torch.Tensor of shape (n_samples,) or (n_snapshots, n_samples)
        Non-negative divergence per sample (and per snapshot).

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.discrepancy import memorization_discrepancy
    >>> current = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> memorization_discrepancy(current, current)
    tensor([0., 0.])
    >>> reference = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    >>> memorization_discrepancy(reference, current).round(decimals=4)
    tensor([1.5232, 0.0000])
    """
    dim = _class_dim(current_logits)
    if dim == -2:
        reference_logits = reference_logits.transpose(-1, -2)
        current_logits = current_logits.transpose(-1, -2)
    log_p_ref = log_softmax(reference_logits, dim=dim)
    log_p_cur = log_softmax(current_logits, dim=dim)
    p_ref = log_p_ref.exp()
    # 0 * log 0 = 0: a class the reference rules out contributes nothing.
    # In place on fresh tensors whose values no backward pass needs.
    terms = (p_ref * (log_p_ref - log_p_cur)).masked_fill_(p_ref == 0, 0.0)
    kl = terms.sum(dim=dim)
    # Rounding can push a zero divergence a hair below zero.
    return kl.clamp_min_(0.0)


def reduce_snapshots(discrepancy, reference):
    """Combine the discrepancies against several snapshots.

    Parameters
    ----------
    discrepancy : torch.Tensor of shape (n_snapshots, n_samples)
        Discrepancy against each snapshot, oldest snapshot first.
    reference : {"oldest", "newest", "mean", "max", "all"}
        ``"oldest"`` and ``"newest"`` pick one snapshot, ``"mean"`` and
        ``"max"`` reduce over snapshots, ``"all"`` keeps one column per
        snapshot.

    Returns
    -------
    reduced : torch.Tensor of shape (n_samples,) or (n_samples, n_snapshots)
        The reduced discrepancy (``"all"``: transposed so rows are samples).

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.discrepancy import reduce_snapshots
    >>> d = torch.tensor([[0.1, 0.4], [0.3, 0.2]])
    >>> reduce_snapshots(d, "max")
    tensor([0.3000, 0.4000])
    >>> reduce_snapshots(d, "all").shape
    torch.Size([2, 2])
    """
    if reference == "oldest":
        return discrepancy[0]
    if reference == "newest":
        return discrepancy[-1]
    if reference == "mean":
        return discrepancy.mean(dim=0)
    if reference == "max":
        return discrepancy.amax(dim=0)
    if reference == "all":
        return discrepancy.T
    raise ValueError(
        f"reference must be one of {REFERENCES}, got {reference!r}."
    )


def decision_statistic(discrepancy):
    """Reduce a ``(n_samples,)`` or ``(n_samples, n_snapshots)`` discrepancy.

    With one column per snapshot (``reference="all"``) a sample is as
    suspicious as its largest discrepancy.
    """
    return discrepancy.amax(dim=1) if discrepancy.ndim == 2 else discrepancy


def _discrepancy(current_logits, reference_logits, y, reference):
    discrepancy = memorization_discrepancy(reference_logits, current_logits)
    return decision_statistic(reduce_snapshots(discrepancy, reference))


def _loss(current_logits, reference_logits, y, reference):
    return cross_entropy(current_logits, y, reduction="none")


def _excess_loss(current_logits, reference_logits, y, reference):
    return (cross_entropy(current_logits, y, reduction="none")
            - cross_entropy(reference_logits[0], y, reduction="none"))


#: Per-sample statistics a gate can threshold, by name. Each is called as
#: ``statistic(current_logits, reference_logits, y, reference)`` with the
#: current model's eval-mode logits ``(n_samples, n_classes)``, the
#: snapshots' ``(n_snapshots, n_samples, n_classes)``, the encoded labels and
#: the ``reference`` in force, and returns one value per sample:
#:
#: - ``"discrepancy"``: the memorization discrepancy, reduced over the
#:   snapshots by ``reference`` (the largest column with ``"all"``);
#: - ``"loss"``: the current model's cross-entropy;
#: - ``"excess_loss"``: the current model's cross-entropy minus the
#:   reference snapshot's. A benign shift raises both, a poison crafted
#:   against the current model mostly the current one's.
STATISTICS = {
    "discrepancy": _discrepancy,
    "loss": _loss,
    "excess_loss": _excess_loss,
}


# ------------------------------------------------------- finiteness checks

class NonFiniteError(ValueError):
    """A training step produced NaN or an infinity.

    Raised (by the step guard, or by the estimator once per call) when the
    loss, the gate statistics, the step guard's measurements or the weights
    after an optimizer step are not finite; the estimator then restores its
    state as it was before the call and raises a :class:`ValueError` that
    names the batch.
    """


_NON_FINITE_CHECK = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)


def mark_non_finite(found, tensors):
    """Set the 0-d float tensor ``found`` to 1 if any of ``tensors`` is not finite.

    The check stays on the device (no host synchronisation): ``found`` is
    read later, once per call. It is sticky: a ``found`` already at 1 stays
    at 1. It runs the fused kernel :class:`torch.amp.GradScaler` uses to
    find infinite gradients (with a scale of 1, so nothing is written to
    ``tensors``), or a plain ``isfinite`` per tensor when torch lacks it.

    Parameters
    ----------
    found : torch.Tensor
        A 0-d float32 tensor on the tensors' device.
    tensors : list of torch.Tensor
        Floating-point tensors; others are skipped.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.discrepancy import mark_non_finite
    >>> found = torch.zeros(())
    >>> mark_non_finite(found, [torch.ones(3)])
    >>> float(found)
    0.0
    >>> mark_non_finite(found, [torch.tensor([1.0, float("nan")])])
    >>> float(found)
    1.0
    """
    tensors = [tensor.detach() for tensor in tensors
               if tensor is not None and tensor.is_floating_point()]
    if not tensors:
        return
    if _NON_FINITE_CHECK is not None and all(t.device == found.device for t in tensors):
        _NON_FINITE_CHECK(tensors, found, constant(found.device, 1.0, found.dtype))
        return
    with torch.no_grad():  # pragma: no cover - only without the fused kernel
        bad = torch.stack([~t.isfinite().all() for t in tensors]).any()
        found.copy_(torch.maximum(found, bad.to(found)))


def mark_out_of_range(found, parameters):
    """Set ``found`` to 1 if a parameter is not finite or its square overflows.

    That is, if a value's magnitude is ``sqrt(finfo.max)`` or more (2**64,
    about 1.8e19, in float32): such a weight is finite, but the next
    forward pass overflows. Without a host synchronisation, and without
    allocating: the fused kernel of :func:`mark_non_finite` checks the
    parameters and scales them by 2**64 in place, checks them again
    (infinite now when they were out of range) and scales them back by
    2**-64. Scaling by a power of two is exact, so a parameter in range
    comes back bit for bit; one out of range may not, but the estimator
    then restores the weights it had before the call.

    Parameters
    ----------
    found : torch.Tensor
        A 0-d float32 tensor on the parameters' device.
    parameters : list of torch.Tensor
        The module's parameters (float32, or another floating dtype whose
        range the scale also fits: float64's square root of its largest
        value is far above 2**64, so there the check is for 2**(-64) times
        that range).

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.discrepancy import mark_out_of_range
    >>> found, weight = torch.zeros(()), torch.tensor([1e19, -3.5, 1e-45])
    >>> before = weight.clone()
    >>> mark_out_of_range(found, [weight])
    >>> float(found), torch.equal(weight, before)
    (0.0, True)
    >>> mark_out_of_range(found, [torch.tensor([2e19])])
    >>> float(found)
    1.0
    """
    tensors = [param.detach() for param in parameters if param.is_floating_point()]
    if not tensors:
        return
    if _NON_FINITE_CHECK is None or any(t.device != found.device for t in tensors):
        with torch.no_grad():  # pragma: no cover - only without the fused kernel
            mark_non_finite(found, torch._foreach_mul(tensors, tensors))
        return
    with torch.no_grad():
        _NON_FINITE_CHECK(tensors, found, constant(found.device, 2.0 ** 64, found.dtype))
        _NON_FINITE_CHECK(tensors, found, constant(found.device, 2.0 ** -64, found.dtype))


def weighted_mean(values, weight=None):
    """``values.mean()``, or the mean weighted by ``weight`` along the first axis.

    A zero total weight gives 0, never NaN.

    Examples
    --------
    >>> import torch
    >>> from dsc_sklearn.defence.discrepancy import weighted_mean
    >>> float(weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0])))
    1.5
    >>> float(weighted_mean(torch.tensor([1.0]), torch.tensor([0.0])))
    0.0
    """
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    total = weight.sum().clamp_min(torch.finfo(values.dtype).tiny)
    return (values * weight).sum() / total
