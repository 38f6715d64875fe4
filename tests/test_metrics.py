"""Tests for ltbench.metrics (docs/methods.md §3)."""
from __future__ import annotations

import math

import pytest
import torch

from ltbench.metrics import (
    confusion_matrix,
    expected_calibration_error,
    mean_class_accuracy,
    per_class_accuracy,
    shot_accuracy,
    shot_groups,
    sorted_confusion,
    top1_accuracy,
)

C10_IR100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_confusion_matrix_by_hand():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 1, 0, 1, 2, 0])
    m = confusion_matrix(preds, targets, 3)
    expected = torch.tensor([[2, 1, 0], [0, 1, 1], [1, 0, 0]])
    assert m.dtype == torch.int64 and torch.equal(m, expected)
    # [N, C] scores are arg-maxed; lists are accepted.
    scores = torch.nn.functional.one_hot(preds, 3).float() * 3.0
    assert torch.equal(confusion_matrix(scores, targets.tolist(), 3), expected)


def test_per_class_and_top1():
    m = torch.tensor([[2, 1, 0], [0, 1, 1], [1, 0, 0]])
    acc = per_class_accuracy(m)
    torch.testing.assert_close(acc, torch.tensor([2 / 3, 1 / 2, 0.0], dtype=torch.float64))
    assert top1_accuracy(m) == pytest.approx(3 / 6)
    assert mean_class_accuracy(acc) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_per_class_nan_for_missing_class():
    m = confusion_matrix([0, 1, 1], [0, 1, 0], 3)  # class 2 has no test samples
    acc = per_class_accuracy(m)
    assert acc[0] == 0.5 and acc[1] == 1.0 and math.isnan(acc[2])
    assert mean_class_accuracy(acc) == pytest.approx(0.75)


def test_top1_equals_mean_class_on_balanced_set():
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(10).repeat(30)
    preds = torch.randint(0, 10, (300,), generator=g)
    m = confusion_matrix(preds, targets, 10)
    assert top1_accuracy(m) == pytest.approx(mean_class_accuracy(per_class_accuracy(m)))


def test_shot_groups_cifar10_ir100():
    groups = shot_groups(C10_IR100)
    assert groups == {"many": list(range(8)), "medium": [8, 9], "few": []}
    acc = torch.tensor([0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.5, 0.3])
    shots = shot_accuracy(acc, C10_IR100)
    assert shots["many"] == pytest.approx(0.75)
    assert shots["medium"] == pytest.approx(0.4)
    assert shots["few"] is None  # missing, not 0


def test_shot_groups_boundaries_and_cifar100():
    assert shot_groups([101, 100, 20, 19]) == {"many": [0], "medium": [1, 2], "few": [3]}
    counts = [int(500 * (1 / 100) ** (i / 99)) for i in range(100)]
    sizes = {k: len(v) for k, v in shot_groups(counts).items()}
    assert sizes == {"many": 35, "medium": 35, "few": 30}


def test_shot_accuracy_ignores_nan_classes():
    shots = shot_accuracy([1.0, float("nan"), 0.5, float("nan")], [200, 150, 50, 5])
    assert shots == {"many": 1.0, "medium": 0.5, "few": None}


def test_ece_hand_computed():
    conf = torch.tensor([0.9, 0.9, 0.62, 0.3])
    correct = torch.tensor([1, 0, 1, 0])
    # 15 bins of width 1/15: 0.9 -> bin 13, 0.62 -> bin 9, 0.3 -> bin 4.
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.62) + 1 / 4 * abs(0 - 0.3)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    # Same data as (probs, targets): confidence = max prob, correct = argmax == target.
    probs = torch.tensor(
        [
            [0.9, 0.05, 0.05, 0.0],
            [0.9, 0.05, 0.05, 0.0],
            [0.2, 0.62, 0.18, 0.0],
            [0.3, 0.25, 0.25, 0.2],
        ]
    )
    targets = torch.tensor([0, 1, 1, 1])
    assert expected_calibration_error(probs, targets) == pytest.approx(expected)
    # One bin gives |mean correct - mean conf|.
    assert expected_calibration_error(conf, correct, n_bins=1) == pytest.approx(
        abs(0.5 - (0.9 + 0.9 + 0.62 + 0.3) / 4)
    )


def test_ece_bin_edges():
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    # An edge value belongs to the lower bin (lo, hi]: 2/15 shares a bin with 0.1.
    same = expected_calibration_error(torch.stack([edges[2], torch.tensor(0.1, dtype=torch.float64)]),
                                      torch.tensor([1, 0]))
    assert same == pytest.approx(abs(0.5 - (float(edges[2]) + 0.1) / 2))
    # 0 is in the first bin, 1 in the last.
    assert expected_calibration_error(torch.tensor([0.0, 0.05]), torch.tensor([0, 0])) == pytest.approx(0.025)
    assert expected_calibration_error(torch.tensor([1.0, 0.95]), torch.tensor([1, 1])) == pytest.approx(0.025)


def test_ece_zero_when_calibrated():
    conf = torch.tensor([0.75] * 4 + [0.5] * 2 + [1.0] * 3)
    correct = torch.tensor([1, 1, 1, 0] + [1, 0] + [1, 1, 1])
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)


def test_sorted_confusion():
    m = torch.tensor([[2, 2, 0], [0, 3, 1], [1, 0, 0]])
    counts = [10, 50, 10]
    mat, order = sorted_confusion(m, counts)
    assert order.tolist() == [1, 0, 2]  # descending, ties by class index
    expected = torch.tensor(
        [[3 / 4, 0, 1 / 4], [2 / 4, 2 / 4, 0], [0, 1, 0]], dtype=torch.float64
    )
    torch.testing.assert_close(mat, expected)
    torch.testing.assert_close(mat.sum(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: confusion_matrix([0, 1], [0], 2), r"same length.*2 and 1"),
        (lambda: confusion_matrix([0, 1], [0, 1], 0), r"num_classes must be an int >= 1"),
        (lambda: confusion_matrix([0, 3], [0, 1], 2), r"\[0, 2\).*\[0, 3\]"),
        (lambda: confusion_matrix([0.0, 1.0], [0, 1], 2), r"preds must hold integer"),
        (lambda: confusion_matrix(torch.zeros(2, 3), [0, 1], 2), r"3 score columns"),
        (lambda: per_class_accuracy(torch.zeros(2, 3)), r"square"),
        (lambda: top1_accuracy(torch.zeros(2, 2)), r"no samples"),
        (lambda: shot_accuracy([0.5, 0.5], [10, 20, 30]), r"same length"),
        (lambda: shot_groups([10, 20], many=10, few=20), r"few <= many"),
        (lambda: expected_calibration_error([0.5], [1], n_bins=0), r"n_bins must be an int >= 1"),
        (lambda: expected_calibration_error([0.5, 0.6], [1], n_bins=15), r"same length"),
        (lambda: expected_calibration_error(torch.ones(2, 3) / 3, [0], 15), r"targets \[N\]"),
        (lambda: expected_calibration_error([1.5], [1]), r"\[0, 1\]"),
        (lambda: expected_calibration_error([], []), r"empty"),
        (lambda: sorted_confusion(torch.eye(3), [1, 2]), r"one entry per class"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
