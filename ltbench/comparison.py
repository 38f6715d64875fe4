"""The runs of a comparison of your loss with the baselines (:mod:`ltbench.compare` renders it).

The baselines are the profile's own runs of the compared cell, found in its plan
(:func:`ltbench.executor.collect`); your runs are the CE baseline's runs (same data, recipe and
seeds) with the loss replaced, or, for a training-step method (a ``Trainer`` subclass or a
``Method``), trained by that method instead. :func:`train_comparison` trains only what is yours, and the
baselines only with ``train_baselines``. The harvest's ``method`` steps call it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .config import TrainConfig
from .engine import Trainer, TrainResult
from .executor import collect
from .experiments import PlannedRun, is_baseline
from .losses import check_loss
from .methods import joint_spec
from .parameters import ConfigError
from .plugins import PluginError, is_reference, load
from .profiles import COMPARISON_NOTEBOOK
from .runs import DONE, METHODS, ExecOptions, Method, RunSpec, RunStore, make_spec, run

__all__ = ["BASELINES", "BASELINE_NOTEBOOKS", "NOTEBOOK", "PUBLISHED_FIELDS", "default_name", "check_method",
           "is_step_method", "published_of", "comparison_cell", "find_baselines", "user_specs", "plan_comparison",
           "planned_runs", "check_baselines", "train_comparison", "OPTIONAL_BASELINES", "ORDER"]

#: The baselines of a comparison: label -> published row of the plan's runs (ltbench.published).
BASELINES: Dict[str, str] = {
    "CE": "CE (softmax)",
    "CB focal": "CB focal beta 0.9999 gamma 1",
    "CE-DRW": "CE-DRW",
    "LDAM-DRW": "LDAM-DRW",
    "cRT": "cRT (re-implementation)",
    "BBN": "BBN",
}
#: Baselines without a published number, found by their label in the plan (label -> notebook label):
#: compared when in the store, left out (and named) when not trained yet, never an error.
OPTIONAL_BASELINES: Dict[str, str] = {"balanced CE": "balanced CE (power 1)"}
#: The order of the table's rows.
ORDER = ("CE", "balanced CE", "CB focal", "CE-DRW", "LDAM-DRW", "cRT", "BBN")
#: The comparison's data: the cell every paper reports.
DATASET, IMBALANCE_RATIO = "cifar10", 100.0
#: The notebooks whose plans hold the baselines.
BASELINE_NOTEBOOKS = ["01", "02", "03", "04"]
#: The notebook of a comparison (notebooks/08_your_method.ipynb) and the tier of your runs in it.
NOTEBOOK, USER_TIER = COMPARISON_NOTEBOOK, 2


def default_name(method: str, params: Mapping[str, Any]) -> str:
    """The label of your runs (and the folder of the comparison) when none is given: the class
    name, with the parameters, so that two settings never write over each other's results."""
    base = method.rpartition(":")[2]
    return f"{base} ({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})" if params else base


def planned_runs(method: str, params: Mapping[str, Any], profile: str, seeds: Optional[int] = None,
                 notebooks_dir: Union[str, Path] = "notebooks", name: Optional[str] = None,
                 overrides: Optional[Mapping[str, Any]] = None) -> Tuple[Tuple[str, float], List[PlannedRun]]:
    """(the compared cell, the comparison's runs as a notebook plans them): your runs labelled
    ``name`` (tier :data:`USER_TIER`), then each baseline's runs labelled as in :data:`BASELINES`,
    all in notebook :data:`NOTEBOOK` (:func:`ltbench.experiments.materialize` gets them)."""
    name = name or default_name(method, params)
    cell, baselines, mine = plan_comparison(method, params, profile, seeds, notebooks_dir, overrides)
    paper = f"Your method ({method})"
    out = [PlannedRun(s, name, USER_TIER, NOTEBOOK, paper, "comparison", tags=(("role", "yours"),)) for s in mine]
    out += [_baseline_run(s, label, paper) for label, specs in baselines.items() for s in specs]
    return cell, out


def _baseline_run(spec: RunSpec, label: str, paper: str = "") -> PlannedRun:
    role = (("role", "baseline"),)
    if label in OPTIONAL_BASELINES:
        return PlannedRun(spec, label, 2, NOTEBOOK, paper, "comparison", tags=role)
    return PlannedRun(spec, label, 0 if label == "CE" else 1, NOTEBOOK, paper, "comparison", BASELINES[label], role)


def check_baselines(planned: Sequence[PlannedRun], store: RunStore, profile: str, seeds: Optional[int] = None,
                    train_baselines: bool = False) -> Tuple[List[PlannedRun], List[str]]:
    """(the runs to materialise, the optional baselines left out): a baseline of ``planned`` not
    finished in ``store`` is a ConfigError naming each and the ``execute`` command that trains
    them, unless ``train_baselines``; an optional one (:data:`OPTIONAL_BASELINES`) is left out
    instead, with all its seeds, and named in the second list."""
    if train_baselines:
        return list(planned), []
    missing = [r for r in planned if dict(r.tags).get("role") == "baseline" and store.status(r.spec) != DONE]
    required = [f"{r.label} [{r.spec.key}]" for r in missing if r.label not in OPTIONAL_BASELINES]
    if required:
        raise ConfigError(f"baselines not in {store.root}: {', '.join(dict.fromkeys(required))}; train them with "
                          f"`python -m ltbench execute --profile {profile} --only {' '.join(BASELINE_NOTEBOOKS)}`"
                          + (f" --seeds {seeds}" if seeds else "") + ", or pass --train-baselines")
    out_labels = {r.label for r in missing}
    skipped = list(dict.fromkeys(f"{r.label} [{r.spec.key}]" for r in missing))
    return [r for r in planned if r.label not in out_labels], skipped


def is_step_method(method: str) -> bool:
    """Whether the reference ``method`` names a training-step method (a ``Method`` or a ``Trainer``
    subclass) rather than a loss."""
    obj = load(method)
    return isinstance(obj, Method) or (isinstance(obj, type) and issubclass(obj, Trainer))


#: The fields of a method's ``PUBLISHED`` attribute (its published number and its own baseline's).
PUBLISHED_FIELDS = ("source", "dataset", "imbalance_ratio", "top1", "baseline_top1")


def published_of(method: str) -> Optional[Dict[str, Any]]:
    """The ``PUBLISHED`` dict a method's class declares (:data:`PUBLISHED_FIELDS`), or None; a
    malformed one is a ValueError naming what is missing."""
    pub = getattr(load(method), "PUBLISHED", None)
    if pub is None:
        return None
    missing = [f for f in PUBLISHED_FIELDS if not isinstance(pub, Mapping) or f not in pub]
    if missing:
        raise ValueError(f"PUBLISHED must be a dict with {', '.join(PUBLISHED_FIELDS)}; missing {missing}")
    bad = [f"{f}={pub[f]!r}" for f in ("imbalance_ratio", "top1", "baseline_top1")
           if isinstance(pub[f], bool) or not isinstance(pub[f], (int, float))]
    if bad:
        raise ValueError(f"PUBLISHED: {', '.join(bad)} must be numbers (top-1 in %, the imbalance ratio)")
    return dict(pub)


def check_method(method: str, params: Mapping[str, Any]) -> None:
    """Refuse a method that cannot train, before any work: not a reference, not importable, a
    constructor that does not take ``params``, a loss that is not a finite scalar, or a
    training-step method whose parameters are not ``params``' (checked again on each run's spec)."""
    if not is_reference(method):
        raise ConfigError(f"--method {method!r}: name your loss or Trainer subclass as '<file.py or module>:<Name>', "
                          "e.g. 'examples/logit_adjustment.py:LogitAdjustedLoss' (docs/your_method.md)")
    try:
        if is_step_method(method):
            unknown = sorted(set(params) - set(METHODS.get(method).params))
            if unknown:
                raise ValueError(f"does not take parameter(s) {unknown}; its parameters: "
                                 f"{', '.join(METHODS.get(method).params) or 'none'}")
        else:
            check_loss(method, **dict(params))
        published_of(method)
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
    """Label -> the specs (one per seed) of each baseline of :data:`BASELINES` (by published row)
    and :data:`OPTIONAL_BASELINES` (by label) in the plan, on ``cell``, in the order :data:`ORDER`."""
    cell = cell or comparison_cell(planned)
    out: Dict[str, Dict[str, RunSpec]] = {label: {} for label in ORDER}
    for runs in planned.values():
        for r in runs:
            if _cell_of(r) != cell:
                continue
            for label in ORDER:
                if (r.published_method == BASELINES[label] if label in BASELINES
                        else r.label == OPTIONAL_BASELINES[label]):
                    out[label][r.spec.key] = r.spec
    return {label: sorted(specs.values(), key=lambda s: s.config["seed"]) for label, specs in out.items() if specs}


def user_specs(method: str, params: Mapping[str, Any], ce: Sequence[RunSpec]) -> List[RunSpec]:
    """Your runs: each CE baseline run (one per seed) with its loss replaced by ``method``, or
    trained by ``method`` where it is a training-step method (:func:`is_step_method`)."""
    step = is_step_method(method)
    out = []
    for spec in ce:
        if not is_baseline(spec):
            raise ValueError(f"{spec.describe()} is not a plain CE run")
        cfg = TrainConfig.from_dict(spec.config)
        try:
            out.append(make_spec(method, cfg, **dict(params)) if step
                       else joint_spec(cfg.replace(loss=method, loss_params=dict(params))))
        except ValueError as exc:
            raise ConfigError(f"--method {method!r}: {exc}") from None
    return out


def plan_comparison(method: str, params: Mapping[str, Any], profile: str, seeds: Optional[int] = None,
                    notebooks_dir: Union[str, Path] = "notebooks", overrides: Optional[Mapping[str, Any]] = None
                    ) -> Tuple[Tuple[str, float], Dict[str, List[RunSpec]], List[RunSpec]]:
    """(the compared cell, the baselines' specs by label, your runs' specs), after checking the
    method (:func:`check_method`); nothing is read from a store or trained. ``overrides``: of the
    baseline notebooks' parameters, as for ``plan`` (e.g. ``{"datasets": ["synthetic"]}``)."""
    check_method(method, params)
    planned = collect(profile, seeds=seeds, only=BASELINE_NOTEBOOKS, overrides=overrides, notebooks_dir=notebooks_dir)
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
                     ) -> Tuple[Tuple[str, float], Dict[str, List[RunSpec]], List[RunSpec], Dict[str, List[TrainResult]],
                                List[str], List[str]]:
    """(cell, baselines, your specs, results by label (yours under ``name``), optional baselines
    left out, keys trained now). A baseline missing from the store is a ConfigError naming it, an
    optional one is left out (:func:`check_baselines`), unless ``train_baselines``.
    ``deadline``: seconds after which a run stops at the end of an epoch (DeadlineReached)."""
    say = print if verbose else (lambda *a, **k: None)
    cell, baselines, mine = plan_comparison(method, params, profile, seeds, notebooks_dir)
    store = RunStore(Path(results_dir) / profile)
    kept, skipped = check_baselines([_baseline_run(s, label) for label, specs in baselines.items() for s in specs],
                                    store, profile, seeds, train_baselines)
    baselines = {label: specs for label, specs in baselines.items() if label in {r.label for r in kept}}
    if skipped:
        say(f"compare: not in the store yet, left out: {', '.join(skipped)}")
    stop_at = None if deadline is None else time.time() + deadline
    options = ExecOptions(device=device, progress="auto" if verbose else False, deadline=stop_at, compile=compile)
    trained: List[str] = []
    results = {name: _load_or_train(mine, store, options, True, trained, say)}
    for label, specs in baselines.items():
        results[label] = _load_or_train(specs, store, options, train_baselines, trained, say)
    return cell, baselines, mine, results, skipped, trained
