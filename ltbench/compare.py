"""Bring your own method: your loss against faithful baselines, from the committed runs.

``python -m ltbench compare --method examples/logit_adjustment.py:LogitAdjustedLoss --param tau=1.0
--profile cpu`` (docs/your_method.md):

1. the loss is loaded and checked on a test batch before anything else (:func:`ltbench.losses.check_loss`);
2. the baselines are the profile's own runs of CIFAR-10 IR100 (CE, CB focal, CE-DRW, LDAM-DRW, cRT,
   BBN; the smoke profile's IR10), found in the profile's plan and loaded from its store, never
   retrained: a missing one is named, with the command that trains it, unless ``train_baselines``;
3. your runs are the CE baseline's runs (same data, recipe and seeds) with the loss replaced, so
   the only difference is the loss; they are ordinary runs of the store (their key names the
   reference and its parameters) (:mod:`ltbench.comparison`);
4. the table (top-1 last and best, many / medium / few, ECE, ± over seeds, the difference to
   each baseline), the per-class accuracy against training count, and a verdict per baseline are
   written under ``<results>/<profile>/compare/<name>/``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .comparison import BASELINES, check_method, train_comparison  # noqa: F401 - re-exported
from .engine import TrainResult
from .io import atomic_write_json, atomic_write_text
from .plotting import new_figure, save, style
from .runs import RunSpec
from .text import fmt, fmt_mean_std, markdown_table

__all__ = ["Comparison", "compare", "BASELINES", "check_method"]


@dataclass
class Comparison:
    """What :func:`compare` produced: the table, one verdict per baseline, the files written,
    and which runs were trained now (only yours, unless ``train_baselines``)."""

    name: str
    table: Any
    verdicts: List[str]
    files: List[Path]
    trained: List[str] = field(default_factory=list)
    baseline_keys: Dict[str, List[str]] = field(default_factory=dict)
    user_keys: List[str] = field(default_factory=list)


def _row(label: str, results: Sequence[TrainResult], ours: Optional[Sequence[float]]) -> Dict[str, Any]:
    def stat(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        if not vals:
            return None, None
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
        return mean, std

    n = len(results)
    last, best = [r.last.top1 for r in results], [r.best_top1 for r in results]
    row = {"method": label, "n seeds": n,
           "top-1 last": fmt_mean_std(*stat(last), n), "top-1 best": fmt_mean_std(*stat(best), n),
           "many / med / few": " / ".join(fmt(stat([getattr(r.last, g) for r in results])[0], 1)
                                         for g in ("many", "medium", "few")),
           "ECE": fmt(stat([r.last.ece for r in results])[0]), "yours − this": "-", "_last": last}
    if ours is not None:
        diffs = [a - b for a, b in zip(ours, last)]  # paired by seed
        mean, std = stat(diffs)
        row["yours − this"] = fmt_mean_std(mean, std, len(diffs))
        row["_diff"] = (mean, std, len(diffs))
    return row


def _verdict(name: str, label: str, diff: Tuple[Optional[float], Optional[float], int]) -> str:
    mean, std, n = diff
    if mean is None:
        return f"{name} vs {label}: no comparable runs."
    side = "above" if mean > 0 else "below" if mean < 0 else "level with"
    text = f"{name} is {abs(mean):.2f} points {side} {label} (top-1, last epoch"
    if n > 1 and std is not None:
        beyond = abs(mean) > std
        text += f", mean of {n} seeds paired by seed, spread ± {std:.2f}): the difference is " + \
            ("larger than the seed spread." if beyond else "within the seed spread, so not established.")
    else:
        text += ", one seed): with one seed no spread is known; run 3 seeds (--seeds 3) to tell."
    return text


def _figure(results: Mapping[str, Sequence[TrainResult]], out: Path) -> List[Path]:
    with style():
        fig = new_figure(5.6, 3.6)
        ax = fig.add_subplot(1, 1, 1)
        for label, rs in results.items():
            if not rs:
                continue
            counts = rs[0].counts
            acc = [sum(r.last.per_class[c] for r in rs) / len(rs) for c in range(len(counts))]
            ax.plot(counts, acc, marker="o", markersize=3, linewidth=1, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class (log scale)")
        ax.set_ylabel("test accuracy of the class (%)")
        ax.legend(fontsize=7, ncol=2)
        return list(save(fig, out / "per_class_vs_count"))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "method"


def compare(method: str, params: Optional[Mapping[str, Any]] = None, profile: str = "quick",
            seeds: Optional[int] = None, results_dir: Union[str, Path] = "results",
            notebooks_dir: Union[str, Path] = "notebooks", name: Optional[str] = None,
            train_baselines: bool = False, device: str = "auto", verbose: bool = True,
            deadline: Optional[float] = None, compile: Union[bool, str] = "auto") -> Comparison:
    """Train your loss ``method`` (with ``params``) on the profile's CE recipe, compare it with the
    profile's baselines from the store and write the result (see the module's docstring)."""
    params = dict(params or {})
    name = name or method.rpartition(":")[2]
    cell, baselines, mine, results, trained = train_comparison(
        method, params, profile, seeds, results_dir, notebooks_dir, train_baselines, device, verbose, deadline,
        compile, name)
    return _render(name, method, params, profile, cell, results, baselines, mine, trained, Path(results_dir))


def _render(name: str, method: str, params: Mapping[str, Any], profile: str, cell: Tuple[str, float],
            results: Mapping[str, List[TrainResult]],
            baselines: Mapping[str, Sequence[RunSpec]], mine: Sequence[RunSpec], trained: List[str],
            results_dir: Path) -> Comparison:
    import pandas as pd  # the notebooks extra, as the report

    ours = [r.last.top1 for r in results[name]]
    rows = [_row(name, results[name], None)] + [_row(label, results[label], ours) for label in baselines]
    verdicts = [_verdict(name, r["method"], r["_diff"]) for r in rows[1:]]
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    out = results_dir / profile / "compare" / _slug(name)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {name} against the baselines ({profile} profile, {cell[0]} IR{cell[1]:g})", "",
          f"Method `{method}` with parameters `{dict(params)}`; every run has the CE baseline's data, recipe and "
          "seeds, only the loss differs. Top-1 in %, last epoch; `yours − this` paired by seed.", "",
          markdown_table(list(table.columns), table.values.tolist()), "", *[f"- {v}" for v in verdicts], "",
          *([f"> Profile `{profile}` trains briefly on a subset: this checks the pipeline and the direction of an "
             "effect, not a paper-scale claim (use `cpu` or `paper`)."] if profile in ("smoke", "quick") else [])]
    atomic_write_text(out / "comparison.md", "\n".join(md))
    files = [out / "comparison.md", *_figure(results, out)]
    record = {"method": method, "params": dict(params), "profile": profile, "name": name, "cell": list(cell),
              "user_runs": [s.key for s in mine], "baselines": {k: [s.key for s in v] for k, v in baselines.items()},
              "trained": trained, "verdicts": verdicts}
    atomic_write_json(out / "comparison.json", record)
    files.append(out / "comparison.json")
    return Comparison(name, table, verdicts, files, trained, record["baselines"], record["user_runs"])

