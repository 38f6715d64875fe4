"""Small helpers the notebooks call: run folders, tables (CSV + Markdown) and figures (PNG +
PDF + inline), and the computed conclusion a notebook ends with.

They keep the notebooks thin: a notebook plans its runs (:mod:`ltbench.experiments`), gets them
through ``materialize``, then saves and shows tables and figures through these functions, always
atomically. The figures' style is :mod:`ltbench.plotting`.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Optional

from .io import atomic_write_text
from .plotting import DPI, FORMATS, save


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")


def run_dir(out_dir: str | Path, *parts: Any) -> Path:
    """``out_dir/runs/<part1>_<part2>...``: one folder per training run."""
    return Path(out_dir) / "runs" / "_".join(slug(str(p)) for p in parts)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|")


def markdown_table(df: "Any", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table of a pandas DataFrame (floats to 2 decimals, NaN as '-')."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df: "Any", out_dir: str | Path, name: str, title: Optional[str] = None) -> "Any":
    """Write ``name.csv`` and ``name.md`` under ``out_dir/tables`` and return ``df``.

    A notebook shows a table explicitly, ``display(save_table(...))``, so that no cell ends with a
    bare expression whose value Jupyter would echo.
    """
    folder = Path(out_dir) / "tables"
    atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False))
    md = (f"### {title}\n\n" if title else "") + markdown_table(df)
    atomic_write_text(folder / f"{name}.md", md)
    return df


def save_figure(fig: "Any", out_dir: str | Path, name: str, show: bool = True, dpi: int = DPI) -> None:
    """Save ``fig`` as ``out_dir/figures/name.png`` (``dpi``) and ``name.pdf``, atomically, then
    show it inline (or close it with ``show=False``).

    Returns None, so a cell ending with ``save_figure(...)`` echoes nothing; the written paths are
    ``figure_paths(out_dir, name)``.
    """
    import matplotlib.pyplot as plt

    save(fig, Path(out_dir) / "figures" / name, dpi=dpi)
    if show:
        plt.show()
    else:
        plt.close(fig)


def figure_paths(out_dir: str | Path, name: str) -> tuple:
    """The files :func:`save_figure` writes for ``name``: PNG and PDF."""
    return tuple(Path(out_dir) / "figures" / f"{name}.{fmt}" for fmt in FORMATS)


def _relink(text: str, folder: Path) -> str:
    """``text`` with its relative Markdown links (written relative to the working directory, the
    notebook's folder) rewritten relative to ``folder``, where the text is saved."""
    def fix(m: "re.Match[str]") -> str:
        target, anchor = m.group(1), m.group(2) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("/", "#")):
            return m.group(0)
        rel = os.path.relpath(Path.cwd() / target, folder.resolve())
        return f"]({Path(rel).as_posix()}{anchor})"

    return re.sub(r"\]\(([^)#\s]+)(#[^)\s]*)?\)", fix, text)


def verdict(holds: Optional[bool], partial: bool = False) -> str:
    """'holds', 'does not hold', 'holds in part' or 'cannot be checked' (``holds`` None)."""
    if holds is None:
        return "cannot be checked"
    if partial:
        return "holds in part"
    return "holds" if holds else "does not hold"


def conclusion(claim: str, findings: "Any", profile: str, out_dir: Optional[str | Path] = None,
               title: str = "Conclusion", note: Optional[str] = None) -> "Any":
    """The notebook's closing statement, computed from its results, as Markdown.

    ``claim``: the paper's main claim (with its docs/methods.md link); ``findings``: lines, each
    "our numbers -> verdict" written from computed values (never typed by hand); ``profile``: the
    profile the numbers come from (a non-paper profile adds that the verdict says little about the
    paper). With ``out_dir`` the text is also written to ``out_dir/conclusion.md``. Returns an
    ``IPython.display.Markdown`` (plain text when IPython is absent); show it with ``display``.
    """
    lines = [f"## {title}", "", f"**The paper's claim.** {claim}", "",
             f"**What this run shows** (profile `{profile}`):", ""]
    findings = [findings] if isinstance(findings, str) else list(findings)
    lines += [f"- {f}" for f in findings] if findings else ["- no result to check (no run finished)."]
    lines.append("")
    if profile == "cpu":
        lines += ["> Profile `cpu` trains the papers' data and recipe compressed to a CPU budget (docs/methods.md §2): "
                  "a verdict compares each method's gain over the baseline with the published gain (its sign and "
                  "size), not the absolute numbers, which no paper reports at this length.", ""]
    elif profile != "paper":
        lines += [f"> Profile `{profile}` trains briefly on a subset: a verdict here checks the pipeline and the "
                  "direction of an effect, not the paper's numbers (those need the `paper` profile).", ""]
    if note:
        lines += [note, ""]
    text = "\n".join(lines)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "conclusion.md", _relink(text, Path(out_dir)))
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - notebooks always have IPython
        return text
    return Markdown(text)
