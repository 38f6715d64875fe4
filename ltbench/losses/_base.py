"""Shared machinery of the loss zoo (docs/methods.md §4): validation, the loss base class, per-class
weights for DRW, and the gradient tap that stateful losses use to collect statistics.

Every loss takes raw logits ``z [N, C]`` and integer labels ``y [N]`` and returns a scalar.
It computes in float32 (float64 when given float64 logits, so ``gradcheck`` works), which
keeps bf16 autocast safe.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable, ClassVar, Dict, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._fused import class_sums

CountsLike = Union[Sequence[int], Tensor]

__all__ = [
    "CountsLike",
    "LossBase",
    "StatefulLoss",
    "ClassWeightMixin",
    "as_class_counts",
    "check_real",
    "check_alpha",
    "one_hot",
    "supports_mask",
    "masked_mean",
    "weighted_cross_entropy",
]


# --------------------------------------------------------------------------- validation


def as_class_counts(class_counts: CountsLike) -> Tensor:
    """Validate training counts per class and return them as a float64 CPU tensor."""
    try:
        # float64 from the start: a list like [1e300, 1] would overflow float32's inference.
        if isinstance(class_counts, Tensor):
            counts = class_counts.detach().to("cpu", torch.float64)
        else:
            counts = torch.as_tensor(class_counts, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"class_counts must be a sequence of positive numbers, got {class_counts!r}") from exc
    if counts.ndim != 1:
        raise ValueError(f"class_counts must be 1-D, got shape {tuple(counts.shape)}")
    if counts.numel() < 2:
        raise ValueError(
            f"class_counts must have at least 2 classes, got {counts.numel()} "
            f"(class_counts={counts.tolist()})"
        )
    bad = ~(torch.isfinite(counts) & (counts > 0))
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        raise ValueError(
            f"class_counts must be finite and > 0 for every class, got class_counts[{idx}]="
            f"{counts[idx].item():g}"
        )
    return counts


def check_real(
    name: str,
    value: Any,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is a finite real in the given interval."""
    lo_br, hi_br = ("(" if low_open else "["), (")" if high_open else "]")
    valid = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number in {valid}, got {name}={value!r}")
    v = float(value)
    if (low is not None and (v < low or (low_open and v == low))) or (
        high is not None and (v > high or (high_open and v == high))
    ):
        raise ValueError(f"{name} must be in {valid}, got {name}={value!r}")
    return v


def check_alpha(value: Any) -> float:
    """Focal ``alpha``: in [0, 1], or -1 to disable the positive/negative balancing."""
    if not isinstance(value, bool) and isinstance(value, Real) and float(value) == -1.0:
        return -1.0
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] or -1 (disabled), got alpha={value!r}")
    return float(value)


def supports_mask(loss: nn.Module) -> bool:
    """Whether ``loss`` takes a sample mask (its ``compute`` has a ``mask`` keyword; see
    :meth:`LossBase.forward`)."""
    import inspect

    compute = getattr(loss, "compute", None)
    if compute is None:
        return False
    try:
        return "mask" in inspect.signature(compute).parameters
    except (TypeError, ValueError):
        return False


def masked_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``values.mean()``; with a 0/1 ``mask``, ``sum_i m_i v_i / sum_i m_i``: the mean over the
    masked-in samples (padding excluded from the sum and the count)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum()


def weighted_cross_entropy(z: Tensor, y: Tensor, weight: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
    """``F.cross_entropy(z, y, weight=weight)`` (the plain mean, or PyTorch's weighted mean
    ``sum_i w[y_i] CE_i / sum_i w[y_i]``); with a 0/1 ``mask`` both sums run over the masked-in
    samples only."""
    import torch.nn.functional as F

    if mask is None:
        return F.cross_entropy(z, y, weight=weight)
    ce = F.cross_entropy(z, y, weight=weight, reduction="none")  # w[y_i] * CE_i
    norm = mask if weight is None else weight[y] * mask
    return (ce * mask).sum() / norm.sum()


def one_hot(targets: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``Y [N, C]``; a comparison rather than ``F.one_hot`` (which syncs on some devices)."""
    classes = torch.arange(num_classes, device=targets.device)
    return (targets.unsqueeze(1) == classes).to(dtype)


def _all_reduce_sum(t: Tensor) -> Tensor:
    """Sum over processes under DDP (docs/methods.md §4); a no-op on a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


# --------------------------------------------------------------------------- base class


class LossBase(nn.Module):
    """Base of every loss: checks inputs, picks the compute dtype, calls :meth:`compute`.

    Subclasses set ``uses_sigmoid`` (the engine then initialises the classifier bias to
    ``-log(C - 1)``, docs/methods.md §2) and ``stateful`` (gradient statistics in buffers).
    """

    uses_sigmoid: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def __init__(self, class_counts: CountsLike) -> None:
        super().__init__()
        counts = as_class_counts(class_counts)
        self.num_classes: int = counts.numel()
        # Non-persistent: derived from the constructor argument, not training state.
        self.register_buffer("class_counts", counts.float(), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The loss of a batch (docs/methods.md §4); an empty batch (N = 0) gives 0.

        docs/methods.md §4 asks for a finite scalar and does not define N = 0; 0 is the sum over no samples.
        An empty batch (a rank's shard or a sampler's last batch) must not turn the mean into
        0/0 = NaN; the zero stays connected to ``logits`` so that backward still reaches every
        parameter (zero gradients; DDP expects each one to take part). :meth:`compute` is not
        called for it, so stateful losses neither tap the gradient nor touch their statistics.

        ``mask`` (``[N]``, 1 for the samples that count, 0 for padding; at least one 1): the loss,
        its gradient and a stateful loss's statistics are those of the batch of the masked-in
        samples alone (every normaliser counts only them); the padded rows get zero gradient.
        This is how :mod:`ltbench.fastpath` pads the last partial batch to a static shape. Losses
        whose :meth:`compute` takes a ``mask`` keyword support it (:func:`supports_mask`).
        """
        z, y = self._prepare(logits, targets)
        if mask is not None:
            if mask.shape != y.shape:
                raise ValueError(f"mask must be [N={y.shape[0]}], got shape {tuple(mask.shape)}")
            if not torch.compiler.is_compiling() and not supports_mask(self):
                raise ValueError(f"loss {type(self).__name__} takes no sample mask (its compute() has no mask "
                                 "keyword): it cannot train on a padded batch")
            return self.compute(z, y, mask=mask.to(z.dtype))
        if z.shape[0] == 0:
            return z.sum() * 0.0
        return self.compute(z, y)

    def compute(self, z: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The loss on checked logits ``z`` (float32/64) and int64 labels ``y``. A loss that
        accepts a keyword ``mask`` (``[N]`` 0/1 in ``z``'s dtype, or None) supports padded batches
        (:meth:`forward`); the helpers :func:`masked_mean` and :func:`weighted_cross_entropy`
        give the normalisation over the masked-in samples."""
        raise NotImplementedError

    def statistics(self) -> Dict[str, Tensor]:
        """Tensors worth plotting over training (empty for stateless losses)."""
        return {}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"

    def _prepare(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        C = self.num_classes
        if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
            raise ValueError("logits and targets must be tensors")
        if logits.ndim != 2:
            raise ValueError(f"logits must be 2-D [N, C], got shape {tuple(logits.shape)}")
        if logits.shape[1] != C:
            raise ValueError(
                f"logits have {logits.shape[1]} classes (shape {tuple(logits.shape)}) but "
                f"class_counts has {C}"
            )
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(
                f"targets must be 1-D with N={logits.shape[0]} entries, got shape "
                f"{tuple(targets.shape)}"
            )
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
        if not logits.dtype.is_floating_point:
            raise ValueError(f"logits must be floating point, got dtype {logits.dtype}")
        y = targets.long()
        if targets.numel() and not torch.compiler.is_compiling():
            ok = ((y >= 0) & (y < C)).all()
            if y.device.type == "cpu":
                # CPU: reading a CPU tensor is not a device sync, so a clear error is free.
                if not bool(ok):
                    raise ValueError(
                        f"targets must be in [0, {C - 1}], got values in "
                        f"[{int(y.min())}, {int(y.max())}]"
                    )
            else:
                # Accelerators: an asynchronous device assert (no host sync per step); a
                # failure surfaces at a later kernel launch and poisons the CUDA context.
                torch._assert_async(ok)
        # float64 stays float64 (gradcheck); anything else (bf16/fp16 autocast) -> float32.
        z = logits if logits.dtype == torch.float64 else logits.float()
        return z, y


# --------------------------------------------------------------------------- DRW weights


class ClassWeightMixin:
    """Optional per-class weights (DRW, docs/methods.md §6) in a buffer named ``class_weight``.

    With weights, the loss uses PyTorch's weighted mean (``F.cross_entropy(weight=w)``:
    divides by ``sum_i w[y_i]``). ``None`` means the plain mean. The buffer is absent from the
    state dict while ``None``; loading a state dict restores whichever was saved.
    """

    class_weight: Optional[Tensor]
    num_classes: int
    class_counts: Tensor

    def _init_class_weight(self, weight: Optional[Union[Tensor, Sequence[float]]]) -> None:
        self.register_buffer("class_weight", None)  # type: ignore[attr-defined]
        self.set_class_weight(weight)

    def set_class_weight(self, weight: Optional[Union[Tensor, Sequence[float]]]) -> None:
        """Switch per-class weights on (``[C]``, finite, >= 0) or off (``None``)."""
        if weight is None:
            self.class_weight = None
            return
        w = torch.as_tensor(weight).detach()
        if w.shape != (self.num_classes,):
            raise ValueError(
                f"weight must have shape [{self.num_classes}] (one per class), got shape "
                f"{tuple(w.shape)}"
            )
        if not w.dtype.is_floating_point:
            w = w.double()
        # Validation reads the values: fine here, this runs once per schedule change.
        if not bool((torch.isfinite(w) & (w >= 0)).all()) or not bool((w > 0).any()):
            raise ValueError(f"weight must be finite, >= 0 and not all zero, got weight={w.tolist()}")
        self.class_weight = w.to(self.class_counts.device, torch.float32).clone()

    def _load_from_state_dict(  # type: ignore[override]
        self, state_dict: Dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A None buffer is not in state_dict(); make the key round-trip both ways.
        key = prefix + "class_weight"
        self.set_class_weight(state_dict[key] if key in state_dict else None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]

    def _weight_for(self, z: Tensor) -> Optional[Tensor]:
        return None if self.class_weight is None else self.class_weight.to(z.dtype)


# --------------------------------------------------------------------------- stateful losses


class _GradTap(torch.autograd.Function):
    """Identity whose backward hands the incoming gradient to a callback.

    A fresh graph node per forward: no hook is left on the caller's tensors, and the callback
    only runs when backward actually passes through this forward.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, callback: Callable[[Tensor], None]) -> Tensor:  # type: ignore[override]
        ctx.callback = callback
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        with torch.no_grad():
            ctx.callback(grad)
        return grad, None


class StatefulLoss(LossBase):
    """A loss with gradient statistics ``pos_grad``/``neg_grad`` (float32 ``[C]`` buffers).

    Statistics are updated once per backward pass through a forward that ran in training mode
    with grad enabled and logits requiring grad (docs/methods.md §4: after backward, never in evaluation).
    Per-step sums are all-reduced under DDP. A step whose sums hold a NaN or an infinity (NaN/inf
    logits, a diverging run) is left out whole, so the statistics stay those of the finite steps.
    Everything stays on the device: no host syncs.
    """

    stateful: ClassVar[bool] = True
    pos_grad: Tensor
    neg_grad: Tensor

    def __init__(self, class_counts: CountsLike) -> None:
        super().__init__(class_counts)
        self.register_buffer("pos_grad", torch.zeros(self.num_classes))
        self.register_buffer("neg_grad", torch.zeros(self.num_classes))

    def _tracking(self, z: Tensor) -> bool:
        return self.training and torch.is_grad_enabled() and z.requires_grad

    def _tap(self, z: Tensor, on_backward: Callable[[Tensor], None]) -> Tensor:
        """Return ``z`` routed through a tap calling ``on_backward(dL/dz)`` during backward."""
        return _GradTap.apply(z, on_backward) if self._tracking(z) else z

    def _accumulate(self, pos: Tensor, neg: Tensor) -> None:
        """Add one step's per-class sums (all-reduced across processes) and refresh derived
        state via :meth:`_refresh`."""
        sums = torch.stack([pos, neg]).to(self.pos_grad.dtype)
        _all_reduce_sum(sums)  # one collective for both
        # A step with any non-finite entry (NaN/inf logits, an exploding lr) is left out whole:
        # folded in, it would poison the statistics, and with them every later loss, for good.
        # Checked after the all-reduce, so every rank drops the same step; a device-side select,
        # no host sync.
        sums = torch.where(torch.isfinite(sums).all(), sums, torch.zeros_like(sums))
        self.pos_grad.add_(sums[0])
        self.neg_grad.add_(sums[1])
        self._refresh()

    def _refresh(self) -> None:
        """Recompute buffers derived from ``pos_grad``/``neg_grad`` (none by default)."""

    def _accumulate_abs_grad(self, y: Tensor) -> Callable[[Tensor], None]:
        """Callback adding ``sum_i |dL/dz| * Y`` and ``sum_i |dL/dz| * (1 - Y)`` (SPEC: the true
        gradient w.r.t. the raw logits, 1/N included, as autograd delivers it)."""

        def on_backward(grad: Tensor) -> None:
            if grad.shape[0] == 0:  # no samples, no statistics (also keeps EQL's ratio at 100)
                return
            # No one-hot mask and no `where` over [N, C] (slow on CPU): take the label entries
            # out with gather, zero them, and sum the columns.
            a = grad.detach().abs().float()
            y1 = y.unsqueeze(1)
            pos = class_sums(y, a.gather(1, y1).squeeze(1), self.num_classes)
            neg = a.scatter_(1, y1, 0.0).sum(0)
            self._accumulate(pos, neg)

        return on_backward

    def statistics(self) -> Dict[str, Tensor]:
        """Clones of the state and of the current per-class weights/focusing factors."""
        return {"pos_grad": self.pos_grad.clone(), "neg_grad": self.neg_grad.clone()}
