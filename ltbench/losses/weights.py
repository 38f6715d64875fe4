"""Per-class weights from training counts: class-balanced (effective number) and inverse
frequency. Both are normalised to ``sum_j w_j = C`` (docs/methods.md §4, §6) and computed in float64 in
log space, so they stay finite for huge counts and for ``beta = 0``."""
from __future__ import annotations

import torch
from torch import Tensor

from ._base import CountsLike, as_class_counts, check_real

__all__ = ["effective_number", "class_balanced_weights", "inverse_frequency_weights", "mean_sample_weight"]


def _one_minus_beta_pow_n(counts: Tensor, beta: float) -> Tensor:
    # 1 - beta**n = -expm1(n * log(beta)): exact near beta -> 1 (tiny 1 - beta**n) and equal to
    # 1 for beta = 0 (log 0 = -inf) or huge n, where the naive form under/overflows.
    with torch.no_grad():
        log_beta = torch.log(torch.tensor(beta, dtype=torch.float64))
        return -torch.expm1(counts * log_beta)


def effective_number(class_counts: CountsLike, beta: float) -> Tensor:
    """Effective number of samples ``E_n = (1 - beta ** n) / (1 - beta)`` (Cui et al. 2019,
    "Class-Balanced Loss Based on Effective Number of Samples"), float64 ``[C]``."""
    beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    counts = as_class_counts(class_counts)
    return _one_minus_beta_pow_n(counts, beta) / (1.0 - beta)


def class_balanced_weights(class_counts: CountsLike, beta: float = 0.9999) -> Tensor:
    """CB weights, docs/methods.md §4 (Cui et al. 2019): ``w_j = (1 - beta) / (1 - beta ** n_j)``,
    normalised to ``sum_j w_j = C``. ``beta = 0`` gives all ones. Returns float32 ``[C]``."""
    beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    counts = as_class_counts(class_counts)
    inv = 1.0 / _one_minus_beta_pow_n(counts, beta)  # the (1 - beta) factor cancels
    return (inv * (counts.numel() / inv.sum())).float()


def inverse_frequency_weights(class_counts: CountsLike, power: float = 1.0) -> Tensor:
    """``w_j ∝ n_j ** -power`` normalised to ``sum_j w_j = C`` (docs/methods.md §4 balanced_ce; the "RW"
    of BBN, docs/methods.md §6). ``power = 0.5`` is inverse square root. Returns float32 ``[C]``."""
    power = check_real("power", power, low=0.0)
    counts = as_class_counts(class_counts)
    # C * softmax(-power * log n): no overflow/underflow for any positive counts.
    return (counts.numel() * torch.softmax(-power * torch.log(counts), dim=0)).float()


def mean_sample_weight(class_counts: CountsLike, weights: Tensor) -> float:
    """The mean weight of a training sample under instance sampling, ``sum_j n_j w_j / sum_j n_j``
    (docs/methods.md §4.6): the factor by which a loss that weights each sample by ``w[y_i]`` and
    divides by N (the CB losses) scales the plain loss and its gradient on an average batch. A loss
    that divides by ``sum_i w[y_i]`` (``F.cross_entropy(weight=w)``, DRW) has factor 1."""
    counts = as_class_counts(class_counts)
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64).flatten()
    if w.shape != counts.shape:
        raise ValueError(f"weights must have one value per class ({counts.numel()}), got shape {tuple(w.shape)}")
    return float((counts * w).sum() / counts.sum())
