"""LDAM loss: Cao et al. 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss" (NeurIPS), docs/methods.md §4 ldam."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from ._base import ClassWeightMixin, CountsLike, LossBase, as_class_counts, check_real, one_hot, weighted_cross_entropy
from ._registry import LOSSES

__all__ = ["LDAMLoss", "ldam_margins"]


def ldam_margins(class_counts: CountsLike, max_m: float = 0.5) -> Tensor:
    """``m_j ∝ n_j ** -0.25`` scaled so that ``max_j m_j = max_m``, float32."""
    counts = as_class_counts(class_counts)
    m = counts.pow(-0.25)
    return (m * (max_m / m.max())).float()


@LOSSES.register("ldam")
class LDAMLoss(ClassWeightMixin, LossBase):
    """LDAM, docs/methods.md §4 (Cao et al. 2019, NeurIPS):

    ``L = CE(s * (z - m_y * Y), y)``, margins ``m_j ∝ n_j ** -0.25`` with ``max_j m_j = max_m``
    (0.5), scale ``s = 30``. Meant for a cosine (normalised, bias-free) classifier. With
    per-class weights (``weight``/:meth:`set_class_weight`, DRW) it uses PyTorch's weighted mean.
    """

    margins: Tensor

    def __init__(
        self,
        class_counts: CountsLike,
        max_m: float = 0.5,
        s: float = 30.0,
        weight: Optional[Union[Tensor, Sequence[float]]] = None,
    ) -> None:
        super().__init__(class_counts)
        self.max_m = check_real("max_m", max_m, low=0.0, low_open=True)
        self.s = check_real("s", s, low=0.0, low_open=True)
        self.register_buffer("margins", ldam_margins(class_counts, self.max_m), persistent=False)
        self._init_class_weight(weight)

    def compute(self, z: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        Y = one_hot(y, self.num_classes, z.dtype)
        m_y = self.margins.to(z.dtype)[y].unsqueeze(1)
        return weighted_cross_entropy(self.s * (z - m_y * Y), y, self._weight_for(z), mask)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, max_m={self.max_m}, s={self.s}"
