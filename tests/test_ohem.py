"""Tests for ltbench.ohem: online hard example mining (Shrivastava et al., CVPR 2016; docs/methods.md §9)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from ltbench.config import TrainConfig
from ltbench.methods import ohem_spec
from ltbench.ohem import (
    OHEMTrainer, check_keep_ratio, frozen_bn_stats, mined_frame, num_kept, ohem_masked, ohem_two_pass, roi_losses,
    select_hard_rois,
)
from ltbench.runs import RunStore, train

SYNTH = {"n_train_per_class": 60, "n_test_per_class": 20, "image_size": 16}


def synthetic_cfg(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", imbalance_ratio=10, data_options=dict(SYNTH), epochs=2, warmup_epochs=1,
                batch_size=32, device="cpu", checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


def linear_problem(n: int = 20, d: int = 6, c: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, c)
    with torch.no_grad():
        model.weight.copy_(torch.randn(c, d, generator=g))
        model.bias.copy_(torch.randn(c, generator=g))
    x = torch.randn(n, d, generator=g) * 2
    y = torch.randint(0, c, (n,), generator=g)
    return model, x, y


def test_k_is_round_keep_ratio_times_n():
    assert [num_kept(128, r) for r in (0.25, 0.5, 0.7, 1.0)] == [32, 64, 90, 128]
    assert num_kept(10, 0.25) == round(2.5) == 2  # Python rounding
    assert num_kept(3, 0.1) == 1  # never an empty selection
    assert num_kept(0, 0.5) == 0


@pytest.mark.parametrize("bad", [0, 0.0, -0.2, 1.01, 2, float("nan"), True, "0.5", None])
def test_bad_keep_ratio_raises(bad):
    with pytest.raises(ValueError, match="keep_ratio"):
        check_keep_ratio(bad)
    with pytest.raises(ValueError, match="keep_ratio"):
        OHEMTrainer(synthetic_cfg(), keep_ratio=bad, progress=False)
    with pytest.raises(ValueError, match="keep_ratio"):
        ohem_spec(synthetic_cfg(), keep_ratio=bad)  # the run spec is refused at the boundary too


def test_bad_mode_and_loss_raise():
    with pytest.raises(ValueError, match="mode"):
        OHEMTrainer(synthetic_cfg(), keep_ratio=0.5, mode="single", progress=False)
    with pytest.raises(ValueError, match="mode"):
        ohem_spec(synthetic_cfg(), keep_ratio=0.5, mode="single")
    with pytest.raises(ValueError, match="loss"):
        ohem_spec(synthetic_cfg(loss="focal"), keep_ratio=0.5)
    with pytest.raises(ValueError, match="loss"):
        OHEMTrainer(synthetic_cfg(loss="focal"), keep_ratio=0.5, progress=False)


@pytest.mark.parametrize("form", ["two_pass", "masked"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
def test_keeps_exactly_the_top_k_and_only_those_get_gradient(form, ratio):
    model, x, y = linear_problem()
    x = x.clone().requires_grad_(True)
    losses = F.cross_entropy(model(x), y, reduction="none").detach()
    k = round(ratio * len(y))
    expected = set(torch.topk(losses, k).indices.tolist())
    out = ohem_two_pass(model, x, y, ratio, model=model) if form == "two_pass" else ohem_masked(model, x, y, ratio)
    assert len(out.kept) == k and set(out.kept.tolist()) == expected
    assert bool((losses[out.kept].min() >= losses[[i for i in range(len(y)) if i not in expected]]).all())
    torch.testing.assert_close(out.loss, losses[out.kept].mean())
    out.loss.backward()
    has_grad = x.grad.abs().sum(dim=1) > 0
    assert set(has_grad.nonzero().flatten().tolist()) == expected


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7, 1.0])
def test_masked_equals_two_pass_without_batchnorm(ratio):
    model, x, y = linear_problem(n=32, seed=1)
    twin = copy.deepcopy(model)
    a = ohem_two_pass(model, x, y, ratio, model=model)
    b = ohem_masked(twin, x, y, ratio)
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    torch.testing.assert_close(model.weight.grad, twin.weight.grad)
    torch.testing.assert_close(model.bias.grad, twin.bias.grad)


def test_two_pass_batchnorm_statistics_come_from_the_kept_samples():
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    reference = copy.deepcopy(model)
    x, y = torch.randn(16, 5, generator=g) * 3 + 1, torch.randint(0, 3, (16,), generator=g)
    out = ohem_two_pass(model, x, y, 0.5, model=model)
    reference(x[out.kept])  # one training forward of the kept samples only
    bn, ref = model[1], reference[1]
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1 and bn.track_running_stats
    # The scoring pass alone leaves the running statistics untouched.
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad(), frozen_bn_stats(model):
        model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# --------------------------------------------------------------------------- detection form


def test_nms_dedupe_drops_rois_overlapping_a_higher_loss_one():
    boxes = torch.tensor([
        [0, 0, 10, 10],  # 0: loss 5
        [0, 0, 10, 9.5],  # 1: IoU 0.95 with 0, loss 4 -> dropped
        [20, 20, 30, 30],  # 2: loss 3
        [0, 0, 10, 6],  # 3: IoU 0.6 with 0 (<= 0.7) -> kept
        [0, 0, 10, 10],  # 4: same box as 0 but another image -> kept
        [20, 20, 30, 29],  # 5: IoU 0.9 with 2, loss 0.5 -> dropped
    ], dtype=torch.float32)
    losses = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    images = torch.tensor([0, 0, 0, 0, 1, 0])
    assert select_hard_rois(losses, boxes, images, 10, nms_iou=0.7).tolist() == [0, 2, 3, 4]
    assert select_hard_rois(losses, boxes, images, 10, nms_iou=None).tolist() == [0, 1, 2, 3, 4, 5]
    assert select_hard_rois(losses, boxes, images, 2, nms_iou=0.7).tolist() == [0, 2]
    assert select_hard_rois(losses, boxes, images, 0).tolist() == []


def test_nms_dedupe_on_random_rois_matches_the_greedy_rule():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(200, 2, generator=g) * 50
    wh = torch.rand(200, 2, generator=g) * 20 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    losses, images = torch.rand(200, generator=g), torch.randint(0, 2, (200,), generator=g)
    kept = select_hard_rois(losses, boxes, images, 64, nms_iou=0.7)
    assert len(kept) == 64 and bool((losses[kept][:-1] >= losses[kept][1:]).all())
    full = select_hard_rois(losses, boxes, images, 200, nms_iou=0.7)
    iou = box_iou(boxes, boxes)
    kept_set = set(full.tolist())
    for i in range(200):  # greedy NMS: dropped <=> overlaps a kept higher-loss RoI of its image
        blockers = [j for j in kept_set if j != i and images[j] == images[i] and losses[j] > losses[i]
                    and iou[i, j] > 0.7]
        assert (i in kept_set) == (not blockers)
    with pytest.raises(ValueError, match="nms_iou"):
        select_hard_rois(losses, boxes, images, 4, nms_iou=1.5)


def test_roi_losses_add_box_regression_for_foreground_only():
    g = torch.Generator().manual_seed(4)
    logits, labels = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])
    deltas, targets = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ce = F.cross_entropy(logits, labels, reduction="none")
    reg = F.smooth_l1_loss(deltas, targets, reduction="none").sum(dim=1)
    torch.testing.assert_close(roi_losses(logits, labels, deltas, targets), ce + reg * (labels > 0))
    torch.testing.assert_close(roi_losses(logits, labels), ce)


# --------------------------------------------------------------------------- trainer


@pytest.mark.parametrize("mode", ["two_pass", "masked"])
def test_trainer_records_mined_classes_per_epoch(mode, tmp_path):
    cfg = synthetic_cfg()
    result = train(cfg, tmp_path / mode, method="ohem", keep_ratio=0.25, mode=mode, progress=False)
    assert result.meta["key"] == ohem_spec(cfg, keep_ratio=0.25, mode=mode).key
    folder = RunStore(tmp_path / mode).folder(result.meta["key"])
    mined = mined_frame(result)
    n = sum(result.counts)
    batches = [min(32, n - s) for s in range(0, n, 32)]
    for epoch in (1, 2):
        e = mined[mined.epoch == epoch]
        assert e.seen.tolist() == result.counts  # instance sampling: each sample once
        assert e.kept.sum() == sum(round(0.25 * b) for b in batches)
        assert bool((e.kept <= e.seen).all())
    assert [h["kept_fraction"] for h in result.history] == [mined[mined.epoch == 1].kept.sum() / n] * 2
    # A finished run is reloaded with its record (extras.json).
    again = train(cfg, tmp_path / mode, method="ohem", keep_ratio=0.25, mode=mode, progress=False)
    assert again.train_seconds == result.train_seconds
    assert mined_frame(again).equals(mined) and mined_frame(folder).equals(mined)


def test_resume_with_another_ohem_setting_is_refused(tmp_path):
    cfg = synthetic_cfg(epochs=1, warmup_epochs=0, checkpoint_every=1)
    t = OHEMTrainer(cfg, keep_ratio=0.5, progress=False)
    t.fit(tmp_path)
    with pytest.raises(ValueError, match="OHEM setting"):
        OHEMTrainer(cfg, keep_ratio=0.7, progress=False).fit(tmp_path)
