"""Image sources decoded once into uint8 tensors and cached (docs/methods.md §1; ../shared/data/README.md).

A split is ``(images uint8 [N, 3, H, W], targets int64 [N], class_names)`` in the official order.
Sources: CIFAR-10/100 (an image-folder tree such as ``../shared/data/cifar10``, torchvision's
official python files, or torchvision's download), any ``{train,test}/<class>/*`` tree, and a
synthetic set for tests. The data root is the explicit argument, else ``$LTBENCH_DATA``, else
``./data``.
"""
from __future__ import annotations

import hashlib
import os
import sys
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch

from ..io import atomic_torch_save
from ..registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
CIFAR_URL_HOST = ("www.cs.toronto.edu", 443)


class DataNotFoundError(FileNotFoundError):
    """The data could not be found (and not downloaded); the message says where we looked."""


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded (empty, truncated, not an image); the message
    names the file. ``path`` holds it."""

    def __init__(self, path: Union[str, os.PathLike], reason: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot decode image file {self.path}: {reason}; remove or replace the file")


def decode_image_file(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Decode one image file to uint8 ``[3, H, W]`` RGB (16-bit images scaled to 8 bits); any failure raises
    :class:`ImageDecodeError` naming the file.

    Decoder: ``torchvision.io.decode_image``. torchvision 0.29 deprecates its image decoders in
    favour of TorchCodec and warns on every call; the warning is silenced here only, around the
    call (``warnings.catch_warnings``), never process-wide. Plan: move to TorchCodec's image
    decoder once a TorchCodec release that matches the pinned torch is in the lock file and needs
    no system FFmpeg, keeping this function's contract (uint8 RGB, file named on failure) and
    the tests of ``tests/test_data.py`` on it; until torchvision removes its decoders nothing
    has to change.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read it ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageDecodeError(path, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*image decoding and encoding.*", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*torchcodec.*")
            img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ImageDecodeError(path, f"{size} bytes, truncated or not an image ({type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})") from exc
    if img.dtype != torch.uint8:  # 16-bit PNGs decode to uint16
        from torchvision.transforms.v2.functional import to_dtype

        img = to_dtype(img, torch.uint8, scale=True)
    if img.ndim != 3 or img.shape[0] != 3:
        raise ImageDecodeError(path, f"decoded to shape {tuple(img.shape)}, not [3, H, W]")
    return img


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    targets: torch.Tensor  # int64 [N]
    classes: List[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")


SOURCES: Registry = Registry("dataset", "dataset")


def resolve_root(root: Optional[str | os.PathLike] = None) -> Path:
    """Explicit ``root``, else ``$LTBENCH_DATA``, else ``./data``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("LTBENCH_DATA")
    return Path(env).expanduser() if env else Path("data")


def cache_dir() -> Path:
    """Where decoded tensors are cached: ``$LTBENCH_CACHE`` or ``~/.cache/ltbench``."""
    env = os.environ.get("LTBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ltbench"


def _cached(key: str, build) -> Split:
    path = cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return Split(d["images"], d["targets"], list(d["classes"]))
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    split = build()
    try:
        atomic_torch_save(path, {"images": split.images, "targets": split.targets, "classes": split.classes})
    except OSError:
        pass  # an unwritable cache only costs speed
    return split


def _image_folder_layout_ok(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() for p in folder.iterdir())


def read_image_folder(folder: Path, image_size: Optional[int] = None) -> Split:
    """Decode ``folder/<class>/*`` (classes sorted by name -> labels, files sorted by name).

    The label order and within-class order match ``torchvision.datasets.ImageFolder``. An empty,
    truncated or non-image file raises :class:`ImageDecodeError` naming it.
    """
    from torchvision.transforms.v2.functional import resize

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    key = f"imagefolder:{folder.resolve()}:{image_size}"
    files: List[Path] = []
    labels: List[int] = []
    for label, name in enumerate(classes):
        imgs = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        files += imgs
        labels += [label] * len(imgs)
    if not files:
        raise DataNotFoundError(f"{folder} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    stamp = hashlib.sha1("".join(f"{f.name}{f.stat().st_size}" for f in files[:: max(1, len(files) // 500)]).encode())
    key += f":{len(files)}:{stamp.hexdigest()}"

    def build() -> Split:
        from tqdm.auto import tqdm

        out = []
        for f in tqdm(files, desc=f"decoding {folder.name}", leave=False, mininterval=2.0,
                      disable=len(files) < 2000 or not sys.stderr.isatty()):
            img = decode_image_file(f)  # names the file if it is empty, truncated or not an image
            if image_size is not None and tuple(img.shape[-2:]) != (image_size, image_size):
                img = resize(img, [image_size, image_size], antialias=True)
            out.append(img)
        shapes = {tuple(t.shape) for t in out}
        if len(shapes) != 1:
            raise ValueError(f"images in {folder} have different sizes {sorted(shapes)[:3]}...; pass image_size")
        return Split(torch.stack(out), torch.tensor(labels, dtype=torch.int64), classes)

    return _cached(key, build)


def _can_reach(host: Tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def _torchvision_cifar(name: str, root: Path, train: bool, download: bool) -> Split:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    key = f"{name}:tv:{root.resolve()}:{train}"

    def build() -> Split:
        ds = cls(str(root), train=train, download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))

    try:
        return _cached(key, build)
    except RuntimeError:
        if not download:
            raise
    if not _can_reach(CIFAR_URL_HOST):
        raise DataNotFoundError(f"cannot download {name}: no network connection to {CIFAR_URL_HOST[0]}")
    cls(str(root), train=train, download=True)
    return _cached(key, build)


def _cifar(name: str, num_classes: int):
    def load(root: Optional[str] = None, train: bool = True, download: bool = True, **_: object) -> Split:
        base = resolve_root(root)
        tv_dir = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        sub = "train" if train else "test"
        candidates = [base / name / sub, base / sub]
        for folder in candidates:
            if _image_folder_layout_ok(folder):
                split = read_image_folder(folder)
                if len(split.classes) != num_classes:
                    raise DataNotFoundError(
                        f"{folder} holds {len(split.classes)} classes, {name} needs {num_classes}"
                    )
                return split
        for tv_root in (base, base / name):
            if (tv_root / tv_dir).is_dir():
                return _torchvision_cifar(name, tv_root, train, download=False)
        searched = [str(c) for c in candidates] + [str(base / tv_dir), str(base / name / tv_dir)]
        hint = (
            f"Provide {name} as an image-folder tree <root>/{name}/{{train,test}}/<class>/*.jpg or as "
            f"torchvision's files <root>/{tv_dir}, and point LTBENCH_DATA (or data_root) at <root>."
        )
        if download:
            if _can_reach(CIFAR_URL_HOST):
                return _torchvision_cifar(name, base, train, download=True)
            raise DataNotFoundError(
                f"{name} not found and it cannot be downloaded (no network connection to "
                f"{CIFAR_URL_HOST[0]}). Searched: {', '.join(searched)}. {hint}"
            )
        raise DataNotFoundError(f"{name} not found (download disabled). Searched: {', '.join(searched)}. {hint}")

    return load


SOURCES.register("cifar10")(_cifar("cifar10", 10))
SOURCES.register("cifar100")(_cifar("cifar100", 100))


@SOURCES.register("imagefolder")
def _imagefolder(root: Optional[str] = None, train: bool = True, image_size: Optional[int] = 32, **_: object) -> Split:
    base = resolve_root(root)
    folder = base / ("train" if train else "test")
    if not base.is_dir():
        raise DataNotFoundError(f"data root {base} does not exist (expected {base}/{{train,test}}/<class>/*)")
    if not _image_folder_layout_ok(folder):
        raise DataNotFoundError(
            f"{folder} is missing or has no class folders (expected {base}/{{train,test}}/<class>/*)")
    return read_image_folder(folder, image_size=image_size)


@SOURCES.register("synthetic")
def _synthetic(
    root: Optional[str] = None,
    train: bool = True,
    num_classes: int = 10,
    n_train_per_class: int = 100,
    n_test_per_class: int = 20,
    image_size: int = 32,
    seed: int = 0,
    **_: object,
) -> Split:
    """A learnable toy set for tests: each class has its own colour and stripe orientation plus noise."""
    n = n_train_per_class if train else n_test_per_class
    g = torch.Generator().manual_seed(seed * 7919 + (0 if train else 1))
    # evenly spaced hues, so classes are separable by colour alone
    hue = torch.arange(num_classes, dtype=torch.float32)[:, None] / num_classes - torch.tensor([0.0, 1 / 3, 2 / 3])
    palette = (0.5 + 0.5 * torch.cos(2 * torch.pi * hue)).view(num_classes, 3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    imgs, labels = [], []
    for c in range(num_classes):
        angle = torch.tensor(3.14159 * c / num_classes)
        stripes = (torch.sin((xx * torch.cos(angle) + yy * torch.sin(angle)) * 0.8) + 1) / 2
        base = 0.5 * palette[c] + 0.5 * stripes[None]
        noise = torch.rand(n, 3, image_size, image_size, generator=g)
        imgs.append(((0.8 * base[None] + 0.2 * noise).clamp(0, 1) * 255).to(torch.uint8))
        labels += [c] * n
    # Interleave classes so the "official order" is not sorted by class, like real datasets.
    images, targets = torch.cat(imgs), torch.tensor(labels)
    perm = torch.randperm(len(targets), generator=g)
    return Split(images[perm], targets[perm], [f"class{c}" for c in range(num_classes)])


def load_split(dataset: str, train: bool, root: Optional[str] = None, **options: object) -> Split:
    """Load one split of ``dataset`` (see :data:`SOURCES`) as uint8 tensors, cached after the first decode."""
    return SOURCES.get(dataset)(root=root, train=train, **options)
