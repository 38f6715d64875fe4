"""Notebook 03: class-balanced loss (Cui et al. 2019), CB Table 2 on CIFAR-LT.

Besides the runs (:func:`runs`), the notebook's computations: the best class-balanced
configuration per column beside the paper's (:func:`best_per_column`), Table 2 as a loss x beta
grid (:func:`table2_grid`), the normalisation diagnostic beside CB softmax
(:func:`normalisation_table`) and the conclusion's lines (:func:`findings`).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..losses import class_balanced_weights, mean_sample_weight
from ..published import CB_TABLE2_BEST_CONFIG, normalize_dataset, published
from ..text import is_number, verdict
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


#: The CB softmax run the diagnostic explains: CB Table 2's softmax column at beta 0.9999.
DIAGNOSED, DIAGNOSTIC_BETA = "CB softmax beta 0.9999", 0.9999
#: The diagnostic's runs, each one change from the row above it, all with the CB weights of
#: beta 0.9999 (docs/methods.md §4.6): the weighted mean (divide by the batch's summed weights,
#: PyTorch's ``weight=``) instead of by N, then those weights from 80 % of training instead of from
#: the start (DRW, docs/methods.md §6.1: notebook 04's CE-DRW run, shared).
WEIGHTED_MEAN, DEFERRED = "CB weights, weighted mean", "CE-DRW"
DIAGNOSTICS = (WEIGHTED_MEAN, DEFERRED)


#: After a CB claim that falls short: where this notebook looks for why (``gain_findings`` ``context``).
CB_CONTEXT = {
    DIAGNOSED: "The diagnostic line below changes one thing at a time.",
    **{f"CB {k} beta 0.9999{g}": "It divides by N too: the diagnostic line below gives the loss scale that implies."
       for k, g in (("focal", " gamma 1"), ("focal", " gamma 0.5"), ("focal", " gamma 2"), ("sigmoid", ""))},
}


def diagnostic_methods(epochs: int, beta: float = DIAGNOSTIC_BETA) -> Dict[str, Dict[str, Any]]:
    """Label -> TrainConfig overrides of the diagnostic's runs (:data:`DIAGNOSTICS`)."""
    defer = min(epochs - 1, round(0.8 * epochs))  # as notebook 04's CE-DRW, so the run is shared
    return {WEIGHTED_MEAN: {"loss": "ce", "drw_epoch": 0, "drw_beta": beta},
            DEFERRED: {"loss": "ce", "drw_epoch": defer, "drw_beta": beta}}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         methods: Optional[Sequence[str]] = None, betas: Sequence[float] = (0.9, 0.99, 0.999, 0.9999),
         focal_gammas: Sequence[float] = (0.5, 1.0, 2.0), diagnostics: bool = True) -> List[PlannedRun]:
    """Softmax / sigmoid / focal and their class-balanced versions over ``betas`` x ``focal_gammas``;
    with ``diagnostics`` and CB softmax at beta 0.9999 among them, the two runs of
    :data:`DIAGNOSTICS` beside it (tier 1: they explain a published cell, docs/methods.md §4.6)."""
    if not isinstance(diagnostics, bool):
        raise ValueError(f"diagnostics must be True or False, got {diagnostics!r}")
    everything, published = all_methods(betas, focal_gammas)
    chosen = choose(everything, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    out = label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE, published)
    if diagnostics and DIAGNOSED in chosen:
        extra = label_runs(diagnostic_methods(epochs), datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER,
                           TABLE, role="diagnostic")
        out += [dataclasses.replace(r, tier=min(r.tier, 1)) for r in extra]
    return out


def paper_label(cfg: Dict[str, Any]) -> str:
    """CB Table 2's best (loss, beta, gamma) written as this notebook's method label."""
    kind = {"cb_softmax": "softmax", "cb_sigmoid": "sigmoid", "cb_focal": "focal"}[cfg["loss"]]
    gamma = "" if cfg["gamma"] is None else f" gamma {cfg['gamma']:g}"
    return f"CB {kind} beta {cfg['beta']:g}{gamma}"


def best_per_column(df: "Any") -> "Any":
    """Per (dataset, IR) of ``df`` (``results_frame``): the class-balanced configuration with the
    best seed-mean last-epoch top-1, beside the paper's best configuration and number."""
    import pandas as pd

    mean = df[is_table2(df["method"])].groupby(["method", "dataset", "IR"], as_index=False)["top1_last"].mean()
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


def is_table2(methods: "Any") -> List[bool]:
    """Per label of ``methods``: whether it is a cell of Table 2 (:func:`grid_position`), not a diagnostic."""
    return [grid_position(m) is not None for m in methods]


def table2_grid(df: "Any") -> Tuple["Any", List[str], List[str]]:
    """``(mean, rows, columns)``: the seed-mean last-epoch top-1 per (method, dataset, IR) of ``df``
    with its ``loss`` (Table 2's row) and ``weighting`` (plain, or the class-balanced beta), and
    the grid's row order (softmax, sigmoid, then the focal rows) and column order (plain, then beta)."""
    mean = df[is_table2(df["method"])].groupby(["method", "dataset", "IR"], as_index=False, sort=False)["top1_last"].mean()
    mean[["loss", "weighting"]] = [grid_position(m) for m in mean["method"]]
    rows = sorted(mean["loss"].unique(), key=lambda r: (["softmax", "sigmoid"].index(r) if r in ("softmax", "sigmoid") else 2, r))
    columns = ["plain"] + sorted((c for c in mean["weighting"].unique() if c != "plain"), key=lambda c: float(c[2:]))
    return mean, rows, columns


def normalisation_table(df: "Any", counts: Optional[Mapping[Tuple[str, Any], Sequence[int]]] = None) -> "Any":
    """Per (dataset, IR) of ``df`` (``results_frame``) with CB softmax at beta 0.9999 and a
    diagnostic run: the rows softmax CE, CB softmax (÷ N, from the start), the same weights in a
    weighted mean (÷ Σw), and those weights from 80 % of training (CE-DRW), each with its seed-mean
    top-1, many and medium accuracy, its change from the row above, and the loss scale on an
    average batch (:func:`~ltbench.losses.mean_sample_weight` of the cell's ``counts``, keyed by
    (dataset, IR) as ``df``; blank without them)."""
    import pandas as pd

    # (run, normalisation, weights, loss scale); None: the mean CB weight of the cell's counts.
    steps = [("softmax", "plain CE", "none", 1.0), (DIAGNOSED, "÷ N (released CB loss)", "from epoch 0", None),
             (WEIGHTED_MEAN, "÷ Σw (PyTorch weight=)", "from epoch 0", 1.0), (DEFERRED, "÷ Σw (PyTorch weight=)", "from 80 %", 1.0)]
    cols = ["dataset", "IR", "run", "normalisation", "weights", "loss scale", "seeds", "top1 last", "change", "many", "medium"]
    rows: List[Dict[str, Any]] = []
    if df is None or len(df) == 0:
        return pd.DataFrame(rows, columns=cols)
    mean = df.groupby(["method", "dataset", "IR"], sort=False).agg(
        top1=("top1_last", "mean"), many=("many", "mean"), medium=("medium", "mean"), seeds=("seed", "nunique"))
    for (ds, ir), g in df.groupby(["dataset", "IR"], sort=False):
        have = set(g["method"])
        if DIAGNOSED not in have or not have & set(DIAGNOSTICS):
            continue
        c = (counts or {}).get((ds, ir))
        wbar = None if c is None else mean_sample_weight(c, class_balanced_weights(c, DIAGNOSTIC_BETA))
        prev = None
        for label, norm, when, scale in steps:
            if label not in have:
                rows.append({"dataset": ds, "IR": ir, "run": label, "normalisation": norm, "weights": when,
                             "loss scale": None, "seeds": 0, "top1 last": None, "change": None, "many": None,
                             "medium": None})
                prev = None
                continue
            m = mean.loc[(label, ds, ir)]
            rows.append({"dataset": ds, "IR": ir, "run": label, "normalisation": norm,
                         "weights": when, "loss scale": wbar if scale is None else scale, "seeds": int(m["seeds"]),
                         "top1 last": float(m["top1"]), "change": None if prev is None else float(m["top1"]) - prev,
                         "many": float(m["many"]), "medium": float(m["medium"])})
            prev = float(m["top1"])
    return pd.DataFrame(rows, columns=cols)


def normalisation_findings(table: "Any") -> List[str]:
    """One conclusion line per cell of :func:`normalisation_table`: CB softmax, then one change at a time."""
    lines: List[str] = []
    for (ds, ir), g in table.groupby(["dataset", "IR"], sort=False):
        r = {row["run"]: row for row in g.to_dict("records")}
        cb = r[DIAGNOSED]
        scale = cb["loss scale"]
        why = ("" if not is_number(scale) else
               f" on this subset a training sample's mean CB weight is {scale:.3f}, so at the same learning rate the "
               f"loss and its gradient are about {scale:.2f}× plain CE's;")
        parts = [f"{ds}-IR{float(ir):g}, what moves CB softmax β 0.9999 (one change at a time, the same class weights): "
                 f"the CB losses divide by N, as released;{why} it reaches {cb['top1 last']:.2f}"]
        for label, text in ((WEIGHTED_MEAN, "the same weights divided by their sum in the batch (PyTorch's `weight=`)"),
                            (DEFERRED, "those weights switched on at 80 % of training, not from the start (CE-DRW)")):
            row = r[label]
            if not is_number(row["top1 last"]):
                parts.append(f"{text}: pending")
            else:
                change = f" ({row['change']:+.2f})" if is_number(row["change"]) else ""
                parts.append(f"{text}: {row['top1 last']:.2f}{change}")
        base = r["softmax"]
        tail = f"; plain softmax CE: {base['top1 last']:.2f}" if is_number(base["top1 last"]) else ""
        lines.append("; ".join(parts) + tail + "." + _attribution(r[WEIGHTED_MEAN], r[DEFERRED], base))
    return lines


def _attribution(mean: Mapping[str, Any], deferred: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    """The diagnostic's two changes as shares of the whole move, once both have run ("" until then)."""
    a, b = mean["change"], deferred["change"]
    if not (is_number(a) and is_number(b)):
        return ""
    larger = ("when the weights are switched on, not the ÷N scale" if abs(b) >= abs(a)
              else "the ÷N scale, not when the weights are switched on")
    text = (f" Of the {a + b:+.2f} points from CB softmax to CE-DRW, {a:+.2f} come from the normalisation and "
            f"{b:+.2f} from switching the weights on at 80 %: the larger part is {larger}.")
    if is_number(base["top1 last"]):
        text += (f" With PyTorch's weighted mean and the weights on from the start, as the CB paper trains, ours is "
                 f"{mean['top1 last'] - base['top1 last']:+.2f} against plain CE.")
    return text


def findings(df: "Any", epochs: Optional[int] = None,
             counts: Optional[Mapping[Tuple[str, Any], Sequence[int]]] = None) -> List[str]:
    """The conclusion's lines from ``df`` (``results_frame``): per (dataset, IR) the best
    class-balanced configuration against the best plain loss (beside CB Table 2's best CB -
    softmax CE), overall, each method's gain over softmax beside the published gain, and the
    normalisation diagnostic (:func:`normalisation_findings`; ``counts`` as there)."""
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
    table2 = df[is_table2(df["method"])] if len(df) else df
    diagnostic = normalisation_findings(normalisation_table(df, counts))
    return (lines + gain_findings(table2, baseline="softmax", epochs=epochs, context=CB_CONTEXT if diagnostic else None)
            + diagnostic)
