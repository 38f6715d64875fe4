"""Equalization losses with gradient statistics (docs/methods.md §4): sigmoid_eql, softmax_eql,
softmax_eql_v2.

Papers: Tan et al. 2021, "Equalization Loss v2: A New Gradient Balance Approach for Long-tailed
Object Detection" (CVPR) for Sigmoid-EQL; Tan et al. 2023, "The Equalization Losses:
Gradient-Driven Training for Long-tailed Object Recognition" (TPAMI) for Softmax-EQL.
All three keep ``pos_grad``/``neg_grad`` buffers updated after each backward pass
(``StatefulLoss``); the weights of a step come from the statistics of the previous steps.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ._base import CountsLike, StatefulLoss, check_real, weighted_cross_entropy
from ._fused import sigmoid_family_loss
from ._registry import LOSSES

__all__ = ["SigmoidEQLLoss", "SoftmaxEQLLoss", "SoftmaxEQLv2Loss"]


@LOSSES.register("sigmoid_eql")
class SigmoidEQLLoss(StatefulLoss):
    """Sigmoid-EQL (EQLv2 style, C columns, no background), docs/methods.md §4 sigmoid_eql.

    ``f(x) = 1 / (1 + exp(-gamma * (x - mu)))``, ``q_j = f(g_j)``, ``r_j = 1 + alpha * (1 - q_j)``,
    ``W = r * Y + q * (1 - Y)``;  ``L = sum_{i,j} W_ij * BCE(z_ij, Y_ij) / N``.
    After backward, with ``G = |Y * (s - 1) + (1 - Y) * s|`` (not divided by N):
    ``G_pos += sum_i G Y W``, ``G_neg += sum_i G (1 - Y) W``, ``g = G_pos / (G_neg + 1e-10)``.
    Buffers ``pos_grad = neg_grad = 0`` and ``ratio = g = 100`` at start (first weights ~1).
    Defaults gamma 12, mu 0.8, alpha 4.
    """

    uses_sigmoid = True
    ratio: Tensor

    def __init__(
        self, class_counts: CountsLike, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0
    ) -> None:
        super().__init__(class_counts)
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.mu = check_real("mu", mu)
        self.alpha = check_real("alpha", alpha, low=0.0)
        self.register_buffer("ratio", torch.full((self.num_classes,), 100.0))

    def weights(self) -> tuple[Tensor, Tensor]:
        """``(r, q)``: positive and negative weights per class from the current ratio."""
        q = torch.sigmoid(self.gamma * (self.ratio - self.mu))
        return 1.0 + self.alpha * (1.0 - q), q

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        r, q = (t.to(z.dtype) for t in self.weights())
        on_stats = self._accumulate_weighted_grad if self._tracking(z) else None
        # W = r on the label's column, q elsewhere: positive weights r[y_i], negative weights q_j.
        return sigmoid_family_loss(z, y, neg_weight=q, pos_weight=r[y], on_stats=on_stats, mask=mask)

    def _accumulate_weighted_grad(self, pos: Tensor, neg: Tensor, _k: Tensor) -> None:
        # SPEC's sum_i G Y W and sum_i G (1 - Y) W, G = |Y (s - 1) + (1 - Y) s| = |dBCE/dz|: the
        # fused backward's per-entry magnitudes W |dBCE/dz| before the upstream factor (no 1/N).
        self._accumulate(pos, neg)

    def _refresh(self) -> None:
        torch.div(self.pos_grad, self.neg_grad + 1e-10, out=self.ratio)

    def statistics(self) -> Dict[str, Tensor]:
        r, q = self.weights()
        return {**super().statistics(), "ratio": self.ratio.clone(), "pos_weight": r, "neg_weight": q}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, mu={self.mu}, alpha={self.alpha}"


class _SoftmaxEQLBase(StatefulLoss):
    """Shared by the two Softmax-EQL forms: ``CE(z + adjustment, y)`` with statistics of the
    true gradient w.r.t. the raw logits ``z`` (SPEC: autograd, 1/N included)."""

    def __init__(self, class_counts: CountsLike, tau: float = 1.0) -> None:
        super().__init__(class_counts)
        self.tau = check_real("tau", tau, low=0.0)

    def log_adjustment(self) -> Tensor:  # pragma: no cover - abstract
        """Per-class additive term ``[C]`` (float32) built from the statistics."""
        raise NotImplementedError

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        z = self._tap(z, self._accumulate_abs_grad(y))
        return weighted_cross_entropy(z + self.log_adjustment().to(z.dtype), y, None, mask)

    def statistics(self) -> Dict[str, Tensor]:
        return {**super().statistics(), "log_adjustment": self.log_adjustment()}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau}"


@LOSSES.register("softmax_eql")
class SoftmaxEQLLoss(_SoftmaxEQLBase):
    """Softmax-EQL, docs/methods.md §4 softmax_eql: ``G = clamp(G_pos, min=1e-4)``,
    ``z'_ij = z_ij + tau * log(G_j / G_{y_i})`` (unchanged for ``j = y_i``), ``L = CE(z', y)``,
    i.e. ``p_y = G_y^tau e^{z_y} / sum_k G_k^tau e^{z_k}``; tau 1.
    After backward: ``G_pos += sum_i |dL/dz| Y``, ``G_neg += sum_i |dL/dz| (1 - Y)``.
    """

    def log_adjustment(self) -> Tensor:
        # Adding tau*log G_j to every column equals adding tau*log(G_j/G_y) for j != y: the
        # per-row constant -tau*log G_y cancels inside the softmax (exactly 0 at j = y).
        return self.tau * torch.log(torch.clamp(self.pos_grad, min=1e-4))

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        z = self._tap(z, self._accumulate_abs_grad(y))
        log_g = self.log_adjustment().to(z.dtype)
        # SPEC's form literally (shift relative to the label's class): identical value, and it
        # keeps the label's logit unchanged as written.
        return weighted_cross_entropy(z + log_g - log_g[y].unsqueeze(1), y, None, mask)


@LOSSES.register("softmax_eql_v2")
class SoftmaxEQLv2Loss(_SoftmaxEQLBase):
    """Softmax-EQL, second form, docs/methods.md §4 softmax_eql_v2: ``pi = G_pos / (sum G_pos + 1e-4)``,
    ``z' = z + log(pi ** tau + 1e-9)`` on all columns, ``L = CE(z', y)``; tau 1; same
    statistics as softmax_eql. In training it equals softmax_eql up to the epsilons.
    """

    def prior(self) -> Tensor:
        """``pi = G_pos / (sum_j G_pos,j + 1e-4)``."""
        return self.pos_grad / (self.pos_grad.sum() + 1e-4)

    def log_adjustment(self) -> Tensor:
        return torch.log(self.prior() ** self.tau + 1e-9)

    def statistics(self) -> Dict[str, Tensor]:
        return {**super().statistics(), "pi": self.prior()}
