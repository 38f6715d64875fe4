"""Class-balanced (CB) losses of Cui et al. 2019, "Class-Balanced Loss Based on Effective Number
of Samples" (CVPR): cb_softmax, cb_sigmoid, cb_focal (docs/methods.md §4, CB family).

Each sample is weighted by its class's CB weight ``w[y_i]`` (``weights.class_balanced_weights``,
``sum_j w_j = C``) and every loss divides by N, the semantics of the released code (not
``F.cross_entropy(weight=w)``, which divides by ``sum_i w[y_i]``).
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from ._base import CountsLike, LossBase, check_real, masked_mean
from ._fused import sigmoid_family_loss
from ._registry import LOSSES
from .weights import class_balanced_weights

__all__ = ["ClassBalancedSoftmaxLoss", "ClassBalancedSigmoidLoss", "ClassBalancedFocalLoss"]


class _ClassBalancedBase(LossBase):
    """Holds ``beta`` and the CB weights (a non-persistent buffer derived from the counts)."""

    weights: Tensor

    def __init__(self, class_counts: CountsLike, beta: float = 0.9999) -> None:
        super().__init__(class_counts)
        self.beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
        self.register_buffer("weights", class_balanced_weights(class_counts, self.beta), persistent=False)

    def sample_weights(self, z: Tensor, y: Tensor) -> Tensor:
        """``w[y_i]`` as ``[N]`` in the compute dtype."""
        return self.weights.to(z.dtype)[y]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, beta={self.beta}"


@LOSSES.register("cb_softmax")
class ClassBalancedSoftmaxLoss(_ClassBalancedBase):
    """CB softmax CE, docs/methods.md §4 cb_softmax (Cui et al. 2019):
    ``L = (1/N) sum_i w[y_i] * CE_i``, ``w_j ∝ (1 - beta) / (1 - beta ** n_j)``, beta 0.9999."""

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return masked_mean(self.sample_weights(z, y) * F.cross_entropy(z, y, reduction="none"), mask)


@LOSSES.register("cb_sigmoid")
class ClassBalancedSigmoidLoss(_ClassBalancedBase):
    """CB sigmoid CE, docs/methods.md §4 cb_sigmoid (Cui et al. 2019):
    ``L = sum_{i,j} w[y_i] * BCE(z_ij, Y_ij) / N`` (the sample's weight on all C columns)."""

    uses_sigmoid = True

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return sigmoid_family_loss(z, y, row_weight=self.sample_weights(z, y), mask=mask)


@LOSSES.register("cb_focal")
class ClassBalancedFocalLoss(_ClassBalancedBase):
    """CB sigmoid focal, docs/methods.md §4 cb_focal (Cui et al. 2019, no alpha):
    ``L = sum_{i,j} w[y_i] * (1 - p_t) ** gamma * BCE(z_ij, Y_ij) / N``; gamma default 1."""

    uses_sigmoid = True

    def __init__(self, class_counts: CountsLike, beta: float = 0.9999, gamma: float = 1.0) -> None:
        super().__init__(class_counts, beta)
        self.gamma = check_real("gamma", gamma, low=0.0)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return sigmoid_family_loss(z, y, gamma=self.gamma, row_weight=self.sample_weights(z, y), mask=mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"
