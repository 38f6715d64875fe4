"""Notebook 01: the CE baseline on CIFAR-LT (Cui et al. 2019, Table 2's softmax row).

Besides the runs (:func:`runs`), the notebook's computations: the class counts of CIFAR-LT at
several imbalance ratios (:func:`class_counts`) and the head-bias findings of its conclusion
(:func:`findings`).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from ..data.counts import long_tailed_counts
from ..engine import TrainResult
from ..metrics import shot_groups
from ..published import published
from ..text import verdict
from . import PlannedRun, label_runs

NOTEBOOK = "01_long_tailed_cifar"
PAPER = "Class-balanced loss (Cui et al. 2019)"
TABLE = "Table 2"
#: (name, classes, n_max) of the two CIFAR-LT training sets (docs/methods.md §1.1).
CIFAR_LT = (("CIFAR-10-LT", 10, 5000), ("CIFAR-100-LT", 100, 500))


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         amp_cpu: bool = False) -> List[PlannedRun]:
    """CE at every (dataset, IR, seed): the shared baseline (tier 0)."""
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    return label_runs({"CE": {"loss": "ce"}}, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE,
                      published_rows={"CE": "CE (softmax)"})


def class_counts(imbalance_ratios: Sequence[float]) -> "Any":
    """One row per CIFAR-LT training set and IR: its size, largest and smallest class, and how
    many classes are many-, medium- and few-shot (docs/methods.md §3.1)."""
    import pandas as pd

    rows = []
    for name, c, nmax in CIFAR_LT:
        for ir in imbalance_ratios:
            counts = long_tailed_counts(nmax, c, ir)
            groups = shot_groups(counts)
            rows.append({"dataset": name, "IR": ir, "total": sum(counts), "n_max": counts[0], "n_min": counts[-1],
                         "many": len(groups["many"]), "medium": len(groups["medium"]), "few": len(groups["few"])})
    return pd.DataFrame(rows)


def rank_corr(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman correlation (ranks, then Pearson); NaN when either side is constant."""
    import pandas as pd

    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1]) if rx.std() > 0 and ry.std() > 0 else float("nan")


def findings(df: "Any", results: Sequence[TrainResult]) -> List[str]:
    """The conclusion's lines: per (dataset, IR) of ``df`` (``results_frame`` of ``results``) the
    top-1 per shot group, the head - tail gap, the rank correlation of per-class accuracy with the
    training count and the published CE number, whether CE favours the head, and overall."""
    lines: List[str] = []
    holds: List[Optional[bool]] = []
    for (ds, ir), g in df.groupby(["dataset", "IR"], sort=False):
        groups = {k: g[k].dropna().mean() for k in ("many", "medium", "few") if g[k].notna().any()}
        rs = [r for r in results if r.config["dataset"] == ds and float(r.config["imbalance_ratio"]) == float(ir)]
        rho = np.nanmean([rank_corr(r.counts, r.last.per_class) for r in rs])
        shots = ", ".join(f"{k} {v:.1f}" for k, v in groups.items())
        if len(groups) >= 2:
            (top, a), (bottom, b) = list(groups.items())[0], list(groups.items())[-1]
            holds.append(a - b > 0)
            gap_text = f"{top} − {bottom} = {a - b:+.1f} points"
        else:
            gap_text = "a single shot group at this profile"
            holds.append(bool(rho > 0) if np.isfinite(rho) else None)
        pub = published("CE (softmax)", ds, ir)
        pub_text = f"; published CE {pub:.2f} (CB Table 2), ours {g['top1_last'].mean():.2f}" if pub is not None else ""
        lines.append(f"{ds} IR{ir:g}: top-1 per shot group {shots} ({gap_text}); rank correlation of per-class accuracy "
                     f"with training count {rho:+.2f}{pub_text} → head bias "
                     f"{verdict(holds[-1]) if holds[-1] is not None else 'cannot be checked'}.")
    known = [h for h in holds if h is not None]
    if known:
        lines.append(f"Overall: head bias in {sum(known)} of {len(known)} settings → "
                     f"{verdict(all(known), partial=any(known) and not all(known))}.")
    return lines
