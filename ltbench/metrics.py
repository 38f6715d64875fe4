"""Evaluation metrics for long-tailed recognition (docs/methods.md §3), in torch on the inputs' device.

Tensors stay on their device; only scalar summaries (``top1_accuracy``, ``shot_accuracy``,
``expected_calibration_error``) and input validation synchronise with the host.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "confusion_matrix",
    "per_class_accuracy",
    "top1_accuracy",
    "mean_class_accuracy",
    "shot_groups",
    "shot_accuracy",
    "expected_calibration_error",
    "sorted_confusion",
]

TensorLike = Union[torch.Tensor, np.ndarray, Sequence[float], Sequence[int]]


def _as_tensor(x: TensorLike, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    return t


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    return int(value)


def confusion_matrix(preds: TensorLike, targets: TensorLike, num_classes: int) -> torch.Tensor:
    """``[C, C]`` int64 confusion matrix, ``M[true, pred]`` counts (rows = true class), docs/methods.md §3.

    ``preds`` is ``[N]`` predicted labels, or ``[N, C]`` scores (logits/probabilities), which are
    arg-maxed. Computed with one ``bincount`` on the inputs' device.
    """
    num_classes = _check_positive_int("num_classes", num_classes)
    preds = _as_tensor(preds, "preds")
    targets = _as_tensor(targets, "targets")
    if preds.dim() == 2:
        if preds.shape[1] != num_classes:
            raise ValueError(
                f"preds has {preds.shape[1]} score columns but num_classes={num_classes}"
            )
        preds = preds.argmax(dim=1)
    if preds.dim() != 1 or targets.dim() != 1:
        raise ValueError(
            f"preds must be [N] or [N, C] and targets [N], got shapes "
            f"{tuple(preds.shape)} and {tuple(targets.shape)}"
        )
    if preds.numel() != targets.numel():
        raise ValueError(
            f"preds and targets must have the same length, got {preds.numel()} and {targets.numel()}"
        )
    for name, t in (("preds", preds), ("targets", targets)):
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class labels, got dtype {t.dtype}")
    preds = preds.to(torch.int64)
    targets = targets.to(device=preds.device, dtype=torch.int64)
    # bincount would silently grow (or fail) on out-of-range labels; check once (one sync).
    lo = int(torch.minimum(preds.min(), targets.min()))
    hi = int(torch.maximum(preds.max(), targets.max()))
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"labels must be in [0, num_classes) = [0, {num_classes}), found values in [{lo}, {hi}]"
        )
    flat = targets * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _check_confusion(confusion: TensorLike) -> torch.Tensor:
    confusion = _as_tensor(confusion, "confusion")
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, got shape {tuple(confusion.shape)}")
    return confusion


def per_class_accuracy(confusion: TensorLike) -> torch.Tensor:
    """Per-class accuracy ``M[c, c] / sum_j M[c, j]`` (float64 fraction), docs/methods.md §3.

    NaN for a class with no test samples (missing, not 0).
    """
    confusion = _check_confusion(confusion).to(torch.float64)
    return confusion.diagonal() / confusion.sum(dim=1)  # 0/0 -> NaN on purpose


def top1_accuracy(confusion: TensorLike) -> float:
    """Overall top-1 accuracy ``trace(M) / sum(M)`` as a fraction, docs/methods.md §3."""
    confusion = _check_confusion(confusion)
    total = int(confusion.sum())
    if total == 0:
        raise ValueError("confusion matrix has no samples; top-1 accuracy is undefined")
    return float(confusion.diagonal().sum()) / total


def mean_class_accuracy(per_class: TensorLike) -> float:
    """Mean of per-class accuracy over classes with test samples (NaNs ignored), docs/methods.md §3."""
    per_class = _as_tensor(per_class, "per_class").to(torch.float64)
    value = float(torch.nanmean(per_class))
    if math.isnan(value):
        raise ValueError("no class has test samples; mean class accuracy is undefined")
    return value


def _counts_list(train_counts: TensorLike) -> list[int]:
    counts = _as_tensor(train_counts, "train_counts")
    if counts.dim() != 1:
        raise ValueError(f"train_counts must be 1-D [C], got shape {tuple(counts.shape)}")
    values = counts.detach().cpu().tolist()
    if any(v < 0 for v in values):
        raise ValueError(f"train_counts must be >= 0, got {values}")
    return values


def shot_groups(
    train_counts: TensorLike, many: int = 100, few: int = 20
) -> dict[str, list[int]]:
    """Split classes by training count (docs/methods.md §3): ``many``: ``n > many`` (100),
    ``medium``: ``few <= n <= many`` (20..100 inclusive), ``few``: ``n < few`` (20)."""
    if few > many:
        raise ValueError(f"shot thresholds need few <= many, got few={few}, many={many}")
    counts = _counts_list(train_counts)
    return {
        "many": [c for c, n in enumerate(counts) if n > many],
        "medium": [c for c, n in enumerate(counts) if few <= n <= many],
        "few": [c for c, n in enumerate(counts) if n < few],
    }


def shot_accuracy(
    per_class_accuracy: TensorLike, train_counts: TensorLike, many: int = 100, few: int = 20
) -> dict[str, Optional[float]]:
    """Many/medium/few-shot accuracy: mean of the group's per-class accuracies, docs/methods.md §3.

    ``None`` for an empty group (reported as missing, never 0). Classes with NaN accuracy
    (no test samples) are ignored; a group whose classes are all NaN is also ``None``.
    """
    acc = _as_tensor(per_class_accuracy, "per_class_accuracy").to(torch.float64).detach().cpu()
    counts = _counts_list(train_counts)
    if acc.dim() != 1 or acc.numel() != len(counts):
        raise ValueError(
            f"per_class_accuracy and train_counts must have the same length, got "
            f"{tuple(acc.shape)} and {len(counts)}"
        )
    out: dict[str, Optional[float]] = {}
    for group, classes in shot_groups(counts, many=many, few=few).items():
        values = acc[classes] if classes else acc[:0]
        values = values[~torch.isnan(values)]
        out[group] = float(values.mean()) if values.numel() else None
    return out


def expected_calibration_error(
    probs_or_conf: TensorLike, targets_or_correct: TensorLike, n_bins: int = 15
) -> float:
    """Expected calibration error with ``n_bins`` (15) equal-width confidence bins, docs/methods.md §3.

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``, empty bins contribute 0.

    Inputs, either:
      * ``probs [N, C]`` (softmax probabilities) and ``targets [N]``: confidence is the max
        probability, correct means ``argmax == target``; or
      * ``confidence [N]`` in [0, 1] and ``correct [N]`` (bool or 0/1).

    Binning: bin ``b`` (0-based) is ``(b/n, (b+1)/n]``, except that bin 0 is ``[0, 1/n]`` so a
    confidence of exactly 0 is counted; a confidence on an edge goes to the lower bin (bin
    edges are ``torch.linspace(0, 1, n + 1)``; ``torch.bucketize(..., right=False)``).
    """
    n_bins = _check_positive_int("n_bins", n_bins)
    first = _as_tensor(probs_or_conf, "probs_or_conf")
    second = _as_tensor(targets_or_correct, "targets_or_correct")
    if first.dim() == 2:
        if second.dim() != 1 or second.numel() != first.shape[0]:
            raise ValueError(
                f"probs [N, C] needs targets [N], got shapes {tuple(first.shape)} and "
                f"{tuple(second.shape)}"
            )
        conf, pred = first.to(torch.float64).max(dim=1)
        correct = pred == second.to(pred.device)
    elif first.dim() == 1:
        if second.dim() != 1 or second.numel() != first.numel():
            raise ValueError(
                f"confidence [N] and correct [N] must have the same length, got shapes "
                f"{tuple(first.shape)} and {tuple(second.shape)}"
            )
        conf = first.to(torch.float64)
        correct = second.to(conf.device)
    else:
        raise ValueError(f"probs_or_conf must be [N, C] or [N], got shape {tuple(first.shape)}")
    lo, hi = float(conf.min()), float(conf.max())
    if lo < 0.0 or hi > 1.0 or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"confidences must lie in [0, 1], found values in [{lo}, {hi}]")
    correct = correct.to(torch.float64)
    inner_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=conf.device)[1:-1]
    bins = torch.bucketize(conf, inner_edges, right=False)  # edges[b-1] < x <= edges[b]
    # Per bin: |sum(correct - conf)| / N == |B|/N * |acc - conf|.
    gap = torch.bincount(bins, weights=correct - conf, minlength=n_bins)
    return float(gap.abs().sum() / conf.numel())


def sorted_confusion(
    confusion: TensorLike, train_counts: TensorLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised confusion matrix with classes sorted by training count, descending
    (ties keep class order), docs/methods.md §3.

    Returns ``(matrix [C, C] float64, order [C] int64)``: ``matrix[i, j]`` is the fraction of
    test samples of class ``order[i]`` predicted as ``order[j]``. Rows of classes with no test
    samples are NaN.
    """
    confusion = _check_confusion(confusion)
    counts = _as_tensor(train_counts, "train_counts")
    if counts.dim() != 1 or counts.numel() != confusion.shape[0]:
        raise ValueError(
            f"train_counts must have one entry per class, got {tuple(counts.shape)} for a "
            f"{tuple(confusion.shape)} confusion matrix"
        )
    order = torch.sort(counts.to(confusion.device), descending=True, stable=True).indices
    rows = confusion.to(torch.float64)
    rows = rows / rows.sum(dim=1, keepdim=True)
    return rows[order][:, order], order
