"""Sigmoid losses over C independent binary problems: sigmoid_ce, sigmoid_focal (docs/methods.md §4).

All sigmoid-family losses (these, the CB, EQL and EFL ones) are computed by the fused
:func:`._fused.sigmoid_family_loss`. ``signed_logits``, ``focal_terms`` and ``alpha_t`` are the
straightforward elementwise forms of the same quantities (``[N, C]`` temporaries, autograd
backward), kept as the reference the fused form is tested against.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import CountsLike, LossBase, check_alpha, check_real
from ._fused import sigmoid_family_loss
from ._registry import LOSSES

__all__ = ["SigmoidCrossEntropyLoss", "SigmoidFocalLoss", "signed_logits", "focal_terms"]


def signed_logits(z: Tensor, Y: Tensor) -> Tensor:
    """``z_t = z`` where ``Y = 1`` else ``-z``, so that ``p_t = sigmoid(z_t)``."""
    return torch.where(Y.bool(), z, -z)


def focal_terms(z: Tensor, Y: Tensor, gamma: Union[float, Tensor]) -> tuple[Tensor, Tensor]:
    """``(BCE, (1 - p_t) ** gamma)`` elementwise, stably.

    ``BCE = -log p_t = -logsigmoid(z_t)`` and ``(1 - p_t) ** gamma = exp(gamma *
    logsigmoid(-z_t))``: finite values and gradients for any finite logits, also for
    ``gamma < 1`` where ``pow`` has an infinite derivative at ``p_t = 1``.
    """
    zt = signed_logits(z, Y)
    return -F.logsigmoid(zt), torch.exp(gamma * F.logsigmoid(-zt))


def alpha_t(Y: Tensor, alpha: float) -> Tensor:
    """``alpha`` for positives, ``1 - alpha`` for negatives."""
    return Y * alpha + (1.0 - Y) * (1.0 - alpha)


@LOSSES.register("sigmoid_ce")
class SigmoidCrossEntropyLoss(LossBase):
    """Sigmoid CE, docs/methods.md §4 **sigmoid_ce** (the unweighted sigmoid CE of Cui et al.
    2019, "Class-Balanced Loss Based on Effective Number of Samples"): ``L = sum_{i,j} BCE(z_ij, Y_ij) / N``."""

    uses_sigmoid = True

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return sigmoid_family_loss(z, y, mask=mask)


@LOSSES.register("sigmoid_focal")
class SigmoidFocalLoss(LossBase):
    """Sigmoid focal loss, docs/methods.md §4 **sigmoid_focal** (Lin et al. 2017, "Focal Loss for Dense
    Object Detection"):

    ``L = sum_{i,j} a_t * (1 - p_t) ** gamma * BCE(z_ij, Y_ij) / N``, ``p_t = s`` if
    ``Y = 1`` else ``1 - s``; ``a_t = alpha`` / ``1 - alpha`` for positives / negatives,
    ``alpha = -1`` (default, as in the CB paper) disables it. gamma default 2. Equals
    ``torchvision.ops.sigmoid_focal_loss(reduction="sum") / N``.
    """

    uses_sigmoid = True

    def __init__(self, class_counts: CountsLike, gamma: float = 2.0, alpha: float = -1.0) -> None:
        super().__init__(class_counts)
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.alpha = check_alpha(alpha)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if self.alpha < 0:
            return sigmoid_family_loss(z, y, gamma=self.gamma, mask=mask)
        return sigmoid_family_loss(z, y, gamma=self.gamma, neg_weight=1.0 - self.alpha, pos_weight=self.alpha,
                                   mask=mask)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}"
