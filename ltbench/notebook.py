"""Small helpers the notebooks call: run folders, tables (CSV + Markdown) and figures (PNG + inline).

They keep the notebooks thin: a notebook builds configs, calls :func:`ltbench.engine.train`,
then saves and shows tables and figures through these functions, always atomically.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any, Optional

from .io import atomic_write_bytes, atomic_write_text


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
    """Write ``name.csv`` and ``name.md`` under ``out_dir/tables`` and return ``df`` for display."""
    folder = Path(out_dir) / "tables"
    atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False))
    md = (f"### {title}\n\n" if title else "") + markdown_table(df)
    atomic_write_text(folder / f"{name}.md", md)
    return df


def save_figure(fig: "Any", out_dir: str | Path, name: str, show: bool = True, dpi: int = 120) -> Path:
    """Save ``fig`` as ``out_dir/figures/name.png`` (atomically) and show it inline."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    path = atomic_write_bytes(Path(out_dir) / "figures" / f"{name}.png", buf.getvalue())
    if show:
        plt.show()
    else:
        plt.close(fig)
    return path
