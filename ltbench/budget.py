"""Accuracy against training budget: which long-tail methods survive a short schedule.

No paper shows this: each method's last-epoch top-1 on the full CIFAR-10-LT IR100 (ResNet-32,
batch 128, the full test set) against the length of its (first-stage) schedule, from every
finished run in the stores under ``results/`` (the ``cpu`` profile's 30 / 50 epochs, the
``paper`` profile's 200, whatever else was trained), mean ± std over seeds, beside the published
200-epoch number. Float32 and bf16 runs (``TrainConfig.amp_cpu``; a GPU's ``amp`` is bf16) are
separate rows, so the figure also shows what the precision changes. ``python -m ltbench report``
draws it into ``results/figures/``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .published import published

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["LABELS", "budget_label", "precision", "budget_frame", "plot_budget"]

#: Budget-figure label -> row of ltbench.published (the 200-epoch CIFAR-10 IR100 number).
LABELS = {"CE": "CE (softmax)", "CE-DRW": "CE-DRW", "LDAM-DRW": "LDAM-DRW", "BBN": "BBN",
          "cRT": "cRT (re-implementation)", "CB focal": "CB focal beta 0.9999 gamma 1",
          "CB softmax": "CB softmax beta 0.9999", "Mixup": "Mixup (alpha 1)"}
#: Joint class-balanced runs of the figure: (loss, its loss_params) -> label; only the published
#: CIFAR-10 IR100 configuration, so a beta / gamma sweep does not pile into one line.
_CB = {("cb_focal", (("beta", 0.9999), ("gamma", 1.0))): "CB focal",
       ("cb_softmax", (("beta", 0.9999),)): "CB softmax"}


def _full_cifar10_ir100(c: Dict[str, Any]) -> bool:
    return (c.get("dataset") == "cifar10" and float(c.get("imbalance_ratio") or 0) == 100.0
            and c.get("n_max") is None and c.get("test_per_class") is None and c.get("model") == "resnet32"
            and c.get("batch_size") == 128 and c.get("lt_profile", "exp") == "exp")


def _deferred(c: Dict[str, Any]) -> bool:
    """DRW as published: the CB weights of beta 0.9999 from 80 % of training (docs/methods.md §6.1),
    not another switch point such as notebook 03's weights from the first epoch."""
    e = int(c.get("epochs") or 0)
    return c.get("drw_epoch") == min(int(round(0.8 * e)), e - 1) and float(c.get("drw_beta", 0.9999)) == 0.9999


def _joint_label(c: Dict[str, Any]) -> Optional[str]:
    if c.get("sampler") != "instance" or c.get("drs_epoch") is not None:
        return None
    loss, drw, head = c.get("loss"), c.get("drw_epoch"), c.get("classifier")
    if loss == "ce" and head == "linear":
        return "CE" if drw is None else ("CE-DRW" if _deferred(c) else None)
    if loss == "ldam" and head == "cosine" and drw is not None:
        return "LDAM-DRW" if _deferred(c) else None
    if head == "linear" and drw is None:
        params = tuple(sorted((k, float(v)) for k, v in (c.get("loss_params") or {}).items()))
        return _CB.get((loss, params))
    return None


def budget_label(spec: Dict[str, Any]) -> Optional[str]:
    """The figure's label of a stored ``spec.json`` (a dict), or None when it is not one of
    :data:`LABELS` on the full CIFAR-10-LT IR100."""
    method, c = spec.get("method"), dict(spec.get("config") or {})
    if method == "bbn":
        ok = (c.get("bbn_sampler"), c.get("bbn_adaptor")) == ("reversed", "parabolic_decay")
        return "BBN" if ok and _full_cifar10_ir100(c) else None
    if method == "joint":
        return _joint_label(c) if _full_cifar10_ir100(c) else None
    if method == "mixup":
        ok = (float((spec.get("params") or {}).get("alpha", 0)) == 1.0 and _full_cifar10_ir100(c)
              and _joint_label(c) == "CE")
        return "Mixup" if ok else None
    if method == "crt":
        s1 = dict((spec.get("deps") or {}).get("stage1") or {})
        c1 = dict(s1.get("config") or {})
        ok = s1.get("method") == "joint" and _full_cifar10_ir100(c1) and _joint_label(c1) == "CE"
        return "cRT" if ok else None
    return None


def precision(config: Dict[str, Any], device: str = "cpu") -> str:
    """``"bf16"`` or ``"float32"``: what a run with ``config`` trained in on ``device`` (the
    ``device`` of its metrics.json): bf16 autocast with ``amp`` on a GPU, and on a CPU with
    ``amp_cpu`` too."""
    amp = config.get("amp", True)
    return "bf16" if amp and (config.get("amp_cpu") or not str(device).startswith("cpu")) else "float32"


def _epochs(spec: Dict[str, Any]) -> int:
    if spec.get("method") == "crt":
        return int(spec["deps"]["stage1"]["config"]["epochs"])
    return int(spec["config"]["epochs"])


def budget_frame(results_dir: os.PathLike | str = "results") -> "pd.DataFrame":
    """One row per (method, epochs): mean and std of last-epoch top-1 over seeds, the number of
    seeds, the profiles the runs came from and the published 200-epoch value."""
    import pandas as pd

    rows: List[Dict[str, Any]] = []
    for spec_path in sorted(Path(results_dir).glob("*/runs/*/spec.json")):
        metrics = spec_path.parent / "metrics.json"
        if not metrics.exists():
            continue
        spec = json.loads(spec_path.read_text())
        label = budget_label(spec)
        if label is None:
            continue
        m = json.loads(metrics.read_text())
        rows.append({"method": label, "epochs": _epochs(spec), "precision": precision(spec["config"], m.get("device", "cpu")),
                     "seed": spec["config"].get("seed"), "profile": spec_path.parents[2].name,
                     "top1_last": float(m["top1_last"])})
    cols = ["method", "epochs", "precision", "mean", "std", "n", "profiles", "published"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows).drop_duplicates(["method", "epochs", "precision", "seed"])
    out = (df.groupby(["method", "epochs", "precision"], sort=True)
             .agg(mean=("top1_last", "mean"), std=("top1_last", "std"), n=("top1_last", "size"),
                  profiles=("profile", lambda s: ", ".join(sorted(set(s)))))
             .reset_index())
    out["published"] = [published(LABELS[m], "cifar10", 100) for m in out["method"]]
    return out[cols]


def plot_budget(frame: "pd.DataFrame", path: os.PathLike | str) -> Optional[Path]:
    """Top-1 against epochs, one line per method, published 200-epoch values as open markers;
    PNG at ``path`` and a PDF beside it. None when ``frame`` is empty."""
    if frame.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    styles = {"bf16": ("-", "o"), "float32": ("--", "s")}
    for i, (method, g) in enumerate(frame.groupby("method", sort=False)):
        color = f"C{i}"
        for prec, gp in g.groupby("precision", sort=True):
            gp = gp.sort_values("epochs")
            ls, marker = styles.get(prec, ("-", "o"))
            ax.errorbar(gp["epochs"], gp["mean"], yerr=gp["std"].fillna(0.0), marker=marker, linestyle=ls, color=color,
                        capsize=3, label=f"{method} (ours, {prec})")
        pub = g["published"].dropna()
        if not pub.empty:
            ax.plot([200], [pub.iloc[0]], marker="*", markersize=11, color=color, linestyle="none",
                    markerfacecolor="none", label=f"{method} (published, 200 epochs)")
    ax.set_xlabel("training epochs (first stage)")
    ax.set_ylabel("top-1, last epoch (%)")
    ax.set_title("CIFAR-10-LT IR100, ResNet-32: accuracy against training budget", fontsize=10)
    ax.set_xscale("log")
    ticks = sorted({*frame["epochs"].astype(int), 200})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    # Outside the axes: with a handful of methods any corner inside hides a 50-epoch point.
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path
