"""Long-tailed datasets: counts, the standard subset, image sources and the device-resident loader;
large benchmarks (ImageNet-LT, Places-LT, iNaturalist) streamed from disk in :mod:`.large`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from .counts import long_tailed_counts, long_tailed_indices
from .large import LARGE_DATASETS, LargeLTData, LargeLTDataset, build_large_dataset
from .loader import CIFAR_MEAN, CIFAR_STD, DeviceDataset
from .sources import SOURCES, DataNotFoundError, Split, load_split, resolve_root

DEFAULT_N_MAX: Dict[str, int] = {"cifar10": 5000, "cifar100": 500}


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
    **source_options: object,
) -> LongTailedData:
    """Build ``dataset``-LT at ``imbalance_ratio`` (SPEC §1).

    ``n_max`` defaults to the dataset's per-class size (5000 CIFAR-10, 500 CIFAR-100); a smaller
    value keeps the same profile at a smaller scale (used by the quick and smoke profiles).
    ``test_per_class`` keeps the first k test images of each class (default: the full test set).
    """
    if dataset in LARGE_DATASETS:
        raise ValueError(f"dataset={dataset!r} is streamed from disk and does not fit in memory: build it with "
                         "ltbench.data.build_large_dataset and train it with python -m ltbench.train "
                         "(ltbench.train.run)")
    if dataset not in SOURCES:
        SOURCES.get(dataset)  # raises the "unknown dataset" error listing valid names
    if not isinstance(imbalance_ratio, (int, float)) or not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}")
    if test_per_class is not None and (not isinstance(test_per_class, int) or test_per_class < 1):
        raise ValueError(f"test_per_class must be a positive int or None, got {test_per_class!r}")
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
    if test_per_class is not None:
        keep = _first_per_class(test.targets, test_per_class)
        test = Split(test.images[keep], test.targets[keep], test.classes)
    meta = {"n_max": n_max, "profile": profile, "seed": seed, "test_per_class": test_per_class,
            "root": str(resolve_root(root)), "train_size": len(idx), "test_size": len(test.targets)}
    return LongTailedData(dataset, float(imbalance_ratio), lt_train, test, counts, idx, meta)


__all__ = [
    "long_tailed_counts", "long_tailed_indices", "build_long_tailed", "LongTailedData", "load_split",
    "Split", "SOURCES", "DataNotFoundError", "DeviceDataset", "CIFAR_MEAN", "CIFAR_STD", "DEFAULT_N_MAX",
    "resolve_root", "LARGE_DATASETS", "LargeLTData", "LargeLTDataset", "build_large_dataset",
]
