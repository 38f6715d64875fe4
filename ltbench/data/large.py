"""Large long-tailed benchmarks streamed from disk: ImageNet-LT, Places-LT, iNaturalist 2017/2018.

- ImageNet-LT and Places-LT (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World",
  CVPR 2019) are defined by split files, one image per line: ``relative/path label``
  (``ImageNet_LT_train.txt`` / ``ImageNet_LT_test.txt``, ``Places_LT_train.txt`` /
  ``Places_LT_test.txt``). ImageNet-LT: 1000 classes, 115.8k training images, 1280 to 5 per class,
  a balanced 50k test set; Places-LT: 365 classes, 62.5k training images, 4980 to 5 per class.
- iNaturalist 2017 / 2018 (Van Horn et al., CVPR 2018) ship official JSON annotations
  (``train2018.json`` / ``val2018.json``) with ``images`` (``id``, ``file_name``),
  ``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``, ``name``).
  2018: 8142 classes, 437.5k training images; the long-tailed papers test on ``val2018.json``.
  The Decoupling repository's text lists (``iNaturalist18_train.txt``) are read as split files.
- Any image-folder tree ``<split>/<class>/*`` can also be streamed (classes sorted by name).

Images are decoded with ``torchvision.io.decode_image`` and transformed with
``torchvision.transforms.v2``: the ImageNet recipe that Decoupling (Kang et al., ICLR 2020) and
BBN (Zhou et al., CVPR 2020) use, ``RandomResizedCrop(224)`` + horizontal flip (+ ``ColorJitter``
0.4 on ImageNet-LT / Places-LT) for training, ``Resize(256)`` + ``CenterCrop(224)`` for testing,
normalised with the ImageNet statistics (iNaturalist: the statistics of Decoupling's released
loader). Many / medium / few shot groups come from the training counts with docs/methods.md §3's thresholds
(:func:`ltbench.metrics.shot_groups`: > 100, 20..100, < 20 images).

:class:`LargeLTDataset` is a ``torch.utils.data.Dataset`` with ``.targets`` and
``class_counts``; with :class:`ltbench.samplers.EpochSampler` every class-level sampler of
docs/methods.md §5 drives a normal ``DataLoader``. :func:`build_large_dataset` builds both splits, with
every check (split files, lines, labels, missing images, empty classes) done before training.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..metrics import shot_groups
from ..registry import Registry
from .sources import IMAGE_EXTENSIONS, DataNotFoundError, decode_image_file, resolve_root

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "INAT_MEAN", "INAT_STD", "LargeDatasetSpec", "LARGE_DATASETS",
    "SPLIT_READERS", "SplitList", "read_split_file", "read_inat_json", "read_folder_split", "read_split",
    "imagenet_transforms", "LargeLTDataset", "LargeLTData", "build_large_dataset", "LARGE_OPTIONS",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: iNaturalist 2018 statistics of Decoupling's released loader (``data/dataloader.py``).
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class LargeDatasetSpec:
    """A streamed benchmark: class count, default split files (relative to the data root) and the
    normalisation / colour jitter of its training recipe. ``num_classes=None``: from the data."""

    name: str
    num_classes: Optional[int]
    train_split: Optional[str]
    test_split: Optional[str]
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    color_jitter: float = 0.4
    description: str = ""


#: name -> :class:`LargeDatasetSpec` (the registry stores the specs themselves).
LARGE_DATASETS: Registry[LargeDatasetSpec] = Registry("large dataset", "dataset")
for _spec in (
    LargeDatasetSpec("imagenet_lt", 1000, "ImageNet_LT_train.txt", "ImageNet_LT_test.txt",
                     description="ImageNet-LT (Liu et al. 2019): 1000 classes, 1280..5 images per class"),
    LargeDatasetSpec("places_lt", 365, "Places_LT_train.txt", "Places_LT_test.txt",
                     description="Places-LT (Liu et al. 2019): 365 classes, 4980..5 images per class"),
    LargeDatasetSpec("inat2018", 8142, "train2018.json", "val2018.json", INAT_MEAN, INAT_STD, 0.0,
                     description="iNaturalist 2018: 8142 classes, official JSON annotations, tested on val"),
    LargeDatasetSpec("inat2017", 5089, "train2017.json", "val2017.json", INAT_MEAN, INAT_STD, 0.0,
                     description="iNaturalist 2017: 5089 classes, official JSON annotations, tested on val"),
    LargeDatasetSpec("lt_splits", None, None, None,
                     description="any split files / JSON / image folders given as train_split and test_split"),
):
    LARGE_DATASETS.register(_spec.name)(_spec)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Split readers


@dataclass
class SplitList:
    """One split as read from its file: absolute image paths, integer labels, optional class names."""

    paths: List[str]
    labels: List[int]
    source: str
    class_names: Dict[int, str] = field(default_factory=dict)


def read_split_file(path: PathLike, images_root: PathLike, param: str = "split") -> SplitList:
    """Lines ``relative/path label`` (ImageNet-LT / Places-LT / Decoupling's iNaturalist lists).

    Blank lines and lines starting with ``#`` are skipped; the path may contain spaces (the
    label is the last field). A class is named after the folder holding its first image
    (``train/n01440764/x.JPEG`` -> ``n01440764``).
    """
    path, root = Path(path), Path(images_root)
    paths: List[str] = []
    labels: List[int] = []
    names: Dict[int, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            label: Optional[int] = None
            if len(parts) == 2:
                try:
                    label = int(parts[1])
                except ValueError:
                    label = None
            if label is None:
                raise ValueError(f"{param}={str(path)!r}: bad line {lineno}: {line[:200]!r}; expected "
                                 "'<relative/path> <integer label>' (e.g. 'train/n01440764/n01440764_10026.JPEG 0')")
            rel = parts[0]
            paths.append(str(root / rel))
            labels.append(label)
            if label not in names:
                parent = Path(rel).parent.name
                if parent:
                    names[label] = parent
    return SplitList(paths, labels, str(path), names)


def read_inat_json(path: PathLike, images_root: PathLike, param: str = "split") -> SplitList:
    """iNaturalist's official annotations: ``images`` (``id``, ``file_name``), ``annotations``
    (``image_id``, ``category_id``), ``categories`` (``id``, ``name``).

    Category ids are mapped to labels ``0..C-1`` in increasing id order (the identity for 2017 and
    2018, whose ids are already contiguous); images keep the order of ``annotations``.
    """
    path, root = Path(path), Path(images_root)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{param}={str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{param}={str(path)!r}: expected a JSON object with keys images, annotations, "
                         f"categories; got a {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{param}={str(path)!r} lacks the key(s) {missing} of iNaturalist's annotation format "
                         "(images, annotations, categories)")
    if not data["annotations"]:
        raise ValueError(f"{param}={str(path)!r} has no annotations (iNaturalist's test2018.json is unlabelled: "
                         "the long-tailed papers test on val2018.json)")
    try:
        files = {img["id"]: img["file_name"] for img in data["images"]}
        cat_ids = sorted(c["id"] for c in data["categories"])
        names_by_id = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{param}={str(path)!r}: malformed images/categories entry (missing {exc})") from None
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    paths: List[str] = []
    labels: List[int] = []
    for n, ann in enumerate(data["annotations"]):
        try:
            image_id, cat = ann["image_id"], ann["category_id"]
        except (KeyError, TypeError):
            raise ValueError(f"{param}={str(path)!r}: annotation {n} lacks image_id/category_id: {ann!r}") from None
        if image_id not in files:
            raise ValueError(f"{param}={str(path)!r}: annotation {n} refers to image_id={image_id!r}, which is not "
                             "in 'images'")
        if cat not in label_of:
            raise ValueError(f"{param}={str(path)!r}: annotation {n} has category_id={cat!r}, which is not in "
                             f"'categories' (ids {cat_ids[0]}..{cat_ids[-1]})")
        paths.append(str(root / files[image_id]))
        labels.append(label_of[cat])
    return SplitList(paths, labels, str(path), {label_of[c]: names_by_id[c] for c in cat_ids})


def read_folder_split(path: PathLike, images_root: PathLike = "", param: str = "split") -> SplitList:
    """An image-folder tree ``path/<class>/*`` (classes sorted by name -> labels, files sorted)."""
    folder = Path(path)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(f"{param}={str(folder)!r} has no class sub-folders (expected {folder}/<class>/<image>)")
    paths: List[str] = []
    labels: List[int] = []
    for label, name in enumerate(classes):
        imgs = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += [str(p) for p in imgs]
        labels += [label] * len(imgs)
    return SplitList(paths, labels, str(folder), dict(enumerate(classes)))


#: reader name -> function(path, images_root, param) -> SplitList.
SPLIT_READERS: Registry[SplitList] = Registry("split reader", "reader")
SPLIT_READERS.register("text")(read_split_file)
SPLIT_READERS.register("inat_json")(read_inat_json)
SPLIT_READERS.register("folder")(read_folder_split)


def _reader_name(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return {".json": "inat_json"}.get(path.suffix.lower(), "text")


def read_split(path: PathLike, images_root: PathLike, param: str = "split", reader: Optional[str] = None) -> SplitList:
    """Read one split with ``reader`` (default by the path: folder -> ``folder``, ``*.json`` ->
    ``inat_json``, anything else -> ``text``)."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{param}={str(path)!r} not found (a split file 'relative/path label', an "
                                "iNaturalist JSON or an image folder)")
    return SPLIT_READERS.get(reader or _reader_name(path))(path, images_root, param)


# --------------------------------------------------------------------------------------------
# Transforms


def imagenet_transforms(
    train: bool,
    image_size: int = 224,
    resize: int = 256,
    color_jitter: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_scale: Tuple[float, float] = (0.08, 1.0),
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ImageNet recipe on uint8 ``[3, H, W]`` tensors (``torchvision.transforms.v2``).

    Train: ``RandomResizedCrop(image_size, crop_scale)``, ``RandomHorizontalFlip``,
    ``ColorJitter(b, c, s)`` with ``b = c = s = color_jitter`` when > 0 (Decoupling: 0.4 on
    ImageNet-LT / Places-LT, none on iNaturalist), then float and normalise. Test:
    ``Resize(resize)`` (shorter side) and ``CenterCrop(image_size)``.
    """
    from torchvision.transforms import v2

    ops: List[Any]
    if train:
        ops = [v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True), v2.RandomHorizontalFlip()]
        if color_jitter > 0:
            ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    else:
        ops = [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


# --------------------------------------------------------------------------------------------
# Dataset


def _decode(path: str) -> torch.Tensor:
    # Scoped warning filter and the file named on failure: see sources.decode_image_file.
    return decode_image_file(path)


class LargeLTDataset(Dataset):
    """Images on disk with integer labels: a ``torch.utils.data.Dataset`` of ``(image, label)``.

    ``dataset[i]`` applies ``transform`` (the training transform for a training split) with the
    global RNG, as any torchvision dataset. ``dataset[(i, seed, augment)]`` is what
    :mod:`ltbench.train` asks for: the training transform (``augment``) or the test transform,
    drawn from a generator seeded with ``seed``, so an image's augmentation depends only on its
    position in the epoch's global draw, not on the worker or the rank that loads it.
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        train_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        test_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        train: bool = True,
        name: str = "",
    ) -> None:
        self.paths = list(paths)
        self.targets = torch.as_tensor(targets, dtype=torch.int64).clone()
        if len(self.paths) != len(self.targets):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        self.classes = list(classes)
        self.train_transform = train_transform
        self.test_transform = test_transform
        self.train = train
        self.name = name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_counts(self) -> List[int]:
        """Images per class ``[C]`` (the ``n_j`` of docs/methods.md §4-§5 for a training split)."""
        return torch.bincount(self.targets, minlength=self.num_classes).tolist()

    def shot_groups(self, many: int = 100, few: int = 20) -> Dict[str, List[int]]:
        """Many / medium / few classes by this split's counts (docs/methods.md §3 thresholds)."""
        return shot_groups(self.class_counts, many=many, few=few)

    @property
    def transform(self) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        return self.train_transform if self.train else self.test_transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """The decoded image ``index``: uint8 ``[3, H, W]`` RGB."""
        return _decode(self.paths[index])

    def __getitem__(self, item: int | Tuple[int, int, bool]) -> Tuple[torch.Tensor, int]:
        if isinstance(item, tuple):
            index, seed, augment = item
            tf = self.train_transform if augment else self.test_transform
            img = self.load(index)
            if tf is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    img = tf(img)
        else:
            index = int(item)
            img = self.load(index)
            if self.transform is not None:
                img = self.transform(img)
        return img, int(self.targets[index])

    def subset(self, indices: Sequence[int]) -> "LargeLTDataset":
        """The images ``indices`` (in that order), same classes and transforms."""
        idx = [int(i) for i in indices]
        return LargeLTDataset([self.paths[i] for i in idx], self.targets[idx], self.classes,
                              self.train_transform, self.test_transform, self.train, self.name)

    def first_per_class(self, k: int) -> "LargeLTDataset":
        """The first ``k`` images of every class, in split order (quick, balanced test subsets)."""
        seen: Dict[int, int] = {}
        keep = []
        for i, t in enumerate(self.targets.tolist()):
            if seen.get(t, 0) < k:
                seen[t] = seen.get(t, 0) + 1
                keep.append(i)
        return self.subset(keep)

    def __repr__(self) -> str:
        return (f"LargeLTDataset({self.name or '?'}, {'train' if self.train else 'test'}, {len(self)} images, "
                f"{self.num_classes} classes)")


@dataclass
class LargeLTData:
    """Both splits of a streamed benchmark; the interface of :class:`ltbench.data.LongTailedData`
    that the engine uses (``train.targets``, ``counts``, ``classes``, ``test``)."""

    dataset: str
    imbalance_ratio: float
    train: LargeLTDataset
    test: LargeLTDataset
    counts: List[int]
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def classes(self) -> List[str]:
        return self.train.classes

    def shot_groups(self, many: int = 100, few: int = 20) -> Dict[str, List[int]]:
        """Many / medium / few classes by the training counts (docs/methods.md §3)."""
        return shot_groups(self.counts, many=many, few=few)


#: Options of :func:`build_large_dataset` that ``TrainConfig.data_options`` may set.
LARGE_OPTIONS = ("train_split", "test_split", "images_root", "num_classes", "image_size", "resize", "color_jitter",
                 "mean", "std", "crop_scale", "check_files", "reader")


def _resolve_root(name: str, root: Optional[PathLike], train_split: str) -> Path:
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    base = resolve_root(None)
    candidates = [base / name, base]
    for c in candidates:
        if (c / train_split).exists() or Path(train_split).is_absolute():
            return c
    raise DataNotFoundError(
        f"dataset={name!r}: train_split {train_split!r} not found under {', '.join(str(c) for c in candidates)}; "
        "set data_root (or $LTBENCH_DATA) to the folder holding the images and split files, or give "
        "data_options.train_split / test_split as absolute paths")


def _check_labels(split: SplitList, num_classes: int, param: str) -> None:
    bad = [(i, y) for i, y in enumerate(split.labels) if not 0 <= y < num_classes]
    if bad:
        i, y = bad[0]
        raise ValueError(f"{param}={split.source!r}: {len(bad)} label(s) outside [0, num_classes={num_classes}), "
                         f"first: label {y} of {split.paths[i]!r}")


def _check_files(split: SplitList, param: str) -> None:
    missing = [p for p in split.paths if not os.path.isfile(p)]
    if missing:
        first = ", ".join(repr(p) for p in missing[:5])
        raise DataNotFoundError(f"{param}={split.source!r}: {len(missing)} of {len(split.paths)} listed images are "
                                f"missing (first: {first}); check data_root / images_root, or pass "
                                "check_files=False to skip this check")


def _checked_large_args(name: str, spec: "LargeDatasetSpec", train_split: Any, test_split: Any, image_size: Any,
                        resize: Any, test_per_class: Any, color_jitter: Any, mean: Any, std: Any,
                        crop_scale: Any) -> Tuple[Any, Any, float, Tuple[float, ...], Tuple[float, ...]]:
    """:func:`build_large_dataset`'s arguments checked, with the dataset's defaults filled in:
    (train_split, test_split, color jitter, mean, std)."""
    train_split = train_split if train_split is not None else spec.train_split
    test_split = test_split if test_split is not None else spec.test_split
    for param, value in (("train_split", train_split), ("test_split", test_split)):
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise ValueError(f"invalid {param}={value!r} for dataset={name!r}: must be a split file, an iNaturalist "
                             "JSON file or an image folder (data_options.train_split / test_split)")
    for param, value, lo in (("image_size", image_size, 1), ("resize", resize, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"invalid {param}={value!r}: must be a positive int")
    if test_per_class is not None and (isinstance(test_per_class, bool) or not isinstance(test_per_class, int)
                                       or test_per_class < 1):
        raise ValueError(f"invalid test_per_class={test_per_class!r}: must be None or a positive int")
    jitter = spec.color_jitter if color_jitter is None else color_jitter
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        raise ValueError(f"invalid color_jitter={color_jitter!r}: must be a number in [0, 1] (0 disables it)")
    mean = tuple(mean) if mean is not None else spec.mean
    std = tuple(std) if std is not None else spec.std
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"invalid mean={mean!r} / std={std!r}: three numbers each, std > 0")
    if len(tuple(crop_scale)) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"invalid crop_scale={crop_scale!r}: (low, high) with 0 < low <= high <= 1")

    return train_split, test_split, jitter, mean, std


def build_large_dataset(
    name: str,
    root: Optional[PathLike] = None,
    train_split: Optional[str] = None,
    test_split: Optional[str] = None,
    images_root: Optional[PathLike] = None,
    num_classes: Optional[int] = None,
    image_size: int = 224,
    resize: int = 256,
    color_jitter: Optional[float] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    crop_scale: Sequence[float] = (0.08, 1.0),
    check_files: bool = True,
    reader: Optional[str] = None,
    test_per_class: Optional[int] = None,
) -> LargeLTData:
    """Read and check both splits of the streamed benchmark ``name`` (see :data:`LARGE_DATASETS`).

    ``root``: the folder holding the images (and, for relative names, the split files); default
    ``$LTBENCH_DATA/<name>`` or ``$LTBENCH_DATA``. ``train_split`` / ``test_split``: split files,
    iNaturalist JSON files or image folders (default: the dataset's standard names), relative to
    ``root`` unless absolute. ``images_root``: where the listed relative image paths start
    (default ``root``). ``num_classes``: the benchmark's (default) or, for ``lt_splits``, inferred
    as ``max(label) + 1``. ``test_per_class``: keep the first k test images of each class.
    ``check_files``: verify that every listed image exists (one ``stat`` per image).

    Raises before any training: a missing split file (naming the parameter and path), a bad line,
    labels outside ``[0, num_classes)``, missing images (how many, the first few), a class
    without training images.
    """
    spec: LargeDatasetSpec = LARGE_DATASETS.get(name)  # type: ignore[assignment]
    train_split, test_split, jitter, mean, std = _checked_large_args(
        name, spec, train_split, test_split, image_size, resize, test_per_class, color_jitter, mean, std, crop_scale)
    base = _resolve_root(name, root, str(train_split))
    img_root = Path(images_root).expanduser() if images_root is not None else base
    tr = read_split(base / str(train_split), img_root, "train_split", reader)
    te = read_split(base / str(test_split), img_root, "test_split", reader)
    if not tr.labels:
        raise ValueError(f"train_split={tr.source!r} lists no images")
    if not te.labels:
        raise ValueError(f"test_split={te.source!r} lists no images")
    if num_classes is None:
        num_classes = spec.num_classes if spec.num_classes is not None else max(tr.labels) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"invalid num_classes={num_classes!r}: must be an int >= 2")
    _check_labels(tr, num_classes, "train_split")
    _check_labels(te, num_classes, "test_split")
    counts = torch.bincount(torch.tensor(tr.labels), minlength=num_classes).tolist()
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(f"train_split={tr.source!r}: {len(empty)} of num_classes={num_classes} classes have no "
                         f"training image (first: {empty[:10]}); the losses and samplers need n_j >= 1")
    if check_files:
        _check_files(tr, "train_split")
        _check_files(te, "test_split")
    names = {**te.class_names, **tr.class_names}
    classes = [names.get(c, f"class{c}") for c in range(num_classes)]
    train_tf = imagenet_transforms(True, image_size, resize, float(jitter), mean, std, tuple(crop_scale))
    test_tf = imagenet_transforms(False, image_size, resize, 0.0, mean, std)
    train = LargeLTDataset(tr.paths, tr.labels, classes, train_tf, test_tf, train=True, name=name)
    test = LargeLTDataset(te.paths, te.labels, classes, train_tf, test_tf, train=False, name=name)
    if test_per_class is not None:
        test = test.first_per_class(test_per_class)
    ratio = max(counts) / min(counts)
    meta = {"root": str(base), "images_root": str(img_root), "train_split": tr.source, "test_split": te.source,
            "train_size": len(train), "test_size": len(test), "imbalance_ratio_actual": ratio,
            "image_size": image_size, "resize": resize, "color_jitter": float(jitter), "mean": list(mean),
            "std": list(std), "test_per_class": test_per_class}
    return LargeLTData(name, float(ratio), train, test, counts, meta)
