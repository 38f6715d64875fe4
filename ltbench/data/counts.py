"""Long-tailed class counts and the standard subset selection (docs/methods.md §1)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

PROFILES = ("exp", "step")


def _raw_counts(n_max: int, num_classes: int, ir: float, profile: str) -> List[int]:
    if num_classes == 1:
        return [n_max]
    if profile == "exp":
        return [int(n_max * (1.0 / ir) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    half = num_classes // 2
    return [n_max] * half + [int(n_max / ir)] * (num_classes - half)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else repr(float(x))


def zero_count_message(n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp") -> Optional[str]:
    """``None`` when every class keeps at least one image, else a message in terms of IR and n_max
    naming the first empty class and the smallest ``n_max`` / largest IR that would work.

    The arguments must already be valid (positive ints, IR >= 1 and not NaN, a known profile).
    """
    counts = _raw_counts(int(n_max), int(num_classes), float(imbalance_ratio), profile)
    if min(counts) >= 1:
        return None
    first = next(i for i, n in enumerate(counts) if n < 1)
    empty = sum(1 for n in counts if n < 1)
    ir = float(imbalance_ratio)
    head = (f"IR {_fmt(ir)} with n_max {n_max} leaves class {first} with 0 images "
            f"({empty} of {num_classes} classes empty)")
    if not math.isfinite(ir):
        return f"{head}; the imbalance ratio must be finite: use IR <= {n_max}"
    # Smallest n_max and largest IR that give every class an image, in the same float arithmetic.
    n_ok = max(1, math.ceil(ir))
    for _ in range(64):  # ceil(IR) or a step above it (float rounding); bounded for huge IRs
        if min(_raw_counts(n_ok, num_classes, ir, profile)) >= 1:
            break
        n_ok += max(1, n_ok >> 40)
    ir_ok = next((c for c in (float(n_max), n_max - 1e-6, n_max - 1e-4, n_max - 0.01, n_max - 1.0)
                  if c >= 1 and min(_raw_counts(n_max, num_classes, c, profile)) >= 1), 1.0)
    return f"{head}; use n_max >= {_fmt(n_ok)} or IR <= {_fmt(ir_ok)}"


def long_tailed_counts(
    n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp"
) -> List[int]:
    """Per-class training counts, class 0 largest (docs/methods.md §1).

    exp:  ``n_i = int(n_max * (1 / IR) ** (i / (C - 1)))`` in Python float arithmetic.
    step: the first ``C // 2`` classes keep ``n_max``, the rest get ``int(n_max / IR)``.
    An IR and n_max that leave a class with no image (``IR > n_max``, ``IR = inf``) raise a
    ValueError saying so in terms of IR and n_max (see :func:`zero_count_message`).
    """
    if not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be a positive int, got {n_max!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, (int, float, np.integer, np.floating)) \
            or not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile={profile!r}; valid: {', '.join(PROFILES)}")
    n_max, num_classes, ir = int(n_max), int(num_classes), float(imbalance_ratio)
    msg = zero_count_message(n_max, num_classes, ir, profile)
    if msg:
        raise ValueError(f"invalid imbalance_ratio={imbalance_ratio!r} for n_max={n_max}: {msg}")
    return _raw_counts(n_max, num_classes, ir, profile)


def long_tailed_indices(targets: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the standard long-tailed subset (docs/methods.md §1).

    ``np.random.seed(seed)``; for each class ``c`` in increasing order: the positions of class ``c``
    in the official training order, shuffled with NumPy's legacy global generator, first ``n_c``
    kept. The global generator's state is saved and restored so callers are not affected.
    """
    targets = np.asarray(targets)
    if targets.ndim != 1:
        raise ValueError(f"targets must be 1-D, got shape {targets.shape}")
    counts = [int(c) for c in counts]
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        chosen = []
        for c, n_c in enumerate(counts):
            idx = np.where(targets == c)[0]
            if n_c > len(idx):
                raise ValueError(
                    f"counts[{c}]={n_c} exceeds the {len(idx)} training images of class {c}"
                )
            np.random.shuffle(idx)
            chosen.append(idx[:n_c])
    finally:
        np.random.set_state(state)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
