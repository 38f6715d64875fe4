"""Long-tailed class counts and the standard subset selection (SPEC §1)."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

PROFILES = ("exp", "step")


def long_tailed_counts(
    n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp"
) -> List[int]:
    """Per-class training counts, class 0 largest (SPEC §1).

    exp:  ``n_i = int(n_max * (1 / IR) ** (i / (C - 1)))`` in Python float arithmetic.
    step: the first ``C // 2`` classes keep ``n_max``, the rest get ``int(n_max / IR)``.
    """
    if not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be a positive int, got {n_max!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(imbalance_ratio, (int, float)) or not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile={profile!r}; valid: {', '.join(PROFILES)}")
    n_max, num_classes, ir = int(n_max), int(num_classes), float(imbalance_ratio)
    if num_classes == 1:
        return [n_max]
    if profile == "exp":
        return [int(n_max * (1.0 / ir) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    half = num_classes // 2
    return [n_max] * half + [int(n_max / ir)] * (num_classes - half)


def long_tailed_indices(targets: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the standard long-tailed subset (SPEC §1).

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
