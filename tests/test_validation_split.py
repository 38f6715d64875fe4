"""Model selection without the test set: the balanced validation split from unused training images."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import real_cifar10_root
from ltbench.data import build_long_tailed, validation_indices
from ltbench.experiments import auto_val_per_class, base_config
from ltbench.two_stage import select_tau


def test_validation_indices_are_balanced_disjoint_and_deterministic():
    targets = np.repeat(np.arange(4), 50)
    used = np.concatenate([np.flatnonzero(targets == c)[: 40 - 10 * c] for c in range(4)])
    val = validation_indices(targets, used, 5, seed=0)
    assert np.bincount(targets[val]).tolist() == [5, 5, 5, 5]
    assert not set(val.tolist()) & set(used.tolist())
    assert np.array_equal(val, validation_indices(targets, used, 5, seed=0))
    assert not np.array_equal(val, validation_indices(targets, used, 5, seed=1))
    code = ("import numpy as np; from ltbench.data import validation_indices; t = np.repeat(np.arange(4), 50); "
            "u = np.concatenate([np.flatnonzero(t == c)[: 40 - 10 * c] for c in range(4)]); "
            "print(validation_indices(t, u, 5, seed=0).tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str(val.tolist())  # the same in every process


def test_a_class_without_enough_unused_images_is_refused():
    targets = np.repeat(np.arange(3), 10)
    used = np.flatnonzero(targets == 0)  # class 0 uses all its images, as CIFAR-LT's head class at n_max = 5000
    with pytest.raises(ValueError, match="class 0: 0"):
        validation_indices(targets, used, 2)


def test_auto_validation_split_where_the_data_allows_it():
    assert auto_val_per_class("cifar10", 100.0, 500) == 100          # quick: 4,500 unused head images
    assert auto_val_per_class("cifar10", 100.0, None) is None        # full CIFAR-10-LT: class 0 uses all 5,000
    assert auto_val_per_class("cifar100", 100.0, None) is None       # CIFAR-100-LT: class 0 uses all 500
    assert base_config("cifar10", 100, n_max=500).val_per_class == 100
    assert base_config("cifar10", 100).val_per_class is None
    # A balanced test subset caps the split: the quick profile (100 test images a class) keeps 100,
    # the smoke profile (10) evaluates 10 a class, not ten times its test set.
    assert auto_val_per_class("cifar10", 100.0, 500, test_per_class=100) == 100
    assert auto_val_per_class("cifar10", 10.0, 50, test_per_class=10) == 10
    assert auto_val_per_class("cifar10", 10.0, 50, test_per_class=1000) == 100
    assert auto_val_per_class("cifar10", 100.0, None, test_per_class=10) is None  # still no unused head image
    assert base_config("cifar10", 100, n_max=500, test_per_class=100).val_per_class == 100
    assert base_config("cifar10", 10, n_max=50, test_per_class=10).val_per_class == 10
    assert base_config("cifar10", 10, n_max=50, test_per_class=10, val_per_class=None).val_per_class is None
    with pytest.raises(ValueError, match="test_per_class='abc'"):  # named by the config check, not a bare TypeError
        base_config("cifar10", 10, n_max=50, test_per_class="abc")


def test_select_tau_uses_the_validation_top1_not_the_test():
    sweep = [{"tau": 0.0, "top1": 90.0, "val_top1": 50.0}, {"tau": 1.0, "top1": 60.0, "val_top1": 70.0},
             {"tau": 2.0, "top1": 95.0, "val_top1": 70.0}]
    assert select_tau(sweep)["tau"] == 1.0  # best validation top-1, ties to the smaller tau
    assert select_tau([{"tau": 1.0, "top1": 1.0, "val_top1": None}]) is None


@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_real_cifar10_validation_split_is_disjoint_from_the_subset():
    d = build_long_tailed("cifar10", 100, root=real_cifar10_root(), n_max=500, val_per_class=100, test_per_class=10)
    assert np.bincount(d.val.targets.numpy()).tolist() == [100] * 10
    assert not set(d.val_indices.tolist()) & set(d.train_indices.tolist())
