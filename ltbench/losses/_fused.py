"""One fused forward/backward for the whole sigmoid family of docs/methods.md §4: sigmoid_ce, sigmoid_focal,
cb_sigmoid, cb_focal, sigmoid_eql and efl.

Every one of them is the weighted sum, over the C independent binary problems of each sample,

    L = (1/N) sum_i rho_i [ sum_{j != y_i} nu_j phi_{gamma_j}(-z_ij) + pi_i phi_{gamma_{y_i}}(z_{i,y_i}) ]

of the focal term of Lin et al. 2017 ("Focal Loss for Dense Object Detection") at the signed
logit ``t = z_t`` (``p_t = sigmoid(t)``):

    phi_g(t) = (1 - sigmoid(t)) ** g * (-log sigmoid(t)),     phi_0(t) = BCE = softplus(-t),

with per-sample weights ``rho`` (the CB weight ``w[y_i]``), per-class weights ``nu`` of the
negatives and per-sample weights ``pi`` of the positives (focal ``alpha``, the EQL weights
``q_j`` / ``r[y_i]``, EFL's ``a_t * gamma_j / gamma_b``), and a focusing exponent that is a
scalar or one per class (EFL). :func:`sigmoid_family_loss` evaluates it.

Why a hand-written autograd function: the straightforward form (a one-hot ``Y``, the signed
logits ``where(Y, z, -z)``, two ``logsigmoid`` calls, ``exp``, the weight matrix ``W``) builds
about ten ``[N, C]`` temporaries and as many again in autograd's backward, and on CPU ``log1p``
(inside ``logsigmoid``/``softplus``) and ``where`` with a mask are not vectorised: together
16-32x the time of ``ce`` at C = 1000. Here:

* every entry is first treated as a negative (``t = -z``); the ``N`` label entries are then
  replaced with ``gather``/``scatter`` (no one-hot matrix, no ``where``);
* ``s = sigmoid(z)`` and ``q = sigmoid(-z)`` give ``log sigmoid(|z|)`` with one ``log``
  (:func:`logsigmoid_abs`), hence ``BCE = softplus(z) = max(z, 0) - log sigmoid(|z|)`` and
  ``log s = min(z, 0) + log sigmoid(|z|)``, all accurate to a few ulp;
* the focal factor ``m = s ** gamma`` (``s`` is ``1 - p_t`` of a negative) is ``s`` or ``s * s``
  for gamma 1 and 2 and ``exp(gamma * log s)`` otherwise: finite values and gradients for any
  gamma >= 0, also gamma < 1 where ``pow`` has an infinite derivative at 0;
* the gradient has a closed form in the same intermediates (``B = softplus(z)``),

      d/dz [m B] = m (gamma q B + s)                                      (negatives)
      d/dz [(1 - p) ** g softplus(-z)] = -(1 - p) ** g (g p softplus(-z) + 1 - p)   (positives)

  so the forward pass computes it (when the logits require grad) in a few in-place passes over
  buffers it already has, together with the EQL/EFL statistics; backward only scales it by the
  upstream gradient (nothing at all for the usual 1 on CPU);
* on CPU the ``[N, C]`` temporaries are per-thread scratch buffers kept between calls (fresh
  multi-megabyte blocks cost page faults on every call); only the gradient is a new tensor.

The loss is computed in the dtype of ``z`` (float32, or float64 for ``gradcheck``); no op used
is subject to autocast, so it stays float32 under bf16 autocast. It is differentiable once (no
double backward), which is all the training code needs.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["logsigmoid_abs", "class_sums", "sigmoid_family_loss", "release_scratch", "StatsCallback"]

#: ``on_stats(pos [C], neg [C], k)`` during backward: per class, the sums over the batch of the
#: gradient magnitudes ``|rho_i pi_i dphi/dz|`` of the positives and ``|rho_i nu_j dphi/dz|`` of
#: the negatives, *without* the upstream factor ``k = dL_out / N`` (a 0-dim tensor, passed along:
#: the true gradient w.r.t. the logits is ``k`` times these).
StatsCallback = Callable[[Tensor, Tensor, Tensor], None]
Scalar = Union[float, Tensor]


_ONES: dict[torch.dtype, Tensor] = {}


def _cpu_one(dtype: torch.dtype) -> Tensor:
    """A shared 0-dim CPU ``1`` (``torch.sub(one, x, out=...)`` is ``1 - x`` in one pass)."""
    one = _ONES.get(dtype)
    if one is None:
        one = _ONES[dtype] = torch.ones((), dtype=dtype)
    return one


#: Logits larger than this allocate their temporaries afresh instead of keeping them (so at most
#: five buffers of this size are kept per thread; :func:`release_scratch` frees them).
SCRATCH_MAX_BYTES = 16 * 2**20


class _ScratchPool(threading.local):
    """Per-thread CPU scratch buffers shaped like the last logits seen.

    PyTorch's CPU allocator hands multi-megabyte blocks straight to ``malloc``, which returns
    them to the OS once several are free at the top of the heap, so fresh ``[N, C]`` temporaries
    cost a page fault per 4 KiB on every call (measured: more than the arithmetic at N*C = 5e5).
    The fused loss takes its temporaries from here instead; none of them outlives the call.
    """

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self.buffers: List[Tensor] = []


_POOL = _ScratchPool()


def release_scratch() -> None:
    """Free this thread's scratch buffers (they are re-created on the next CPU call)."""
    _POOL.key, _POOL.buffers = None, []


def _scratch(z: Tensor, count: int) -> List[Tensor]:
    """``count`` scratch tensors like ``z`` (same shape, strides and dtype), CPU only."""
    if z.numel() * z.element_size() > SCRATCH_MAX_BYTES:
        return [torch.empty_like(z) for _ in range(count)]
    key = (tuple(z.shape), z.stride(), z.dtype)
    if _POOL.key != key:
        _POOL.key, _POOL.buffers = key, []
    while len(_POOL.buffers) < count:
        _POOL.buffers.append(torch.empty_like(z))
    return _POOL.buffers[:count]


def _on_cpu(x: Tensor) -> bool:
    """Whether to use the CPU formulation (vectorised ops only, buffers reused); elsewhere the
    fused ``logsigmoid`` kernel and the caching allocator make the plain one the better. Under
    ``torch.compile`` (:mod:`ltbench.fastpath`) the plain one: the compiler fuses it, and the
    per-thread scratch buffers are Python state it cannot trace."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def logsigmoid_abs(x: Tensor) -> Tensor:
    """``log sigmoid(|x|) = -log1p(exp(-|x|))`` elementwise, in ``[-log 2, 0]``, as a new tensor.

    On CPU ``log1p`` is not vectorised (about 10x the time of ``log``), so this goes through
    ``s = sigmoid(x)`` and ``q = sigmoid(-x)`` (each within 3 ulp): with ``u = min(s, q) =
    sigmoid(-|x|)`` and ``v = max(s, q) = sigmoid(|x|)``,

        log sigmoid(|x|) = log(1 - u) = log v + ((1 - v) - u) / v,

    where ``(1 - v) - u``, computed exactly, is the error of ``v`` as ``1 - u`` (the neglected
    term is ``O(eps ** 2)``): a few ulp for every finite ``x`` (flushed to 0 below float32's
    normal range). Elsewhere ``F.logsigmoid(|x|)`` (one fused kernel). Not differentiable.
    """
    with torch.no_grad():
        if not _on_cpu(x):
            return F.logsigmoid(x.abs())
        return _negative_parts(x, with_q=True, need_grad=False)[2].clone()


def _negative_parts(
    z: Tensor, with_q: bool, need_grad: bool
) -> tuple[Tensor, Optional[Tensor], Tensor, Tensor, Tensor]:
    """Every entry of ``z`` taken as a negative: ``(s, q, lsa, bce, spare)`` with
    ``s = sigmoid(z)``, ``q = sigmoid(-z)`` (``None`` unless ``with_q``), ``lsa = log sigmoid(|z|)``
    (:func:`logsigmoid_abs`), ``bce = softplus(z) = max(z, 0) - lsa`` and a free buffer.

    On CPU all of them are per-thread scratch buffers (:class:`_ScratchPool`) except, with
    ``need_grad``, the one the gradient is built in: ``s`` (BCE, ``not with_q``) or ``q``.
    Without ``q`` the correction of :func:`logsigmoid_abs` uses ``w = 1 - s`` (rounded) in its
    place: ``(1 - w) - s`` is then Kahan's exact correction of ``log1p(-s)`` for ``z < 0`` and
    exactly 0 for ``z >= 0``, where ``lsa = log s`` has an absolute error below ``1.2e-7``,
    negligible next to ``z`` in ``bce = z - log s``.
    """
    if not _on_cpu(z):  # fused kernels, and a caching allocator
        s = torch.sigmoid(z)
        q = torch.sigmoid(z.neg()) if with_q else None
        lsa = F.logsigmoid(z.abs())
        return s, q, lsa, torch.clamp_min(z, 0.0).sub_(lsa), torch.empty_like(z)
    one = _cpu_one(z.dtype)
    if with_q:
        s, a, b, c, *rest = _scratch(z, 4 if need_grad else 5)
        torch.sigmoid(z, out=s)
        q = torch.neg(z, out=rest[0] if rest else torch.empty_like(z)).sigmoid_()
        u = torch.minimum(s, q, out=a)  # sigmoid(-|z|)
        v = torch.maximum(s, q, out=b)  # sigmoid(|z|)
        d = torch.sub(one, v, out=c).sub_(u)  # (1 - v) - u: both steps exact
        lsa = torch.log(v, out=u).addcdiv_(d, v)  # log v + ((1 - v) - u) / v
        bce = torch.clamp_min(z, 0.0, out=v).sub_(lsa)
        return s, q, lsa, bce, d
    a, b, c, *rest = _scratch(z, 3 if need_grad else 4)
    s = torch.sigmoid(z, out=rest[0] if rest else torch.empty_like(z))
    w = torch.sub(one, s, out=a)  # fl(1 - s)
    d = torch.sub(one, w, out=b).sub_(s)  # (1 - w) - s: exact, and 0 where s >= 1/2
    v = torch.maximum(s, w, out=c)  # sigmoid(|z|)
    lsa = torch.log(v, out=w).addcdiv_(d, v)
    bce = torch.clamp_min(z, 0.0, out=d).sub_(lsa)
    return s, None, lsa, bce, v


def class_sums(y: Tensor, values: Tensor, num_classes: int) -> Tensor:
    """``out[j] = sum_{i: y_i = j} values[i]`` (``[C]``), deterministic on every device."""
    if _on_cpu(values):
        return values.new_zeros(num_classes).index_add_(0, y, values)
    # index_add_ uses atomics on accelerators (run-to-run rounding differences): a dense
    # scatter and a column sum instead, as cheap as one elementwise pass over [N, C].
    dense = values.new_zeros(values.shape[0], num_classes)
    return dense.scatter_(1, y.unsqueeze(1), values.unsqueeze(1)).sum(0)


def _is_scalar(w: Scalar, value: float) -> bool:
    return not isinstance(w, Tensor) and w == value


def _positive_terms(xp: Tensor, gamma: Scalar, need_grad: bool) -> tuple[Tensor, Optional[Tensor]]:
    """The label entries ``xp = z[i, y_i]`` (``[N, 1]``; ``t = z``, ``p = sigmoid(z)``):
    ``phi_g(xp) = (1 - p) ** g * softplus(-xp)`` and its derivative
    ``-(1 - p) ** g * (g * p * softplus(-xp) + 1 - p)`` (``None`` unless ``need_grad``)."""
    bce = F.logsigmoid(xp).neg_()  # -log p = softplus(-x)
    xn = xp.neg()
    if _is_scalar(gamma, 0.0):
        return bce, (torch.sigmoid(xn).neg_() if need_grad else None)
    m = F.logsigmoid(xn).mul_(gamma).exp_()  # (1 - p) ** g = exp(g * log(1 - p))
    grad = None
    if need_grad:
        grad = torch.sigmoid(xp).mul_(bce).mul_(gamma).add_(torch.sigmoid(xn)).mul_(m).neg_()
    return m * bce, grad


def _fused_terms(
    z: Tensor,
    y: Tensor,
    gamma: Scalar,
    neg_weight: Scalar,
    pos_weight: Scalar,
    row_weight: Optional[Tensor],
    with_stats: bool,
    need_grad: bool,
) -> tuple[Tensor, Optional[Tensor], Optional[tuple[Tensor, Tensor]]]:
    """``(L, dL/dz, stats)`` of the module docstring's sum; the gradient (``None`` unless
    ``need_grad``) is for an upstream gradient of 1, the statistics (``None`` unless
    ``with_stats`` and ``need_grad``) are ``(pos [C], neg [C])`` of :data:`StatsCallback`."""
    N, C = z.shape
    y1 = y.unsqueeze(1)
    # Every entry as a negative (t = -z), in [N, C] buffers updated in place; the N label
    # entries are replaced afterwards.
    focal = not _is_scalar(gamma, 0.0)
    s, q, lsa, bce, spare = _negative_parts(z, with_q=focal, need_grad=need_grad)
    if not focal:
        nb = bce
        grad = s  # d softplus(z)/dz = sigmoid(z)
    else:
        assert q is not None
        if _is_scalar(gamma, 1.0):
            m = s
        elif _is_scalar(gamma, 2.0):
            m = torch.mul(s, s, out=spare)
        else:  # s ** gamma = exp(gamma * log s), log s = min(z, 0) + log sigmoid(|z|)
            m = torch.clamp_max(z, 0.0, out=spare).add_(lsa).mul_(gamma).exp_()
        grad = q
        if need_grad:  # d/dz [m B] = m (gamma q B + s)
            if isinstance(gamma, Tensor):
                torch.addcmul(s, q.mul_(gamma), bce, out=q)
            else:
                torch.addcmul(s, q, bce, value=gamma, out=q)
            q.mul_(m)
        nb = bce.mul_(m)
        del m
    del s, q, lsa, spare

    col_w, c = (neg_weight, 1.0) if isinstance(neg_weight, Tensor) else (None, float(neg_weight))
    if col_w is not None:
        nb.mul_(col_w)
    gamma_pos = gamma[y1] if isinstance(gamma, Tensor) else gamma
    pos, pos_grad = _positive_terms(z.gather(1, y1), gamma_pos, need_grad)  # [N, 1]
    pw = pos_weight.unsqueeze(1) if isinstance(pos_weight, Tensor) else pos_weight  # pi_i
    if not _is_scalar(pw, 1.0):
        pos = pos * pw
    if c == 1.0:  # the label entries take the positives' terms: one sum for both
        nb.scatter_(1, y1, pos)
        total = nb.sum() if row_weight is None else (nb.sum(1) * row_weight).sum()
    else:
        nb.scatter_(1, y1, 0.0)
        if row_weight is None:
            total = nb.sum().mul_(c).add_(pos.sum())
        else:
            total = ((nb.sum(1) * c).add_(pos.squeeze(1)) * row_weight).sum()
    total = total / max(N, 1)
    del nb, bce
    if not need_grad:
        return total, None, None

    assert pos_grad is not None
    # The weights and 1/N in one pass (two with both row and column weights).
    scale = c / max(N, 1)
    if row_weight is None:
        grad.mul_(col_w * scale if col_w is not None else scale)
        pos_grad = pos_grad * (pw / max(N, 1))
    else:
        if col_w is not None:
            grad.mul_(col_w)
        row = row_weight.unsqueeze(1)
        grad.mul_(row * scale)
        pos_grad = pos_grad * (row * pw / max(N, 1))
    stats = None
    if with_stats:
        # Negatives' derivatives are >= 0 and positives' <= 0 (weights >= 0). The label entries
        # are overwritten next, so zeroing them here changes no gradient.
        grad.scatter_(1, y1, 0.0)
        stats = (class_sums(y, pos_grad.squeeze(1).abs(), C).mul_(N), grad.sum(0).mul_(N))
    grad.scatter_(1, y1, pos_grad)
    return total, grad, stats


class _SigmoidFamily(torch.autograd.Function):
    """The sum of the module docstring. With ``need_grad`` the forward pass also computes the
    gradient (and the statistics for ``on_stats``) from the intermediates it already has;
    backward only scales it by the upstream gradient, and on CPU hands the tensor itself over
    for the usual upstream 1 (recomputing it, should a retained graph be run backward again)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        y: Tensor,
        gamma: Scalar,
        neg_weight: Scalar,
        pos_weight: Scalar,
        row_weight: Optional[Tensor],
        on_stats: Optional[StatsCallback],
        need_grad: bool,
    ) -> Tensor:
        args = (gamma, neg_weight, pos_weight, row_weight)
        total, grad, stats = _fused_terms(z, y, *args, with_stats=on_stats is not None, need_grad=need_grad)
        if need_grad:
            ctx.save_for_backward(z, y)
            ctx.args, ctx.grad, ctx.stats, ctx.on_stats = args, grad, stats, on_stats
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        z, y = ctx.saved_tensors
        if ctx.on_stats is not None:
            ctx.on_stats(*ctx.stats, grad_out / max(z.shape[0], 1))
        grad = ctx.grad
        if grad is None:  # handed over by an earlier backward pass through this (retained) graph
            grad = _fused_terms(z, y, *ctx.args, with_stats=False, need_grad=True)[1]
        nones = (None,) * 7
        if _on_cpu(grad_out) and grad_out.numel() == 1 and grad_out.item() == 1.0:
            ctx.grad = None  # the caller now owns it (and may modify it in place)
            return (grad, *nones)
        return (grad * grad_out, *nones)


def sigmoid_family_loss(
    z: Tensor,
    y: Tensor,
    *,
    gamma: Scalar = 0.0,
    neg_weight: Scalar = 1.0,
    pos_weight: Scalar = 1.0,
    row_weight: Optional[Tensor] = None,
    on_stats: Optional[StatsCallback] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """The module docstring's ``L`` (a scalar) for logits ``z [N, C]`` and int64 labels ``y [N]``.

    ``gamma``: focusing exponent, a float >= 0 or a ``[C]`` tensor (0: BCE). ``neg_weight``:
    ``nu``, a float or ``[C]``. ``pos_weight``: ``pi``, a float or ``[N]``. ``row_weight``:
    ``rho`` ``[N]`` or ``None``. Weight tensors: detached, >= 0, in ``z``'s dtype and device.
    ``on_stats`` (see :data:`StatsCallback`) runs once per backward pass through this call;
    never for an empty batch (``N = 0``), which gives a loss of 0. ``mask`` (``[N]`` 0/1, at least
    one 1): the loss of the masked-in rows alone, ``sum over them / their count``; the padded rows
    get weight 0 (no gradient, nothing in the statistics) and ``on_stats``' upstream factor is
    ``dL_out / count`` (see :meth:`ltbench.losses.LossBase.forward`).
    """
    if z.shape[0] == 0:
        # The sum over no samples, divided by N = 0, would be NaN, and so would the statistics
        # (scaled by the upstream factor dL_out / N): a zero connected to the graph instead, and
        # no ``on_stats`` call.
        return z.sum() * 0.0
    need_grad = torch.is_grad_enabled() and z.requires_grad
    if mask is not None:
        # (1/N) sum_i m_i rho_i l_i scaled by N / sum_i m_i: the normaliser counts only the real
        # rows, and so does EFL's upstream factor k = dL_out / N (dL_out is N / sum m).
        row_weight = mask if row_weight is None else row_weight * mask
        total = _SigmoidFamily.apply(z, y, gamma, neg_weight, pos_weight, row_weight, on_stats, need_grad)
        return total * (z.shape[0] / mask.sum())
    return _SigmoidFamily.apply(z, y, gamma, neg_weight, pos_weight, row_weight, on_stats, need_grad)
