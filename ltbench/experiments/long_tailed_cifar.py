"""Notebook 01: the CE baseline on CIFAR-LT (Cui et al. 2019, Table 2's softmax row).

Besides the runs (:func:`runs`), the notebook's computations: the class counts of CIFAR-LT at
several imbalance ratios (:func:`class_counts`), the head-bias findings of its conclusion
(:func:`findings`), and the data-copy check (:func:`jpeg_table`, :func:`jpeg_findings`): CE on
the data re-encoded once more at lower JPEG qualities, the slope of accuracy against the added
distortion (docs/methods.md §1.4).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..checks import is_positive_int
from ..data import _first_per_class  # the test subset build_long_tailed keeps
from ..data.counts import long_tailed_counts
from ..data.jpeg import QUALITY_RANGE, check_quality, mse, psnr, recompress
from ..data.sources import load_split
from ..engine import TrainResult
from ..metrics import shot_groups
from ..published import published
from ..text import is_number, verdict
from . import PlannedRun, label_runs

NOTEBOOK = "01_long_tailed_cifar"
PAPER = "Class-balanced loss (Cui et al. 2019)"
TABLE = "Table 2"
#: (name, classes, n_max) of the two CIFAR-LT training sets (docs/methods.md §1.1).
CIFAR_LT = (("CIFAR-10-LT", 10, 5000), ("CIFAR-100-LT", 100, 500))


BASELINE = "CE"
#: The JPEG encoding of this project's CIFAR-10 copy and its PSNR against the official pixels
#: (../shared/data/README.md: quality 75, 4:2:0, about 30.5 dB over 984 checked images).
COPY_QUALITY, COPY_PSNR_DB = 75, 30.5


def jpeg_label(quality: int) -> str:
    """The method label of CE on the data re-encoded at ``quality``."""
    return f"CE, JPEG q{quality}"


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         amp_cpu: bool = False, jpeg_qualities: Sequence[int] = (),
         jpeg_seeds: Optional[int] = None) -> List[PlannedRun]:
    """CE at every (dataset, IR, seed): the shared baseline (tier 0); with ``jpeg_qualities``, CE
    on the same images re-encoded once more at each quality (``data_options.jpeg_quality``; tier 2,
    ``role="jpeg"``), the data-copy check of docs/methods.md §1.4, at the first ``jpeg_seeds`` of
    ``seeds`` (None: all). One seed per quality is enough to read the check against CE's spread
    over all of them (:func:`jpeg_findings`)."""
    if isinstance(jpeg_qualities, (str, bytes)) or not isinstance(jpeg_qualities, Sequence):
        raise ValueError(f"invalid jpeg_qualities={jpeg_qualities!r}: must be a list of JPEG qualities")
    for q in jpeg_qualities:
        check_quality(q, "jpeg_qualities")
    if jpeg_seeds is not None and not is_positive_int(jpeg_seeds):
        raise ValueError(f"invalid jpeg_seeds={jpeg_seeds!r}: must be None (every seed) or an int >= 1")
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)
    out = label_runs({BASELINE: {"loss": "ce"}}, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE,
                     published_rows={BASELINE: "CE (softmax)"})
    jpeg = {jpeg_label(q): {"loss": "ce", "data_options": {"jpeg_quality": q}} for q in dict.fromkeys(jpeg_qualities)}
    check_seeds = list(seeds) if jpeg_seeds is None else list(seeds)[:jpeg_seeds]
    check = label_runs(jpeg, datasets, imbalance_ratios, check_seeds, recipe, NOTEBOOK, PAPER, TABLE, role="jpeg")
    return out + [dataclasses.replace(r, tier=2) for r in check]  # CE's loss alone would make them tier 0


def baseline(results: Sequence[TrainResult]) -> List[TrainResult]:
    """The CE runs of ``results`` on the data as loaded (not the data-copy check's runs)."""
    return [r for r in results if r.meta.get("method") == BASELINE]


def class_counts(imbalance_ratios: Sequence[float]) -> "Any":
    """One row per CIFAR-LT training set and IR: its size, largest and smallest class, and how
    many classes are many-, medium- and few-shot (docs/methods.md §3.1)."""
    import pandas as pd

    rows = []
    for name, c, nmax in CIFAR_LT:
        for ir in imbalance_ratios:
            counts = long_tailed_counts(nmax, c, ir)
            groups = shot_groups(counts)
            rows.append({"dataset": name, "IR": ir, "total": sum(counts), "n_max": counts[0], "n_min": counts[-1],
                         "many": len(groups["many"]), "medium": len(groups["medium"]), "few": len(groups["few"])})
    return pd.DataFrame(rows)


def rank_corr(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman correlation (ranks, then Pearson); NaN when either side is constant."""
    import pandas as pd

    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1]) if rx.std() > 0 and ry.std() > 0 else float("nan")


def findings(df: "Any", results: Sequence[TrainResult]) -> List[str]:
    """The conclusion's lines: per (dataset, IR) of ``df``'s CE runs (``results_frame`` of ``results``) the
    top-1 per shot group, the head - tail gap, the rank correlation of per-class accuracy with the
    training count and the published CE number, whether CE favours the head, and overall."""
    lines: List[str] = []
    holds: List[Optional[bool]] = []
    df, results = df[df["method"] == BASELINE] if len(df) else df, baseline(results)
    for (ds, ir), g in df.groupby(["dataset", "IR"], sort=False):
        groups = {k: g[k].dropna().mean() for k in ("many", "medium", "few") if g[k].notna().any()}
        rs = [r for r in results if r.config["dataset"] == ds and float(r.config["imbalance_ratio"]) == float(ir)]
        rho = np.nanmean([rank_corr(r.counts, r.last.per_class) for r in rs])
        shots = ", ".join(f"{k} {v:.1f}" for k, v in groups.items())
        if len(groups) >= 2:
            (top, a), (bottom, b) = list(groups.items())[0], list(groups.items())[-1]
            holds.append(a - b > 0)
            gap_text = f"{top} − {bottom} = {a - b:+.1f} points"
        else:
            gap_text = "a single shot group at this profile"
            holds.append(bool(rho > 0) if np.isfinite(rho) else None)
        pub = published("CE (softmax)", ds, ir)
        pub_text = f"; published CE {pub:.2f} (CB Table 2), ours {g['top1_last'].mean():.2f}" if pub is not None else ""
        lines.append(f"{ds} IR{ir:g}: top-1 per shot group {shots} ({gap_text}); rank correlation of per-class accuracy "
                     f"with training count {rho:+.2f}{pub_text} → head bias "
                     f"{verdict(holds[-1]) if holds[-1] is not None else 'cannot be checked'}.")
    known = [h for h in holds if h is not None]
    if known:
        lines.append(f"Overall: head bias in {sum(known)} of {len(known)} settings → "
                     f"{verdict(all(known), partial=any(known) and not all(known))}.")
    return lines


def _added_distortion(dataset: str, quality: int, data_root: Optional[str], test_per_class: Optional[int]) -> Tuple[float, float]:
    """(PSNR in dB, MSE) of ``dataset``'s test split re-encoded at ``quality`` against the split as loaded."""
    test = load_split(dataset, False, data_root, download=False)
    images = test.images if test_per_class is None else test.images[_first_per_class(test.targets, test_per_class)]
    re = recompress(images, quality)
    return psnr(images, re), mse(images, re)


def jpeg_table(df: "Any", data_root: Optional[str] = None, test_per_class: Optional[int] = None) -> "Any":
    """Per (dataset, IR) of ``df`` (``results_frame``) with data-copy runs: CE on the data as loaded,
    then on the data re-encoded at each quality (highest first), with the test split's PSNR and
    MSE against the data as loaded (``data_root``, ``test_per_class`` as the runs'), the seed-mean
    top-1, its standard deviation over seeds (with two or more), many and medium accuracy, and the
    change from CE on the data as loaded."""
    import pandas as pd

    cols = ["dataset", "IR", "data", "quality", "PSNR vs loaded (dB)", "added MSE", "seeds", "top1 last",
            "seed std", "change", "many", "medium"]
    rows: List[Dict[str, Any]] = []
    if df is None or len(df) == 0:
        return pd.DataFrame(rows, columns=cols)
    labels = {jpeg_label(q): q for q in range(QUALITY_RANGE[1], QUALITY_RANGE[0] - 1, -1)}
    mean = df.groupby(["method", "dataset", "IR"], sort=False).agg(
        top1=("top1_last", "mean"), std=("top1_last", "std"), many=("many", "mean"), medium=("medium", "mean"),
        seeds=("seed", "nunique"))

    def spread(m: Any) -> Optional[float]:
        return float(m["std"]) if m["seeds"] >= 2 and is_number(m["std"]) else None

    distortion: Dict[Tuple[str, int], Tuple[float, float]] = {}
    for (ds, ir), g in df.groupby(["dataset", "IR"], sort=False):
        have = sorted({labels[m] for m in g["method"] if m in labels}, reverse=True)
        if not have:
            continue
        base = mean.loc[(BASELINE, ds, ir)] if (BASELINE, ds, ir) in mean.index else None
        rows.append({"dataset": ds, "IR": ir, "data": "as loaded", "quality": None, "PSNR vs loaded (dB)": None,
                     "added MSE": 0.0, "seeds": 0 if base is None else int(base["seeds"]),
                     "top1 last": None if base is None else float(base["top1"]),
                     "seed std": None if base is None else spread(base), "change": None,
                     "many": None if base is None else float(base["many"]),
                     "medium": None if base is None else float(base["medium"])})
        for q in have:
            if (ds, q) not in distortion:
                distortion[(ds, q)] = _added_distortion(ds, q, data_root, test_per_class)
            db, err = distortion[(ds, q)]
            m = mean.loc[(jpeg_label(q), ds, ir)]
            rows.append({"dataset": ds, "IR": ir, "data": f"re-encoded at q{q}", "quality": q, "PSNR vs loaded (dB)": db,
                         "added MSE": err, "seeds": int(m["seeds"]), "top1 last": float(m["top1"]), "seed std": spread(m),
                         "change": None if base is None else float(m["top1"]) - float(base["top1"]),
                         "many": float(m["many"]), "medium": float(m["medium"])})
    return pd.DataFrame(rows, columns=cols)


def jpeg_slope(table: "Any") -> Optional[float]:
    """Least-squares slope of top-1 against added MSE over the rows of one cell of :func:`jpeg_table`
    that ran (points per unit of MSE, in 0-255 levels²); None with fewer than two distinct points."""
    g = table[[is_number(v) for v in table["top1 last"]]]
    x, y = g["added MSE"].to_numpy(float), g["top1 last"].to_numpy(float)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def _noise(base: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> str:
    """The sentence that tells the check's changes from seed noise: CE's spread over seeds on the
    data as loaded, and which qualities changed top-1 by more than twice it."""
    std, n = base.get("seed std"), base.get("seeds")
    ran = [r for r in checks if is_number(r.get("change"))]
    if not ran:
        return ""
    if not is_number(std) or not is_number(n) or n < 2:
        return (" With one run of CE on the data as loaded, the seed spread that would tell a change from noise is "
                "not measured yet.")
    inside = [f"q{int(r['quality'])}" for r in ran if abs(r["change"]) <= 2 * std]
    beyond = [f"q{int(r['quality'])}" for r in ran if abs(r["change"]) > 2 * std]
    text = f" CE on the data as loaded spreads {std:.2f} points (standard deviation over {int(n)} seeds):"
    if inside:
        text += f" {', '.join(inside)} changed top-1 by at most twice that, within the seed noise"
    if beyond:
        text += ("; " if inside else " ") + f"{', '.join(beyond)} by more than twice that"
    return text + "."


def jpeg_findings(table: "Any") -> List[str]:
    """One conclusion line per cell of :func:`jpeg_table`: the accuracy at each quality, the slope,
    and what that slope says of the copy's own compression against the published CE number."""
    lines: List[str] = []
    copy_mse = 255.0 ** 2 / 10 ** (COPY_PSNR_DB / 10)
    for (ds, ir), g in table.groupby(["dataset", "IR"], sort=False):
        recs = g.to_dict("records")
        base = recs[0]
        parts = []
        for r in recs[1:]:
            if not is_number(r["top1 last"]):
                continue
            change = f", {r['change']:+.2f}" if is_number(r["change"]) else ""
            parts.append(f"q{int(r['quality'])} ({r['PSNR vs loaded (dB)']:.1f} dB, MSE +{r['added MSE']:.0f}) "
                         f"{r['top1 last']:.2f}{change}")
        if not parts:
            continue
        head = (f"{ds}-IR{float(ir):g}, CE on the data re-encoded once more: as loaded "
                + (f"{base['top1 last']:.2f}" if is_number(base["top1 last"]) else "pending") + "; " + "; ".join(parts))
        head += "." + _noise(base, recs[1:])
        slope = jpeg_slope(g)
        if slope is None or not is_number(base["top1 last"]):
            lines.append(head)
            continue
        text = (f" Accuracy moves {10 * slope:+.2f} points per 10 levels² of added MSE (least squares over "
                f"{sum(is_number(v) for v in g['top1 last'])} runs).")
        if ds == "cifar10" and slope >= 0:
            text += (" Accuracy does not fall as distortion is added, so at this precision (one run per quality) the "
                     f"copy's own compression (q{COPY_QUALITY}) does not explain CE's gap to the published number.")
        elif ds == "cifar10":
            pub = published("CE (softmax)", ds, ir)
            est = -slope * copy_mse
            text += (f" The copy's own compression (q{COPY_QUALITY}, {COPY_PSNR_DB} dB, MSE {copy_mse:.0f} against the "
                     f"official pixels) would cost about {est:.1f} points at that slope, a linear extrapolation to "
                     "data this project does not have")
            text += (f", against CE's gap of {pub - base['top1 last']:.2f} points to the published {pub:.2f} at this "
                     "run's length." if pub is not None else ".")
        lines.append(head + text)
    return lines
