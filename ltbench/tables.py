"""Results tables: each method's numbers over seeds, beside the published number and the baseline.

The one builder of "mean ± std over seeds beside the published number": the notebooks' summary
tables (:func:`method_table`, formatted text) and the report's (:func:`seed_stats`, the numbers
that ``ltbench.report`` formats into ``results/README.md``). Both read a long-form frame with
one row per training run: a seed column and metric columns (``top1_last``, ``top1_best``, ...),
as :func:`ltbench.experiments.results_frame` and :func:`ltbench.report.collect` write them.

A std is the sample standard deviation over seeds (ddof 1); with one seed a table shows the mean
alone, and ``-`` where a number is missing (:func:`ltbench.text.fmt_mean_std`).

pandas is imported inside the functions, like the rest of the reporting code.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .text import fmt, fmt_mean_std, is_number, mean_std, pm  # noqa: F401 - mean_std, pm: re-exported

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["METRICS", "mean_std", "pm", "seed_stats", "method_table", "first_number"]

#: :func:`method_table`'s metric columns: output column -> column of the runs frame, in order.
METRICS: Dict[str, str] = {
    "top1 last": "top1_last", "top1 at val-best epoch": "top1_at_best_val", "top1 best (test-picked)": "top1_best",
    "many": "many", "medium": "medium", "few": "few", "ECE": "ece",
}

#: Where a group's published number comes from: a column of the runs frame (its first number in the
#: group), a function of the group's keys (``{"method": ..., "dataset": ..., ...}``), or None (no number).
Published = Union[None, str, Callable[[Dict[str, Any]], Optional[float]]]


def _numbers(values: Any) -> "pd.Series":
    """``values`` (a Series or any iterable) as a float Series, anything not a number as NaN."""
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return pd.to_numeric(s, errors="coerce").astype(float)


def first_number(values: Iterable[Any]) -> Optional[float]:
    """The first finite number of ``values`` as a float, else None."""
    for v in values:
        if is_number(v):
            return float(v)
    return None


def _first_text(values: Iterable[Any]) -> str:
    """The first value of ``values`` that is there: a number with two decimals, else as text; '-' for none."""
    for v in values:
        if is_number(v):
            return fmt(v)
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != "":
            return str(v)
    return "-"


def _published_of(published: Published, keys: Dict[str, Any], g: "pd.DataFrame") -> Optional[float]:
    if published is None:
        return None
    if callable(published):
        return published(keys)
    return first_number(g[published]) if published in g else None


def seed_stats(df: "pd.DataFrame", group: Sequence[str],
               spread: Optional[Mapping[str, str]] = None, means: Sequence[str] = ("many", "medium", "few", "ece"),
               published: Published = "published", diff: Optional[str] = None, seed: str = "seed",
               ordered: Optional[Mapping[str, str]] = None, dropna: bool = True) -> "pd.DataFrame":
    """One row per group of ``df`` (one row per run), in the order the groups first appear.

    Columns: the ``group`` keys; ``n`` (runs in the group); ``seeds`` (the seeds, sorted,
    space-separated); ``<name>_mean`` and ``<name>_std`` (sample std, NaN for one run) of each
    ``spread`` column (name -> column; default ``last``: ``top1_last`` and ``best``: ``top1_best``); the mean of each ``means`` column; ``published`` (see
    :data:`Published`) and ``diff_<diff>``: the mean of spread entry ``diff`` (default the first)
    minus the published number, None without one; and for each ``ordered`` entry (name ->
    column) the tuple of that column's values in seed order. ``dropna=False`` keeps groups with a
    missing key (the report's).
    """
    import pandas as pd

    spread = {"last": "top1_last", "best": "top1_best"} if spread is None else spread
    ordered = ordered or {}
    diff = diff or next(iter(spread), None)
    rows: List[Dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(rows)
    for key, g in df.groupby(list(group), dropna=dropna, sort=False):
        keys = dict(zip(group, key if isinstance(key, tuple) else (key,)))
        row: Dict[str, Any] = dict(keys)
        seeds = sorted(int(s) for s in g[seed].dropna())
        row.update(n=len(g), seeds=" ".join(map(str, seeds)))
        for name, col in spread.items():
            v = _numbers(g[col]) if col in g else _numbers([])
            row[f"{name}_mean"], row[f"{name}_std"] = v.mean(), v.std(ddof=1)
        for col in means:
            row[col] = _numbers(g[col]).mean() if col in g else math.nan
        ordered_rows = g.sort_values(seed) if ordered else g
        for name, col in ordered.items():
            row[name] = tuple(ordered_rows[col])
        if published is not None:
            pub = _published_of(published, keys, g)
            row["published"] = pub
            if diff is not None:
                row[f"diff_{diff}"] = (row[f"{diff}_mean"] - pub) if pub is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def _per_seed(seeds: Sequence[Any], values: Sequence[Any]) -> Dict[Any, float]:
    """seed -> the mean of its finite values (a seed run twice counts once)."""
    by: Dict[Any, List[float]] = {}
    for sd, v in zip(seeds, values):
        if is_number(v) and sd is not None and sd == sd:
            by.setdefault(sd, []).append(float(v))
    return {sd: sum(vs) / len(vs) for sd, vs in by.items()}


def method_table(df: "pd.DataFrame", group: Sequence[str] = ("method", "dataset", "IR"),
                 published: Published = "published", baseline: Optional[str] = None, *,
                 method: str = "method", seed: str = "seed", top1: str = "top1_last",
                 metrics: Mapping[str, str] = METRICS, extra: Sequence[str] = (),
                 baseline_first: bool = False) -> "pd.DataFrame":
    """The summary of ``df`` (one row per run, e.g. ``results_frame``): one row per ``group``, in
    the order the groups first appear; :func:`seed_stats`'s numbers, formatted.

    Columns: the ``group`` keys; ``seeds`` (runs); each ``metrics`` column present in ``df``
    (output name -> column) as mean ± std over seeds; ``published`` (see :data:`Published`; it and
    the next column are left out with ``published=None``) and ``last - published`` (the mean of
    ``top1`` minus it); then each ``extra`` column of ``df`` with the group's first value (one
    that is the same for every seed: the published error, the published number's source).

    With ``baseline`` (a value of the ``method`` column), also ``last - <baseline>``: each run's
    ``top1`` minus that of the baseline's run with the same seed and the same other group keys,
    as mean ± std over the seeds both have (``-`` on the baseline's own rows and where it did not
    run). ``baseline_first`` turns it round: ``<baseline> - this``.
    """
    import pandas as pd

    metrics = {k: v for k, v in metrics.items() if v in df}
    diff_name = (f"{baseline} - this" if baseline_first else f"last - {baseline}") if baseline is not None else None
    columns = [*group, "seeds", *metrics, *(["published", "last - published"] if published is not None else []),
               *extra, *([diff_name] if diff_name else [])]
    if df.empty:
        return pd.DataFrame(columns=columns)
    # Hidden entries: the top-1 (for the differences) and, per run in seed order, the seeds, the top-1 and the extras.
    ordered = {"_seeds": seed, "_top1": top1, **{f"_extra {c}": c for c in extra}}
    stats = seed_stats(df, group, spread={**metrics, "_top1": top1}, means=(), published=published, diff="_top1",
                       seed=seed, ordered=ordered).to_dict("records")
    others = [k for k in group if k != method]
    out = []
    for row in stats:
        line: Dict[str, Any] = {k: row[k] for k in group}
        line["seeds"] = row["n"]
        for name in metrics:
            line[name] = fmt_mean_std(row[f"{name}_mean"], row[f"{name}_std"], row["n"])
        if published is not None:
            line["published"] = fmt(row["published"])
            line["last - published"] = fmt(row["diff__top1"], sign=True)
        for col in extra:
            line[col] = _first_text(row[f"_extra {col}"])
        if diff_name:
            base = [b for b in stats if b[method] == baseline and all(b[k] == row[k] for k in others)]
            line[diff_name] = "-"
            if row[method] != baseline and base:
                ours, theirs = _per_seed(row["_seeds"], row["_top1"]), _per_seed(base[0]["_seeds"], base[0]["_top1"])
                d = [(theirs[sd] - v) if baseline_first else (v - theirs[sd]) for sd, v in ours.items() if sd in theirs]
                line[diff_name] = pm(d)
        out.append(line)
    return pd.DataFrame(out, columns=columns)
