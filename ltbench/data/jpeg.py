"""JPEG re-encoding of in-memory splits (``data_options={"jpeg_quality": q}``) and the PSNR that
measures it: how much a compressed copy of a dataset can cost accuracy (docs/methods.md §1.4).

This project's CIFAR-10 is itself a JPEG copy (quality 75, 4:2:0; about 30.5 dB against the
official pixels). Its effect cannot be measured without the official files, but its *slope* can:
train the same run on the copy compressed once more at a lower quality, and read accuracy
against the added distortion.
"""
from __future__ import annotations

import io
import math
from typing import Any, Optional

import numpy as np
import torch

#: The quality range Pillow's JPEG encoder accepts.
QUALITY_RANGE = (1, 100)


def check_quality(value: Any, param: str = "data_options.jpeg_quality") -> Optional[int]:
    """``value`` if it is None or an int JPEG quality in :data:`QUALITY_RANGE`, else a ValueError naming ``param``."""
    lo, hi = QUALITY_RANGE
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
        return value
    raise ValueError(f"invalid {param}={value!r}: must be an int in [{lo}, {hi}] (the JPEG quality every image "
                     "is re-encoded at) or absent")


def recompress(images: torch.Tensor, quality: int) -> torch.Tensor:
    """``images`` (uint8 [N, 3, H, W]) encoded as baseline JPEG at ``quality`` with 4:2:0 chroma
    subsampling (the layout of the project's CIFAR-10 copy), then decoded."""
    from PIL import Image

    check_quality(quality, "quality")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(hwc)
    buf = io.BytesIO()
    for i, img in enumerate(hwc):
        buf.seek(0)
        buf.truncate()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error of two uint8 image tensors of one shape, in (0-255 levels)²."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float(((a.double() - b.double()) ** 2).mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of ``b`` against ``a`` in dB (peak 255; ``inf`` when identical)."""
    m = mse(a, b)
    return math.inf if m == 0 else 10 * math.log10(255.0 ** 2 / m)
