"""Notebook 05: the Equalization losses (Sigmoid-EQL, Softmax-EQL, EFL) on CIFAR-LT, beside their baselines.

Sections (``section`` tag): ``main`` (each equalisation loss and the loss it modifies) and
``statistics`` (the baselines again, as the stateful loss with its equalisation switched off, so they
record the per-class gradient statistics the notebook's gradient-ratio figure compares; tag
``baseline`` names the baseline they stand for).

Besides the runs (:func:`runs`), the notebook's computations: Softmax-EQL v1 against v2 on a toy
problem (:func:`softmax_eql_v1_vs_v2`), the accumulated gradient ratio per class
(:func:`ratio_curves`, :func:`ratio_panels`, :func:`gradient_ratios`) and the conclusion's lines
(:func:`findings`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..engine import TrainResult
from ..fsa import split_head_tail
from ..losses import build_loss
from ..text import verdict
from . import PlannedRun, choose, gain_findings, label_runs

NOTEBOOK = "05_equalization_losses"
PAPER = "Equalization losses (EQLv2 / EFL)"
TABLE = "new CIFAR-LT measurements"

ALL_METHODS: Dict[str, Dict[str, Any]] = {
    "sigmoid CE": {"loss": "sigmoid_ce"},
    "Sigmoid-EQL": {"loss": "sigmoid_eql"},
    "CE": {"loss": "ce"},
    "Softmax-EQL": {"loss": "softmax_eql"},
    "Softmax-EQL v2": {"loss": "softmax_eql_v2"},
    # EFL before its first step (docs/methods.md#411-equalized-focal-loss): the baseline differs from EFL only
    # by equalisation.
    "sigmoid focal gamma 2 alpha 0.25": {"loss": "sigmoid_focal", "loss_params": {"gamma": 2.0, "alpha": 0.25}},
    "EFL": {"loss": "efl"},
}
#: The loss each equalisation loss modifies.
BASELINE_OF = {"Sigmoid-EQL": "sigmoid CE", "Softmax-EQL": "CE", "Softmax-EQL v2": "CE",
               "EFL": "sigmoid focal gamma 2 alpha 0.25"}
#: Each baseline as the stateful loss with its equalisation switched off: the same loss and gradient
#: (checked to the bit on random logits), plus the statistics G+ / G- per class.
#: sigmoid_eql with alpha 0 and mu -1e4 has q = r = 1 (W = 1); softmax_eql with tau 0 adds 0 to the
#: logits; efl with s_f 0 has gamma_j = gamma_b = 2 and weight 1.
TRACKED: Dict[str, Dict[str, Any]] = {
    "sigmoid CE": {"loss": "sigmoid_eql", "loss_params": {"alpha": 0.0, "mu": -1e4}},
    "CE": {"loss": "softmax_eql", "loss_params": {"tau": 0.0}},
    "sigmoid focal gamma 2 alpha 0.25": {"loss": "efl", "loss_params": {"s_f": 0.0}},
}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         methods: Optional[Sequence[str]] = None, track_baselines: bool = True) -> List[PlannedRun]:
    """Each equalisation loss beside the loss it modifies (no published CIFAR-LT numbers exist), and, with
    ``track_baselines``, the baselines of the chosen equalisation losses with gradient statistics."""
    chosen = choose(ALL_METHODS, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    out = label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE,
                     {"CE": "CE (softmax)", "sigmoid CE": "sigmoid CE"}, section="main")
    if track_baselines:
        for base in dict.fromkeys(BASELINE_OF[m] for m in chosen if m in BASELINE_OF):
            out += label_runs({f"{base} (gradient statistics)": TRACKED[base]}, datasets, imbalance_ratios, seeds,
                              recipe, NOTEBOOK, PAPER, "gradient statistics", section="statistics", baseline=base)
    return out


# --------------------------------------------------------------------------------------------
# The notebook's computations


def split_statistics(results: Sequence[TrainResult]) -> Tuple[List[TrainResult], List[TrainResult]]:
    """``(main, tracked)``: the comparison's runs, and the baselines of section ``statistics`` that
    also record gradient statistics (the same loss and gradient as the baseline)."""
    return ([r for r in results if r.meta.get("section", "main") != "statistics"],
            [r for r in results if r.meta.get("section") == "statistics"])


def softmax_eql_v1_vs_v2(steps: int = 20, n_cls: int = 10, dim: int = 16, batch: int = 64,
                         seed: int = 0) -> Tuple["Any", float]:
    """Softmax-EQL v1 and v2 training copies of one small linear model on the same long-tailed
    batches (every class present, so v1's clamp is never hit): one row per step with both losses
    and the largest differences of the loss and of the accumulated statistics; and the largest
    accumulated statistic (for scale)."""
    import pandas as pd

    torch.manual_seed(seed)
    prior = 0.5 ** torch.arange(n_cls, dtype=torch.float64)  # head-to-tail class frequencies
    centres = 0.5 * torch.randn(n_cls, dim)  # overlapping classes: the loss stays well above 0
    base = torch.nn.Linear(dim, n_cls)
    forms = {v: build_loss(v, [1] * n_cls) for v in ("softmax_eql", "softmax_eql_v2")}
    models = {v: copy.deepcopy(base) for v in forms}
    opts = {v: torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for v, m in models.items()}
    rows = []
    for step in range(1, steps + 1):
        # every class at least once per batch: no class has G_pos below v1's 1e-4 clamp
        y = torch.cat([torch.arange(n_cls), torch.multinomial(prior, batch - n_cls, replacement=True)])
        x = centres[y] + torch.randn(batch, dim)
        losses = {}
        for v in forms:
            opts[v].zero_grad()
            loss = forms[v](models[v](x), y)
            loss.backward()
            opts[v].step()
            losses[v] = loss.item()
        a, b = forms["softmax_eql"], forms["softmax_eql_v2"]
        rows.append({"step": step, "loss v1": losses["softmax_eql"], "loss v2": losses["softmax_eql_v2"],
                     "|loss v1 - v2|": abs(losses["softmax_eql"] - losses["softmax_eql_v2"]),
                     "max |G_pos v1 - v2|": (a.pos_grad - b.pos_grad).abs().max().item(),
                     "max |G_neg v1 - v2|": (a.neg_grad - b.neg_grad).abs().max().item()})
    return pd.DataFrame(rows), forms["softmax_eql"].neg_grad.max().item()


def ratio_curves(r: TrainResult) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(epochs, ratio [epochs, C])`` of G+/G- from a run's per-epoch loss statistics (None, None without)."""
    stats = r.extras.get("loss_statistics") or []
    if not stats:
        return None, None
    pos = np.array([s["pos_grad"] for s in stats], dtype=float)
    neg = np.array([s["neg_grad"] for s in stats], dtype=float)
    return np.array([s["epoch"] for s in stats]), pos / np.maximum(neg, 1e-12)


def gmean(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Geometric mean along ``axis`` (values floored at 1e-12)."""
    return np.exp(np.log(np.maximum(a, 1e-12)).mean(axis=axis))


@dataclass
class RatioPanel:
    """One (dataset, IR) of the gradient-ratio figure (first seed): the head and tail classes, and
    each equalisation run with statistics beside its baseline's statistics run (None if not recorded)."""

    dataset: str
    imbalance_ratio: float
    head: List[int]
    tail: List[int]
    rows: List[Tuple[TrainResult, Optional[TrainResult]]]


def ratio_panels(main: Sequence[TrainResult], tracked: Sequence[TrainResult], seed: int) -> List[RatioPanel]:
    """The gradient-ratio figure's panels (see :class:`RatioPanel`) of the runs with ``seed``."""
    panels = []
    keys = dict.fromkeys((r.config["dataset"], r.config["imbalance_ratio"]) for r in main if r.config["seed"] == seed)
    for ds, ir in keys:
        at = lambda rs: [r for r in rs if (r.config["dataset"], r.config["imbalance_ratio"], r.config["seed"]) == (ds, ir, seed)]
        eq_runs = [r for r in at(main) if r.meta["method"] in BASELINE_OF and r.extras.get("loss_statistics")]
        if not eq_runs:
            continue
        head, tail = split_head_tail(eq_runs[0].counts)
        rows = []
        for r in eq_runs:
            base = [b for b in at(tracked) if b.meta.get("baseline") == BASELINE_OF[r.meta["method"]]
                    and b.extras.get("loss_statistics")]
            rows.append((r, base[0] if base else None))
        panels.append(RatioPanel(ds, ir, head, tail, rows))
    return panels


def gradient_ratios(panels: Sequence[RatioPanel]) -> "Any":
    """The final accumulated G+/G- ratio of each run of ``panels``, geometric mean over the head
    and over the tail classes, and head / tail: one row per equalised run and per baseline."""
    import pandas as pd

    rows = []
    for p in panels:
        for r, base in p.rows:
            for run, loss, role in ((r, r.meta["method"], "equalised"),
                                    (base, BASELINE_OF[r.meta["method"]], f"baseline of {r.meta['method']}")):
                if run is None:
                    continue
                final = ratio_curves(run)[1][-1]
                rows.append({"dataset": p.dataset, "IR": p.imbalance_ratio, "loss": loss, "role": role,
                             "head ratio": gmean(final[p.head]), "tail ratio": gmean(final[p.tail]) if p.tail else np.nan})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["head / tail"] = out["head ratio"] / out["tail ratio"]
    return out


def tail_accuracy(rs: Sequence[TrainResult]) -> float:
    """Mean over runs of the mean test accuracy of the tail classes (90% rule)."""
    vals = []
    for r in rs:
        _, tail = split_head_tail(r.counts)
        if tail:
            vals.append(float(np.mean([r.last.per_class[c] for c in tail])))
    return float(np.mean(vals)) if vals else float("nan")


def findings(ratios: "Any", main: Sequence[TrainResult], tracked: Sequence[TrainResult], df: "Any",
             epochs: Optional[int] = None) -> List[str]:
    """The conclusion's lines: whether the tail's final gradient ratio is below the head's (the
    baselines' statistics, else the equalised runs'), whether each equalisation loss raises the
    tail's accuracy over its baseline, both summed up, and each method's gain over CE beside the
    published gain."""
    lines, ratio_ok, tail_ok = [], [], []
    for _, row in (ratios[ratios["role"] != "equalised"].iterrows() if not ratios.empty else []):
        ratio_ok.append(row["tail ratio"] < row["head ratio"])
        lines.append(f"{row['dataset']} IR{row['IR']:g}, {row['loss']} ({row['role']}): final $G^+/G^-$ head "
                     f"{row['head ratio']:.3f} vs tail {row['tail ratio']:.3f} → tail ratio below the head's: {verdict(ratio_ok[-1])}.")
    if not ratio_ok and not ratios.empty:  # no baseline statistics: the equalised runs' own statistics
        for _, row in ratios.iterrows():
            ratio_ok.append(row["tail ratio"] < row["head ratio"])
            lines.append(f"{row['dataset']} IR{row['IR']:g}, {row['loss']} (no baseline statistics at this profile): final "
                         f"$G^+/G^-$ head {row['head ratio']:.3f} vs tail {row['tail ratio']:.3f} → tail ratio below the head's: "
                         f"{verdict(ratio_ok[-1])}.")
    for (ds, ir) in dict.fromkeys((r.config["dataset"], r.config["imbalance_ratio"]) for r in main):
        here = lambda rs, m: [r for r in rs if (r.config["dataset"], r.config["imbalance_ratio"]) == (ds, ir)
                              and (r.meta["method"] == m or r.meta.get("baseline") == m)]
        for method, base_label in BASELINE_OF.items():
            eq = here(main, method)
            if not eq:
                continue
            base = [r for r in here(main, base_label) if r.meta["method"] == base_label] or here(tracked, base_label)
            if not base:
                lines.append(f"{ds} IR{ir:g}, {method}: its baseline {base_label} did not run → tail accuracy cannot be compared.")
                continue
            a, b = tail_accuracy(eq), tail_accuracy(base)
            tail_ok.append(a > b)
            lines.append(f"{ds} IR{ir:g}, {method} vs {base_label}: tail-class accuracy {a:.2f} vs {b:.2f} ({a - b:+.2f}) → "
                         f"equalisation raises the tail: {verdict(a > b)}.")
    # Each method's gain over CE beside the published gain (docs/methods.md §2: compressed schedules).
    lines += gain_findings(df, baseline="CE", epochs=epochs)
    if ratio_ok:
        lines.append(f"Gradient ratio: tail below head in {sum(ratio_ok)} of {len(ratio_ok)} cases.")
    if tail_ok:
        lines.append(f"Tail accuracy: raised by equalisation in {sum(tail_ok)} of {len(tail_ok)} comparisons.")
    return lines
