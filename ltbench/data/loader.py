"""A device-resident dataset with batched augmentation (docs/methods.md §1), in the spirit of airbench.

The whole split lives on the device as uint8, padded once; a training batch is a gather of
random 32x32 crops (zero-pad 4) with random horizontal flips, then normalisation — a few
tensor ops on the device per batch, no worker processes, no per-image Python.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


class DeviceDataset:
    """uint8 images + int64 targets on ``device``; produces normalised float batches."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        device: torch.device | str = "cpu",
        pad: int = 4,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad!r}")
        self.device = torch.device(device)
        self.pad = int(pad)
        self.size = tuple(images.shape[-2:])
        # Zero padding in pixel space, as RandomCrop(padding=4) on the PIL image does before Normalize.
        self.padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)).to(self.device)
        self.targets = targets.to(self.device, torch.int64)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.targets)

    def _normalise(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return x.to(dtype).contiguous(memory_format=self.memory_format)

    def batch(
        self,
        idx: torch.Tensor,
        augment: bool = False,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` (a LongTensor on the device) as a normalised batch, optionally augmented."""
        h, w = self.size
        p = self.pad
        if not augment or p == 0 and not augment:
            x = self.padded[idx, :, p : p + h, p : p + w]
            return self._normalise(x, dtype), self.targets[idx]
        n = idx.shape[0]
        dev = self.device
        oy = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
        flip = torch.rand((n, 1), device=dev, generator=generator) < 0.5
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = oy + ar_h  # [n, h]
        cols = ox + torch.where(flip, w - 1 - ar_w, ar_w)  # [n, w], reversed where flipped
        x = self.padded[idx[:, None, None, None], torch.arange(3, device=dev)[None, :, None, None],
                        rows[:, None, :, None], cols[:, None, None, :]]
        return self._normalise(x, dtype), self.targets[idx]

    def iterate(
        self, batch_size: int, dtype: torch.dtype = torch.float32
    ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented batches in order (evaluation)."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)), device=self.device)
            yield self.batch(idx, augment=False, dtype=dtype)
