"""Collect every notebook's runs of a results tree into one table, a README and figures.

``python -m ltbench report [--results DIR]`` writes, atomically:

* ``DIR/summary.csv``: one row per training run of each notebook (long form, from the notebooks'
  ``runs.json`` manifests and the runs' ``metrics.json``), see :data:`COLUMNS`;
* ``DIR/README.md``: first, one line per paper saying what is reproduced at paper scale (runs of
  the ``paper`` profile beside the published numbers) and what is not; then, per profile, how the
  numbers were made (commands, code commit, each notebook's parameters) and per (paper, table) our
  top-1 as mean ± std over seeds (last and best epoch) beside the published number
  (docs/methods.md#10-published-numbers) and the difference ``ours(last) - published``,
  many/medium/few, ECE, the training length (epochs, stage-2 epochs, FSA iterations in separate
  columns) and links to the runs' folders; plus the caveats;
* ``DIR/figures/*.png`` and ``*.pdf``: per profile and dataset, top-1 of every method with one
  panel per paper (one marker per imbalance ratio, published values beside), and per imbalance
  ratio the many / medium / few accuracy, also one panel per paper; a run shown by several
  notebooks of one paper (the shared CE baseline) appears once per panel.

pandas and matplotlib are imported inside the functions so that ``python -m ltbench`` starts fast.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ltbench.io import atomic_write_text
from ltbench.budget import budget_frame, plot_budget
from ltbench.experiments.long_tailed_cifar import jpeg_findings
from ltbench.plotting import PUBLISHED_COLOR, SHOT_COLORS, SHOT_MARKERS, ir_colors, is_baseline, new_figure, save, style
from ltbench.profiles import COMPARISON_NOTEBOOK
from ltbench.provenance import code_version as run_code_version
from ltbench.published import CAVEATS, ROWS, published, source
from ltbench.runner import MARKER
from ltbench.tables import seed_stats
from ltbench.text import NO_DIFFERENCE_BAND, fmt, fmt_ir, fmt_mean_std, gain_verdict, markdown_table, mean_std, verdict_word
from ltbench.text import is_number as _isnum
from ltbench.text import plural as _n

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of ``summary.csv`` (one row per metrics.json).
#: ``epochs`` is the length of the run's first stage (the whole run for one-stage methods; the
#: stage-1 / phase-I run for two-stage methods and FSA), ``stage2_epochs`` the epochs of a
#: stage-2 classifier (0 for tau-norm, which does not train), ``fsa_iterations`` FSA's phase-II steps.
COLUMNS = [
    "profile", "paper", "table", "method", "published_method", "dataset", "imbalance_ratio",
    "seed", "epochs", "stage2_epochs", "fsa_iterations", "top1_last", "top1_best", "best_epoch",
    "many", "medium", "few", "ece", "train_seconds", "notebook", "tier", "run", "key", "path",
]
#: One README row per group: seeds of the same configuration are averaged.
GROUP_KEYS = ["profile", "notebook", "paper", "table", "method", "published_method", "dataset",
              "imbalance_ratio", "epochs", "stage2_epochs", "fsa_iterations"]
_PROFILE_ORDER = ["paper", "quick", "smoke"]
_NUMERIC = ["imbalance_ratio", "seed", "epochs", "stage2_epochs", "fsa_iterations", "top1_last",
            "top1_best", "best_epoch", "many", "medium", "few", "ece", "train_seconds", "tier"]
#: The profile whose runs reproduce the papers (their recipe and data).
PAPER_PROFILE = "paper"
#: Methods that train a stage-2 classifier on a frozen stage-1 run (tau-norm trains nothing).
_STAGE2_METHODS = {"crt", "lws", "tau_norm", "stage2_ce", "stage2_rw", "stage2_rs"}


# --------------------------------------------------------------------------------------------
# Collection


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _int(v: Any) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def schedule(m: Dict[str, Any]) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    """``(epochs, stage2_epochs, fsa_iterations)`` of a run from its ``metrics.json``.

    A stage-2 run (cRT, LWS, tau-norm, the grid's classifiers) and FSA phase II name their
    stage-1 / phase-I run in ``spec["deps"]``: ``epochs`` is that run's length, and the run's own
    length goes to ``stage2_epochs`` (0 for tau-norm) or, as optimiser steps, to
    ``fsa_iterations`` (``epochs * num_samples // batch_size``).
    """
    spec = m.get("spec") if isinstance(m.get("spec"), dict) else {}
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    method = spec.get("method") or ""
    own = _int(cfg.get("epochs", m.get("epochs")))
    deps = spec.get("deps") if isinstance(spec.get("deps"), dict) else {}
    first = next((d for d in deps.values() if isinstance(d, dict)), None)
    base = _int((first.get("config") or {}).get("epochs")) if first else None
    if method == "fsa":
        steps = None
        num, bs = _int((cfg.get("sampler_params") or {}).get("num_samples")), _int(cfg.get("batch_size"))
        if own is not None and num and bs:
            steps = own * (num // bs)
        return base, None, steps
    if method in _STAGE2_METHODS or (first is not None and method != "fsa"):
        return base, 0 if method == "tau_norm" else own, None
    return _int(m.get("epochs")) if m.get("epochs") is not None else own, None, None


def collect(results_dir: os.PathLike | str = "results") -> Tuple["pd.DataFrame", List[str]]:
    """Every notebook's runs as one long-form table (and warnings).

    Each notebook writes ``runs.json`` into its folder (:func:`ltbench.experiments.materialize`):
    its runs' labels (method, table, published row) and the relative folder of each run in the
    profile's store. A run shown twice by one notebook (a main-table row that is also a grid's
    stage 1) gives one row, with the labels it has first.
    """
    import pandas as pd

    root = Path(results_dir)
    records, problems = [], []
    for path in sorted(root.rglob("runs.json")) if root.is_dir() else []:
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            manifest = json.loads(path.read_text())
            rows = manifest["runs"]
            if not isinstance(rows, list):
                raise ValueError("'runs' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"skipped unreadable {_rel(path, root)}: {exc}")
            continue
        seen = set()
        for row in rows:
            if not isinstance(row, dict) or "run_dir" not in row:
                problems.append(f"{_rel(path, root)}: a row without run_dir")
                continue
            if row.get("key") in seen or row.get("status") == "pending":
                continue  # a pending run: left out of a render of what the store held then
            seen.add(row.get("key"))
            mpath = (path.parent / row["run_dir"] / "metrics.json")
            try:
                m = json.loads(mpath.read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"{_rel(path, root)}: run {row.get('label')} ({row.get('key')}) has no readable "
                                f"metrics.json ({type(exc).__name__})")
                continue
            if not isinstance(m, dict) or m.get("top1_last") is None:
                problems.append(f"skipped {_rel(mpath, root)}: no top1_last")
                continue
            rec = {k: m.get(k) for k in COLUMNS}
            rec["epochs"], rec["stage2_epochs"], rec["fsa_iterations"] = schedule(m)
            rec.update(paper=row.get("paper"), table=row.get("table"), method=row.get("label"),
                       published_method=row.get("published_method"), notebook=row.get("notebook"),
                       profile=rel.parts[0] if len(rel.parts) > 2 else "", key=row.get("key"),
                       tier=row.get("tier"), run=row.get("method"),
                       path=_rel(mpath.parent.resolve(), root.resolve()))
            records.append(rec)
    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in set(COLUMNS) - set(_NUMERIC):
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df, problems


def _published_lookup(row: Dict[str, Any], unknown: set) -> Tuple[Optional[float], str]:
    name = row.get("published_method") or ""
    if not name:
        return None, ""
    try:
        return published(name, row["dataset"], row["imbalance_ratio"]), source(name)
    except ValueError:
        unknown.add(name)
        return None, ""


def summarize(df: "pd.DataFrame") -> Tuple["pd.DataFrame", List[str]]:
    """Mean/std over seeds per configuration, with the published value and the difference, and
    the keys and folders of the runs behind each row (``keys``, ``paths``, in seed order)."""
    import pandas as pd

    cols = [*GROUP_KEYS, "n", "seeds", "last_mean", "last_std", "best_mean", "best_std",
            "many", "medium", "few", "ece", "published", "source", "diff_last", "keys", "paths"]
    if df.empty:
        return pd.DataFrame(columns=cols), []
    problems: List[str] = []
    unknown: set = set()
    # The runs behind each row, in seed order: their keys and folders (relative to the results folder).
    stats = seed_stats(df, GROUP_KEYS, published=lambda row: _published_lookup(row, unknown)[0],
                       ordered={"keys": "key", "paths": "path"}, dropna=False)
    for row in stats.to_dict("records"):
        seeds = row["seeds"].split()
        if len(seeds) != len(set(seeds)):
            problems.append(f"duplicate seeds {[int(s) for s in seeds]} for {row['notebook']} {row['method']} "
                            f"{row['dataset']} IR{fmt_ir(row['imbalance_ratio'])}")
    stats["source"] = [_published_lookup(row, set())[1] for row in stats.to_dict("records")]
    if unknown:
        problems.append("unknown published_method names (see ltbench/published.py): "
                        + ", ".join(sorted(unknown)))
    out = stats.reindex(columns=cols)
    out["_ir"] = -out["imbalance_ratio"].fillna(0)
    out = out.sort_values(["profile", "paper", "table", "dataset", "method", "_ir"], kind="stable")
    return out.drop(columns="_ir").reset_index(drop=True), problems


# --------------------------------------------------------------------------------------------
# Figures


def _slug(*parts: Any) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", str(p)).strip("-") for p in parts if p != "")


def _save(fig: Any, path: Path) -> Path:
    """PNG (returned, linked from the README) and PDF beside it."""
    return save(fig, path)[0]


def _labels(s: "pd.DataFrame") -> Dict[Tuple[str, str], str]:
    """Method labels; the notebook is added only where a method name appears in several."""
    pairs = list(dict.fromkeys(zip(s["notebook"], s["method"])))
    count: Dict[str, int] = {}
    for _, m in pairs:
        count[m] = count.get(m, 0) + 1
    return {(nb, m): (m if count[m] == 1 else f"{m} [{nb}]") for nb, m in pairs}


def paper_panels(s: "pd.DataFrame") -> List[Tuple[str, List[Tuple[str, str, "pd.DataFrame"]]]]:
    """``[(paper, [(table, label, rows), ...]), ...]``: the rows of ``s`` (one profile and dataset)
    grouped by paper, then by method.

    Methods are deduplicated within a paper: rows of several notebooks or labels that show the
    same runs (the shared CE baseline is "CE" in one notebook and "softmax" in another) become one
    entry, labelled with every name (``CE = softmax``). Methods are grouped by table, the CE
    baseline's table first and the baseline first in it; the rest keep the summary's order.
    """
    out = []
    for paper, sp in s.groupby("paper", sort=False):
        entries: Dict[Tuple[str, ...], Dict[str, Any]] = {}
        for (nb, method), g in sp.groupby(["notebook", "method"], sort=False):
            runs = tuple(sorted(k for ks in g["keys"] for k in ks))
            e = entries.setdefault(runs, {"labels": [], "rows": g, "table": g["table"].iloc[0]})
            if method not in e["labels"]:
                e["labels"].append(method)
        items = [(e["table"], " = ".join(e["labels"]), e["rows"]) for e in entries.values()]
        base = [t for t, label, _ in items if any(is_baseline(m) for m in label.split(" = "))]
        tables = list(dict.fromkeys(base + [t for t, _, _ in items]))  # the baseline's table first
        items.sort(key=lambda t: (tables.index(t[0]), not any(is_baseline(m) for m in t[1].split(" = "))))
        out.append((paper or "(paper not set)", items))
    return out


def _panel_heights(panels: Sequence[Tuple[str, List[Any]]]) -> List[float]:
    return [max(1.2, 0.24 * len(items) + 0.5) for _, items in panels]


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _finish_panel(ax: Any, paper: str, items: Sequence[Tuple[str, str, Any]]) -> None:
    """Method names on the y axis, the paper as the panel's title and, where a paper has several
    tables, a thin line and the table's name above each table's methods."""
    ax.set_yticks(range(len(items)), [_short(label, 48) for _, label, _ in items])
    ax.set_ylim(len(items) - 0.5, -0.5)
    ax.set_title(_short(paper, 90), loc="left", fontsize=9, fontweight="bold")
    ax.grid(axis="y", visible=False)
    tables = [t for t, _, _ in items]
    if len(set(tables)) > 1:
        for y, t in enumerate(tables):
            if y == 0 or t != tables[y - 1]:
                if y:
                    ax.axhline(y - 0.5, color="0.8", lw=0.8)
                ax.text(1.0, y - 0.45, str(t), transform=ax.get_yaxis_transform(), ha="right", va="top",
                        fontsize=7, color="0.4", style="italic")


def plot_accuracy_vs_ir(s: "pd.DataFrame", title: str, path: Path) -> Path:
    """Top-1 (last epoch, mean ± std over seeds) of every method of one profile and dataset: one
    panel per paper, one row per (deduplicated) method, one marker colour per imbalance ratio, the
    published value as a hollow diamond of the same colour. Works for any number of IRs and methods."""
    from matplotlib.lines import Line2D

    panels = paper_panels(s)
    irs = sorted({float(v) for v in s["imbalance_ratio"].dropna()}, reverse=True)
    colors = ir_colors(irs or [1.0])
    heights = _panel_heights(panels)
    n_ir = max(len(irs), 1)
    with style():
        fig = new_figure(8.0, sum(heights) + 1.0, layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": heights})[:, 0]
        any_pub = False
        for ax, (paper, items) in zip(axes, panels):
            for y, (table, label, g) in enumerate(items):
                for k, ir in enumerate(irs):
                    gi = g[g["imbalance_ratio"] == ir]
                    if gi.empty:
                        continue
                    yy = y + (k - (n_ir - 1) / 2) * min(0.5 / n_ir, 0.2)
                    ax.errorbar(gi["last_mean"].mean(), yy, xerr=gi["last_std"].fillna(0).max(), fmt="o",
                                color=colors[ir], ms=5, capsize=2)
                    pub = gi["published"].dropna()
                    if len(pub):
                        any_pub = True
                        ax.plot(float(pub.iloc[0]), yy, "D", mfc="none", mec=colors[ir], ms=6, mew=1.3)
            _finish_panel(ax, paper, items)
        axes[-1].set_xlabel("top-1 accuracy, last epoch (%); mean ± std over seeds")
        handles = [Line2D([], [], color=colors[ir], marker="o", ls="", label=f"IR {fmt_ir(ir)}") for ir in irs]
        if any_pub:
            handles.append(Line2D([], [], color=PUBLISHED_COLOR, marker="D", mfc="none", ls="",
                                  label="published (same colour)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
        fig.suptitle(title, fontsize=10)
        return _save(fig, path)


def plot_shot_groups(s: "pd.DataFrame", title: str, path: Path) -> Optional[Path]:
    """Many / medium / few accuracy of every method at one profile, dataset and IR, one panel per
    paper (deduplicated methods); None if no run has shot-group data."""
    from matplotlib.lines import Line2D

    groups = [g for g in ("many", "medium", "few") if s[g].notna().any()]
    if not groups:
        return None
    panels = paper_panels(s)
    heights = _panel_heights(panels)
    with style():
        fig = new_figure(8.0, sum(heights) + 1.0, layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, (paper, items) in zip(axes, panels):
            for y, (_, _, g) in enumerate(items):
                vals = [(grp, g[grp].mean()) for grp in groups if g[grp].notna().any()]
                if len(vals) > 1:
                    xs = [v for _, v in vals]
                    ax.plot([min(xs), max(xs)], [y, y], color="0.75", lw=1, zorder=1)
                for grp, v in vals:
                    ax.plot(v, y, SHOT_MARKERS[grp], color=SHOT_COLORS[grp], ms=5, zorder=2)
            _finish_panel(ax, paper, items)
        axes[-1].set_xlabel("test accuracy of the shot group, last epoch (%); seed mean")
        handles = [Line2D([], [], color=SHOT_COLORS[g], marker=SHOT_MARKERS[g], ls="", label=f"{g}-shot")
                   for g in groups]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        fig.suptitle(title, fontsize=10)
        return _save(fig, path)


def make_figures(summary: "pd.DataFrame", figures_dir: Path) -> Dict[str, List[Path]]:
    """All figures of ``summary``, keyed by profile (the PNGs; a PDF is written beside each).
    Stale figures of the folder (PNG and PDF) are removed."""
    out: Dict[str, List[Path]] = {}
    written: set = set()
    if not summary.empty:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. tight layout with very long labels
            for (profile, dataset), s in summary.groupby(["profile", "dataset"], sort=False):
                p = plot_accuracy_vs_ir(
                    s, f"{dataset}: top-1 per method and imbalance ratio ({profile} profile)",
                    figures_dir / f"{_slug(profile, dataset)}_acc_vs_ir.png")
                out.setdefault(profile, []).append(p)
                for ir, si in s.groupby("imbalance_ratio", sort=False):
                    q = plot_shot_groups(
                        si.reset_index(drop=True),
                        f"{dataset} IR{fmt_ir(ir)}: many / medium / few ({profile} profile)",
                        figures_dir / f"{_slug(profile, dataset, 'ir' + fmt_ir(ir))}_shots.png")
                    if q is not None:
                        out[profile].append(q)
        written = {q.resolve() for ps in out.values() for p in ps for q in (p, p.with_suffix(".pdf"))}
    if figures_dir.is_dir():  # figures of configurations that no longer exist would mislead
        for old in [*figures_dir.glob("*.png"), *figures_dir.glob("*.pdf")]:
            if old.resolve() not in written:
                old.unlink()
    return out


# --------------------------------------------------------------------------------------------
# README


def _profile_sort(names: Iterable[str]) -> List[str]:
    names = list(dict.fromkeys(names))
    return [p for p in _PROFILE_ORDER if p in names] + sorted(p for p in names
                                                              if p not in _PROFILE_ORDER)


def code_version() -> Dict[str, Any]:
    """The code that writes this report: ltbench's version, and in a git checkout the commit and
    whether tracked files outside ``results/`` have uncommitted changes (:func:`ltbench.runs.code_version`)."""
    v = run_code_version()
    commit = v.get("commit")
    if not commit or commit == "unknown":
        return {"version": v["ltbench"], "commit": None, "dirty": None}
    return {"version": v["ltbench"], "commit": commit.removesuffix("+dirty"), "dirty": commit.endswith("+dirty")}


def _version_text(v: Dict[str, Any]) -> str:
    if not v.get("commit"):
        return f"ltbench {v['version']} (not a git checkout: no commit to record)"
    dirty = " with uncommitted changes" if v.get("dirty") else ""
    return f"ltbench {v['version']}, commit `{v['commit']}`{dirty}"


def _run_links(paths: Sequence[str], keys: Sequence[str]) -> str:
    return " ".join(f"[{str(k)[:8]}]({p}/)" for k, p in zip(keys, paths) if p)


def _table_for(s: "pd.DataFrame") -> str:
    rows = []
    for r in s.to_dict("records"):
        rows.append([
            r["method"], r["published_method"] or "-", r["dataset"], fmt_ir(r["imbalance_ratio"]),
            fmt(r["epochs"], 0), r["n"],
            fmt_mean_std(r["last_mean"], r["last_std"], r["n"]),
            fmt_mean_std(r["best_mean"], r["best_std"], r["n"]),
            fmt(r["published"]), fmt(r["diff_last"], sign=True),
            " / ".join(fmt(r[g], 1) for g in ("many", "medium", "few")), fmt(r["ece"]),
            fmt(r["stage2_epochs"], 0), fmt(r["fsa_iterations"], 0),
            _run_links(r.get("paths") or (), r.get("keys") or ()),
        ])
    return markdown_table(
        ["method", "published row", "dataset", "IR", "epochs", "n seeds", "top-1 last",
         "top-1 best", "published", "last − published", "many / med / few", "ECE",
         "stage-2 epochs", "FSA iterations", "runs"],
        rows, align=["l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"])


def _markers(root: Path, profile: str) -> List[Dict[str, Any]]:
    """The runner's completion records (``<profile>/<notebook>/completed.json``) of a profile."""
    out = []
    for path in sorted((root / profile).glob(f"*/{MARKER}")) if profile else []:
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict):
            out.append({**m, "_dir": _rel(path.parent, root)})
    return out


def _run_count(folder: Path) -> str:
    """``"12"`` or ``"5 (7 pending)"``: the distinct runs of a notebook's ``runs.json``."""
    try:
        rows = [r for r in json.loads((folder / "runs.json").read_text())["runs"] if isinstance(r, dict)]
    except (OSError, ValueError, KeyError, TypeError):
        return "-"
    status = {r.get("key"): r.get("status", "done") for r in rows}
    left = sum(1 for v in status.values() if v == "pending")
    return f"{len(status) - left}" + (f" ({left} pending)" if left else "")


def _provenance(root: Path, profile: str, version: Dict[str, Any]) -> List[str]:
    """How a profile's numbers were made: commands, code, each notebook's parameters."""
    lines = [f"Made by `python -m ltbench execute --profile {profile}` (trains the runs, tier order) and "
             f"`python -m ltbench run --profile {profile}` (the notebooks render from the run store), i.e. "
             f"`make reproduce PROFILE={profile}`; this report by `python -m ltbench report`. Code at report time: "
             f"{_version_text(version)}. A run's folder (`{profile}/runs/<key>/`, linked in the *runs* column) holds "
             "its full description (`spec.json`), its `metrics.json` (configuration, execution, per-class results) "
             "and its curves.", ""]
    markers = _markers(root, profile)
    if markers:
        rows = []
        for m in markers:
            params = {k: v for k, v in (m.get("parameters") or {}).items() if k not in ("out_dir", "store_dir", "profile")}
            executed = m.get("executed")
            link = f"[{executed}]({m['_dir']}/{executed})" if executed else "-"
            rows.append([m.get("notebook", m["_dir"]), link, m.get("finished", "-"), _run_count(root / m["_dir"]),
                         "`" + json.dumps(params, separators=(", ", ": ")) + "`"])
        lines += ["Notebooks of this profile and the parameters they ran with (the rest are the defaults of "
                  "their `parameters` cell); *runs*: the notebook's runs in the render, and those still pending "
                  "where it was rendered without training them (`ltbench run --no-train`):", "",
                  markdown_table(["notebook", "executed notebook", "finished", "runs", "parameters"], rows), ""]
    return lines


def _published_cells(names: Iterable[str]) -> Dict[Tuple[str, str, float], float]:
    """``(row, dataset, IR) -> value`` of every CIFAR-LT published cell of the rows ``names``."""
    cells = {}
    for name in dict.fromkeys(n for n in names if n):
        row = ROWS.get(name)
        for (ds, ir), v in (row.values.items() if row else []):
            if ir is not None and str(ds).startswith("cifar"):
                cells[(name, ds, float(ir))] = v
    return cells


def _conclusions(root: Optional[Path], d: "pd.DataFrame") -> str:
    """Links to the conclusions the notebooks of ``d`` computed (``<profile>/<notebook>/conclusion.md``)."""
    if root is None:
        return ""
    links = []
    for profile in _profile_sort(d["profile"]):
        for nb in dict.fromkeys(d[d["profile"] == profile]["notebook"]):
            path = root / profile / str(nb) / "conclusion.md"
            if nb and path.is_file():
                links.append(f"[{str(nb)[:2]}, `{profile}`]({_rel(path, root)})")
    return f" Conclusions: {', '.join(links)}." if links else ""


#: The published row every notebook's gains are measured from (its CE run, whatever its label).
BASELINE_ROW = "CE (softmax)"
#: Profiles left out of the claims table: they learn too little for a verdict to mean anything
#: (their conclusions still state one, as a pipeline check).
_NO_CLAIMS = ("quick", "smoke")


def claims(df: "pd.DataFrame") -> "pd.DataFrame":
    """Every published gain over CE that the notebooks of ``df`` (:func:`collect`) check, once
    per profile, with ours and the verdict (:func:`ltbench.text.gain_verdict`), exactly as the
    notebooks' conclusions compute them (:func:`ltbench.experiments.gain_findings`): per notebook
    and cell, each method's last-epoch top-1 minus the notebook's CE run, paired by seed. A run
    shown by several notebooks (sigmoid CE in 02, 03 and 05) is one row naming them all."""
    import pandas as pd

    cols = ["profile", "method", "published_method", "dataset", "imbalance_ratio", "epochs", "n",
            "published_gain", "gain", "gain_std", "many", "medium", "few", "verdict", "notebooks"]
    out: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
    d = df[df["published_method"] != ""] if not df.empty else df
    for (profile, nb, ds, ir), g in (d.groupby(["profile", "notebook", "dataset", "imbalance_ratio"], sort=False)
                                     if not d.empty else []):
        base = g[g["published_method"] == BASELINE_ROW].drop_duplicates("key")
        pub_base = _published_lookup({"published_method": BASELINE_ROW, "dataset": ds, "imbalance_ratio": ir},
                                     set())[0]
        if base.empty or not _isnum(pub_base):
            continue
        base_by_seed = dict(zip(base["seed"], base["top1_last"]))
        base_split = {k: dict(zip(base["seed"], base[k])) for k in _SPLITS if k in base}
        for (label, row), m in g[g["published_method"] != BASELINE_ROW].groupby(["method", "published_method"],
                                                                                  sort=False):
            pub = _published_lookup({"published_method": row, "dataset": ds, "imbalance_ratio": ir}, set())[0]
            m = m.drop_duplicates("key")
            pairs = [t - base_by_seed[sd] for sd, t in zip(m["seed"], m["top1_last"]) if sd in base_by_seed]
            if not _isnum(pub) or not pairs:
                continue
            mean, sd_, n = mean_std(pairs)
            ident = (profile, ds, float(ir), tuple(sorted(m["key"])), tuple(sorted(base["key"])))
            if ident in out:
                out[ident]["notebooks"].append(str(nb)[:2])
                continue
            gain = float(pub) - float(pub_base)
            split = {}
            for k, ref in base_split.items():  # where the change lands: seed-paired, class groups that exist
                d = [v - ref[sd] for sd, v in zip(m["seed"], m[k]) if sd in ref and _isnum(v) and _isnum(ref[sd])]
                split[k] = sum(d) / len(d) if d else None
            out[ident] = {"profile": profile, "method": label, "published_method": row, "dataset": ds,
                          "imbalance_ratio": ir, "epochs": m["epochs"].max(), "n": n, "published_gain": gain,
                          "gain": mean, "gain_std": sd_, **split, "notebooks": [str(nb)[:2]],
                          "verdict": gain_verdict(mean, gain, sd_ if n > 1 else None)}
    rows = [{**r, "notebooks": ", ".join(r["notebooks"])} for r in out.values()]
    return pd.DataFrame(rows, columns=cols)


#: The class groups of docs/methods.md §1, as the claims table shows them.
_SPLITS = ("many", "medium", "few")


def _split_text(r: Dict[str, Any]) -> str:
    """``"-7.9 / +22.0 / -"``: a claim's change per class group over CE (``-`` for a group without classes)."""
    return " / ".join(f"{r[k]:+.1f}" if _isnum(r.get(k)) else "-" for k in _SPLITS)


#: Colour of each verdict in the claims figure.
_VERDICT_COLORS = {"holds": "#2ca02c", "holds in part": "#ff7f0e", "does not hold": "#d62728"}


def plot_claims(table: "pd.DataFrame", title: str, path: Path) -> Path:
    """One row per claim of ``table`` (:func:`claims`, one profile), sorted by published gain: the
    published gain (open star) and ours (filled, coloured by verdict, ± the seed spread) over CE,
    joined by a line, beside the ±0.5-point no-difference band. PNG at ``path``, a PDF beside it."""
    t = table.sort_values("published_gain", kind="stable").reset_index(drop=True)
    with style():
        fig = new_figure(7.2, 0.32 * len(t) + 1.5)
        ax = fig.add_subplot(1, 1, 1)
        ax.axvspan(-NO_DIFFERENCE_BAND, NO_DIFFERENCE_BAND, color="#dddddd", alpha=0.6, lw=0,
                   label=f"no difference (±{NO_DIFFERENCE_BAND:g})")
        ax.axvline(0, color="black", lw=0.8)
        seen = set()
        for i, r in t.iterrows():
            word = verdict_word(r["verdict"])
            color = _VERDICT_COLORS.get(word, "black")
            ax.plot([r["published_gain"], r["gain"]], [i, i], color="#bbbbbb", lw=1.2, zorder=1)
            ax.plot([r["published_gain"]], [i], marker="*", markersize=10, markerfacecolor="none", color=PUBLISHED_COLOR,
                    linestyle="none", zorder=2, label="published (200 epochs)" if "pub" not in seen else None)
            xerr = r["gain_std"] if _isnum(r["gain_std"]) else None
            ax.errorbar([r["gain"]], [i], xerr=xerr, marker="o", color=color, linestyle="none", capsize=3, zorder=3,
                        label=f"ours: {word}" if word not in seen else None)
            seen.update({"pub", word})
        ax.set_yticks(range(len(t)), [f"{m} ({nb})" for m, nb in zip(t["method"], t["notebooks"])], fontsize=7)
        ax.set_ylim(-0.7, len(t) - 0.3)
        ax.set_xlabel("top-1 gain over CE (points)")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        return save(fig, path)[0]


def claim_figures(table: "pd.DataFrame", figures_dir: Path) -> Dict[str, Path]:
    """:func:`plot_claims` for each profile of ``table`` that the claims section shows, as
    ``figures_dir/claims_<profile>.png`` (and ``.pdf``)."""
    out: Dict[str, Path] = {}
    for profile in _profile_sort(table["profile"]) if not table.empty else []:
        if profile not in _NO_CLAIMS:
            t = table[table["profile"] == profile]
            lo, hi = int(t["n"].min()), int(t["n"].max())
            seeds = _n(hi, "seed") if lo == hi else f"{lo}-{hi} seeds"
            out[profile] = plot_claims(t, f"Published gains over CE against ours ({profile} profile, {seeds})",
                                       figures_dir / f"claims_{_slug(profile)}.png")
    return out


def claims_section(table: "pd.DataFrame", figures: Optional[Dict[str, Path]] = None,
                   results_dir: Optional[Path] = None) -> List[str]:
    """README lines: per profile (not quick or smoke) the claims table of :func:`claims`, with a
    count of each verdict and the profile's figure of ``figures`` (:func:`plot_claims`, linked
    relative to ``results_dir``); none when no such profile has a claim."""
    if table.empty:
        return []
    out = ["## Published gains over CE, checked", "",
           "Each published gain of a method over CE beside ours at the profile's budget (last-epoch top-1, paired by "
           "seed with the notebook's CE run), judged by one rule (docs/methods.md §10.8): a published gain holds "
           "when ours is at least half of it, a published loss when ours is at least half as far below, and a "
           "published gain within ±0.5 points (or the seed spread, if wider) claims no difference. *ours: many / med "
           "/ few* splits our gain by class group (docs/methods.md §1; `-`: no class in the group), which shows where "
           "a method that falls short moves accuracy. The notebooks' conclusions state the same lines.", ""]
    shown = [p for p in _profile_sort(table["profile"]) if p not in _NO_CLAIMS]
    if not shown:
        return []
    for profile in shown:
        t = table[table["profile"] == profile]
        words = [verdict_word(v) for v in t["verdict"]]
        counts = ", ".join(f"{words.count(w)} {w if words.count(w) == 1 else many}" for w, many in
                           (("holds", "hold"), ("holds in part", "hold in part"), ("does not hold", "do not hold"))
                           if w in words)
        out += [f"### `{profile}` ({counts}; {_n(len(t), 'claim')})", "",
                markdown_table(["method", "published row", "cell", "epochs", "seeds", "published gain", "ours",
                                "ours: many / med / few", "verdict", "notebooks"],
                               [(r["method"], r["published_method"], f"{r['dataset']} IR{fmt_ir(r['imbalance_ratio'])}",
                                 fmt(r["epochs"], 0), int(r["n"]), f"{r['published_gain']:+.2f}",
                                 f"{r['gain']:+.2f}" + (f" ± {r['gain_std']:.2f}" if _isnum(r["gain_std"]) else ""),
                                 _split_text(r), r["verdict"], r["notebooks"]) for r in t.to_dict("records")]), ""]
        png = (figures or {}).get(profile)
        if png is not None and results_dir is not None:
            out += [f"![claims {profile}]({_rel(png, results_dir)})", "",
                    f"[PDF]({_rel(png.with_suffix('.pdf'), results_dir)})", ""]
    skipped = sorted(set(table["profile"]) & set(_NO_CLAIMS))
    if skipped:
        out += [f"Left out: {', '.join(f'`{p}`' for p in skipped)}, which learn{'s' if len(skipped) == 1 else ''} too "
                "little for a verdict (the conclusions there state one as a pipeline check).", ""]
    return out


def reproduction_status(df: "pd.DataFrame", summary: "pd.DataFrame", root: Optional[Path] = None) -> List[str]:
    """One line per paper: what is reproduced at paper scale (runs of the ``paper`` profile beside
    published cells) and what is not, computed from the runs present, with links to the
    notebooks' computed conclusions (when ``root``, the results folder, is given)."""
    if df.empty:
        return []
    lines = []
    papers = list(dict.fromkeys(df["paper"]))
    n_paper = 0
    for paper in list(papers):
        d = df[df["paper"] == paper]
        notebooks = ", ".join(sorted({str(nb)[:2] for nb in d["notebook"] if nb}))
        if set(d["notebook"]) == {COMPARISON_NOTEBOOK}:  # your method beside baselines the papers' lines count
            papers.remove(paper)
            runs = ", ".join(f"{_n(len(g), 'run')} of `{p}`" for p, g in d.groupby("profile", sort=False))
            lines.append(f"- **{paper}** (notebook {notebooks}): a comparison with the baselines, not a paper's "
                         f"reproduction ({runs}).{_conclusions(root, d)}")
            continue
        cells = _published_cells(d["published_method"])
        at_scale = summary[(summary["paper"] == paper) & (summary["profile"] == PAPER_PROFILE)]
        other = d[d["profile"] != PAPER_PROFILE]
        other_text = ", ".join(f"{_n(len(g), 'run')} of `{p}` (at most {_n(int(g['epochs'].max()), 'epoch')})"
                               if _isnum(g["epochs"].max()) else f"{_n(len(g), 'run')} of `{p}`"
                               for p, g in other.groupby("profile", sort=False))
        name = f"**{paper or '(paper not set)'}** (notebook {notebooks})"
        if at_scale.empty:
            what = (f"{_n(len(cells), 'published cell')} wait{'s' if len(cells) == 1 else ''} for it" if cells else
                    "no published CIFAR-LT number exists for its methods (new measurements)")
            lines.append(f"- {name}: **not reproduced at paper scale**: no run of the `{PAPER_PROFILE}` profile; "
                         f"{what}. Present: {other_text or 'nothing'}.{_conclusions(root, d)}")
            continue
        n_paper += 1
        done = {(r["published_method"], r["dataset"], float(r["imbalance_ratio"])): r["diff_last"]
                for r in at_scale.to_dict("records") if r["published_method"] and _isnum(r["published"])}
        covered = [c for c in cells if c in done]
        diffs = [done[c] for c in covered if _isnum(done[c])]
        diff_text = (f"; ours − published (last epoch, seed mean): mean {sum(diffs) / len(diffs):+.2f}, "
                     f"from {min(diffs):+.2f} to {max(diffs):+.2f} points") if diffs else ""
        missing = len(cells) - len(covered)
        lines.append(f"- {name}: **paper scale**: {_n(len(at_scale), 'configuration')} of the `{PAPER_PROFILE}` "
                     f"profile; {len(covered)} of {_n(len(cells), 'published cell')} have a run at this scale{diff_text}"
                     + (f"; {_n(missing, 'published cell')} without one (not reproduced)" if missing else "") + "."
                     + _conclusions(root, d))
    head = (f"Reproduced at paper scale (the `{PAPER_PROFILE}` profile): {n_paper} of {_n(len(papers), 'paper')}"
            + (" — none: every number below comes from a shortened profile and says nothing about the papers' "
               "claims at their scale." if n_paper == 0 else "."))
    return [head, "", *lines]


#: Notebook 01's data-copy table (``long_tailed_cifar.jpeg_table``) under a profile's results folder.
DATA_COPY_TABLE = "01_long_tailed_cifar/tables/jpeg.csv"


def data_copy_lines(results_dir: Path) -> List[str]:
    """The measured side of the caveat on the data copy: per profile whose notebook 01 rendered a
    data-copy table with a finished re-encoded run, its conclusion lines
    (``long_tailed_cifar.jpeg_findings``), linked to the table."""
    import pandas as pd

    root = Path(results_dir)
    profiles = [p.name for p in root.iterdir() if (p / DATA_COPY_TABLE).is_file()] if root.is_dir() else []
    out: List[str] = []
    for profile in _profile_sort(profiles):
        table = pd.read_csv(root / profile / DATA_COPY_TABLE)
        for line in jpeg_findings(table) if len(table) else []:
            out.append(f"Measured, `{profile}` ([notebook 01's table]({profile}/{DATA_COPY_TABLE})): {line}")
    return out


def render_readme(df: "pd.DataFrame", summary: "pd.DataFrame",
                  figures: Dict[str, List[Path]], results_dir: Path,
                  problems: Sequence[str] = (), version: Optional[Dict[str, Any]] = None,
                  claim_pngs: Optional[Dict[str, Path]] = None) -> str:
    """The text of ``results/README.md`` (``claim_pngs``: :func:`claim_figures`, shown in the
    claims section)."""
    version = version or code_version()
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    out = ["# ltbench results", ""]
    status = reproduction_status(df, summary, Path(results_dir))
    if status:
        out += ["## What is reproduced", "", *status, ""]
    out += claims_section(claims(df), claim_pngs, Path(results_dir))
    out += [f"Generated by `python -m ltbench report` on {now} ({_version_text(version)}) from {len(df)} runs of "
            "the notebooks (one row each in [summary.csv](summary.csv)). Regenerated on every report; do not edit.",
            ""]
    if df.empty:
        out += ["No results yet: run `python -m ltbench run` (or `make reproduce`) first, then "
                "`python -m ltbench report`.", ""]
    out += ["## Caveats", "", *(f"- {c}" for c in CAVEATS), *(f"- {c}" for c in data_copy_lines(Path(results_dir))), "",
            "Columns: *top-1 last* / *top-1 best* are the last-epoch and best-epoch test "
            "accuracy (%), mean ± sample std (ddof 1) over *n seeds* (just the mean for one "
            "seed); *published* is the value of the *published row* in the method reference "
            "([docs/methods.md §10](../docs/methods.md#10-published-numbers)); *last − published* "
            "compares our last-epoch mean with it (`-` where no published value exists); "
            "*many / med / few* and *ECE* (%) are seed means. *epochs* is the length of the run's "
            "first stage (the stage-1 or phase-I run of a two-stage method), *stage-2 epochs* the "
            "training of a stage-2 classifier (0: tau-norm trains nothing), *FSA iterations* FSA's "
            "phase-II steps; *runs* links each seed's run folder.", ""]
    for profile in _profile_sort(summary["profile"]) if not summary.empty else []:
        sp = summary[summary["profile"] == profile]
        out += [f"## Profile `{profile}`", ""]
        if profile != PAPER_PROFILE:
            out += [f"> The `{profile}` profile trains for fewer epochs on less data than the "
                    "papers: its gaps to the published numbers are expected.", ""]
        out += _provenance(results_dir, profile, version)
        for (paper, table), st in sp.groupby(["paper", "table"], sort=False):
            out += [f"### {paper or '(paper not set)'} — {table or '(table not set)'}", "",
                    _table_for(st), ""]
            srcs = sorted({f"{a}: {b}" for a, b in zip(st["published_method"], st["source"]) if b})
            if srcs:
                out += ["Published rows: " + "; ".join(srcs) + ". Published numbers are single "
                        "runs, often the best test epoch.", ""]
        figs = figures.get(profile, [])
        if figs:
            out += [f"### Figures (`{profile}`)", ""]
            for p in figs:
                rel = _rel(p, results_dir)
                out += [f"![{p.stem}]({rel})", "",
                        f"[PDF]({_rel(p.with_suffix('.pdf'), results_dir)})", ""]
    if problems:
        out += ["## Warnings", "", *(f"- {p}" for p in problems), ""]
    return "\n".join(out)


def budget_section(budget: "pd.DataFrame", png: Path, results_dir: Path) -> List[str]:
    """README lines of the accuracy-against-budget table and figure (:mod:`ltbench.budget`)."""
    rows = [(m, int(e), prec, fmt_mean_std(mu, sd, int(n)), int(n), p, fmt(pub))
            for m, e, prec, mu, sd, n, p, pub in budget[["method", "epochs", "precision", "mean", "std", "n", "profiles",
                                                          "published"]].itertuples(index=False)]
    return ["## Accuracy against training budget (CIFAR-10-LT IR100, ResNet-32)", "",
            "Last-epoch top-1 of every finished run of these methods on the full CIFAR-10-LT IR100 (batch 128, "
            "the full test set) by the length of its first-stage schedule; the published numbers are 200-epoch "
            "single runs. Float32 and bf16 runs (the `cpu` and `paper` profiles train bf16, docs/methods.md "
            "§2) are separate rows.", "",
            markdown_table(["method", "epochs", "precision", "top-1 last", "seeds", "profiles", "published (200 ep)"],
                           rows), "",
            f"![budget]({_rel(png, results_dir)})", "", f"[PDF]({_rel(png.with_suffix('.pdf'), results_dir)})", ""]


def write_report(results_dir: os.PathLike | str = "results") -> Dict[str, Any]:
    """Write ``summary.csv``, ``README.md`` and ``figures/*.png`` / ``*.pdf`` under ``results_dir``,
    which must exist (a mistyped path is refused rather than created with an empty report)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: results_dir={str(root)!r}; give the folder that "
                                f"holds <profile>/runs/ (default: results), after `ltbench execute` or `ltbench run`")
    df, problems = collect(root)
    summary, more = summarize(df)
    problems = [*problems, *more]
    csv = atomic_write_text(root / "summary.csv", df.to_csv(index=False))
    figures = make_figures(summary, root / "figures")
    claim_pngs = claim_figures(claims(df), root / "figures")  # after make_figures, which removes what it did not write

    budget = budget_frame(root)
    budget_png = plot_budget(budget, root / "figures" / "budget_cifar10_ir100.png")
    text = render_readme(df, summary, figures, root, problems, claim_pngs=claim_pngs)
    if budget_png is not None:
        text = text.rstrip("\n") + "\n\n" + "\n".join(budget_section(budget, budget_png, root)) + "\n"
    readme = atomic_write_text(root / "README.md", text)
    return {"summary_csv": csv, "readme": readme, "figures": figures, "runs": len(df),
            "groups": len(summary), "warnings": problems, "table": summary}
