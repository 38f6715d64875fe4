"""Classifier heads: linear, cosine (normalised, no bias), tau-normalised, learnable weight scaling.

All map pooled features ``[N, D]`` to logits ``[N, C]`` and expose ``weight`` ``[C, D]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Linear):
    """``z_ij = <x_i/|x_i|, w_j/|w_j|>`` (LDAM's NormedLinear, SPEC §4 ldam): logits in [-1, 1], no bias;
    the loss applies the scale."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(in_features, num_classes, bias=False)
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class TauNormClassifier(nn.Module):
    """tau-normalisation (Decoupling, SPEC §6): ``w_c <- w_c / ||w_c||^tau``, bias dropped.

    tau = 0 is the plain linear classifier without bias; tau = 1 fully normalised rows.
    """

    def __init__(self, linear: nn.Linear, tau: float = 1.0) -> None:
        super().__init__()
        if not (0.0 <= float(tau) <= 5.0):
            raise ValueError(f"tau must lie in [0, 5], got {tau!r}")
        self.tau = float(tau)
        norms = linear.weight.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.register_buffer("weight", linear.weight.detach() / norms.pow(self.tau))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class LWSClassifier(nn.Module):
    """Learnable weight scaling (Decoupling, SPEC §6): frozen W and b, one learnable scale per class."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("base_weight", linear.weight.detach().clone())
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("base_bias", bias)
        self.scales = nn.Parameter(torch.ones(linear.out_features))

    @property
    def weight(self) -> torch.Tensor:
        return self.base_weight * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.base_weight, self.base_bias)
        return out * self.scales
