"""Softmax losses: ce, balanced_ce, focal (docs/methods.md §4)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import (ClassWeightMixin, CountsLike, LossBase, check_real, masked_mean, one_hot,
                    weighted_cross_entropy)
from ._registry import LOSSES
from .weights import inverse_frequency_weights

__all__ = ["CrossEntropyLoss", "BalancedCrossEntropyLoss", "SoftmaxFocalLoss", "log_one_minus_pt"]


def log_one_minus_pt(logp: Tensor, y: Tensor) -> Tensor:
    """``log(1 - p[i, y_i])`` from log-probabilities ``logp = log_softmax(z)``, stably, as
    ``logsumexp_{j != y_i} logp[i, j]``.

    Unlike ``log1p(-p_t)`` it has a finite value and gradient when ``p_t`` rounds to 1.
    """
    Y = one_hot(y, logp.shape[1], torch.bool)
    return torch.logsumexp(logp.masked_fill(Y, float("-inf")), dim=1)


@LOSSES.register("ce")
class CrossEntropyLoss(ClassWeightMixin, LossBase):
    """Softmax cross-entropy, docs/methods.md §4 **ce**: ``L = mean_i -log p[i, y_i]``.

    ``weight`` (or :meth:`set_class_weight`, used for DRW, docs/methods.md §6) switches to PyTorch's
    weighted mean ``sum_i w[y_i] CE_i / sum_i w[y_i]``.
    """

    def __init__(self, class_counts: CountsLike, weight: Optional[Union[Tensor, Sequence[float]]] = None) -> None:
        super().__init__(class_counts)
        self._init_class_weight(weight)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return weighted_cross_entropy(z, y, self._weight_for(z), mask)


@LOSSES.register("balanced_ce")
class BalancedCrossEntropyLoss(LossBase):
    """Class-frequency weighted CE, docs/methods.md §4 **balanced_ce** (multi-class alpha-balanced CE,
    Lin et al. 2017, "Focal Loss for Dense Object Detection", §3.1):

    ``w_j ∝ n_j ** -power`` with ``sum_j w_j = C``;  ``L = (1/N) sum_i w[y_i] * CE_i``
    (divided by N, not by the sum of weights). ``power=1`` inverse frequency, ``0.5`` inverse
    square root.
    """

    def __init__(self, class_counts: CountsLike, power: float = 1.0) -> None:
        super().__init__(class_counts)
        self.power = check_real("power", power, low=0.0)
        w = inverse_frequency_weights(class_counts, self.power)
        self.register_buffer("weights", w.float(), persistent=False)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        ce = F.cross_entropy(z, y, reduction="none")
        return masked_mean(self.weights.to(z.dtype)[y] * ce, mask)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, power={self.power}"


@LOSSES.register("focal")
class SoftmaxFocalLoss(LossBase):
    """Softmax focal loss, docs/methods.md §4 **focal** (Lin et al. 2017, "Focal Loss for Dense Object
    Detection", in its multi-class softmax form):

    ``L = mean_i (1 - p_t,i) ** gamma * CE_i``, ``p_t,i = softmax(z)[i, y_i]``; gamma default 1.
    The modulating factor is ``exp(gamma * log(1 - p_t))`` with a stable ``log(1 - p_t)``.
    """

    def __init__(self, class_counts: CountsLike, gamma: float = 1.0) -> None:
        super().__init__(class_counts)
        self.gamma = check_real("gamma", gamma, low=0.0)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        logp = F.log_softmax(z, dim=1)
        ce = -logp.gather(1, y.unsqueeze(1)).squeeze(1)
        modulator = torch.exp(self.gamma * log_one_minus_pt(logp, y))
        return masked_mean(modulator * ce, mask)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}"
