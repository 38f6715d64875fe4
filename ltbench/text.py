"""Text formatting shared by every table ltbench prints or writes: padded markdown tables and
numbers with '-' for what is missing (the plan, the notebook batch summary, the report,
the notebooks' tables)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional, Sequence, Tuple

__all__ = ["markdown_table", "fmt", "fmt_mean_std", "fmt_ir", "plural", "is_number", "verdict", "gain_verdict", "verdict_word", "VERDICT_WORDS", "NO_DIFFERENCE_BAND", "mean_std", "pm"]


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


def is_number(v: Any) -> bool:
    """A finite real number (numpy scalars included, bools not)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def plural(count: int, noun: str, plural: Optional[str] = None) -> str:
    """``1 run`` / ``2 runs``."""
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


def fmt(v: Any, digits: int = 2, sign: bool = False) -> str:
    """Number with ``digits`` decimals, '-' when missing."""
    if not is_number(v):
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def fmt_mean_std(mean: Any, std: Any, n: int) -> str:
    """``mean ± std`` (sample std over seeds) when more than one seed ran, else the mean."""
    if not is_number(mean):
        return "-"
    if n > 1 and is_number(std):
        return f"{mean:.2f} ± {std:.2f}"
    return f"{mean:.2f}"


def mean_std(values: Iterable[Any]) -> Tuple[float, float, int]:
    """``(mean, sample std (ddof 1), count)`` of the finite numbers in ``values`` (one per seed),
    anything else ignored: NaN mean without a number, NaN std with one (as pandas computes them)."""
    nums = [float(v) for v in values if is_number(v)]
    n = len(nums)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(nums) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in nums) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def pm(values: Iterable[Any]) -> str:
    """``values`` (one per seed) as ``mean ± std`` (:func:`fmt_mean_std`): the mean alone for one
    number, '-' for none."""
    return fmt_mean_std(*mean_std(values))


def fmt_ir(ir: Any) -> str:
    return f"{ir:g}" if is_number(ir) else "-"


def verdict(holds: Optional[bool], partial: bool = False) -> str:
    """'holds', 'does not hold', 'holds in part' or 'cannot be checked' (``holds`` None)."""
    if holds is None:
        return "cannot be checked"
    if partial:
        return "holds in part"
    return "holds" if holds else "does not hold"


#: The verdicts' words, without their reasons; "holds in part" before "holds" (a prefix of it).
VERDICT_WORDS = ("holds in part", "holds", "does not hold", "cannot be checked")


def verdict_word(text: str) -> str:
    """The word of a verdict of :func:`verdict` or :func:`gain_verdict` without its reason:
    ``"holds"`` for ``"holds (no difference: ...)"``; ValueError for another text."""
    for word in VERDICT_WORDS:
        if text == word or str(text).startswith(word + " ("):
            return word
    raise ValueError(f"verdict_word: {text!r} is not a verdict; verdicts start with one of {VERDICT_WORDS}")


#: Published gains smaller than this in size (points of top-1) are read as "no difference from the
#: baseline": the papers' numbers are single runs, and a +0.02 from one run is not a sign (this
#: project's choice, docs/methods.md §10.8).
NO_DIFFERENCE_BAND = 0.5


def gain_verdict(ours: float, published: float, spread: Optional[float] = None) -> str:
    """The verdict on a published gain over a baseline against ours (points of top-1), one rule for
    every conclusion (docs/methods.md §10.8). The band is :data:`NO_DIFFERENCE_BAND`, or the seed
    spread of our differences when that is larger:

    - a published gain inside the band claims no difference: *holds* when ours is inside it too;
    - a gain above it claims an improvement: *holds* when ours is at least half of it, *holds in
      part* when ours is positive but smaller, *does not hold* when ours is not positive;
    - a gain below it claims a loss, mirrored: *holds* when ours is at most half of it (as far below).

    Returns the verdict with its reason where the plain word would mislead, e.g.
    ``"holds (no difference: both within ±0.50 points)"``."""
    if not (is_number(ours) and is_number(published)):
        raise ValueError(f"gain_verdict: ours={ours!r} and published={published!r} must be numbers")
    band = NO_DIFFERENCE_BAND
    if spread is not None and is_number(spread) and float(spread) > band:
        band = float(spread)
    ours, published = float(ours), float(published)
    if abs(published) < band:
        if abs(ours) < band:
            return f"holds (no difference: both within ±{band:.2f} points)"
        side = "above" if ours > 0 else "below"
        return f"does not hold (published: no difference; ours {abs(ours):.2f} points {side}, outside ±{band:.2f})"
    if published > 0:
        if ours >= published / 2:
            return "holds"
        if ours > 0:
            return "holds in part (positive, under half the published gain)"
        return "does not hold"
    if ours <= published / 2:
        return "holds (below the baseline, as published)"
    if ours < 0:
        return "holds in part (below the baseline, by under half the published loss)"
    return "does not hold (published: below the baseline; ours is not)"
