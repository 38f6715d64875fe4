"""Readers of the large long-tailed benchmarks (ltbench.data.large) on small fixtures.

ImageNet-LT / Places-LT split files (``relative/path label``), iNaturalist's official JSON
annotations, image folders; the checks before training (missing split files, bad lines, labels out
of range, missing images, classes without training images); decoding and the ImageNet-style
transforms; the many/medium/few groups of docs/methods.md §3 from the training counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ltbench.config import TrainConfig
from ltbench.data import DataNotFoundError, LARGE_DATASETS, build_long_tailed
from ltbench.data.large import (LargeLTDataset, build_large_dataset, imagenet_transforms, read_inat_json,
                                read_split_file)
from ltbench.metrics import shot_groups

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _png(path: Path, value: int, size=(20, 28)) -> None:
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.full((3, *size), value, dtype=torch.uint8)
    img[0, :, : size[1] // 2] = 255 - value  # not flip-symmetric, so augmentations are visible
    write_png(img, str(path))


def _split_file(path: Path, rows) -> Path:
    path.write_text("".join(f"{p} {y}\n" for p, y in rows))
    return path


@pytest.fixture
def imagenet_like(tmp_path: Path) -> Path:
    """ImageNet-LT layout: <root>/train/<wnid>/*.JPEG-like files listed in ImageNet_LT_*.txt."""
    train = [(f"train/n0{c}/img_{c}_{i}.png", c) for c, n in enumerate([5, 3, 2]) for i in range(n)]
    test = [(f"val/n0{c}/v_{c}_{i}.png", c) for c in range(3) for i in range(2)]
    for rel, c in train + test:
        _png(tmp_path / rel, 40 * (c + 1))
    _split_file(tmp_path / "ImageNet_LT_train.txt", train)
    _split_file(tmp_path / "ImageNet_LT_test.txt", test)
    return tmp_path


def test_split_file_reader(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("# a comment\ntrain/n01/a b.JPEG 0\n\n  train/n02/c.JPEG   1  \ntrain/n01/d.JPEG 0\n")
    s = read_split_file(f, tmp_path / "imgs")
    assert s.labels == [0, 1, 0]
    assert s.paths == [str(tmp_path / "imgs" / p) for p in ("train/n01/a b.JPEG", "train/n02/c.JPEG", "train/n01/d.JPEG")]
    assert s.class_names == {0: "n01", 1: "n02"}


@pytest.mark.parametrize("line", ["train/x.JPEG", "train/x.JPEG zero", "7"])
def test_split_file_bad_line_names_file_and_line(tmp_path, line):
    f = tmp_path / "bad.txt"
    f.write_text(f"train/ok.JPEG 0\n{line}\n")
    with pytest.raises(ValueError, match=r"train_split=.*bad\.txt.*bad line 2.*<relative/path> <integer label>"):
        read_split_file(f, tmp_path, "train_split")


def _inat(path: Path, cat_ids=(3, 7, 10), per_cat=(4, 2, 1), annotations=True) -> Path:
    images, anns, k = [], [], 0
    for cid, n in zip(cat_ids, per_cat):
        for i in range(n):
            images.append({"id": 1000 + k, "file_name": f"train_val2018/Plantae/{cid}/{i}.jpg", "width": 8, "height": 8})
            anns.append({"id": k, "image_id": 1000 + k, "category_id": cid})
            k += 1
    data = {"images": images, "annotations": anns if annotations else [],
            "categories": [{"id": c, "name": f"species_{c}", "supercategory": "Plantae"} for c in reversed(cat_ids)]}
    path.write_text(json.dumps(data))
    return path


def test_inat_json_reader_maps_category_ids_in_order(tmp_path):
    s = read_inat_json(_inat(tmp_path / "train2018.json"), tmp_path)
    assert s.labels == [0] * 4 + [1] * 2 + [2]
    assert s.paths[4] == str(tmp_path / "train_val2018/Plantae/7/0.jpg")
    assert s.class_names == {0: "species_3", 1: "species_7", 2: "species_10"}


def test_inat_json_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no annotations.*val2018.json"):
        read_inat_json(_inat(tmp_path / "test2018.json", annotations=False), tmp_path, "test_split")
    (tmp_path / "x.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['categories'\]"):
        read_inat_json(tmp_path / "x.json", tmp_path)
    data = json.loads(_inat(tmp_path / "y.json").read_text())
    data["annotations"][0]["category_id"] = 99
    (tmp_path / "y.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="category_id=99"):
        read_inat_json(tmp_path / "y.json", tmp_path)


def test_inat_dataset_with_default_file_names(tmp_path):
    _inat(tmp_path / "train2018.json")
    _inat(tmp_path / "val2018.json", per_cat=(1, 1, 1))
    d = build_large_dataset("inat2018", root=tmp_path, num_classes=3, check_files=False)
    assert d.counts == [4, 2, 1] and d.classes == ["species_3", "species_7", "species_10"]
    assert d.meta["color_jitter"] == 0.0 and d.meta["mean"] == [0.466, 0.471, 0.380]  # Decoupling's iNat loader
    with pytest.raises(ValueError, match=r"8139 of num_classes=8142 classes have no training image"):
        build_large_dataset("inat2018", root=tmp_path, check_files=False)


def test_imagenet_lt_dataset_end_to_end(imagenet_like):
    d = build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=3, image_size=16, resize=18)
    assert d.counts == [5, 3, 2] and d.classes == ["n00", "n01", "n02"] and len(d.test) == 6
    assert d.imbalance_ratio == 2.5 and d.meta["color_jitter"] == 0.4
    train = d.train
    assert isinstance(train, torch.utils.data.Dataset) and train.targets.dtype == torch.int64
    assert train.class_counts == [5, 3, 2]
    x, y = d.test[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 0
    a, _ = train[(4, 123, True)]
    b, _ = train[(4, 123, True)]
    c, _ = train[(4, 124, True)]
    assert torch.equal(a, b) and a.shape == (3, 16, 16)  # the seed fixes the augmentation
    assert not torch.equal(a, c)
    state = torch.random.get_rng_state()
    train[(1, 5, True)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    plain, _ = train[(4, 0, False)]
    ref = imagenet_transforms(False, 16, 18)(train.load(4))
    assert torch.equal(plain, ref)
    assert len(d.test.first_per_class(1)) == 3
    sub = build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=3, test_per_class=1)
    assert sub.test.targets.tolist() == [0, 1, 2]


def test_many_medium_few_from_training_counts(tmp_path):
    counts = [150, 101, 100, 20, 19, 1]
    rows = [(f"t/{c}/{i}.jpg", c) for c, n in enumerate(counts) for i in range(n)]
    _split_file(tmp_path / "train.txt", rows)
    _split_file(tmp_path / "test.txt", [(f"v/{c}.jpg", c) for c in range(6)])
    d = build_large_dataset("lt_splits", root=tmp_path, train_split="train.txt", test_split="test.txt",
                            check_files=False)
    assert d.num_classes == 6 and d.counts == counts
    assert d.shot_groups() == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]} == shot_groups(counts)
    assert d.train.shot_groups() == d.shot_groups()


def test_missing_images_are_counted_and_listed(imagenet_like):
    for rel in ("train/n00/img_0_1.png", "train/n02/img_2_0.png"):
        (imagenet_like / rel).unlink()
    with pytest.raises(DataNotFoundError, match=r"train_split=.*2 of 10 listed images are missing \(first: "
                                                r"'.*img_0_1\.png', '.*img_2_0\.png'\)"):
        build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=3)
    d = build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=3, check_files=False)
    assert len(d.train) == 10


def test_labels_out_of_range_missing_split_and_empty_class(imagenet_like, tmp_path):
    with pytest.raises(ValueError, match=r"train_split=.*2 label\(s\) outside \[0, num_classes=2\), first: label 2"):
        build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=2)
    with pytest.raises(DataNotFoundError, match=r"test_split=.*nope\.txt.* not found"):
        build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=3, test_split="nope.txt")
    with pytest.raises(ValueError, match=r"1 of num_classes=4 classes have no training image \(first: \[3\]\)"):
        build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=4)
    with pytest.raises(ValueError, match="invalid train_split=None for dataset='lt_splits'"):
        build_large_dataset("lt_splits", root=imagenet_like)
    with pytest.raises(ValueError, match="unknown large dataset: dataset='imagenet'"):
        build_large_dataset("imagenet", root=imagenet_like)
    with pytest.raises(ValueError, match="color_jitter"):
        build_large_dataset("imagenet_lt", root=imagenet_like, num_classes=3, color_jitter=2)


def test_default_root_is_ltbench_data_subfolder(imagenet_like, tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_DATA", str(imagenet_like.parent))
    sub = imagenet_like.parent / "imagenet_lt"
    if not sub.exists():
        sub.symlink_to(imagenet_like, target_is_directory=True)
    d = build_large_dataset("imagenet_lt", num_classes=3, check_files=False)
    assert d.meta["root"] == str(sub)
    monkeypatch.setenv("LTBENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="train_split 'ImageNet_LT_train.txt' not found under"):
        build_large_dataset("imagenet_lt", num_classes=3)


def test_image_folder_split(tmp_path):
    for c, n in (("cat", 3), ("ant", 2)):
        for i in range(n):
            _png(tmp_path / "train" / c / f"{i}.png", 10 * i)
    _png(tmp_path / "val" / "ant" / "0.png", 5)
    _png(tmp_path / "val" / "cat" / "0.png", 5)
    d = build_large_dataset("lt_splits", root=tmp_path, train_split="train", test_split="val", image_size=8, resize=8)
    assert d.classes == ["ant", "cat"] and d.counts == [2, 3]
    assert d.test[1][0].shape == (3, 8, 8) and d.test[1][1] == 1


def test_registry_config_and_in_memory_guard():
    assert {"imagenet_lt", "places_lt", "inat2017", "inat2018", "lt_splits"} <= set(LARGE_DATASETS.names())
    assert LARGE_DATASETS.get("imagenet_lt").num_classes == 1000
    assert LARGE_DATASETS.get("inat2018").num_classes == 8142
    TrainConfig(dataset="imagenet_lt", model="timm/resnext50_32x4d").validate()
    with pytest.raises(ValueError, match="unknown dataset: dataset='imagenet_l'.*imagenet_lt"):
        TrainConfig(dataset="imagenet_l").validate()
    with pytest.raises(ValueError, match="streamed from disk.*ltbench.train"):
        build_long_tailed("places_lt")


def test_transforms_are_the_imagenet_recipe():
    from torchvision.transforms import v2

    tr = imagenet_transforms(True, color_jitter=0.4)
    kinds = [type(t) for t in tr.transforms]
    assert kinds[:3] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ColorJitter]
    assert tr.transforms[0].size == [224] or tuple(tr.transforms[0].size) == (224, 224)
    assert v2.ColorJitter not in [type(t) for t in imagenet_transforms(True).transforms]
    te = imagenet_transforms(False)
    assert [type(t) for t in te.transforms][:2] == [v2.Resize, v2.CenterCrop]
    out = te(torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_dataset_validates_lengths():
    with pytest.raises(ValueError, match="2 paths but 1 targets"):
        LargeLTDataset(["a", "b"], [0], ["c0"])
