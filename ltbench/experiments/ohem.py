"""Notebook 07: online hard example mining (Shrivastava et al. 2016) on CIFAR-LT, beside CE.

Besides the runs (:func:`runs`), the notebook's computations: which classes the mined hard
examples come from (:func:`tail_shares`, :func:`keep_rates`), the per-class accuracy
(:func:`per_class_frame`), the detection form's RoI selection on a toy minibatch
(:func:`roi_example`, :func:`roi_table`) and the conclusion's lines (:func:`findings`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

from ..engine import TrainResult
from ..fsa import split_head_tail
from ..methods import joint_spec, ohem_spec
from ..ohem import MODES, check_keep_ratio, mined_frame, roi_losses, select_hard_rois
from ..text import verdict
from . import PlannedRun, check_choice, common_config, gain_findings, grid, planned

NOTEBOOK = "07_ohem"
PAPER = "OHEM (Shrivastava et al. 2016)"
TABLE = "new CIFAR-LT measurements"
FORM_LABEL = {"two_pass": "two-pass", "masked": "masked (single pass)"}


def runs(datasets: Sequence[str] = ("cifar10",), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         keep_ratios: Sequence[float] = (0.25, 0.5, 0.7), forms: Sequence[str] = ("two_pass", "masked")) -> List[PlannedRun]:
    """CE and OHEM (each form x keep ratio) at every (dataset, IR, seed)."""
    for r in keep_ratios:
        check_keep_ratio(r)
    check_choice("forms", forms, MODES)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    out = []
    for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
        cfg = common_config(ds, ir, seed, **recipe, loss="ce")
        out.append(planned(joint_spec(cfg), "CE", NOTEBOOK, PAPER, TABLE, "CE (softmax)"))
    for form in forms:
        for r in keep_ratios:
            for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
                cfg = common_config(ds, ir, seed, **recipe, loss="ce")
                out.append(planned(ohem_spec(cfg, r, form), f"OHEM {FORM_LABEL[form]} {r:g}", NOTEBOOK, PAPER, TABLE,
                                   form=form, keep_ratio=r))
    return out


# --------------------------------------------------------------------------------------------
# The notebook's computations


def _by_setting(r: TrainResult) -> Tuple[str, float]:
    return r.config["dataset"], r.config["imbalance_ratio"]


def settings_of(results: Sequence[TrainResult]) -> List[Tuple[str, float]]:
    """The (dataset, IR) of ``results``, by dataset then decreasing IR."""
    return sorted({_by_setting(r) for r in results}, key=lambda k: (k[0], -k[1]))


def tail_shares(ohem_runs: Sequence[TrainResult]) -> "Any":
    """Per OHEM run and epoch: the tail classes' share (%) of the kept (mined) samples, and their
    share of all samples drawn, averaged over the epochs (a loss-blind selection would keep that);
    ``tail`` holds the run's tail classes (FSA's 90% rule)."""
    import pandas as pd

    rows = []
    for ds, ir in settings_of(ohem_runs):
        for r in (r for r in ohem_runs if _by_setting(r) == (ds, ir)):
            mf = mined_frame(r)
            _, tail = split_head_tail(r.counts)
            mf["is_tail"] = mf["class"].isin(tail)
            g = mf.groupby("epoch")
            share = g.apply(lambda e: e.kept[e.is_tail].sum() / max(e.kept.sum(), 1), include_groups=False)
            base = g.apply(lambda e: e.seen[e.is_tail].sum() / max(e.seen.sum(), 1), include_groups=False).mean()
            rows += [{"method": r.meta["method"], "dataset": ds, "IR": ir, "epoch": e, "tail_share_kept": 100 * v,
                      "tail_share_seen": 100 * base, "tail": tuple(tail)} for e, v in share.items()]
    return pd.DataFrame(rows)


def keep_rates(ohem_runs: Sequence[TrainResult]) -> Dict[str, Tuple[TrainResult, "Any"]]:
    """Per OHEM form (the method label without its keep ratio), its first run and the matrix
    class x epoch of ``(kept_c / seen_c) / keep_ratio``: 1 is a loss-blind selection."""
    picked: Dict[str, TrainResult] = {}
    for r in ohem_runs:
        picked.setdefault(r.meta["method"].rsplit(" ", 1)[0], r)
    out = {}
    for form, r in picked.items():
        mf = mined_frame(r)
        ratio = r.extras["ohem"]["keep_ratio"]
        out[form] = (r, mf.pivot(index="class", columns="epoch", values="kept")
                     / mf.pivot(index="class", columns="epoch", values="seen").clip(lower=1) / ratio)
    return out


def per_class_frame(results: Sequence[TrainResult]) -> "Any":
    """One row per run and class: the class's training count and last-epoch test accuracy."""
    import pandas as pd

    return pd.DataFrame([{"method": r.meta["method"], "dataset": ds, "IR": ir, "class": c, "train_count": r.counts[c],
                          "accuracy": float(a)}
                         for ds, ir in settings_of(results) for r in results if _by_setting(r) == (ds, ir)
                         for c, a in enumerate(r.last.per_class)])


@dataclass
class RoiExample:
    """A toy detection minibatch: ground-truth boxes per image with the toy detector's confidence
    per object (low = hard), the RoIs (``boxes``, ``image_ids``, ``labels``: 0 background,
    ``obj``: the object a foreground RoI covers, else -1), their losses, and the RoIs selected by
    loss without (``plain``) and with (``dedup``) per-image NMS."""

    gts: Dict[int, torch.Tensor]
    confidence: Dict[int, List[float]]
    boxes: torch.Tensor
    image_ids: torch.Tensor
    labels: torch.Tensor
    obj: torch.Tensor
    losses: torch.Tensor
    plain: torch.Tensor
    dedup: torch.Tensor
    keep: int
    nms_iou: float


def roi_example(keep: int, nms_iou: float, seed: int = 0) -> RoiExample:
    """2 images with 3 objects each, 40 RoIs jittered around each object and 60 background RoIs
    per image; a toy detector confident on most objects but not on one per image. Per-RoI loss:
    classification CE + smooth-L1 box loss on foreground RoIs (docs/methods.md §9.3)."""
    g = torch.Generator().manual_seed(seed)
    gts = {0: torch.tensor([[20., 20, 90, 90], [110, 30, 185, 110], [50, 120, 140, 190]]),
           1: torch.tensor([[15., 100, 95, 185], [100, 20, 170, 80], [120, 110, 190, 180]])}
    confidence = {0: [4.0, 0.2, 3.0], 1: [3.5, 3.0, -0.5]}  # logit margin of the toy detector per object (low = hard)
    boxes, image_ids = [], []
    for img, gt in gts.items():
        for b in gt:
            wh, n = b[2:] - b[:2], 40
            shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.5 * wh
            scale = 1 + (torch.rand(n, 2, generator=g) - 0.5) * 0.4
            centre, half = (b[:2] + b[2:]) / 2 + shift, wh * scale / 2
            boxes.append(torch.cat([centre - half, centre + half], 1)); image_ids += [img] * n
        xy = torch.rand(60, 2, generator=g) * 160
        boxes.append(torch.cat([xy, xy + 20 + torch.rand(60, 2, generator=g) * 40], 1)); image_ids += [img] * 60
    boxes = torch.cat(boxes).clamp(0, 200)
    image_ids = torch.tensor(image_ids)
    R = len(boxes)
    labels, obj, iou_gt = torch.zeros(R, dtype=torch.long), torch.full((R,), -1), torch.zeros(R)
    for img, gt in gts.items():
        m = image_ids == img
        best, which = box_iou(boxes[m], gt).max(1)
        iou_gt[m] = best
        fg = best >= 0.5
        obj[m] = torch.where(fg, which, torch.full_like(which, -1))
        labels[m] = torch.where(fg, which + 1, torch.zeros_like(which))  # object o is class o + 1; 0 = background
    logits = torch.randn(R, 4, generator=g) * 0.5
    for i in range(R):
        if labels[i] > 0:
            logits[i, labels[i]] += confidence[int(image_ids[i])][int(obj[i])] * float(iou_gt[i])
        else:
            logits[i, 0] += 3.0
    box_targets = torch.randn(R, 4, generator=g) * 0.1
    box_deltas = box_targets + torch.randn(R, 4, generator=g) * (1 - iou_gt[:, None]) * 0.5
    losses = roi_losses(logits, labels, box_deltas, box_targets)
    return RoiExample(gts, confidence, boxes, image_ids, labels, obj, losses,
                      select_hard_rois(losses, boxes, image_ids, keep, nms_iou=None),
                      select_hard_rois(losses, boxes, image_ids, keep, nms_iou=nms_iou), keep, nms_iou)


def roi_table(ex: RoiExample) -> "Any":
    """Per selection (top-B by loss; NMS then top-B): RoIs, objects covered, background RoIs,
    near-duplicate pairs (IoU above the NMS threshold) and the mean loss of the selected RoIs."""
    import pandas as pd

    def describe(sel: torch.Tensor, name: str) -> Dict[str, Any]:
        b, ids = ex.boxes[sel], ex.image_ids[sel]
        same = ids[:, None] == ids[None, :]
        iou = box_iou(b, b).masked_fill(~same | torch.eye(len(sel), dtype=torch.bool), 0)
        covered = {(int(ex.image_ids[i]), int(ex.obj[i])) for i in sel if ex.obj[i] >= 0}
        return {"selection": name, "RoIs": len(sel), "objects covered (of 6)": len(covered),
                "background RoIs": int((ex.labels[sel] == 0).sum()),
                f"pairs with IoU > {ex.nms_iou}": int((iou > ex.nms_iou).sum() // 2),
                "mean loss of selected": float(ex.losses[sel].mean())}

    return pd.DataFrame([describe(ex.plain, "top-B by loss"), describe(ex.dedup, f"NMS {ex.nms_iou} then top-B")])


def findings(shares: "Any", df: "Any", epochs: Optional[int] = None) -> List[str]:
    """The conclusion's lines: whether the tail is over-represented among the mined examples of the
    last epoch (``shares``: :func:`tail_shares`), whether the best OHEM setting beats CE (``df``:
    ``results_frame``), overall, and each method's gain over CE beside the published gain."""
    lines: List[str] = []
    mined_ok: List[bool] = []
    if not shares.empty:
        for _, row in shares[shares.epoch == shares.epoch.max()].iterrows():
            ok = row["tail_share_kept"] > row["tail_share_seen"]
            mined_ok.append(ok)
            lines.append(f"{row['dataset']} IR{row['IR']:g}, {row['method']}: tail classes are {row['tail_share_kept']:.1f}% of the mined "
                         f"examples in the last epoch vs {row['tail_share_seen']:.1f}% of those drawn → over-represented: {verdict(ok)}.")
    mean = df.groupby(["method", "dataset", "IR"], sort=False)[["top1_last", "few"]].mean().reset_index()
    for (ds, ir), g in mean.groupby(["dataset", "IR"], sort=False):
        ce, oh = g[g["method"] == "CE"], g[g["method"] != "CE"]
        if ce.empty or oh.empty:
            continue
        best = oh.loc[oh["top1_last"].idxmax()]
        diff = best["top1_last"] - ce["top1_last"].iloc[0]
        n_above = int((oh["top1_last"] > ce["top1_last"].iloc[0]).sum())
        lines.append(f"{ds} IR{ir:g}: best OHEM setting *{best['method']}* {best['top1_last']:.2f} vs CE {ce['top1_last'].iloc[0]:.2f} "
                     f"({diff:+.2f}); {n_above} of {len(oh)} OHEM settings above CE → OHEM beats CE: {verdict(diff > 0)}.")
    if mined_ok:
        lines.append(f"Overall: the tail is over-represented among mined examples in {sum(mined_ok)} of {len(mined_ok)} runs.")
    # Each method's gain over CE beside the published gain (docs/methods.md §2: compressed schedules).
    return lines + gain_findings(df, baseline="CE", epochs=epochs)
