"""The loss registry and ``build_loss`` (docs/methods.md §4)."""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..registry import Registry
from ._base import CountsLike

__all__ = ["LOSSES", "register_loss", "build_loss", "check_loss"]

LOSSES: Registry[nn.Module] = Registry("loss", "name")

#: ``@register_loss("my_loss")`` on a class whose constructor takes ``(class_counts, **hparams)``.
register_loss = LOSSES.register


def _accepted_hparams(factory: Any) -> tuple[set[str], bool]:
    """Keyword names the factory accepts after ``class_counts``, and whether it takes ``**kw``."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return set(), True
    names = {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def build_loss(name: str, class_counts: CountsLike, **hparams: Any) -> nn.Module:
    """Build loss ``name`` (one of ``LOSSES.names()``) for the given training counts per class.

    Unknown names and unknown hyper-parameters raise ``ValueError`` listing the valid ones.
    Losses registered by users that lack the ``uses_sigmoid``/``stateful`` flags get ``False``.
    """
    factory = LOSSES.get(name)
    valid, var_kw = _accepted_hparams(factory)
    unknown = sorted(set(hparams) - valid)
    if unknown and not var_kw:
        raise ValueError(
            f"loss {name!r} got unknown hyper-parameter(s) {unknown}; valid: "
            f"{', '.join(sorted(valid)) or '(none)'}"
        )
    loss = factory(class_counts, **hparams)
    if not isinstance(loss, nn.Module):
        raise ValueError(f"loss {name!r} must build an nn.Module, got {type(loss).__name__}")
    for flag in ("uses_sigmoid", "stateful"):
        if not hasattr(loss, flag):
            setattr(loss, flag, False)
    return loss


def check_loss(name: str, **hparams: Any) -> None:
    """Build loss ``name`` on small class counts and run it once forward and backward, raising a
    ValueError that says what to fix if it does not give a finite scalar with finite gradients.
    Used for losses named by reference (outside the package) before any data is loaded."""
    import torch  # the registry module itself stays importable without building anything

    counts = [40, 20, 10, 5]
    loss = build_loss(name, counts, **hparams)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, len(counts), generator=gen, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    try:
        out = loss(logits, labels)
    except Exception as exc:
        raise ValueError(f"loss {name!r} failed on a test batch (logits [8, 4], int64 labels): "
                         f"{type(exc).__name__}: {exc}; its forward must take (logits, targets)") from exc
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"loss {name!r} must return a scalar tensor (reduce over the batch, e.g. .mean()), "
                         f"got {shape}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"loss {name!r} returned {out.item()} on a test batch (logits ~ N(0, 1)): it must be finite")
    try:
        out.reshape(()).backward()
    except RuntimeError:  # the result does not depend on the logits
        pass
    if logits.grad is None or not bool(torch.isfinite(logits.grad).all()):
        raise ValueError(f"loss {name!r} gives no finite gradient to the logits: it must be differentiable in them")
