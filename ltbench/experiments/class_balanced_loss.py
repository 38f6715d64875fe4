"""Notebook 03: class-balanced loss (Cui et al. 2019), CB Table 2 on CIFAR-LT.

Besides the runs (:func:`runs`), the notebook's computations: the best class-balanced
configuration per column beside the paper's (:func:`best_per_column`), Table 2 as a loss x beta
grid (:func:`table2_grid`) and the conclusion's lines (:func:`findings`).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..published import CB_TABLE2_BEST_CONFIG, normalize_dataset, published
from ..text import verdict
from . import PlannedRun, choose, gain_findings, label_runs

NOTEBOOK = "03_class_balanced_loss"
PAPER = "Class-balanced loss (Cui et al. 2019)"
TABLE = "Table 2"


def all_methods(betas: Sequence[float], focal_gammas: Sequence[float]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, str]]:
    """Method label -> TrainConfig overrides, and label -> published row, for the beta/gamma grid."""
    methods: Dict[str, Dict[str, Any]] = {"softmax": {"loss": "ce"}, "sigmoid": {"loss": "sigmoid_ce"}}
    methods.update({f"focal gamma {g:g}": {"loss": "sigmoid_focal", "loss_params": {"gamma": g}} for g in focal_gammas})
    for b in betas:
        methods[f"CB softmax beta {b:g}"] = {"loss": "cb_softmax", "loss_params": {"beta": b}}
        methods[f"CB sigmoid beta {b:g}"] = {"loss": "cb_sigmoid", "loss_params": {"beta": b}}
        for g in focal_gammas:
            methods[f"CB focal beta {b:g} gamma {g:g}"] = {"loss": "cb_focal", "loss_params": {"beta": b, "gamma": g}}
    published = {"softmax": "CE (softmax)", "sigmoid": "sigmoid CE", "CB softmax beta 0.9999": "CB softmax beta 0.9999",
                 "CB focal beta 0.9999 gamma 1": "CB focal beta 0.9999 gamma 1"}
    published.update({f"focal gamma {g:g}": f"sigmoid focal gamma {g:g}" for g in focal_gammas})
    return methods, published


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         methods: Optional[Sequence[str]] = None, betas: Sequence[float] = (0.9, 0.99, 0.999, 0.9999),
         focal_gammas: Sequence[float] = (0.5, 1.0, 2.0)) -> List[PlannedRun]:
    """Softmax / sigmoid / focal and their class-balanced versions over ``betas`` x ``focal_gammas``."""
    everything, published = all_methods(betas, focal_gammas)
    chosen = choose(everything, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    return label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE, published)


def paper_label(cfg: Dict[str, Any]) -> str:
    """CB Table 2's best (loss, beta, gamma) written as this notebook's method label."""
    kind = {"cb_softmax": "softmax", "cb_sigmoid": "sigmoid", "cb_focal": "focal"}[cfg["loss"]]
    gamma = "" if cfg["gamma"] is None else f" gamma {cfg['gamma']:g}"
    return f"CB {kind} beta {cfg['beta']:g}{gamma}"


def best_per_column(df: "Any") -> "Any":
    """Per (dataset, IR) of ``df`` (``results_frame``): the class-balanced configuration with the
    best seed-mean last-epoch top-1, beside the paper's best configuration and number."""
    import pandas as pd

    mean = df.groupby(["method", "dataset", "IR"], as_index=False)["top1_last"].mean()
    rows = []
    for (ds, ir), g in mean.groupby(["dataset", "IR"]):
        cb = g[g["method"].str.startswith("CB ")]
        if cb.empty:
            continue
        top = cb.loc[cb["top1_last"].idxmax()]
        pub = published("CB best per column", ds, ir)
        cfg = CB_TABLE2_BEST_CONFIG.get((normalize_dataset(ds), float(ir)))
        paper_cfg = None if cfg is None else paper_label(cfg)
        rows.append({"dataset": ds, "IR": ir, "best CB configuration (ours)": top["method"],
                     "top1 last": top["top1_last"], "best configuration (paper)": paper_cfg,
                     "same as paper": None if cfg is None else top["method"] == paper_cfg,
                     "published best": pub, "last - published": None if pub is None else top["top1_last"] - pub})
    return pd.DataFrame(rows)


def grid_position(method: str) -> Optional[Tuple[str, str]]:
    """(base loss, column) of a Table 2 label: ('focal γ=1', 'plain') for 'focal gamma 1',
    ('softmax', 'β=0.9999') for 'CB softmax beta 0.9999'; None for another label."""
    m = re.fullmatch(r"(CB )?(softmax|sigmoid|focal)(?: beta ([\d.]+))?(?: gamma ([\d.]+))?", method)
    if m is None:
        return None
    cb, loss, beta, gamma = m.groups()
    row = loss if gamma is None else f"focal γ={float(gamma):g}"
    return row, (f"β={float(beta):g}" if cb else "plain")


def table2_grid(df: "Any") -> Tuple["Any", List[str], List[str]]:
    """``(mean, rows, columns)``: the seed-mean last-epoch top-1 per (method, dataset, IR) of ``df``
    with its ``loss`` (Table 2's row) and ``weighting`` (plain, or the class-balanced beta), and
    the grid's row order (softmax, sigmoid, then the focal rows) and column order (plain, then beta)."""
    mean = df.groupby(["method", "dataset", "IR"], as_index=False, sort=False)["top1_last"].mean()
    mean[["loss", "weighting"]] = [grid_position(m) or (m, "?") for m in mean["method"]]
    rows = sorted(mean["loss"].unique(), key=lambda r: (["softmax", "sigmoid"].index(r) if r in ("softmax", "sigmoid") else 2, r))
    columns = ["plain"] + sorted((c for c in mean["weighting"].unique() if c != "plain"), key=lambda c: float(c[2:]))
    return mean, rows, columns


def findings(df: "Any", epochs: Optional[int] = None) -> List[str]:
    """The conclusion's lines from ``df`` (``results_frame``): per (dataset, IR) the best
    class-balanced configuration against the best plain loss (beside CB Table 2's best CB -
    softmax CE), overall, and each method's gain over softmax beside the published gain."""
    mean, _, _ = table2_grid(df)
    lines: List[str] = []
    holds: List[bool] = []
    for (ds, ir), g in mean.groupby(["dataset", "IR"], sort=False):
        cb, plain = g[g["weighting"] != "plain"], g[g["weighting"] == "plain"]
        if cb.empty or plain.empty:
            lines.append(f"{ds} IR{ir:g}: a plain or a class-balanced loss did not run at this profile → cannot be checked.")
            continue
        top_cb, top_plain = cb.loc[cb["top1_last"].idxmax()], plain.loc[plain["top1_last"].idxmax()]
        gain = top_cb["top1_last"] - top_plain["top1_last"]
        pub_cb, pub_ce = published("CB best per column", ds, ir), published("CE (softmax)", ds, ir)
        pub_text = "" if pub_cb is None or pub_ce is None else f" (CB Table 2: best CB − softmax CE = {pub_cb - pub_ce:+.2f})"
        holds.append(gain > 0)
        lines.append(f"{ds} IR{ir:g}: best CB configuration *{top_cb['method']}* {top_cb['top1_last']:.2f} vs best plain "
                     f"loss *{top_plain['method']}* {top_plain['top1_last']:.2f}: {gain:+.2f}{pub_text} → {verdict(gain > 0)}.")
    if holds:
        lines.append(f"Overall: class-balanced re-weighting beats the plain losses in {sum(holds)} of {len(holds)} settings.")
    # Each method's gain over softmax beside the published gain (docs/methods.md §2: compressed schedules).
    return lines + gain_findings(df, baseline="softmax", epochs=epochs)
