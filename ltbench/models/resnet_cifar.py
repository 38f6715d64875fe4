"""CIFAR ResNets: ResNet-32 with option-A shortcuts (docs/methods.md §2) and a CIFAR-style ResNet-18 (docs/methods.md §8).

Models expose the timm-style split used throughout ltbench:
``forward_features(x) -> [N, C_f, H, W]`` (last feature map, before pooling),
``forward_head(feature_map) -> logits`` (global average pool + classifier ``self.fc``), and
``num_features``. ``self.fc`` can be swapped for any head of :mod:`ltbench.models.heads`.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LambdaShortcut(nn.Module):
    """Option-A shortcut: strided identity with zero-padded channels, no parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = LambdaShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: a 3x3 stem, stages of basic blocks, global pool, linear head."""

    def __init__(
        self,
        num_blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        shortcut: str = "A",
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        stem_width = stem_width or widths[0]
        self.conv1 = nn.Conv2d(3, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        stages: List[nn.Module] = []
        in_planes = stem_width
        for i, (n, w) in enumerate(zip(num_blocks, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, w, stride, shortcut))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(stages)
        self.num_features = in_planes
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(in_planes, num_classes)
        _kaiming_init(self)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for stage in self.layers:
            x = stage(x)
        return x

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))

    def forward_head(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(feature_map))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 of docs/methods.md §2: 16 -> 3 stages x 5 blocks (16/32/64), option-A shortcuts, ~0.46 M params."""
    return CifarResNet([5, 5, 5], [16, 32, 64], num_classes, shortcut="A")


def resnet18_cifar(num_classes: int = 10) -> CifarResNet:
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool, 64/128/256/512, projection shortcuts), docs/methods.md §8."""
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, shortcut="B")
