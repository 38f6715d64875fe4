"""Experiments: for each notebook, the runs it needs as a function of its parameters.

One module per paper (notebook). Each has ``NOTEBOOK`` (the notebook's file stem) and
``runs(**parameters) -> List[PlannedRun]``: every training run the notebook renders, as
:class:`~ltbench.runs.RunSpec` objects with the labels its tables use and a priority tier:

- tier 0: the baselines every notebook shares (CE at each imbalance ratio);
- tier 1: runs that fill a published cell (a row of ``ltbench.published`` with a number for the
  run's dataset and imbalance ratio);
- tier 2: everything else (grids, sweeps, ablations).

``runs`` can be called without executing the notebook: ``python -m ltbench plan`` enumerates a
profile's runs from the notebooks' ``parameters`` cells and the profile's overrides
(:func:`notebook_parameters`, :mod:`ltbench.executor`). A notebook calls the same function,
then :func:`materialize` (finished runs are loaded from the store, missing ones trained through
:func:`ltbench.runs.run`), then renders.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..config import TrainConfig
from ..data import DataNotFoundError, build_long_tailed
from ..data import DEFAULT_N_MAX, NUM_CLASSES
from ..data.counts import long_tailed_counts
from ..engine import TrainResult
from ..io import atomic_write_json
from ..methods import joint_spec
from ..parameters import notebook_parameters
from ..published import published
from ..runs import ExecOptions, RunSpec, RunStore, run
from ..text import gain_verdict, is_number, verdict_word

__all__ = [
    "PlannedRun", "EXPERIMENTS", "experiment", "tier_for", "materialize", "select", "notebook_parameters",
    "runs_for_notebook", "MANIFEST", "TIERS", "is_baseline", "dedupe", "base_config", "check_datasets",
    "results_frame", "gain_findings", "split_shift", "cell_counts", "planned", "write_manifest", "choose", "pending",
]

#: Priority tiers, most valuable first.
TIERS = (0, 1, 2)
#: The file a notebook's :func:`materialize` writes into its ``out_dir``: label -> run key, for the report.
MANIFEST = "runs.json"

#: Notebook stem -> module of this package.
EXPERIMENTS: Dict[str, str] = {
    "01_long_tailed_cifar": "long_tailed_cifar",
    "02_focal_and_balanced_ce": "focal_and_balanced_ce",
    "03_class_balanced_loss": "class_balanced_loss",
    "04_bbn_and_two_stage": "bbn_and_two_stage",
    "05_equalization_losses": "equalization_losses",
    "06_feature_space_augmentation": "feature_space_augmentation",
    "07_ohem": "ohem",
}


@dataclass(frozen=True)
class PlannedRun:
    """One run a notebook renders: its spec, its label in the notebook's tables and its tier.

    ``published_method`` names a row of :mod:`ltbench.published`; ``tags`` are extra labels the
    notebook selects by (``section``, ``representation``, ``variant``, ...).
    """

    spec: RunSpec
    label: str
    tier: int
    notebook: str
    paper: str
    table: str
    published_method: Optional[str] = None
    tags: Tuple[Tuple[str, Any], ...] = ()

    def meta(self) -> Dict[str, Any]:
        """The labels a materialised result carries in ``result.meta``."""
        return {"notebook": self.notebook, "paper": self.paper, "table": self.table, "method": self.label,
                "published_method": self.published_method, "tier": self.tier, "key": self.spec.key,
                "run": self.spec.method, **dict(self.tags)}


def is_baseline(spec: RunSpec) -> bool:
    """The CE baseline: a plain joint ResNet-32 run with CE, instance sampling, no deferred switch."""
    c = spec.config
    return (spec.method == "joint" and c.get("loss") == "ce" and c.get("sampler") == "instance"
            and c.get("drw_epoch") is None and c.get("drs_epoch") is None and c.get("classifier") == "linear"
            and c.get("model") == "resnet32")


def tier_for(spec: RunSpec, published_method: Optional[str]) -> int:
    """0 for the CE baseline, 1 when ``published_method`` has a number at the run's dataset and
    imbalance ratio, else 2."""
    if is_baseline(spec):
        return 0
    if published_method:
        c = spec.config
        if published(published_method, c["dataset"], c["imbalance_ratio"]) is not None:
            return 1
    return 2


def planned(spec: RunSpec, label: str, notebook: str, paper: str, table: str,
            published_method: Optional[str] = None, tier: Optional[int] = None, **tags: Any) -> PlannedRun:
    """A :class:`PlannedRun` with its tier from :func:`tier_for` unless given."""
    return PlannedRun(spec, label, tier_for(spec, published_method) if tier is None else tier, notebook, paper, table,
                      published_method, tuple(sorted(tags.items())))


def experiment(stem: str) -> Any:
    """The experiment module of notebook ``stem`` (ValueError naming the valid stems)."""
    if stem not in EXPERIMENTS:
        raise ValueError(f"unknown notebook: {stem!r}; valid: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[stem]}")


def dedupe(runs: Iterable[PlannedRun]) -> List[PlannedRun]:
    """Planned runs with each (label, spec) once, in first-seen order."""
    seen, out = set(), []
    for r in runs:
        k = (r.label, r.spec.key, r.tags)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------
# Notebook parameters without executing the notebook


def runs_for_notebook(stem: str, parameters: Mapping[str, Any]) -> List[PlannedRun]:
    """The planned runs of notebook ``stem`` with ``parameters`` (unused keys are ignored)."""
    mod = experiment(stem)
    sig = inspect.signature(mod.runs)
    kwargs = {k: v for k, v in parameters.items() if k in sig.parameters}
    return mod.runs(**kwargs)


# --------------------------------------------------------------------------------------------
# Materialising runs for a notebook


def pending(runs: Sequence[PlannedRun], store: Union[RunStore, str, os.PathLike],
            weights: Iterable[RunSpec] = ()) -> List[PlannedRun]:
    """The runs of ``runs`` that ``materialize(..., train=False)`` leaves out: not finished in
    ``store``, or finished without the last-epoch checkpoint that ``weights`` asks for."""
    store = RunStore(store)
    need_weights = {s.key for s in weights}
    missing: Dict[str, bool] = {}
    for r in runs:
        key = r.spec.key
        if key not in missing:
            missing[key] = store.load(r.spec) is None or (key in need_weights and not store.has_weights(r.spec))
    return [r for r in runs if missing[r.spec.key]]


def materialize(runs: Sequence[PlannedRun], store: Union[RunStore, str, os.PathLike], out_dir: Optional[Union[str, os.PathLike]] = None,
                device: str = "auto", data_root: Optional[str] = None, progress: Union[bool, str] = "auto",
                weights: Iterable[RunSpec] = (), train: bool = True) -> List[TrainResult]:
    """The results of ``runs`` in order, each with its labels in ``result.meta``.

    Finished runs are loaded from ``store``; missing ones are trained through
    :func:`ltbench.runs.run` (shared runs once). ``weights``: specs whose last-epoch checkpoint the
    notebook loads (analyses), rebuilt if missing. ``train=False`` trains nothing: the runs of
    :func:`pending` are left out of the results (a render of what a harvest has finished so far).
    With ``out_dir`` the notebook's manifest (``runs.json``: label, tier, tags, run key and status
    of every run) is written there for the report.
    """
    if not isinstance(train, bool):
        raise ValueError(f"train={train!r}: expected True (train the missing runs) or False (leave them out)")
    store = RunStore(store)
    weights = list(weights)
    options = ExecOptions(device=device, data_root=data_root, progress=progress)
    skipped = set() if train else {r.spec.key for r in pending(runs, store, weights)}
    cache: Dict[str, TrainResult] = {}
    need_weights = {s.key for s in weights}
    out: List[TrainResult] = []
    for r in runs:
        key = r.spec.key
        if key in skipped:
            continue
        if key not in cache:
            cache[key] = run(r.spec, store, options, require_weights=key in need_weights)
        out.append(dataclasses.replace(cache[key], meta={**cache[key].meta, **r.meta()}))
    for s in weights:
        if train and s.key not in cache:
            run(s, store, options, require_weights=True)
    if out_dir is not None:
        write_manifest(runs, store, out_dir, pending_keys=skipped)
    return out


def write_manifest(runs: Sequence[PlannedRun], store: RunStore, out_dir: Union[str, os.PathLike],
                   pending_keys: Iterable[str] = ()) -> Path:
    """``out_dir/runs.json``: the notebook's runs with their labels, the run folder relative
    to ``out_dir`` (so a moved results folder keeps working) and their ``status``: ``pending``
    for the runs of ``pending_keys`` (left out of this render), else ``done``."""
    out = Path(out_dir)
    pending_keys = set(pending_keys)
    rows = []
    for r in runs:
        rel = os.path.relpath(store.folder(r.spec).resolve(), out.resolve())
        rows.append({"label": r.label, "key": r.spec.key, "method": r.spec.method, "tier": r.tier,
                     "notebook": r.notebook, "paper": r.paper, "table": r.table,
                     "published_method": r.published_method, "tags": dict(r.tags), "run_dir": Path(rel).as_posix(),
                     "status": "pending" if r.spec.key in pending_keys else "done"})
    return atomic_write_json(out / MANIFEST, {"schema": 1, "runs": rows})


def select(results: Sequence[TrainResult], **labels: Any) -> List[TrainResult]:
    """The results whose ``meta`` (or config) matches every ``labels`` item, e.g.
    ``select(results, section="grid", dataset="cifar10")``."""
    def value(r: TrainResult, k: str) -> Any:
        if k in r.meta:
            return r.meta[k]
        if k == "IR":
            return float(r.config["imbalance_ratio"])
        return r.config.get(k)

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return float(a) == float(b)
        return a == b

    return [r for r in results if all(same(value(r, k), v) for k, v in labels.items())]


def common_config(dataset: str, imbalance_ratio: float, seed: int, epochs: int, n_max: Optional[int],
                  test_per_class: Optional[int], batch_size: int, eval_every: int, **overrides: Any) -> TrainConfig:
    """The notebooks' shared recipe: :func:`base_config` with their parameters."""
    return base_config(dataset, imbalance_ratio, seed, epochs=epochs, n_max=n_max, test_per_class=test_per_class,
                       batch_size=batch_size, eval_every=eval_every, **overrides)


def choose(methods: Mapping[str, Any], chosen: Optional[Sequence[str]], name: str = "methods") -> Dict[str, Any]:
    """The entries of ``methods`` named in ``chosen`` (all when None), in ``methods``' order;
    a ValueError naming unknown ones."""
    check_choice(name, chosen, methods)
    return {k: v for k, v in methods.items() if chosen is None or k in chosen}


def check_choice(name: str, chosen: Optional[Sequence[str]], valid: Iterable[str]) -> None:
    """Raise a ValueError naming ``name``, the unknown values and the valid ones."""
    valid = list(valid)
    unknown = sorted(set(chosen or []) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown {unknown}; valid: {valid}")


def grid(datasets: Sequence[str], imbalance_ratios: Sequence[float], seeds: Sequence[int]) -> List[Tuple[str, float, int]]:
    """(dataset, IR, seed) in the notebooks' loop order."""
    for name, v in (("datasets", datasets), ("imbalance_ratios", imbalance_ratios), ("seeds", seeds)):
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
            raise ValueError(f"{name}={v!r}: must be a list")
    return [(ds, ir, seed) for ds in datasets for ir in imbalance_ratios for seed in seeds]


def label_runs(methods: Mapping[str, Mapping[str, Any]], datasets: Sequence[str], imbalance_ratios: Sequence[float],
               seeds: Sequence[int], recipe: Mapping[str, Any], notebook: str, paper: str, table: str,
               published_rows: Optional[Mapping[str, Optional[str]]] = None, **tags: Any) -> List[PlannedRun]:
    """Joint runs of ``methods`` (label -> TrainConfig overrides) at every (dataset, IR, seed)."""
    published_rows = published_rows or {}
    out = []
    for label, overrides in methods.items():
        for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
            spec = joint_spec(common_config(ds, ir, seed, **recipe, **dict(overrides)))
            out.append(planned(spec, label, notebook, paper, table, published_rows.get(label), **tags))
    return out


RECIPE_KEYS = ("epochs", "n_max", "test_per_class", "batch_size", "eval_every", "amp_cpu")


# --------------------------------------------------------------------------------------------
# The recipe and result tables

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
    val_per_class: Any = "auto",
    **overrides: Any,
) -> TrainConfig:
    """docs/methods.md §2's recipe for ``dataset``-LT at ``imbalance_ratio`` with a notebook's common parameters.

    Short schedules (``epochs < 200``) keep the recipe's shape: warm-up is a tenth of the epochs
    (at least 1, at most SPEC's 5) and the step milestones scale with the length (see
    :mod:`ltbench.schedules`). Unless ``lr`` is given, the base lr follows the linear scaling
    rule from SPEC's 0.1 at batch 128: ``lr = 0.1 * batch_size / 128`` (Goyal et al. 2017), so a
    smaller CPU batch keeps the recipe's lr per sample. ``val_per_class="auto"``: a balanced
    validation split of 100 unused training images per class where every class has that many
    (CIFAR-10-LT), else none (CIFAR-100-LT's head classes use all their images): model selection
    (best epoch, tau) without the test set. A balanced test subset (``test_per_class``) caps it:
    a split larger than the test set would cost more to evaluate than the selection is worth.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be a positive int")
    warmup = min(5, max(1, epochs // 10))
    if val_per_class == "auto":
        val_per_class = auto_val_per_class(dataset, float(imbalance_ratio), n_max, test_per_class)
    overrides.setdefault("lr", 0.1 * batch_size / 128)
    data_options: Dict[str, Any] = {}
    if dataset == "synthetic":
        data_options = {"n_train_per_class": n_max or 100, "n_test_per_class": test_per_class or 20}
    fields = dict(dataset=dataset, imbalance_ratio=float(imbalance_ratio), seed=seed, epochs=epochs, n_max=n_max,
                  test_per_class=test_per_class, val_per_class=val_per_class, batch_size=batch_size, device=device, data_root=data_root,
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


#: Validation images per class that base_config draws where the data allows it.
VAL_PER_CLASS = 100


def auto_val_per_class(dataset: str, imbalance_ratio: float, n_max: Optional[int],
                       test_per_class: Optional[int] = None) -> Optional[int]:
    """:data:`VAL_PER_CLASS` (at most ``test_per_class``, where the test set is a balanced subset)
    if every class of ``dataset``-LT leaves that many training images unused (CIFAR-10-LT at any
    IR; CIFAR-100-LT never: its class 0 keeps all 500), else None."""
    if dataset not in NUM_CLASSES:
        return None
    avail = DEFAULT_N_MAX[dataset]
    counts = long_tailed_counts(n_max or avail, NUM_CLASSES[dataset], imbalance_ratio)
    capped = isinstance(test_per_class, int) and not isinstance(test_per_class, bool) and test_per_class > 0
    per_class = min(VAL_PER_CLASS, test_per_class) if capped else VAL_PER_CLASS  # else TrainConfig names it
    return per_class if avail - max(counts) >= per_class else None


def results_frame(results: Iterable[TrainResult]) -> "Any":
    """One row per run: method, dataset, IR, seed, last/best top-1, many/medium/few, ECE, published."""
    import pandas as pd

    rows = []
    for r in results:
        row = r.meta.get("published_method")
        ds, ir = r.config["dataset"], r.config["imbalance_ratio"]
        rows.append({
            "method": r.meta.get("method"), "dataset": ds, "IR": int(ir) if float(ir).is_integer() else ir, "seed": r.config["seed"],
            "top1_last": r.last.top1, "top1_best": r.best_top1, "best_epoch": r.best_epoch,
            "top1_at_best_val": r.val.get("top1_at_best_val"), "best_epoch_val": r.val.get("best_epoch_val"),
            "many": r.last.many, "medium": r.last.medium, "few": r.last.few, "ece": r.last.ece,
            "published": published(row, ds, ir) if row else None, "train_s": r.train_seconds,
        })
    return pd.DataFrame(rows)


def cell_counts(results: Iterable[TrainResult]) -> Dict[Tuple[str, Any], List[int]]:
    """The training counts per class of each (dataset, IR) cell of ``results``, keyed as
    :func:`results_frame` writes them (the first run of a cell; every run of a cell shares its subset)."""
    out: Dict[Tuple[str, Any], List[int]] = {}
    for r in results:
        ir = r.config["imbalance_ratio"]
        out.setdefault((r.config["dataset"], int(ir) if float(ir).is_integer() else ir), list(r.counts))
    return out


def gain_findings(df: "Any", baseline: str = "CE", epochs: Optional[int] = None,
                  context: Optional[Mapping[str, str]] = None) -> List[str]:
    """One line per (method, dataset, IR) of ``df`` (:func:`results_frame`) that has a published
    number: the published gain over ``baseline``, ours (the last-epoch difference per seed, paired
    by seed, mean ± std), and whether the claim holds by :func:`~ltbench.text.gain_verdict` (a
    gain, a loss, or no difference when the published gain is inside the band). With several seeds
    the line says whether the mean exceeds the seed spread. A line whose claim falls short ends with
    where ours moved (:func:`split_shift`) and the method's sentence of ``context`` (label -> text),
    if any: what is known about why, stated as read or measured."""
    import numpy as np

    lines: List[str] = []
    if df is None or len(df) == 0:
        return lines
    for (ds, ir), g in df.groupby(["dataset", "IR"], sort=False):
        base = g[g["method"] == baseline]
        if base.empty or base["published"].isna().all():
            continue
        pub_base = float(base["published"].dropna().iloc[0])
        base_by_seed = dict(zip(base["seed"], base["top1_last"]))
        for method, m in g[g["method"] != baseline].groupby("method", sort=False):
            pub = m["published"].dropna()
            pairs = [(t - base_by_seed[sd]) for sd, t in zip(m["seed"], m["top1_last"]) if sd in base_by_seed]
            if pub.empty or not pairs:
                continue
            pub_gain = float(pub.iloc[0]) - pub_base
            mean = float(np.mean(pairs))
            spread, sd_ = "", None
            if len(pairs) > 1:
                sd_ = float(np.std(pairs, ddof=1))
                spread = (f" ± {sd_:.2f} over {len(pairs)} seeds, "
                          f"{'beyond' if abs(mean) > sd_ else 'within'} the seed spread")
            at = f" at {epochs} epochs" if epochs else ""
            word = gain_verdict(mean, pub_gain, sd_)
            # Where a claim falls short, say where the accuracy moved: the mechanism may work on the
            # tail yet cost the head more than it gives.
            short = verdict_word(word) != "holds"
            where = split_shift(m, base) + (f" {context[method]}" if context and method in context else "") if short else ""
            lines.append(f"{method} vs {baseline}, {ds}-IR{float(ir):g}: published {pub_gain:+.2f} points "
                         f"({float(pub.iloc[0]):.2f} vs {pub_base:.2f}); ours {mean:+.2f}{spread}{at} → "
                         f"{word}.{where}")
    return lines


#: The class groups of docs/methods.md §1 (many > 100 images, medium 20-100, few < 20).
SPLITS = ("many", "medium", "few")


def split_shift(runs: "Any", base: "Any") -> str:
    """`` Per split, ours − baseline: many -7.89, medium +22.00.``: the seed-paired mean change of
    each class group's accuracy of ``runs`` over ``base`` (rows of :func:`results_frame`), the
    groups without classes left out; ``""`` when no group can be paired."""
    import numpy as np

    parts = []
    for split in SPLITS:
        if split not in runs or split not in base:
            continue
        ref = {sd: v for sd, v in zip(base["seed"], base[split]) if is_number(v) and not np.isnan(v)}
        d = [v - ref[sd] for sd, v in zip(runs["seed"], runs[split]) if sd in ref and is_number(v) and not np.isnan(v)]
        if d:
            parts.append(f"{split} {float(np.mean(d)):+.2f}")
    return f" Per split, ours − baseline: {', '.join(parts)}." if parts else ""

