"""Shared argument checks: one wording for "this parameter got this value; this is valid".

``require(ok, name, value, valid)`` raises ``ValueError("invalid <name>=<value!r>: must be <valid>")``;
the predicates treat ``bool`` as not a number (``True`` is no epoch count) and refuse NaN / inf.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

__all__ = ["require", "is_int", "is_number", "is_positive_int", "is_positive_number"]


def require(ok: bool, name: str, value: Any, valid: str) -> None:
    """Raise the standard ValueError unless ``ok``."""
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: must be {valid}")


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number, not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def is_positive_int(value: Any) -> bool:
    return is_int(value) and value >= 1


def is_positive_number(value: Any) -> bool:
    return is_number(value) and value > 0
