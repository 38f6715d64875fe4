"""Classifier heads: linear, cosine (normalised, no bias), tau-normalised, learnable weight scaling.

All map pooled features ``[N, D]`` to logits ``[N, C]`` and expose ``weight`` ``[C, D]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Linear):
    """``z_ij = <x_i/|x_i|, w_j/|w_j|>`` (LDAM's NormedLinear, docs/methods.md §4 ldam): logits in [-1, 1], no bias;
    the loss applies the scale. Computed in float32 under autocast (bf16 cosines scaled by 30 would
    carry a logit error of about 0.05).

    Initialisation as kaiming/LDAM-DRW's ``NormedLinear``: ``uniform(-1, 1)``, then every class vector
    ``w_j`` rescaled to unit norm (the forward pass is invariant to it, but the gradient w.r.t. ``w_j``
    scales as ``1 / |w_j|``, so the starting norm sets the early effective step size).

    ``logit_scale`` is the factor the loss multiplies these cosines by (LDAM's ``s``, 30 by
    default): the logits the loss sees are ``logit_scale * forward(x)``; use them for calibration
    (see :func:`ltbench.models.logit_scale`). ``forward`` itself stays unscaled.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__(in_features, num_classes, bias=False)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a finite number > 0 (LDAM's s, 30 by default), got scale={scale!r}")
        self.logit_scale = float(scale)
        with torch.no_grad():
            nn.init.uniform_(self.weight, -1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            # Under bf16/fp16 autocast the normalisation and the dot products run in float32: the
            # cosines feed LDAM's scale s = 30, which would multiply bf16's ~1.5e-3 error by 30.
            with torch.autocast(x.device.type, enabled=False):
                return F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, logit_scale={self.logit_scale:g}"


class TauNormClassifier(nn.Module):
    """tau-normalisation (Decoupling, docs/methods.md §6): ``w_c <- w_c / ||w_c||^tau``, bias dropped.

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
    """Learnable weight scaling (Decoupling, docs/methods.md §6): frozen W and b, one learnable scale per class."""

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
