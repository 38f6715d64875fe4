"""Glue between a notebook's parameters and the engine: configs, runs, and result tables.

A notebook states *what* to run (methods as plain dicts of TrainConfig overrides, datasets,
imbalance ratios, seeds); these functions do the looping, skipping of finished runs, and the
long-form tables with the published number beside ours (SPEC §10).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .config import TrainConfig
from .data import DataNotFoundError, build_long_tailed
from .engine import TrainResult, train
from .notebook import run_dir


def check_datasets(datasets: Sequence[str], data_root: Optional[str] = None, **options: Any) -> Tuple[List[str], Dict[str, str]]:
    """Split ``datasets`` into those whose data is present and those skipped (with the reason).

    Only a missing dataset is skipped (e.g. CIFAR-100 on a machine without it); any other error,
    such as an unknown name, is raised.
    """
    ok: List[str] = []
    skipped: Dict[str, str] = {}
    for name in datasets:
        try:
            build_long_tailed(name, 1, root=data_root, download=False, **options.get(name, {}))
            ok.append(name)
        except DataNotFoundError as exc:
            skipped[name] = str(exc)
    return ok, skipped


def base_config(
    dataset: str,
    imbalance_ratio: float,
    seed: int = 0,
    epochs: int = 200,
    n_max: Optional[int] = None,
    test_per_class: Optional[int] = None,
    batch_size: int = 128,
    device: str = "auto",
    data_root: Optional[str] = None,
    **overrides: Any,
) -> TrainConfig:
    """SPEC §2's recipe for ``dataset``-LT at ``imbalance_ratio`` with a notebook's common parameters.

    Short schedules (``epochs < 200``) keep the recipe's shape: warm-up is a tenth of the epochs
    (at least 1, at most SPEC's 5) and the step milestones scale with the length (see
    :mod:`ltbench.schedules`). Unless ``lr`` is given, the base lr follows the linear scaling
    rule from SPEC's 0.1 at batch 128: ``lr = 0.1 * batch_size / 128`` (Goyal et al. 2017), so a
    smaller CPU batch keeps the recipe's lr per sample.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be a positive int")
    warmup = min(5, max(1, epochs // 10))
    overrides.setdefault("lr", 0.1 * batch_size / 128)
    data_options: Dict[str, Any] = {}
    if dataset == "synthetic":
        data_options = {"n_train_per_class": n_max or 100, "n_test_per_class": test_per_class or 20}
    fields = dict(dataset=dataset, imbalance_ratio=float(imbalance_ratio), seed=seed, epochs=epochs, n_max=n_max,
                  test_per_class=test_per_class, batch_size=batch_size, device=device, data_root=data_root,
                  warmup_epochs=warmup, data_options=data_options,
                  checkpoint_every=max(1, min(10, epochs)))
    for key in ("drw_epoch", "drs_epoch"):  # given as a fraction of training (0.8 = SPEC's epoch 160 of 200)
        frac = overrides.get(key)
        if isinstance(frac, float):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"{key}={frac!r}: a fraction of training must be in [0, 1) (0.8 = epoch 160 of 200)")
            # Kept inside the run so that a very short schedule still has its re-balanced last epoch.
            overrides[key] = min(int(round(frac * epochs)), epochs - 1)
    fields.update(overrides)
    return TrainConfig(**fields).validate()


def run_methods(
    methods: Mapping[str, Mapping[str, Any]],
    datasets: Sequence[str],
    imbalance_ratios: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | Path,
    common: Mapping[str, Any],
    meta: Mapping[str, Any],
    published_rows: Optional[Mapping[str, Optional[str]]] = None,
    trainers: Optional[Mapping[str, Tuple[type, Dict[str, Any]]]] = None,
) -> List[TrainResult]:
    """Train every (method, dataset, IR, seed) — or load it when already finished — and return the results.

    ``methods`` maps a method label to its TrainConfig overrides; ``common`` holds the notebook's
    shared parameters (epochs, n_max, test_per_class, batch_size, device, data_root);
    ``published_rows`` maps a label to its SPEC §10 row name; ``trainers`` maps a label to a
    ``(Trainer subclass, kwargs)`` pair for methods that need their own training step. Every
    configuration is validated before the first run starts, so a typo fails in seconds.
    """
    published_rows = published_rows or {}
    trainers = trainers or {}
    plan = []
    for label, overrides in methods.items():
        for ds in datasets:
            for ir in imbalance_ratios:
                for seed in seeds:
                    cfg = base_config(ds, ir, seed, **dict(common), **dict(overrides))
                    plan.append((label, cfg))
    results = []
    for label, cfg in plan:
        trainer_cls, kwargs = trainers.get(label, (None, {}))
        m = dict(meta, method=label, published_method=published_rows.get(label))
        folder = run_dir(out_dir, label, cfg.dataset, f"ir{cfg.imbalance_ratio:g}", f"seed{cfg.seed}")
        extra = {"trainer_cls": trainer_cls, **kwargs} if trainer_cls is not None else {}
        results.append(train(cfg, folder, meta=m, **extra))
    return results


def results_frame(results: Iterable[TrainResult]) -> "Any":
    """One row per run: method, dataset, IR, seed, last/best top-1, many/medium/few, ECE, published."""
    import pandas as pd

    from .published import published

    rows = []
    for r in results:
        row = r.meta.get("published_method")
        ds, ir = r.config["dataset"], r.config["imbalance_ratio"]
        rows.append({
            "method": r.meta.get("method"), "dataset": ds, "IR": int(ir) if float(ir).is_integer() else ir, "seed": r.config["seed"],
            "top1_last": r.last.top1, "top1_best": r.best_top1, "best_epoch": r.best_epoch,
            "many": r.last.many, "medium": r.last.medium, "few": r.last.few, "ece": r.last.ece,
            "published": published(row, ds, ir) if row else None, "train_s": r.train_seconds,
        })
    return pd.DataFrame(rows)


def summary_frame(df: "Any") -> "Any":
    """Mean ± std over seeds per (method, dataset, IR), with the published value and the difference."""
    import pandas as pd

    def pm(s: "pd.Series") -> str:
        s = s.dropna()
        if s.empty:
            return "-"
        return f"{s.mean():.2f}" if len(s) == 1 else f"{s.mean():.2f} ± {s.std(ddof=1):.2f}"

    out = []
    for (method, ds, ir), g in df.groupby(["method", "dataset", "IR"], sort=False):
        pub = g["published"].iloc[0]
        pub = None if pub is None or (isinstance(pub, float) and math.isnan(pub)) else float(pub)
        last = g["top1_last"].mean()
        out.append({
            "method": method, "dataset": ds, "IR": ir, "seeds": len(g),
            "top1 last": pm(g["top1_last"]), "top1 best (test-picked)": pm(g["top1_best"]),
            "many": pm(g["many"]), "medium": pm(g["medium"]), "few": pm(g["few"]), "ECE": pm(g["ece"]),
            "published": "-" if pub is None else f"{pub:.2f}",
            "last - published": "-" if pub is None else f"{last - pub:+.2f}",
        })
    return pd.DataFrame(out)
