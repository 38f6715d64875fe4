"""Bring your own method: your loss against faithful baselines, from the committed runs.

``python -m ltbench compare --method examples/logit_adjustment.py:LogitAdjustedLoss --param tau=1.0
--profile cpu`` (docs/your_method.md):

1. the loss is loaded and checked on a test batch before anything else (:func:`ltbench.losses.check_loss`);
2. the baselines are the profile's own runs of CIFAR-10 IR100 (CE, balanced CE, CB focal, CE-DRW,
   LDAM-DRW, cRT, BBN; the smoke profile's IR10), found in the profile's plan and loaded from its
   store, never retrained: a missing one is named, with the command that trains it, unless
   ``train_baselines``; balanced CE, which has no published number, is left out (and named) instead;
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
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .comparison import (BASELINES, check_baselines, check_method, default_name, planned_runs,  # noqa: F401
                         published_of, train_comparison)
from .engine import TrainResult
from .experiments import PlannedRun
from .io import atomic_write_json, atomic_write_text
from .plotting import new_figure, save, style
from .runs import DONE, RunStore
from .text import fmt, fmt_mean_std, gain_verdict, markdown_table

__all__ = ["Comparison", "compare", "render", "grouped", "figure", "BASELINES", "check_method", "planned_runs",
           "check_baselines", "pending_keys"]


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


def figure(results: Mapping[str, Sequence[TrainResult]]) -> Any:
    """Each label's test accuracy per class against the class's training count (mean over seeds)."""
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
    return fig


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
    name = name or default_name(method, params)
    cell, baselines, mine, results, skipped, trained = train_comparison(
        method, params, profile, seeds, results_dir, notebooks_dir, train_baselines, device, verbose, deadline,
        compile, name)
    keys = {name: [s.key for s in mine], **{label: [s.key for s in specs] for label, specs in baselines.items()}}
    return render(name, method, params, profile, cell, results, keys, trained, results_dir, skipped)


def grouped(planned: Sequence[PlannedRun], results: Sequence[TrainResult]
            ) -> Tuple[Dict[str, List[TrainResult]], Dict[str, List[str]]]:
    """(results by label, run keys by label) of a comparison's planned runs and their results
    (:func:`ltbench.comparison.planned_runs`, then ``materialize``), in the plan's order."""
    by_label: Dict[str, List[TrainResult]] = {}
    keys: Dict[str, List[str]] = {}
    for r, res in zip(planned, results):
        by_label.setdefault(r.label, []).append(res)
        keys.setdefault(r.label, []).append(r.spec.key)
    return by_label, keys


def published_claim(name: str, method: str, cell: Tuple[str, float],
                    results: Mapping[str, Sequence[TrainResult]]) -> Optional[str]:
    """The sentence on the method's published gain over its own CE baseline (``PUBLISHED``)
    beside ours over CE, paired by seed, judged by :func:`~ltbench.text.gain_verdict` (the rule of
    the notebooks' conclusions). None when the method declares no published number."""
    pub = published_of(method)
    if pub is None or "CE" not in results:
        return None
    gain = float(pub["top1"]) - float(pub["baseline_top1"])
    where = f"{pub['dataset']} IR{float(pub['imbalance_ratio']):g}"
    head = (f"Published ({pub['source']}): {float(pub['top1']):.2f} against its CE {float(pub['baseline_top1']):.2f} "
            f"on {where}, a gain of {gain:+.2f} points")
    if (pub["dataset"], float(pub["imbalance_ratio"])) != (cell[0], float(cell[1])):
        return head + f"; this comparison is on {cell[0]} IR{cell[1]:g}, so the published gain is context, not checked."
    diffs = [a.last.top1 - b.last.top1 for a, b in zip(results[name], results["CE"])]
    mean = sum(diffs) / len(diffs)
    spread = statistics.stdev(diffs) if len(diffs) > 1 else None
    return (head + f"; ours over CE here {mean:+.2f} ({len(diffs)} seed{'s' if len(diffs) != 1 else ''}) → "
            f"the claim {gain_verdict(mean, gain, spread)}.")


def pending_keys(planned: Sequence[PlannedRun], store: RunStore) -> List[str]:
    """The keys of ``planned`` not finished in ``store`` (what materialising them will train)."""
    return list(dict.fromkeys(r.spec.key for r in planned if store.status(r.spec) != DONE))


def render(name: str, method: str, params: Mapping[str, Any], profile: str, cell: Tuple[str, float],
           results: Mapping[str, Sequence[TrainResult]], keys: Mapping[str, Sequence[str]], trained: Sequence[str],
           results_dir: Union[str, Path] = "results", skipped: Sequence[str] = ()) -> Comparison:
    """Write the comparison of your runs (``results[name]``) with every other label of
    ``results`` (the baselines, in order) under ``<results_dir>/<profile>/compare/<name>/``:
    ``comparison.md`` (the table and one verdict per baseline), ``comparison.json`` (which runs,
    which trained now) and the per-class figure. ``keys``: the run keys by label; ``skipped``: the
    optional baselines left out because they are not trained yet (named in the output)."""
    import pandas as pd  # the notebooks extra, as the report

    results_dir = Path(results_dir)
    baselines = [label for label in results if label != name]
    ours = [r.last.top1 for r in results[name]]
    rows = [_row(name, results[name], None)] + [_row(label, results[label], ours) for label in baselines]
    verdicts = [_verdict(name, r["method"], r["_diff"]) for r in rows[1:]]
    claim = published_claim(name, method, cell, results)
    if claim:
        verdicts.insert(0, claim)
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    out = results_dir / profile / "compare" / _slug(name)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {name} against the baselines ({profile} profile, {cell[0]} IR{cell[1]:g})", "",
          f"Method `{method}` with parameters `{dict(params)}`; every run has the CE baseline's data, recipe and "
          "seeds, only the loss differs. Top-1 in %, last epoch; `yours − this` paired by seed.", "",
          markdown_table(list(table.columns), table.values.tolist()), "", *[f"- {v}" for v in verdicts], "",
          *([f"Not in the store yet, so left out: {', '.join(skipped)} (`python -m ltbench execute --profile "
             f"{profile} --only 02` trains them).", ""] if skipped else []),
          *([f"> Profile `{profile}` trains briefly on a subset: this checks the pipeline and the direction of an "
             "effect, not a paper-scale claim (use `cpu` or `paper`)."] if profile in ("smoke", "quick") else [])]
    atomic_write_text(out / "comparison.md", "\n".join(md))
    files = [out / "comparison.md", *save(figure(results), out / "per_class_vs_count")]
    record = {"method": method, "params": dict(params), "profile": profile, "name": name, "cell": list(cell),
              "user_runs": list(keys[name]), "baselines": {label: list(keys[label]) for label in baselines},
              "trained": list(trained), "left_out": list(skipped), "verdicts": verdicts}
    atomic_write_json(out / "comparison.json", record)
    files.append(out / "comparison.json")
    return Comparison(name, table, verdicts, files, trained, record["baselines"], record["user_runs"])

