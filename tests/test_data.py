"""docs/methods.md §1: counts, the standard subset, sources, cache and the device loader."""
from __future__ import annotations

import math
import re
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import real_cifar10_root
from ltbench.data import (DataNotFoundError, DeviceDataset, build_long_tailed, load_split, long_tailed_counts,
                          long_tailed_indices)
from ltbench.data.counts import zero_count_message


def test_spec_check_values():
    assert long_tailed_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert [sum(long_tailed_counts(5000, 10, r)) for r in (200, 100, 50, 10)] == [11203, 12406, 13996, 20431]
    assert [sum(long_tailed_counts(500, 100, r)) for r in (200, 100, 50, 10)] == [9502, 10847, 12608, 19573]


def test_step_profile():
    assert long_tailed_counts(500, 10, 10, "step") == [500] * 5 + [50] * 5
    assert long_tailed_counts(500, 5, 4, "step") == [500, 500, 125, 125, 125]


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_max=5000, num_classes=10, imbalance_ratio=0.5), "imbalance_ratio"),
    (dict(n_max=0, num_classes=10, imbalance_ratio=10), "n_max"),
    (dict(n_max=50, num_classes=0, imbalance_ratio=10), "num_classes"),
    (dict(n_max=50, num_classes=10, imbalance_ratio=10, profile="linear"), "profile"),
])
def test_counts_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        long_tailed_counts(**kwargs)


def _reference_selection(targets, counts, seed):
    # Independent transcription of the recipe everybody uses (LDAM / BBN IMBALANCECIFAR10).
    np.random.seed(seed)
    targets_np = np.array(targets, dtype=np.int64)
    new_idx = []
    for the_class, the_img_num in zip(np.unique(targets_np), counts):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        new_idx.extend(idx[:the_img_num].tolist())
    return new_idx


def test_selection_matches_reference_recipe():
    rng = np.random.RandomState(123)
    targets = rng.randint(0, 10, size=5000).tolist()
    counts = long_tailed_counts(int(min(np.bincount(targets))), 10, 100)
    ours = long_tailed_indices(targets, counts, seed=0)
    assert ours.tolist() == _reference_selection(targets, counts, 0)
    assert long_tailed_indices(targets, counts, seed=1).tolist() == _reference_selection(targets, counts, 1)
    # our call leaves NumPy's global generator as it was
    np.random.seed(7); a = np.random.rand(); np.random.seed(7); long_tailed_indices(targets, counts); b = np.random.rand()
    assert a == b


def test_selection_too_many_requested():
    with pytest.raises(ValueError, match="counts"):
        long_tailed_indices([0, 0, 1], [2, 2])


def test_synthetic_long_tailed_build():
    d = build_long_tailed("synthetic", 10, n_max=40, n_train_per_class=40, n_test_per_class=5)
    assert d.counts == long_tailed_counts(40, 10, 10)
    assert torch.bincount(d.train.targets, minlength=10).tolist() == d.counts
    assert len(d.test.targets) == 50 and d.train.images.dtype == torch.uint8


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10.*cifar100.*imagefolder.*synthetic"):
        build_long_tailed("cifar11", 10)


def test_missing_data_fails_fast_with_folders(tmp_path):
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_split("cifar100", True, root=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_split("imagefolder", True, root=str(tmp_path / "nope"))
    assert time.perf_counter() - t < 5


def test_imagefolder_source_and_cache(tmp_path):
    from torchvision.io import write_png

    for split in ("train", "test"):
        for c, name in enumerate(["b_cls", "a_cls"]):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for k in range(3):
                write_png(torch.full((3, 8, 8), 10 * c + k, dtype=torch.uint8), str(folder / f"{k:04d}.png"))
    s = load_split("imagefolder", True, root=str(tmp_path), image_size=None)
    assert s.classes == ["a_cls", "b_cls"] and s.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert s.images[0, 0, 0, 0].item() == 10 and s.images[3, 0, 0, 0].item() == 0
    t = time.perf_counter()
    s2 = load_split("imagefolder", True, root=str(tmp_path), image_size=None)
    assert time.perf_counter() - t < 1 and torch.equal(s.images, s2.images)


def test_wrong_layout(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataNotFoundError, match="class folders"):
        load_split("imagefolder", True, root=str(tmp_path))


def test_device_dataset_augmentation_is_crop_and_flip():
    imgs = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32)
    ds = DeviceDataset(imgs, torch.tensor([0, 1]), mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))
    x, y = ds.batch(torch.tensor([0, 1]), augment=False)
    assert torch.equal(x, imgs.float()) and y.tolist() == [0, 1]
    g = torch.Generator().manual_seed(0)
    xa, _ = ds.batch(torch.tensor([0, 1] * 50), augment=True, generator=g)
    padded = torch.nn.functional.pad(imgs, (4, 4, 4, 4)).float()
    for i in range(100):
        src = padded[i % 2]
        ok = any(torch.equal(xa[i], src[:, oy:oy + 32, ox:ox + 32]) or torch.equal(xa[i], src[:, oy:oy + 32, ox:ox + 32].flip(-1))
                 for oy in range(9) for ox in range(9))
        assert ok, i
    # determinism for a given generator seed
    xb, _ = ds.batch(torch.tensor([0, 1] * 50), augment=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xa, xb)


@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_real_cifar10_lt_subset_and_fast_reload():
    root = real_cifar10_root()
    d = build_long_tailed("cifar10", 100, root=root)
    assert len(d.train.targets) == 12406 and len(d.test.targets) == 10000
    assert torch.bincount(d.train.targets).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    full = load_split("cifar10", True, root)
    assert d.train_indices.tolist() == _reference_selection(full.targets.tolist(), d.counts, 0)
    t = time.perf_counter()
    load_split("cifar10", True, root); load_split("cifar10", False, root)
    assert time.perf_counter() - t < 3.0  # ~0.5 s on a quiet 2-core machine; decoding takes ~17 s


# ----------------------------------------------------------------------------- issue 18: culprits named


# The tests write their images with torchvision's encoders, which warn about their deprecation.
_ENCODER_WARNING = "ignore:The image decoding and encoding:DeprecationWarning"


def _png_tree(root, bad_name=None, bad_bytes=None):
    """``root/train/<a_cls,b_cls>/*.png`` (3 each); optionally one bad file in ``b_cls``."""
    from torchvision.io import write_png

    for name in ("a_cls", "b_cls"):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for k in range(3):
            write_png(torch.full((3, 8, 8), k, dtype=torch.uint8), str(folder / f"{k:04d}.png"))
    if bad_name is None:
        return None
    bad = root / "train" / "b_cls" / bad_name
    bad.write_bytes(bad_bytes)
    return bad


@pytest.mark.filterwarnings(_ENCODER_WARNING)
@pytest.mark.parametrize("kind", ["empty", "truncated", "not_an_image"])
def test_corrupt_image_in_tree_names_the_file(tmp_path, kind):
    """Before: the decoder's own RuntimeError without the path. After: ImageDecodeError (a
    ValueError) naming the file."""
    from torchvision.io import encode_png

    from ltbench.data import ImageDecodeError

    good = bytes(encode_png(torch.zeros(3, 8, 8, dtype=torch.uint8)).numpy())
    payload = {"empty": b"", "truncated": good[: len(good) // 2], "not_an_image": b"plain text, not a PNG"}[kind]
    bad = _png_tree(tmp_path, "0001_bad.png", payload)
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        load_split("imagefolder", True, root=str(tmp_path), image_size=None)
    assert isinstance(info.value, ImageDecodeError) and info.value.path == str(bad)
    assert ("empty" in str(info.value)) == (kind == "empty")


@pytest.mark.filterwarnings(_ENCODER_WARNING)
def test_decoding_does_not_change_the_process_warning_filters(tmp_path):
    """Before: read_image_folder added a process-wide filter that silenced torchvision's
    deprecation warning for everybody. After: scoped to the decode call."""
    _png_tree(tmp_path)
    before = list(warnings.filters)
    load_split("imagefolder", True, root=str(tmp_path), image_size=None)
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        warnings.warn("The image decoding and encoding capabilities of TorchVision are deprecated", DeprecationWarning)
    assert len(seen) == 1


@pytest.mark.parametrize("n_max,ir,first", [(100, 1000, 7), (100, float("inf"), 1), (49, 49, 9)])
def test_zero_class_count_is_reported_in_ir_and_n_max(n_max, ir, first):
    """Before: IR 1000 with n_max 100 built a subset with empty classes and failed later as
    ``class_counts[7]=0``. After: an error in terms of IR and n_max, with values that work."""
    with pytest.raises(ValueError, match=rf"with n_max {n_max} leaves class {first} with 0 images") as info:
        long_tailed_counts(n_max, 10, ir)
    msg = str(info.value)
    if math.isfinite(ir):
        n_ok = int(re.search(r"n_max >= (\d+)", msg).group(1))
        ir_ok = float(re.search(r"IR <= ([0-9.]+)", msg).group(1))
        assert min(long_tailed_counts(n_ok, 10, ir)) >= 1  # the suggested n_max works ...
        assert zero_count_message(n_ok - 1, 10, ir) is not None  # ... and is the smallest that does
        assert min(long_tailed_counts(n_max, 10, ir_ok)) >= 1  # the suggested IR works
    else:
        assert "must be finite" in msg
    assert long_tailed_counts(100, 10, 100)[-1] == 1  # the boundary itself is fine


def test_zero_class_count_fails_before_reading_any_image(monkeypatch):
    import ltbench.data as data

    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read before the IR / n_max check")

    monkeypatch.setattr(data, "load_split", no_reading)
    with pytest.raises(ValueError, match=r"IR 1000 with n_max 100 leaves class 7 with 0 images .*use n_max >= 1000 or IR <= 100"):
        data.build_long_tailed("cifar10", 1000, n_max=100)
    with pytest.raises(ValueError, match=r"IR inf with n_max 500 leaves class 1 with 0 images"):
        data.build_long_tailed("cifar100", float("inf"))
    with pytest.raises(ValueError, match=r"IR 50 with n_max 40 leaves class 3 with 0 images"):
        data.build_long_tailed("synthetic", 50, n_max=40, num_classes=4, n_train_per_class=40)
