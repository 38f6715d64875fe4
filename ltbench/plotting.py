"""The one plotting style of the project: the notebooks and the report draw through it.

- :data:`STYLE` (matplotlib rc values) and :func:`use_style` (notebooks: once, at import time) or
  :func:`style` (a context manager, for library code such as :mod:`ltbench.report` that must not
  change global state);
- colours that mean the same thing everywhere: :func:`method_colors` (the CE baseline is always
  black), :func:`ir_colors`, :data:`SHOT_COLORS` (many / medium / few) and the class-size scale
  (:func:`class_size_norm`, :data:`CLASS_CMAP`, :func:`class_size_colorbar`: head dark, tail light);
- helpers every figure needs: :func:`heatmap` (annotations sized to the cells, never overlapping),
  :func:`legend_outside`, :func:`chance_line`, :func:`row_titles`, :func:`integer_ticks`,
  :func:`plain_log_ticks`;
- :func:`save` writes a figure as PNG (200 dpi) **and** PDF, atomically.

matplotlib is imported inside the functions so that importing :mod:`ltbench` stays fast.
"""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .io import atomic_write_bytes

#: Resolution of saved PNGs (PDFs are vector).
DPI = 200
#: File formats every figure is saved in.
FORMATS = ("png", "pdf")

#: rc values of every figure (sizes for a figure printed at about its own size).
STYLE: Dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays editable in a paper's figure
    "ps.fonttype": 42,
}

#: The CE baseline, drawn the same way in every figure.
BASELINE_COLOR = "black"
#: Names the colour helpers treat as the CE baseline.
BASELINE_NAMES = ("CE", "softmax", "CE (softmax)")
#: Many / medium / few shot groups (docs/methods.md#31-accuracy-and-shot-groups).
SHOT_COLORS = {"many": "#1b9e77", "medium": "#d95f02", "few": "#7570b3"}
SHOT_MARKERS = {"many": "o", "medium": "^", "few": "s"}
#: Class size: reversed viridis on a log scale, so head classes are dark and tail classes light.
CLASS_CMAP = "viridis_r"
#: Colour of the published numbers (markers, bars) beside ours.
PUBLISHED_COLOR = "#999999"


def use_style() -> None:
    """Apply :data:`STYLE` globally (notebooks call it once after importing matplotlib)."""
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """:data:`STYLE` for the duration of a ``with`` block (library code)."""
    import matplotlib as mpl

    with mpl.rc_context(STYLE):
        yield


def new_figure(width: float, height: float, **kwargs: Any) -> Any:
    """A Figure on an Agg canvas, without pyplot: nothing is left open, no backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------------------------
# Colours


def _qualitative(n: int) -> List[Any]:
    import matplotlib as mpl

    if n <= 10:
        cmap = mpl.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    cmap = mpl.colormaps["tab20"]
    # tab20 pairs a dark and a light shade: take the dark ones first.
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [cmap(order[i % 20]) for i in range(n)]


def is_baseline(label: str) -> bool:
    """Whether a method label names the plain CE baseline."""
    return str(label).split(" (")[0] in BASELINE_NAMES or str(label) in BASELINE_NAMES


def method_colors(labels: Iterable[str]) -> Dict[str, Any]:
    """A colour per method label (first-seen order); the CE baseline is black."""
    labels = list(dict.fromkeys(labels))
    others = [m for m in labels if not is_baseline(m)]
    colors = dict(zip(others, _qualitative(len(others))))
    return {m: (BASELINE_COLOR if is_baseline(m) else colors[m]) for m in labels}


def ir_colors(irs: Iterable[float]) -> Dict[float, Any]:
    """A colour per imbalance ratio, darker for more imbalance."""
    import matplotlib as mpl

    irs = sorted({float(v) for v in irs}, reverse=True)
    cmap = mpl.colormaps["plasma"]
    if len(irs) == 1:
        return {irs[0]: cmap(0.15)}
    return {v: cmap(0.1 + 0.7 * i / (len(irs) - 1)) for i, v in enumerate(irs)}


def class_size_norm(counts: Sequence[float]) -> Any:
    """Log-scale normalisation of class training counts for :data:`CLASS_CMAP`."""
    from matplotlib.colors import LogNorm

    lo, hi = float(min(counts)), float(max(counts))
    return LogNorm(vmin=max(lo, 1.0), vmax=max(hi, lo + 1.0))


def class_size_colors(counts: Sequence[float]) -> List[Any]:
    """One colour per class from its training count (head dark, tail light)."""
    import matplotlib as mpl

    norm, cmap = class_size_norm(counts), mpl.colormaps[CLASS_CMAP]
    return [cmap(norm(max(float(c), 1.0))) for c in counts]


def class_size_colorbar(fig: Any, ax: Any, counts: Sequence[float], label: str = "training images of the class") -> Any:
    """A colour bar of the class-size scale beside ``ax`` (or a list of axes)."""
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable

    from matplotlib.ticker import FuncFormatter, LogLocator

    sm = ScalarMappable(norm=class_size_norm(counts), cmap=mpl.colormaps[CLASS_CMAP])
    cbar = fig.colorbar(sm, ax=ax, label=label)
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 5, 10, 50 rather than 5×10⁰
    cbar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    cbar.ax.yaxis.set_major_formatter(plain)
    cbar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    return cbar


# --------------------------------------------------------------------------------------------
# Helpers


def legend_outside(ax: Any, where: str = "right", **kwargs: Any) -> Any:
    """A legend outside the axes (right of it, or below it with ``where="below"``), so it never
    covers the data; entries without a label are skipped. Returns None when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if lab and not lab.startswith("_")]
    if not keep:
        return None
    handles, labels = zip(*keep)
    if where == "below":
        kw = dict(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(len(labels), kwargs.pop("ncol", 4)))
    else:
        kw = dict(loc="center left", bbox_to_anchor=(1.01, 0.5))
    kw.update(kwargs)
    return ax.legend(handles, labels, **kw)


def chance_line(ax: Any, n_classes: int, horizontal: bool = True, label: Optional[str] = "chance") -> Any:
    """A dotted line at chance accuracy, ``100 / n_classes`` %."""
    y = 100.0 / max(int(n_classes), 1)
    line = ax.axhline if horizontal else ax.axvline
    return line(y, color="0.4", ls=":", lw=1, label=label, zorder=0)


def heatmap(ax: Any, values: Any, xlabels: Optional[Sequence[str]] = None, ylabels: Optional[Sequence[str]] = None,
            cmap: str = "viridis", vmin: Optional[float] = None, vmax: Optional[float] = None, fmt: str = "{:.2f}",
            annotate: Optional[bool] = None, cbar_label: Optional[str] = None, fig: Any = None,
            missing: str = "not run") -> Any:
    """A matrix as an image with one annotation per cell, sized to fit the cell.

    Annotations are drawn only when each cell is big enough for its text (or ``annotate=True``),
    with a font size that scales with the cell, in black or white by the cell's brightness. NaN
    cells stay light grey, annotated with ``missing``.
    """
    import numpy as np

    mat = np.asarray(values, dtype=float)
    rows, cols = mat.shape
    finite = mat[np.isfinite(mat)]
    vmin = float(finite.min()) if vmin is None and finite.size else vmin
    vmax = float(finite.max()) if vmax is None and finite.size else vmax
    im = ax.imshow(mat, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_facecolor("0.93")  # NaN cells
    ax.grid(False)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xticklabels(xlabels if xlabels is not None else [str(i) for i in range(cols)],
                       rotation=45 if cols > 4 else 0, ha="right" if cols > 4 else "center")
    ax.set_yticklabels(ylabels if ylabels is not None else [str(i) for i in range(rows)])
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    figure = fig if fig is not None else ax.figure
    if cbar_label is not None:
        figure.colorbar(im, ax=ax, label=cbar_label)
    # Cell size in points: width of the axes over the columns.
    bbox = ax.get_window_extent().transformed(figure.dpi_scale_trans.inverted())
    cell_w, cell_h = 72 * bbox.width / max(cols, 1), 72 * bbox.height / max(rows, 1)
    sample = fmt.format(float(finite.max()) if finite.size else 0.0)
    size = min(9.0, cell_h * 0.55, cell_w / max(len(sample), 1) * 1.6)
    if annotate is None:
        annotate = size >= 4.5
    if annotate:
        cm = im.cmap
        for i in range(rows):
            for j in range(cols):
                v = mat[i, j]
                if not math.isfinite(v):
                    if missing:
                        ax.text(j, i, missing, ha="center", va="center", fontsize=max(size * 0.8, 4.5), color="0.45")
                    continue
                r, g, b, _ = cm(im.norm(v))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=max(size, 4.5),
                        color="black" if light else "white")
    return im


def integer_ticks(ax: Any, axis: str = "x") -> None:
    """Integer tick positions only (epochs, steps): no 0.96 ... 1.04 ticks for a one-epoch run."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plain_log_ticks(ax: Any, axis: str = "y") -> None:
    """Tick labels of a log axis as plain numbers (0.5, 1, 2, 100) rather than 5×10⁻¹."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def row_titles(axes: Sequence[Any], titles: Sequence[str], pad: float = 8.0, **kwargs: Any) -> None:
    """A title left of each row of images (``axes``: the first axes of each row), as y-labels, so
    they never overlap the images (use with axes whose ticks are hidden, not ``axis("off")``)."""
    for ax, title in zip(axes, titles):
        ax.set_ylabel(title, rotation=0, ha="right", va="center", labelpad=pad, **kwargs)


def hide_ticks(ax: Any) -> None:
    """An image panel: no ticks, no grid, no frame; keeps the y-label (unlike ``axis("off")``)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)


# --------------------------------------------------------------------------------------------
# Saving


def figure_bytes(fig: Any, fmt: str, dpi: int = DPI) -> bytes:
    """``fig`` rendered as ``fmt`` (png / pdf), tight bounding box; PDFs without a creation date,
    so an unchanged figure gives the same file."""
    buf = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def save(fig: Any, path: str | Path, dpi: int = DPI, formats: Sequence[str] = FORMATS) -> Tuple[Path, ...]:
    """Write ``fig`` as ``path`` with each suffix of ``formats`` (PNG at ``dpi``, PDF), atomically.

    ``path``'s own suffix, if any, is replaced. Returns the written paths, PNG first.
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in {".png", ".pdf"} else path
    return tuple(atomic_write_bytes(stem.with_name(f"{stem.name}.{fmt}"), figure_bytes(fig, fmt, dpi))
                 for fmt in formats)
