"""Long-tailed datasets: counts, the standard subset, image sources and the device-resident loader;
large benchmarks (ImageNet-LT, Places-LT, iNaturalist) streamed from disk in :mod:`.large`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from .counts import PROFILES, long_tailed_counts, long_tailed_indices, zero_count_message
from .jpeg import check_quality, psnr, recompress
from .large import LARGE_DATASETS, LargeLTData, LargeLTDataset, build_large_dataset
from .loader import CIFAR_MEAN, CIFAR_STD, DeviceDataset
from .sources import SOURCES, DataNotFoundError, ImageDecodeError, Split, decode_image_file, load_split, resolve_root

DEFAULT_N_MAX: Dict[str, int] = {"cifar10": 5000, "cifar100": 500}
#: Classes of the in-memory datasets whose class count is known without reading them.
NUM_CLASSES: Dict[str, int] = {"cifar10": 10, "cifar100": 100}


def known_long_tail_shape(
    dataset: str, n_max: Optional[int], options: Optional[Mapping[str, Any]] = None
) -> Optional[Tuple[int, int]]:
    """``(n_max, num_classes)`` of ``dataset``-LT when both are known before reading the data
    (``n_max`` given or the dataset's default; CIFAR's class counts; the synthetic set's options),
    else ``None``. Used to check IR against n_max before any work."""
    options = options or {}
    if n_max is None:
        n_max = DEFAULT_N_MAX.get(dataset)
        if dataset == "synthetic":
            n_max = options.get("n_train_per_class", 100)
    num_classes = options.get("num_classes", 10) if dataset == "synthetic" else NUM_CLASSES.get(dataset)
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (n_max, num_classes))
    if not ok or n_max < 1 or num_classes < 2:  # type: ignore[operator]
        return None
    return n_max, num_classes  # type: ignore[return-value]


@dataclass
class LongTailedData:
    """A long-tailed training subset and the (balanced) test split."""

    dataset: str
    imbalance_ratio: float
    train: Split
    test: Split
    counts: List[int]
    train_indices: torch.Tensor  # into the full official training split
    meta: Dict[str, object] = field(default_factory=dict)
    #: A balanced validation split drawn from the training images the long-tailed subset leaves
    #: unused (``val_per_class`` of :func:`build_long_tailed`), or None.
    val: Optional[Split] = None
    val_indices: Optional[torch.Tensor] = None  # into the full official training split

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def classes(self) -> List[str]:
        return self.train.classes


def _first_per_class(targets: torch.Tensor, k: int) -> torch.Tensor:
    keep = []
    for c in torch.unique(targets).tolist():
        keep.append(torch.nonzero(targets == c).flatten()[:k])
    return torch.sort(torch.cat(keep)).values


def build_long_tailed(
    dataset: str = "cifar10",
    imbalance_ratio: float = 100,
    root: Optional[str] = None,
    n_max: Optional[int] = None,
    profile: str = "exp",
    seed: int = 0,
    test_per_class: Optional[int] = None,
    download: bool = True,
    val_per_class: Optional[int] = None,
    jpeg_quality: Optional[int] = None,
    **source_options: object,
) -> LongTailedData:
    """Build ``dataset``-LT at ``imbalance_ratio`` (docs/methods.md §1).

    ``n_max`` defaults to the dataset's per-class size (5000 CIFAR-10, 500 CIFAR-100); a smaller
    value keeps the same profile at a smaller scale (used by the quick and smoke profiles).
    ``test_per_class`` keeps the first k test images of each class (default: the full test set).
    ``val_per_class``: also draw a balanced validation split of k images per class from the
    training images the long-tailed subset does not use (:func:`validation_indices`), for model
    selection without the test set; a ValueError if some class has fewer than k unused images.
    ``jpeg_quality``: re-encode every image kept (training, validation and test) once more as JPEG
    at this quality (:func:`ltbench.data.jpeg.recompress`), the dose-response check of how much
    a compressed copy of the data costs (docs/methods.md §1.4); ``meta["jpeg_psnr"]`` is the test
    split's PSNR against the images as loaded.
    An IR that leaves a class without images for this ``n_max`` raises a ValueError in terms of IR
    and n_max, before any image is read when ``n_max`` and the class count are known up front.
    """
    if dataset in LARGE_DATASETS:
        raise ValueError(f"dataset={dataset!r} is streamed from disk and does not fit in memory: build it with "
                         "ltbench.data.build_large_dataset and train it with python -m ltbench.train "
                         "(ltbench.train.run)")
    if dataset not in SOURCES:
        SOURCES.get(dataset)  # raises the "unknown dataset" error listing valid names
    if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, (int, float)) or not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}")
    shape = known_long_tail_shape(dataset, n_max, source_options)
    if shape is not None and profile in PROFILES:  # IR against n_max before reading any image
        msg = zero_count_message(shape[0], shape[1], imbalance_ratio, profile)
        if msg:
            raise ValueError(f"invalid imbalance_ratio={imbalance_ratio!r} for n_max={shape[0]}: {msg}")
    if test_per_class is not None and (not isinstance(test_per_class, int) or test_per_class < 1):
        raise ValueError(f"test_per_class must be a positive int or None, got {test_per_class!r}")
    check_quality(jpeg_quality, "jpeg_quality")
    opts = dict(source_options)
    if dataset != "synthetic":
        opts["download"] = download
    train = load_split(dataset, True, root, **opts)
    test = load_split(dataset, False, root, **opts)
    num_classes = len(train.classes)
    per_class_avail = torch.bincount(train.targets, minlength=num_classes)
    if n_max is None:
        n_max = DEFAULT_N_MAX.get(dataset, int(per_class_avail.max()))
    if n_max > int(per_class_avail.min()) and profile == "exp":
        # The exp profile gives class 0 n_max images: it must exist.
        if n_max > int(per_class_avail[0]):
            raise ValueError(f"n_max={n_max} exceeds the {int(per_class_avail[0])} images of class 0")
    counts = long_tailed_counts(n_max, num_classes, imbalance_ratio, profile)
    idx = torch.from_numpy(long_tailed_indices(train.targets.numpy(), counts, seed)).long()
    lt_train = Split(train.images[idx], train.targets[idx], train.classes)
    val, val_idx = None, None
    if val_per_class is not None:
        val_idx = torch.from_numpy(validation_indices(train.targets.numpy(), idx.numpy(), val_per_class, seed)).long()
        val = Split(train.images[val_idx], train.targets[val_idx], train.classes)
    if test_per_class is not None:
        keep = _first_per_class(test.targets, test_per_class)
        test = Split(test.images[keep], test.targets[keep], test.classes)
    meta = {"n_max": n_max, "profile": profile, "seed": seed, "test_per_class": test_per_class,
            "root": str(resolve_root(root)), "train_size": len(idx), "test_size": len(test.targets),
            "val_per_class": val_per_class, "val_size": 0 if val_idx is None else len(val_idx)}
    if jpeg_quality is not None:  # after the subset is chosen: only the kept images are re-encoded
        lt_train = Split(recompress(lt_train.images, jpeg_quality), lt_train.targets, lt_train.classes)
        if val is not None:
            val = Split(recompress(val.images, jpeg_quality), val.targets, val.classes)
        re_test = recompress(test.images, jpeg_quality)
        meta.update(jpeg_quality=jpeg_quality, jpeg_psnr=psnr(test.images, re_test))
        test = Split(re_test, test.targets, test.classes)
    return LongTailedData(dataset, float(imbalance_ratio), lt_train, test, counts, idx, meta, val, val_idx)


def validation_indices(targets: Any, used: Any, per_class: int, seed: int = 0) -> Any:
    """``per_class`` indices per class of the training images not in ``used`` (the long-tailed
    subset), disjoint from it, balanced, and the same in every process: for each class, its unused
    positions in the official order shuffled by a generator seeded with ``(seed, "val")``.

    The test set is another split, so the result is disjoint from it too. A class with fewer unused
    images than ``per_class`` (CIFAR-100-LT's head classes use all 500) raises a ValueError.
    """
    import numpy as np

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"invalid val_per_class={per_class!r}: must be a positive int or None")
    targets = np.asarray(targets)
    unused = np.ones(len(targets), dtype=bool)
    unused[np.asarray(used, dtype=np.int64)] = False
    rng = np.random.default_rng([int(seed), 0x76616C])  # "val"
    out = []
    short = []
    for c in range(int(targets.max()) + 1 if len(targets) else 0):
        pool = np.flatnonzero(unused & (targets == c))
        if len(pool) < per_class:
            short.append(f"class {c}: {len(pool)}")
            continue
        out.append(np.sort(rng.permutation(pool)[:per_class]))
    if short:
        raise ValueError(f"val_per_class={per_class} needs {per_class} unused training images per class, but "
                         f"{'; '.join(short[:5])}{' ...' if len(short) > 5 else ''} (the long-tailed subset uses the "
                         "rest); lower val_per_class or set it to None")
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


__all__ = [
    "long_tailed_counts", "long_tailed_indices", "build_long_tailed", "LongTailedData", "load_split",
    "Split", "SOURCES", "DataNotFoundError", "DeviceDataset", "CIFAR_MEAN", "CIFAR_STD", "DEFAULT_N_MAX",
    "resolve_root", "LARGE_DATASETS", "LargeLTData", "LargeLTDataset", "build_large_dataset",
    "ImageDecodeError", "decode_image_file", "zero_count_message", "known_long_tail_shape", "NUM_CLASSES",
    "validation_indices",
]
