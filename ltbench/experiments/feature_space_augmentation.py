"""Notebook 06: feature space augmentation (Chu et al. 2020) against its phase I and cRT on the same backbone.

Besides the runs (:func:`runs`), the notebook's computations: its runs by setting
(:func:`by_setting`) and as a table (:func:`runs_frame`, :func:`paper_frame`), the class
activation maps and mixed feature maps of a few images (:func:`load_phase1`,
:func:`cam_examples`, :func:`mixing_examples`), the confusing classes (:func:`confusion_scores`,
:func:`confusing_frame`), the per-class gains (:func:`gain_frame`) and the conclusion's lines
(:func:`findings`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DeviceDataset
from ..engine import TrainResult, load_data
from ..fsa import build_augmenter, check_thresholds, class_activation_maps, decompose, phase1_model, split_head_tail
from ..methods import fsa_spec, joint_spec, stage_two_spec
from ..models import get_classifier
from ..published import published_row
from ..runs import RunSpec, RunStore
from ..text import verdict
from . import PlannedRun, check_choice, common_config, grid, planned, results_frame

NOTEBOOK = "06_feature_space_augmentation"
PAPER = "FSA (Chu et al. 2020)"
TABLE = "FSA Tables 1-2"
BACKBONE_NAME = {"resnet32": "ResNet-32", "resnet18_cifar": "ResNet-18"}
#: (method, backbone) -> row of ltbench.published: a number is shown only beside a run of the same backbone (docs/methods.md §8).
PUBLISHED = {("CE", "resnet32"): "CE (softmax)", ("cRT", "resnet32"): "cRT (re-implementation)",
             ("CE", "resnet18_cifar"): "CE, ResNet-18, 300 epochs", ("FSA", "resnet18_cifar"): "FSA, ResNet-18, 300 epochs"}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         backbones: Sequence[str] = ("resnet32",), fsa_iterations: int = 6400, fsa_batch_size: int = 128,
         fsa_lr: float = 0.001, tau_s: float = 0.8, tau_g: float = 0.2, n_f: int = 3, n_a: int = 3,
         crt_epochs: int = 30) -> List[PlannedRun]:
    """Per backbone and (dataset, IR, seed): phase I (CE), cRT on its frozen backbone, FSA phase II."""
    check_choice("backbones", backbones, BACKBONE_NAME)
    check_thresholds(tau_s, tau_g)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    out = []
    for backbone in backbones:
        name = BACKBONE_NAME[backbone]
        for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
            ce = joint_spec(common_config(ds, ir, seed, **recipe, loss="ce", model=backbone))
            crt = stage_two_spec(ce, "crt", epochs=crt_epochs)
            fsa = fsa_spec(ce, iterations=fsa_iterations, lr=fsa_lr, batch_size=fsa_batch_size, tau_s=tau_s,
                           tau_g=tau_g, n_f=n_f, n_a=n_a)
            for m, spec in (("CE", ce), ("cRT", crt), ("FSA", fsa)):
                out.append(planned(spec, f"{m} ({name})", NOTEBOOK, PAPER, TABLE, PUBLISHED.get((m, backbone)),
                                   stage=m, backbone=backbone))
    return out


# --------------------------------------------------------------------------------------------
# The notebook's computations

#: The three runs of each setting, in table order.
STAGES = ("CE", "cRT", "FSA")
#: (backbone, dataset, IR, seed) of a setting.
Setting = Tuple[str, str, float, int]


def phase1_weights(planned_runs: Sequence[PlannedRun]) -> List[RunSpec]:
    """The first phase-I run, whose network the notebook loads (CAMs, the augmenter): its weights
    are rebuilt if missing."""
    return [r.spec for r in planned_runs if r.meta()["stage"] == "CE"][:1]


def by_setting(results: Sequence[TrainResult], store: RunStore) -> Dict[Setting, Dict[str, Any]]:
    """The results by (backbone, dataset, IR, seed): each stage's result (``CE`` = phase I,
    ``cRT``, ``FSA``) and ``phase1_dir``, the phase-I run's folder."""
    out: Dict[Setting, Dict[str, Any]] = {}
    for r in results:
        entry = out.setdefault((r.meta["backbone"], r.config["dataset"], float(r.config["imbalance_ratio"]), r.config["seed"]), {})
        entry[r.meta["stage"]] = r
        if r.meta["stage"] == "CE":
            entry["phase1_dir"] = store.folder(r.meta["key"])
    return out


def runs_frame(results: Sequence[TrainResult]) -> "Any":
    """``results_frame`` of the runs with ``backbone`` (its name) first and ``method`` the stage
    (CE = phase I, cRT, FSA); ``published`` only beside a run of the paper's backbone (:data:`PUBLISHED`)."""
    df = results_frame(results)
    df["method"] = [r.meta["stage"] for r in results]
    df.insert(0, "backbone", [BACKBONE_NAME[r.meta["backbone"]] for r in results])
    return df


def paper_frame(df: "Any") -> "Any":
    """The CE (phase I) and FSA runs of ``df`` (:func:`runs_frame`) with the paper's backbone
    (ResNet-18), with the ``source`` of the published number beside them (FSA Tables 1-2)."""
    backbone = "resnet18_cifar"
    t = df[(df.backbone == BACKBONE_NAME[backbone]) & df.method.isin(["CE", "FSA"])].copy()
    t["source"] = [published_row(PUBLISHED[(m, backbone)]).source for m in t["method"]]
    return t


@dataclass
class Phase1:
    """The first phase-I network (eval mode) and its data, with the head and tail classes (90% rule)."""

    model: Any
    data: Any
    counts: List[int]
    head: List[int]
    tail: List[int]
    device: torch.device


def load_phase1(phase1_dir: Any, device: torch.device) -> Phase1:
    """The phase-I network of the run in ``phase1_dir`` and the data it was trained on."""
    model, cfg = phase1_model(phase1_dir, device)
    data = load_data(cfg)
    counts = list(data.counts)
    head, tail = split_head_tail(counts)
    return Phase1(model, data, counts, head, tail, device)


@dataclass
class CamExamples:
    """A few test images (tail classes first), the class activation map of their true class and the
    class-specific / class-generic masks, upsampled to the image (``[n, H, W]`` on the CPU)."""

    index: List[int]
    labels: torch.Tensor
    predicted: torch.Tensor
    feature_size: Tuple[int, int]
    cam: torch.Tensor
    specific: torch.Tensor
    generic: torch.Tensor


def cam_examples(p1: Phase1, n_images: int, tau_s: float, tau_g: float) -> CamExamples:
    """One test image of each of the first ``n_images`` classes (tail classes, then head classes):
    the phase-I CAM of its true class and its decomposition at ``tau_s`` / ``tau_g`` (docs/methods.md §8.1-8.2)."""
    test = DeviceDataset(p1.data.test.images, p1.data.test.targets, p1.device)
    idx = [int((p1.data.test.targets == c).nonzero()[0]) for c in (p1.tail + p1.head)[:n_images]]
    x, y = test.batch(torch.tensor(idx, device=p1.device))
    with torch.no_grad():
        fmap = p1.model.forward_features(x)
        pred = p1.model.forward_head(fmap).argmax(1)
    cam = class_activation_maps(fmap, get_classifier(p1.model).weight, y)
    dec = decompose(fmap, cam, tau_s, tau_g)
    size = tuple(x.shape[-2:])

    def up(m: torch.Tensor, mode: str) -> torch.Tensor:
        kw = {"align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(m[:, None].float(), size=size, mode=mode, **kw)[:, 0].cpu()

    return CamExamples(idx, y.cpu(), pred.cpu(), tuple(fmap.shape[-2:]), up(cam, "bilinear"),
                       up(dec.specific_mask, "nearest"), up(dec.generic_mask, "nearest"))


@dataclass
class MixExamples:
    """Real tail training samples and their ``n_a`` mixed feature maps each: the samples
    (``index``, ``labels``), each one's class-specific mask, the mixes (``mixed``: partner,
    partner class, gamma, per-position source) and per mix a source code per position: 0 tail
    specific (kept), 1 tail position outside its specific region (zero), 2 partner generic (kept),
    3 partner position outside its generic region (zero)."""

    index: torch.Tensor
    labels: torch.Tensor
    specific_mask: torch.Tensor
    mixed: Any
    codes: torch.Tensor


def mixing_examples(p1: Phase1, tau_s: float, tau_g: float, n_f: int, n_a: int, n_samples: int = 4,
                    seed: int = 0) -> MixExamples:
    """``n_samples`` random tail training samples mixed as FSA's online augmentation does
    (docs/methods.md §8.5), with the augmenter built from the phase-I network."""
    train_set = DeviceDataset(p1.data.train.images, p1.data.train.targets, p1.device)
    aug = build_augmenter(p1.model, train_set, p1.counts, tau_s, tau_g, n_f, n_a)
    gen = torch.Generator(device=p1.device).manual_seed(seed)
    tail_idx = torch.nonzero(aug.is_tail[train_set.targets]).flatten()
    pick = tail_idx[torch.randperm(len(tail_idx), generator=torch.Generator().manual_seed(seed))[:n_samples].to(p1.device)]
    xb, yb = train_set.batch(pick)
    with torch.no_grad():
        fb = p1.model.forward_features(xb)
    mixed = aug.augment(fb, yb, gen)
    own = aug.specific(fb, yb)
    xp, yp = train_set.batch(mixed.partner)
    with torch.no_grad():
        partner = aug.specific(p1.model.forward_features(xp), yp)
    own_mask = own.specific_mask.cpu().long().repeat_interleave(n_a, 0)
    codes = torch.where(mixed.source.cpu(), 1 - own_mask, 3 - partner.generic_mask.cpu().long())
    return MixExamples(pick.cpu(), yb.cpu(), own.specific_mask.cpu(), mixed, codes)


def confusion_scores(by: Dict[Setting, Dict[str, Any]]) -> List[Tuple[Tuple[str, str, float], TrainResult, np.ndarray, Dict[str, Any]]]:
    """Per (backbone, dataset, IR) whose FSA run recorded them (first seed): the FSA result, the
    mean phase-I score matrix ``S[t, j]`` and its record (``tail``, ``confusing`` per tail class)."""
    out, done = [], set()
    for (backbone, ds, ir, _seed), r in by.items():
        rec = r["FSA"].extras.get("fsa") if "FSA" in r else None  # no FSA run: a render with it pending
        if rec is None or (backbone, ds, ir) in done:
            continue
        done.add((backbone, ds, ir))
        out.append(((backbone, ds, ir), r["FSA"], np.array(rec["scores"]), rec))
    return out


def confusing_frame(scores: Sequence[Tuple[Tuple[str, str, float], TrainResult, np.ndarray, Dict[str, Any]]]) -> "Any":
    """One row per tail class of :func:`confusion_scores`: its training count and its confusing
    classes with their scores, best first."""
    import pandas as pd

    rows = []
    for (backbone, ds, ir), fsa, S, rec in scores:
        for t in rec["tail"]:
            rows.append({"backbone": BACKBONE_NAME[backbone], "dataset": ds, "IR": ir, "tail class": fsa.classes[t],
                         "train count": fsa.counts[t],
                         "confusing classes (best first)": ", ".join(fsa.classes[j] for j in rec["confusing"][t]),
                         "scores": ", ".join(f"{S[t, j]:.3f}" for j in rec["confusing"][t])})
    return pd.DataFrame(rows)


def gain_frame(by: Dict[Setting, Dict[str, Any]], seed: int) -> "Any":
    """Per setting with ``seed``, method (FSA, cRT) and class: the per-class test accuracy minus
    that of the phase-I CE model, with the class's training count and whether it is a tail class."""
    import pandas as pd

    rows = []
    for (backbone, ds, ir, s), r in by.items():
        if s != seed or "CE" not in r:
            continue
        base = np.array(r["CE"].last.per_class, dtype=float)
        _, tail = split_head_tail(r["CE"].counts)
        for method in ("FSA", "cRT"):
            if method not in r:  # pending in a render that trains nothing
                continue
            gain = np.array(r[method].last.per_class, dtype=float) - base
            rows += [{"backbone": BACKBONE_NAME[backbone], "dataset": ds, "IR": ir, "method": method, "class": c,
                      "train_count": int(n), "tail": c in tail, "gain": g} for c, (n, g) in enumerate(zip(r["CE"].counts, gain))]
    return pd.DataFrame(rows)


def findings(by: Dict[Setting, Dict[str, Any]]) -> List[str]:
    """The conclusion's lines: per (backbone, dataset, IR) the tail-class accuracy and top-1 of FSA,
    its phase I and cRT (seed means), whether FSA raises the tail over each, and overall."""
    def tail_acc(res: TrainResult, tail: List[int]) -> float:
        return float(np.mean([res.last.per_class[c] for c in tail])) if tail else float("nan")

    lines: List[str] = []
    over_ce: List[bool] = []
    over_crt: List[bool] = []
    per_setting: Dict[Tuple[str, str, float], List[Dict[str, Tuple[float, float]]]] = {}
    for (backbone, ds, ir, _seed), r in by.items():
        if not all(m in r for m in STAGES):
            continue  # a stage pending (a render that trains nothing): no verdict for this setting
        _, tail = split_head_tail(r["CE"].counts)
        per_setting.setdefault((backbone, ds, ir), []).append({m: (tail_acc(r[m], tail), r[m].last.top1) for m in STAGES})
    for (backbone, ds, ir), rows in per_setting.items():
        m = {k: (np.mean([row[k][0] for row in rows]), np.mean([row[k][1] for row in rows])) for k in STAGES}
        d_ce, d_crt = m["FSA"][0] - m["CE"][0], m["FSA"][0] - m["cRT"][0]
        over_ce.append(d_ce > 0); over_crt.append(d_crt > 0)
        lines.append(f"{BACKBONE_NAME[backbone]}, {ds} IR{ir:g} ({len(rows)} seed(s)): tail-class accuracy FSA {m['FSA'][0]:.2f}, "
                     f"phase I {m['CE'][0]:.2f} ({d_ce:+.2f}), cRT {m['cRT'][0]:.2f} ({d_crt:+.2f}); top-1 FSA {m['FSA'][1]:.2f}, "
                     f"phase I {m['CE'][1]:.2f}, cRT {m['cRT'][1]:.2f} → FSA above phase I on the tail: {verdict(d_ce > 0)}; "
                     f"above cRT: {verdict(d_crt > 0)}.")
    if over_ce:
        lines.append(f"Overall: FSA raises the tail over its phase I in {sum(over_ce)} of {len(over_ce)} settings and over cRT "
                     f"in {sum(over_crt)} of {len(over_crt)}.")
    return lines
