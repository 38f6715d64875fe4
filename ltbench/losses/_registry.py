"""The loss registry and ``build_loss`` (docs/methods.md §4)."""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..registry import Registry
from ._base import CountsLike

__all__ = ["LOSSES", "register_loss", "build_loss"]

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
