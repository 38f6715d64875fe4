"""Equalized Focal Loss: Li et al. 2022, "Equalized Focal Loss for Dense Long-Tailed Object
Detection" (CVPR), docs/methods.md §4 efl."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ._base import CountsLike, StatefulLoss, check_alpha, check_real
from ._fused import sigmoid_family_loss
from ._registry import LOSSES

__all__ = ["EqualizedFocalLoss"]


@LOSSES.register("efl")
class EqualizedFocalLoss(StatefulLoss):
    """EFL, docs/methods.md §4 efl (sigmoid, C columns):

    ``g = clamp(G_pos / (G_neg + 1e-10), 0, 1)`` (``g = 1`` at start),
    ``gamma_j = gamma_b + s_f * (1 - g_j)``, both factors detached;
    ``L = sum_{i,j} a_t * (gamma_j / gamma_b) * (1 - p_t) ** gamma_j * (-log p_t) / N``,
    ``a_t = alpha`` (0.25) for positives and ``1 - alpha`` (0.75) for negatives (``alpha = -1``
    disables it). After backward: ``G_pos += sum_i |dL/dz| Y``, ``G_neg += sum_i |dL/dz| (1 - Y)``
    (true gradient w.r.t. the raw logits). Defaults gamma_b 2, s_f 8.
    """

    uses_sigmoid = True
    g: Tensor

    def __init__(
        self, class_counts: CountsLike, gamma_b: float = 2.0, s_f: float = 8.0, alpha: float = 0.25
    ) -> None:
        super().__init__(class_counts)
        self.gamma_b = check_real("gamma_b", gamma_b, low=0.0, low_open=True)
        self.s_f = check_real("s_f", s_f, low=0.0)
        self.alpha = check_alpha(alpha)
        # A buffer, not recomputed from G: the formula gives 0, not SPEC's 1, before any step.
        self.register_buffer("g", torch.ones(self.num_classes))

    def focusing(self) -> Tensor:
        """``gamma_j = gamma_b + s_f * (1 - g_j)``."""
        return self.gamma_b + self.s_f * (1.0 - self.g)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        gamma = self.focusing().to(z.dtype)
        w = gamma / self.gamma_b  # the weighting factor gamma_j / gamma_b
        neg_w, pos_w = (w, w[y]) if self.alpha < 0 else ((1.0 - self.alpha) * w, self.alpha * w[y])
        on_stats = self._accumulate_true_grad if self._tracking(z) else None
        return sigmoid_family_loss(z, y, gamma=gamma, neg_weight=neg_w, pos_weight=pos_w, on_stats=on_stats, mask=mask)

    def _accumulate_true_grad(self, pos: Tensor, neg: Tensor, k: Tensor) -> None:
        # |dL/dz| = |k| * (the per-entry magnitudes): the true gradient, 1/N and upstream included.
        k = k.abs()
        self._accumulate(pos * k, neg * k)

    def _refresh(self) -> None:
        torch.clamp(self.pos_grad / (self.neg_grad + 1e-10), 0.0, 1.0, out=self.g)

    def statistics(self) -> Dict[str, Tensor]:
        gamma = self.focusing()
        return {**super().statistics(), "g": self.g.clone(), "gamma": gamma, "weight": gamma / self.gamma_b}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma_b={self.gamma_b}, s_f={self.s_f}, "
            f"alpha={self.alpha}"
        )
