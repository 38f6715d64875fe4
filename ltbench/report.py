"""Collect every ``metrics.json`` of a results tree into one table, a README and figures.

``python -m ltbench report [--results DIR]`` writes, atomically:

* ``DIR/summary.csv``: one row per training run (long form), see :data:`COLUMNS`;
* ``DIR/README.md``: per profile and per (paper, table), our top-1 as mean ± std over seeds
  (last and best epoch) beside the published number (SPEC §10) and the difference
  ``ours(last) - published``, many/medium/few and ECE, plus the caveats;
* ``DIR/figures/*.png``: accuracy vs imbalance ratio per method (one figure per profile and
  dataset) and many/medium/few grouped bars (per profile, dataset and IR), linked from the README.

pandas and matplotlib are imported inside the functions so that ``python -m ltbench`` starts fast.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ltbench.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of ``summary.csv`` (one row per metrics.json).
COLUMNS = [
    "profile", "paper", "table", "method", "published_method", "dataset", "imbalance_ratio",
    "seed", "epochs", "top1_last", "top1_best", "best_epoch", "many", "medium", "few", "ece",
    "train_seconds", "notebook", "path",
]
#: One README row per group: seeds of the same configuration are averaged.
GROUP_KEYS = ["profile", "notebook", "paper", "table", "method", "published_method", "dataset",
              "imbalance_ratio", "epochs"]
_PROFILE_ORDER = ["paper", "quick", "smoke"]
_NUMERIC = ["imbalance_ratio", "seed", "epochs", "top1_last", "top1_best", "best_epoch", "many",
            "medium", "few", "ece", "train_seconds"]


# --------------------------------------------------------------------------------------------
# Markdown helpers


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Optional[Sequence[str]] = None) -> str:
    """A padded GitHub-flavoured markdown table; ``align`` holds 'l' / 'r' per column."""
    rows = [[_cell(v) for v in r] for r in rows]
    headers = [_cell(h) for h in headers]
    align = list(align or ["l"] * len(headers))
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w
                            for w, a in zip(widths, align)) + " |"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _isnum(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def fmt(v: Any, digits: int = 2, sign: bool = False) -> str:
    """Number with ``digits`` decimals, '-' when missing."""
    if not _isnum(v):
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def fmt_mean_std(mean: Any, std: Any, n: int) -> str:
    """``mean ± std`` (sample std over seeds) when more than one seed ran, else the mean."""
    if not _isnum(mean):
        return "-"
    if n > 1 and _isnum(std):
        return f"{mean:.2f} ± {std:.2f}"
    return f"{mean:.2f}"


def fmt_ir(ir: Any) -> str:
    return f"{ir:g}" if _isnum(ir) else "-"


# --------------------------------------------------------------------------------------------
# Collection


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def collect(results_dir: os.PathLike | str = "results") -> Tuple["pd.DataFrame", List[str]]:
    """Every ``metrics.json`` under ``results_dir`` as one long-form table (and warnings)."""
    import pandas as pd

    root = Path(results_dir)
    records, problems = [], []
    for path in sorted(root.rglob("metrics.json")) if root.is_dir() else []:
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):  # checkpoints, temp folders
            continue
        try:
            m = json.loads(path.read_text())
            if not isinstance(m, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            problems.append(f"skipped unreadable {_rel(path, root)}: {exc}")
            continue
        if m.get("top1_last") is None:
            problems.append(f"skipped {_rel(path, root)}: no top1_last")
            continue
        rec = {k: m.get(k) for k in COLUMNS}
        # The profile is recorded by the notebook; the folder (results/<profile>/...) backs it up.
        rec["profile"] = m.get("profile") or (rel.parts[0] if len(rel.parts) > 1 else "")
        rec["path"] = _rel(path, root)
        records.append(rec)
    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in set(COLUMNS) - set(_NUMERIC):
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df, problems


def _published_lookup(row: Dict[str, Any], unknown: set) -> Tuple[Optional[float], str]:
    from ltbench.published import published, source

    name = row.get("published_method") or ""
    if not name:
        return None, ""
    try:
        return published(name, row["dataset"], row["imbalance_ratio"]), source(name)
    except ValueError:
        unknown.add(name)
        return None, ""


def summarize(df: "pd.DataFrame") -> Tuple["pd.DataFrame", List[str]]:
    """Mean/std over seeds per configuration, with the published value and the difference."""
    import pandas as pd

    cols = [*GROUP_KEYS, "n", "seeds", "last_mean", "last_std", "best_mean", "best_std",
            "many", "medium", "few", "ece", "published", "source", "diff_last"]
    if df.empty:
        return pd.DataFrame(columns=cols), []
    problems: List[str] = []
    unknown: set = set()
    rows = []
    for key, g in df.groupby(GROUP_KEYS, dropna=False, sort=False):
        row = dict(zip(GROUP_KEYS, key))
        seeds = sorted(int(s) for s in g["seed"].dropna())
        if len(seeds) != len(set(seeds)):
            problems.append(f"duplicate seeds {seeds} for {row['notebook']} {row['method']} "
                            f"{row['dataset']} IR{fmt_ir(row['imbalance_ratio'])}")
        row.update(
            n=len(g), seeds=" ".join(map(str, seeds)),
            last_mean=g["top1_last"].mean(), last_std=g["top1_last"].std(ddof=1),
            best_mean=g["top1_best"].mean(), best_std=g["top1_best"].std(ddof=1),
            many=g["many"].mean(), medium=g["medium"].mean(), few=g["few"].mean(),
            ece=g["ece"].mean(),
        )
        pub, src = _published_lookup(row, unknown)
        row.update(published=pub, source=src,
                   diff_last=(row["last_mean"] - pub) if pub is not None else None)
        rows.append(row)
    if unknown:
        problems.append("unknown published_method names (see ltbench/published.py): "
                        + ", ".join(sorted(unknown)))
    out = pd.DataFrame(rows, columns=cols)
    out["_ir"] = -out["imbalance_ratio"].fillna(0)
    out = out.sort_values(["profile", "paper", "table", "dataset", "method", "_ir"], kind="stable")
    return out.drop(columns="_ir").reset_index(drop=True), problems


# --------------------------------------------------------------------------------------------
# Figures


def _slug(*parts: Any) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", str(p)).strip("-") for p in parts if p != "")


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _labels(s: "pd.DataFrame") -> Dict[Tuple[str, str], str]:
    """Method labels; the notebook is added only where a method name appears in several."""
    pairs = list(dict.fromkeys(zip(s["notebook"], s["method"])))
    count: Dict[str, int] = {}
    for _, m in pairs:
        count[m] = count.get(m, 0) + 1
    return {(nb, m): (m if count[m] == 1 else f"{m} [{nb}]") for nb, m in pairs}


def _new_figure(w: float, h: float) -> Any:
    # Figure + Agg canvas, not pyplot: no global backend switch, nothing left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy_vs_ir(s: "pd.DataFrame", title: str, path: Path) -> Path:
    """Top-1 (last epoch, mean ± std) vs IR, one line per method; published values as ×."""
    import matplotlib
    from matplotlib.lines import Line2D

    fig = _new_figure(7.5, 4.8)
    ax = fig.add_subplot()
    labels = _labels(s)
    lines = list(s.groupby(["notebook", "method"], sort=False))
    # tab10's colours are the most distinct; tab20 (light/dark pairs) only when needed.
    cmap = matplotlib.colormaps["tab10" if len(lines) <= 10 else "tab20"]
    any_pub = False
    for i, ((nb, method), g) in enumerate(lines):
        g = g.sort_values("imbalance_ratio")
        color = cmap(i % cmap.N)
        ax.errorbar(g["imbalance_ratio"], g["last_mean"], yerr=g["last_std"].fillna(0),
                    marker="o", capsize=3, color=color, label=labels[(nb, method)])
        pub = g.dropna(subset=["published"])
        if not pub.empty:
            any_pub = True
            ax.plot(pub["imbalance_ratio"], pub["published"], linestyle=":", marker="x",
                    markersize=8, color=color)
    ax.set_xscale("log")
    irs = sorted(s["imbalance_ratio"].dropna().unique())
    ax.set_xticks(irs, [fmt_ir(v) for v in irs])
    ax.minorticks_off()
    ax.set_xlabel("imbalance ratio (log scale)")
    ax.set_ylabel("top-1 accuracy, last epoch (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if any_pub:
        handles.append(Line2D([], [], color="grey", linestyle=":", marker="x"))
        names.append("published (same colour)")
    ax.legend(handles, names, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_shot_groups(s: "pd.DataFrame", title: str, path: Path) -> Optional[Path]:
    """Many / medium / few accuracy per method as grouped bars (None if no group data)."""
    import numpy as np

    groups = [g for g in ("many", "medium", "few") if s[g].notna().any()]
    if not groups:
        return None
    labels = _labels(s)
    names = [labels[(nb, m)] for nb, m in zip(s["notebook"], s["method"])]
    x = np.arange(len(s))
    width = 0.8 / len(groups)
    fig = _new_figure(max(6.0, 0.6 * len(s) + 2), 4.2)
    ax = fig.add_subplot()
    for j, g in enumerate(groups):
        ax.bar(x + (j - (len(groups) - 1) / 2) * width, s[g].fillna(0), width, label=g)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def make_figures(summary: "pd.DataFrame", figures_dir: Path) -> Dict[str, List[Path]]:
    """All figures of ``summary``, keyed by profile (stale PNGs of the folder are removed)."""
    out: Dict[str, List[Path]] = {}
    written: set = set()
    if not summary.empty:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. log-scale axis with a single point
            for (profile, dataset), s in summary.groupby(["profile", "dataset"], sort=False):
                p = plot_accuracy_vs_ir(
                    s, f"{dataset}: top-1 vs imbalance ratio ({profile} profile)",
                    figures_dir / f"{_slug(profile, dataset)}_acc_vs_ir.png")
                out.setdefault(profile, []).append(p)
                for ir, si in s.groupby("imbalance_ratio", sort=False):
                    q = plot_shot_groups(
                        si.reset_index(drop=True),
                        f"{dataset} IR{fmt_ir(ir)}: many / medium / few ({profile} profile)",
                        figures_dir / f"{_slug(profile, dataset, 'ir' + fmt_ir(ir))}_shots.png")
                    if q is not None:
                        out[profile].append(q)
        written = {p.resolve() for ps in out.values() for p in ps}
    if figures_dir.is_dir():  # figures of configurations that no longer exist would mislead
        for old in figures_dir.glob("*.png"):
            if old.resolve() not in written:
                old.unlink()
    return out


# --------------------------------------------------------------------------------------------
# README


def _profile_sort(names: Iterable[str]) -> List[str]:
    names = list(dict.fromkeys(names))
    return [p for p in _PROFILE_ORDER if p in names] + sorted(p for p in names
                                                              if p not in _PROFILE_ORDER)


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
        ])
    return markdown_table(
        ["method", "published row", "dataset", "IR", "epochs", "n seeds", "top-1 last",
         "top-1 best", "published", "last − published", "many / med / few", "ECE"],
        rows, align=["l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r"])


def render_readme(df: "pd.DataFrame", summary: "pd.DataFrame",
                  figures: Dict[str, List[Path]], results_dir: Path,
                  problems: Sequence[str] = ()) -> str:
    """The text of ``results/README.md``."""
    from ltbench.published import CAVEATS

    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    out = ["# ltbench results", "",
           f"Generated by `python -m ltbench report` on {now} from {len(df)} `metrics.json` "
           "files (one row each in [summary.csv](summary.csv)). Regenerated on every report; "
           "do not edit.", ""]
    if df.empty:
        out += ["No results yet: run `python -m ltbench run` (or `make reproduce`) first, then "
                "`python -m ltbench report`.", ""]
    out += ["## Caveats", "", *(f"- {c}" for c in CAVEATS), "",
            "Columns: *top-1 last* / *top-1 best* are the last-epoch and best-epoch test "
            "accuracy (%), mean ± sample std (ddof 1) over *n seeds* (just the mean for one "
            "seed); *published* is the SPEC §10 value of the *published row*; *last − published* "
            "compares our last-epoch mean with it (`-` where no published value exists); "
            "*many / med / few* and *ECE* (%) are seed means.", ""]
    for profile in _profile_sort(summary["profile"]) if not summary.empty else []:
        sp = summary[summary["profile"] == profile]
        out += [f"## Profile `{profile}`", ""]
        if profile != "paper":
            out += [f"> The `{profile}` profile trains for fewer epochs on less data than the "
                    "papers: its gaps to the published numbers are expected.", ""]
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
            out += [f"![{p.stem}]({_rel(p, results_dir)})" for p in figs] + [""]
    if problems:
        out += ["## Warnings", "", *(f"- {p}" for p in problems), ""]
    return "\n".join(out)


def write_report(results_dir: os.PathLike | str = "results") -> Dict[str, Any]:
    """Write ``summary.csv``, ``README.md`` and ``figures/*.png`` under ``results_dir``."""
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    df, problems = collect(root)
    summary, more = summarize(df)
    problems = [*problems, *more]
    csv = atomic_write_text(root / "summary.csv", df.to_csv(index=False))
    figures = make_figures(summary, root / "figures")
    readme = atomic_write_text(root / "README.md",
                               render_readme(df, summary, figures, root, problems))
    return {"summary_csv": csv, "readme": readme, "figures": figures, "runs": len(df),
            "groups": len(summary), "warnings": problems, "table": summary}
