"""Notebook 02: focal loss (Lin et al. 2017) and balanced cross-entropy on CIFAR-LT, beside CB Table 2.

Besides the runs (:func:`runs`), the notebook's computations, all with the library's own
``sigmoid_focal`` loss: its value and gradient against p_t (:func:`focal_curve`), the loss of one
binary entry (:func:`binary_entry_loss`), the loss share of a few positives among many easy
negatives (:func:`loss_share`), and the conclusion's lines (:func:`findings`, :func:`published_focal_gaps`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..losses import build_loss
from ..published import published, published_row
from ..text import gain_verdict, verdict
from . import PlannedRun, choose, gain_findings, label_runs

NOTEBOOK = "02_focal_and_balanced_ce"
PAPER = "Focal loss / class-balanced loss"
TABLE = "CB Table 2"

#: Method label -> TrainConfig overrides.
ALL_METHODS: Dict[str, Dict[str, Any]] = {
    "CE": {"loss": "ce"},
    "balanced CE (power 1)": {"loss": "balanced_ce", "loss_params": {"power": 1.0}},
    "balanced CE (power 0.5)": {"loss": "balanced_ce", "loss_params": {"power": 0.5}},
    "focal (softmax, gamma 1)": {"loss": "focal", "loss_params": {"gamma": 1.0}},
    "sigmoid CE": {"loss": "sigmoid_ce"},
    "sigmoid focal gamma 0.5": {"loss": "sigmoid_focal", "loss_params": {"gamma": 0.5}},
    "sigmoid focal gamma 1": {"loss": "sigmoid_focal", "loss_params": {"gamma": 1.0}},
    "sigmoid focal gamma 2": {"loss": "sigmoid_focal", "loss_params": {"gamma": 2.0}},
}
#: Method label -> row of ltbench.published.
PUBLISHED = {"CE": "CE (softmax)", "sigmoid CE": "sigmoid CE", "sigmoid focal gamma 0.5": "sigmoid focal gamma 0.5",
             "sigmoid focal gamma 1": "sigmoid focal gamma 1", "sigmoid focal gamma 2": "sigmoid focal gamma 2"}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         methods: Optional[Sequence[str]] = None) -> List[PlannedRun]:
    """Every method of :data:`ALL_METHODS` (or the ``methods`` subset) at every (dataset, IR, seed)."""
    chosen = choose(ALL_METHODS, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    return label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE, PUBLISHED)


def focal_curve(gamma: float, z: torch.Tensor) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_t, loss, d loss / d logit)`` of the library's ``sigmoid_focal`` on one positive binary
    logit per value of ``z`` (the other column, a negative at -1e4, contributes ~0)."""
    focal = build_loss("sigmoid_focal", [1, 1], gamma=float(gamma))
    values, grads = [], []
    for zi in z:
        logits = torch.stack([zi, torch.tensor(-1e4, dtype=z.dtype)]).view(1, 2).requires_grad_()
        loss = focal(logits, torch.tensor([0]))
        loss.backward()
        values.append(loss.item()); grads.append(logits.grad[0, 0].item())
    return torch.sigmoid(z).numpy(), np.array(values), np.array(grads)


def _entries(zs: torch.Tensor, positive: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, 2]`` whose column 0 is the entry of ``zs`` (a positive if ``positive``, else a
    negative) and column 1 is right by 1e4 (adds exactly 0), and their labels."""
    other = torch.full_like(zs, -1e4 if positive else 1e4)
    return torch.stack([zs, other], 1), torch.full((len(zs),), 0 if positive else 1)


def binary_entry_loss(zs: torch.Tensor, positive: bool, gamma: float, alpha: float) -> np.ndarray:
    """The library's sigmoid focal loss of one binary entry per logit in ``zs`` (see :func:`_entries`):
    the loss is a sum over the batch divided by N, so a batch of one entry per call gives each value."""
    loss = build_loss("sigmoid_focal", [1, 1], gamma=float(gamma), alpha=alpha)
    logits, labels = _entries(zs, positive)
    return np.array([loss(z.view(1, 2), y.view(1)).item() for z, y in zip(logits, labels)])


def group_total(zs: torch.Tensor, positive: bool, gamma: float, alpha: float) -> float:
    """Sum over the group ``zs`` of the library's loss (its batch mean times the batch size)."""
    loss = build_loss("sigmoid_focal", [1, 1], gamma=gamma, alpha=alpha)
    logits, labels = _entries(zs, positive)
    return len(zs) * loss(logits, labels).item()


def loss_share(alpha: float, n_neg: int = 10_000, n_pos: int = 10, seed: int = 0) -> "Any":
    """The imbalanced binary problem of the focal-loss paper (§3): ``n_neg`` easy negatives (logits
    around -4) and ``n_pos`` positives (logits around 0); per setting (BCE, alpha, gamma 2, both)
    the total loss of each group and the positives' share of it (%)."""
    import pandas as pd

    gen = torch.Generator().manual_seed(seed)
    z_negatives = -4.0 + torch.randn(n_neg, generator=gen, dtype=torch.float64)
    z_positives = torch.randn(n_pos, generator=gen, dtype=torch.float64)
    rows = []
    for label, g, a in (("BCE", 0.0, -1), (f"BCE, alpha {alpha:g}", 0.0, alpha), ("focal gamma 2", 2.0, -1),
                        (f"focal gamma 2, alpha {alpha:g}", 2.0, alpha)):
        pos_total, neg_total = group_total(z_positives, True, g, a), group_total(z_negatives, False, g, a)
        rows.append({"setting": label, "gamma": g, "alpha": a, f"positives ({n_pos})": pos_total,
                     f"negatives ({n_neg})": neg_total, "positives' share (%)": 100 * pos_total / (pos_total + neg_total)})
    return pd.DataFrame(rows)


def published_focal_gaps() -> List[float]:
    """CB Table 2's own sigmoid focal (gamma 0.5, 1, 2) minus softmax CE differences, over every published cell."""
    ce_row = published_row("CE (softmax)").values
    return [v - ce_row[cell] for g in (0.5, 1, 2) for cell, v in published_row(f"sigmoid focal gamma {g:g}").values.items()
            if cell in ce_row]


def findings(df: "Any", epochs: Optional[int] = None) -> List[str]:
    """The conclusion's lines from ``df`` (``results_frame``): per (dataset, IR) the best focal
    variant against CE (beside CB Table 2's best sigmoid focal row - CE), overall, and each
    method's gain over CE beside the published gain (:func:`~ltbench.experiments.gain_findings`)."""
    mean = df.groupby(["method", "dataset", "IR"], sort=False)[["top1_last", "few"]].mean().reset_index()
    lines: List[str] = []
    holds: List[bool] = []
    for (ds, ir), g in mean.groupby(["dataset", "IR"], sort=False):
        ce = g[g["method"] == "CE"]
        focal = g[g["method"].str.contains("focal")]
        if ce.empty or focal.empty:
            lines.append(f"{ds} IR{ir:g}: CE or a focal loss did not run at this profile → cannot be checked.")
            continue
        best = focal.loc[focal["top1_last"].idxmax()]
        diff = best["top1_last"] - ce["top1_last"].iloc[0]
        pubs = {m: published(f"sigmoid focal gamma {float(m.rsplit(' ', 1)[-1]):g}", ds, ir)
                for m in focal["method"] if m.startswith("sigmoid focal gamma")}
        pub_ce = published("CE (softmax)", ds, ir)
        pub_text, judged = "", f"focal above CE: {verdict(diff > 0)}"
        if pub_ce is not None and any(v is not None for v in pubs.values()):
            pub_best = max(v for v in pubs.values() if v is not None)
            pub_text = f" (CB Table 2: best of these sigmoid focal rows − CE = {pub_best - pub_ce:+.2f})"
            # The published gap is the claim checked: on CIFAR-LT it is near zero, not "focal wins".
            judged = f"the published gap {gain_verdict(diff, pub_best - pub_ce)}"
        holds.append(diff > 0)
        lines.append(f"{ds} IR{ir:g}: best focal variant *{best['method']}* {best['top1_last']:.2f} vs CE "
                     f"{ce['top1_last'].iloc[0]:.2f}, difference {diff:+.2f}{pub_text} → {judged}.")
    if holds:
        lines.append(f"Overall: the best focal variant is above CE in {sum(holds)} of {len(holds)} settings.")
    # Each method's gain over CE beside the published gain (docs/methods.md §2: compressed schedules).
    return lines + gain_findings(df, baseline="CE", epochs=epochs)
