"""The runs of a comparison of your loss with the baselines (:mod:`ltbench.compare` renders it).

The baselines are the profile's own runs of the compared cell, found in its plan
(:func:`ltbench.executor.collect`); your runs are the CE baseline's runs with the loss replaced
(same data, recipe and seeds). :func:`train_comparison` trains only what is yours, and the
baselines only with ``train_baselines``. The harvest's ``method`` steps call it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .config import TrainConfig
from .engine import TrainResult
from .executor import collect
from .experiments import PlannedRun, is_baseline
from .losses import check_loss
from .methods import joint_spec
from .parameters import ConfigError
from .plugins import PluginError, is_reference
from .runs import DONE, ExecOptions, RunSpec, RunStore, run

__all__ = ["BASELINES", "check_method", "comparison_cell", "find_baselines", "user_specs", "plan_comparison",
           "train_comparison"]

#: The baselines of a comparison: label -> published row of the plan's runs (ltbench.published).
BASELINES: Dict[str, str] = {
    "CE": "CE (softmax)",
    "CB focal": "CB focal beta 0.9999 gamma 1",
    "CE-DRW": "CE-DRW",
    "LDAM-DRW": "LDAM-DRW",
    "cRT": "cRT (re-implementation)",
    "BBN": "BBN",
}
#: The comparison's data: the cell every paper reports.
DATASET, IMBALANCE_RATIO = "cifar10", 100.0


def check_method(method: str, params: Mapping[str, Any]) -> None:
    """Refuse a method that cannot train, before any work: not a reference, not importable, a
    constructor that does not take ``params``, or a loss that is not a finite scalar."""
    if not is_reference(method):
        raise ConfigError(f"--method {method!r}: name your loss as '<file.py or module>:<Name>', e.g. "
                          "'examples/logit_adjustment.py:LogitAdjustedLoss' (docs/your_method.md)")
    try:
        check_loss(method, **dict(params))
    except (PluginError, ValueError, TypeError) as exc:
        raise ConfigError(f"--method {method!r}: {exc}") from None


def _cell_of(run: PlannedRun) -> Tuple[str, float]:
    c = run.spec.config
    return c.get("dataset"), float(c.get("imbalance_ratio", 0))


def comparison_cell(planned: Mapping[str, Sequence[PlannedRun]]) -> Optional[Tuple[str, float]]:
    """The (dataset, IR) compared: CIFAR-10 IR100 where the profile plans its CE baseline, else the
    first cell it does (the smoke profile trains IR10)."""
    cells = [_cell_of(r) for runs in planned.values() for r in runs if r.published_method == BASELINES["CE"]]
    return (DATASET, IMBALANCE_RATIO) if (DATASET, IMBALANCE_RATIO) in cells else (cells[0] if cells else None)


def find_baselines(planned: Mapping[str, Sequence[PlannedRun]],
                   cell: Optional[Tuple[str, float]] = None) -> Dict[str, List[RunSpec]]:
    """Label -> the specs (one per seed) of each baseline of :data:`BASELINES` in the plan, on ``cell``."""
    cell = cell or comparison_cell(planned)
    out: Dict[str, Dict[str, RunSpec]] = {label: {} for label in BASELINES}
    for runs in planned.values():
        for r in runs:
            for label, row in BASELINES.items():
                if _cell_of(r) == cell and r.published_method == row:
                    out[label][r.spec.key] = r.spec
    return {label: sorted(specs.values(), key=lambda s: s.config["seed"]) for label, specs in out.items() if specs}


def user_specs(method: str, params: Mapping[str, Any], ce: Sequence[RunSpec]) -> List[RunSpec]:
    """Your runs: each CE baseline run (one per seed) with its loss replaced by ``method``."""
    out = []
    for spec in ce:
        if not is_baseline(spec):
            raise ValueError(f"{spec.describe()} is not a plain CE run")
        cfg = TrainConfig.from_dict(spec.config).replace(loss=method, loss_params=dict(params))
        out.append(joint_spec(cfg))
    return out


def plan_comparison(method: str, params: Mapping[str, Any], profile: str, seeds: Optional[int] = None,
                    notebooks_dir: Union[str, Path] = "notebooks"
                    ) -> Tuple[Tuple[str, float], Dict[str, List[RunSpec]], List[RunSpec]]:
    """(the compared cell, the baselines' specs by label, your runs' specs), after checking the
    method (:func:`check_method`); nothing is read from a store or trained."""
    check_method(method, params)
    planned = collect(profile, seeds=seeds, only=["01", "02", "03", "04"], notebooks_dir=notebooks_dir)
    cell = comparison_cell(planned)
    baselines = find_baselines(planned, cell)
    if "CE" not in baselines:
        raise ConfigError(f"profile {profile!r} plans no CE baseline run: nothing to compare with")
    return cell, baselines, user_specs(method, params, baselines["CE"])


def _load_or_train(specs: Sequence[RunSpec], store: RunStore, options: ExecOptions, train: bool,
                   trained: List[str], say: Callable[..., None]) -> List[TrainResult]:
    out = []
    for spec in specs:
        was_done = store.status(spec) == DONE
        if not (was_done or train):  # checked by compare() first; a run that vanished since is not retrained here
            raise ConfigError(f"{spec.describe()} [{spec.key}] is not in {store.root}")
        out.append(run(spec, store, options))
        if not was_done:
            trained.append(spec.key)
            say(f"compare: trained {spec.describe()} [{spec.key}]")
    return out


def train_comparison(method: str, params: Mapping[str, Any], profile: str, seeds: Optional[int] = None,
                     results_dir: Union[str, Path] = "results", notebooks_dir: Union[str, Path] = "notebooks",
                     train_baselines: bool = False, device: str = "auto", verbose: bool = True,
                     deadline: Optional[float] = None, compile: Union[bool, str] = "auto", name: str = "yours"
                     ) -> Tuple[Tuple[str, float], Dict[str, List[RunSpec]], List[RunSpec], Dict[str, List[TrainResult]], List[str]]:
    """(cell, baselines, your specs, results by label (yours under ``name``), keys trained now).
    A baseline missing from the store is a ConfigError naming it, unless ``train_baselines``.
    ``deadline``: seconds after which a run stops at the end of an epoch (DeadlineReached)."""
    say = print if verbose else (lambda *a, **k: None)
    cell, baselines, mine = plan_comparison(method, params, profile, seeds, notebooks_dir)
    store = RunStore(Path(results_dir) / profile)
    missing = [f"{label} [{s.key}]" for label, specs in baselines.items() for s in specs if store.status(s) != DONE]
    if missing and not train_baselines:
        raise ConfigError(f"baselines not in {store.root}: {', '.join(missing)}; train them with `python -m ltbench "
                          f"execute --profile {profile} --only 01 02 03 04`" + (f" --seeds {seeds}" if seeds else "")
                          + ", or pass --train-baselines")
    stop_at = None if deadline is None else time.time() + deadline
    options = ExecOptions(device=device, progress="auto" if verbose else False, deadline=stop_at, compile=compile)
    trained: List[str] = []
    results = {name: _load_or_train(mine, store, options, True, trained, say)}
    for label, specs in baselines.items():
        results[label] = _load_or_train(specs, store, options, train_baselines, trained, say)
    return cell, baselines, mine, results, trained
