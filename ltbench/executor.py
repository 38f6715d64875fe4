"""Plan and execute a profile's runs without opening a notebook.

``python -m ltbench plan --profile P`` lists the unique runs of every notebook of profile ``P``
(a run shared by several notebooks once; dependencies included), with its priority tier, its
estimated cost in training image-passes and its status in the store ``results/<P>/``.
``python -m ltbench execute --profile P [--tiers 0,1] [--deadline S] [--workers K]`` trains the
pending ones, most valuable first (tier order; a run's dependencies before it), in K worker
processes. At the deadline every worker finishes its current epoch, checkpoints and stops; the
next call resumes. The notebooks then find their runs finished and only render.

A run's notebooks, parameters and labels come from :mod:`ltbench.experiments` with the notebook's
own ``parameters`` cell and the profile's overrides (:mod:`ltbench.profiles`), exactly as the
notebook will see them under ``python -m ltbench run``.
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .engine import stop_requested
from .experiments import EXPERIMENTS, TIERS, PlannedRun, notebook_parameters, runs_for_notebook
from .profiles import check_profile, resolve_overrides
from .runs import DONE, METHODS, PARTIAL, PENDING, DeadlineReached, ExecOptions, RunLocked, RunSpec, RunStore, run

__all__ = ["PlanEntry", "collect", "plan", "execute", "ExecuteReport", "cost", "train_size", "check_tiers", "pack_units",
           "check_data_available", "format_plan"]

#: Per-class size of the full CIFAR training sets.
_CIFAR = {"cifar10": (10, 5000), "cifar100": (100, 500)}


@dataclass
class PlanEntry:
    """One unique run of a profile: its spec, tier, the notebooks and labels that use it, status
    in the store, estimated cost (training image-passes), the keys of its dependencies and, for a
    partial run, the epochs its checkpoint has already trained."""

    spec: RunSpec
    tier: int
    notebooks: List[str]
    labels: List[str]
    status: str
    cost: Optional[float]
    deps: List[str] = field(default_factory=list)
    epochs_done: int = 0

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def cost_left(self) -> float:
        """Image-passes still to train: none once done; a partial run resumes after its epochs."""
        if self.status == DONE or not self.cost:
            return 0.0
        epochs = int(self.spec.config.get("epochs") or 0)
        return self.cost * (1.0 - min(self.epochs_done, epochs) / epochs) if epochs > 0 else self.cost

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "tier": self.tier, "status": self.status, "cost": self.cost,
                "epochs_done": self.epochs_done,
                "method": self.spec.method, "label": " / ".join(self.labels), "labels": self.labels,
                "notebooks": self.notebooks, "deps": self.deps, "description": self.spec.describe()}


# --------------------------------------------------------------------------------------------
# Cost


def train_size(config: Mapping[str, Any]) -> Optional[int]:
    """Images per epoch of a run's configuration (None for datasets whose size needs the data)."""
    from .data.counts import long_tailed_counts

    num = (config.get("sampler_params") or {}).get("num_samples")
    if isinstance(num, int) and num > 0:
        return num
    ds, opts = config.get("dataset"), dict(config.get("data_options") or {})
    if ds in _CIFAR:
        c, n = _CIFAR[ds]
    elif ds == "synthetic":
        c, n = int(opts.get("num_classes", 10)), int(opts.get("n_train_per_class", 100))
    else:
        return None
    n_max = config.get("n_max") or n
    return sum(long_tailed_counts(n_max, c, float(config["imbalance_ratio"]), config.get("lt_profile", "exp")))


def cost(spec: RunSpec) -> Optional[float]:
    """Estimated training image-passes of ``spec`` (method factor x epochs x images per epoch;
    a forward-only pass counts a third). Dependencies are costed separately."""
    size = train_size(spec.config)
    if size is None:
        return None
    return METHODS.get(spec.method).cost * int(spec.config["epochs"]) * size


# --------------------------------------------------------------------------------------------
# Planning


def check_tiers(tiers: Optional[Iterable[int]]) -> Optional[List[int]]:
    """Validate ``tiers`` (None = all)."""
    if tiers is None:
        return None
    out = []
    for t in tiers:
        if isinstance(t, bool) or not isinstance(t, int) or t not in TIERS:
            raise ValueError(f"unknown tier {t!r}: valid tiers are {', '.join(map(str, TIERS))} "
                             "(0: shared baselines, 1: published cells, 2: everything else)")
        out.append(t)
    if not out:
        raise ValueError("tiers is empty: give at least one of 0, 1, 2")
    return sorted(set(out))


def _wrong_type(value: Any, default: Any) -> Optional[str]:
    """Why ``value`` cannot replace a parameter whose notebook default is ``default`` (None: it can);
    the same rule as the runner's check of papermill parameters."""
    from .runner import _element_problem, _type_ok

    if default is None or value is None:
        return None
    expected = next(t for t in (bool, int, float, str, list, tuple, dict, object) if isinstance(default, t))
    if not _type_ok(value, expected):
        return f"expected {expected.__name__}"
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return _element_problem(value, default)
    return None


def collect(profile: str, seeds: Optional[int] = None, only: Optional[Iterable[str]] = None,
            overrides: Optional[Mapping[str, Any]] = None,
            notebooks_dir: Union[str, os.PathLike] = "notebooks") -> Dict[str, List[PlannedRun]]:
    """Notebook stem -> its planned runs under ``profile``, from the notebook's ``parameters``
    cell, the profile's overrides and ``overrides`` (``name`` or ``"<notebook>:name"``, as for
    ``ltbench run``). ``seeds=N`` means ``seeds=list(range(N))``."""
    from .runner import ConfigError, _split_overrides, outside_clone_hint, select_notebooks

    try:
        check_profile(profile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    nb_dir = Path(notebooks_dir)
    available = [s for s in EXPERIMENTS if (nb_dir / f"{s}.ipynb").is_file()]
    if not available:
        raise ConfigError(f"no notebooks of the project found in {nb_dir} (expected {', '.join(EXPERIMENTS)})"
                          + outside_clone_hint(nb_dir, "notebooks"))
    stems = select_notebooks(available, only)
    common, scoped = _split_overrides(dict(overrides or {}), available)
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"seeds={seeds!r}: expected a positive number of seeds")
        common["seeds"] = list(range(seeds))
    out = {}
    for stem in stems:
        params = notebook_parameters(nb_dir / f"{stem}.ipynb")
        layer = resolve_overrides(profile, stem, {**common, **scoped.get(stem, {})})
        unknown = sorted(set(layer) - set(params))
        if unknown:
            raise ConfigError(f"{stem}: unknown parameter(s) {unknown}; its parameters: {', '.join(params)}")
        for key, value in layer.items():
            why = _wrong_type(value, params[key])
            if why:
                raise ConfigError(f"{stem}: parameter {key!r} = {value!r} ({type(value).__name__}) has the wrong "
                                  f"type: {why} (notebook default: {params[key]!r})")
        params.update(layer)
        try:
            out[stem] = runs_for_notebook(stem, params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{stem}: {exc}") from None
    return out


def plan(profile: str, results_dir: Union[str, os.PathLike] = "results", seeds: Optional[int] = None,
         only: Optional[Iterable[str]] = None, overrides: Optional[Mapping[str, Any]] = None,
         notebooks_dir: Union[str, os.PathLike] = "notebooks", with_status: bool = True) -> List[PlanEntry]:
    """The profile's unique runs (dependencies included), most valuable first: by tier, each run
    after its dependencies, then in notebook order. A dependency gets the best tier of the runs
    that need it."""
    by_nb = collect(profile, seeds, only, overrides, notebooks_dir)
    store = RunStore(Path(results_dir) / profile)
    entries: Dict[str, PlanEntry] = {}
    order: List[str] = []

    def add(spec: RunSpec, tier: int, nb: str, label: Optional[str]) -> None:
        for _, dep in spec.deps:
            add(dep, tier, nb, None)
        e = entries.get(spec.key)
        if e is None:
            e = entries[spec.key] = PlanEntry(spec, tier, [], [], PENDING, cost(spec), [d.key for _, d in spec.deps])
            order.append(spec.key)
        e.tier = min(e.tier, tier)
        if nb not in e.notebooks:
            e.notebooks.append(nb)
        if label and label not in e.labels:
            e.labels.append(label)

    for nb, runs in by_nb.items():
        for r in runs:
            add(r.spec, r.tier, nb, r.label)
    # Dependencies first, stably, within the tier order.
    rank = {k: i for i, k in enumerate(order)}
    placed: List[str] = []
    seen = set()

    def place(k: str) -> None:
        if k in seen:
            return
        for d in entries[k].deps:
            place(d)
        seen.add(k)
        placed.append(k)

    for k in sorted(order, key=lambda k: (entries[k].tier, rank[k])):
        place(k)
    out = [entries[k] for k in placed]
    for e in out:
        if not e.labels:
            e.labels.append(f"({e.spec.method} dependency)")
        if with_status:
            e.status = store.status(e.spec)
            if e.status == PARTIAL:
                e.epochs_done = (store.progress(e.spec) or (0, 0))[0]
    return out


def format_plan(entries: Sequence[PlanEntry], profile: str) -> str:
    """The plan as a text table with totals by tier and status."""
    from .report import markdown_table

    rows = []
    for e in entries:
        rows.append([e.tier, e.status, "-" if e.cost is None else f"{e.cost / 1e6:.3f}", e.spec.method,
                     e.spec.describe(), ", ".join(n[:2] for n in e.notebooks), " / ".join(e.labels)[:48], e.key])
    table = markdown_table(["tier", "status", "Mimg", "method", "run", "nb", "labels", "key"], rows,
                           ["r", "l", "r", "l", "l", "l", "l", "l"])
    lines = [table, "", f"profile {profile}: {len(entries)} unique runs"]
    for t in TIERS:
        sel = [e for e in entries if e.tier == t]
        if not sel:
            continue
        by = {s: sum(e.status == s for e in sel) for s in (DONE, PARTIAL, PENDING)}
        c = sum(e.cost or 0 for e in sel)
        left = sum(e.cost_left for e in sel)
        lines.append(f"  tier {t}: {len(sel)} runs ({by[DONE]} done, {by[PARTIAL]} partial, {by[PENDING]} pending), "
                     f"{c / 1e6:.2f} M image-passes ({left / 1e6:.2f} M still to train)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Execution


@dataclass
class ExecuteReport:
    """What :func:`execute` did: per run key its outcome (``done``, ``trained``, ``stopped``,
    ``failed``, ``skipped`` (a dependency failed), ``not started`` (deadline)), seconds and error."""

    outcomes: Dict[str, Tuple[str, float, Optional[str]]] = field(default_factory=dict)
    deadline_hit: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> List[str]:
        return [k for k, (s, _, _) in self.outcomes.items() if s in ("failed", "skipped")]

    def count(self, status: str) -> int:
        return sum(s == status for s, _, _ in self.outcomes.values())

    def summary(self) -> str:
        parts = [f"{n} {s}" for s in ("trained", "stopped", "not started", "failed", "skipped")
                 if (n := self.count(s))]
        tail = "; deadline reached: run the same command again to resume" if self.deadline_hit else ""
        return f"execute: {', '.join(parts) or 'nothing to do'} in {self.seconds:.1f} s{tail}"


def check_data_available(specs: Iterable[RunSpec], data_root: Optional[str]) -> None:
    """Fail fast, naming the dataset and where it was looked for, if any run's data is missing."""
    from .data import DataNotFoundError, build_long_tailed
    from .data.large import LARGE_DATASETS

    seen = set()
    missing = []
    for s in specs:
        c = s.config
        key = (c["dataset"], repr(c.get("data_options")))
        if key in seen or c["dataset"] in LARGE_DATASETS:
            continue
        seen.add(key)
        try:
            build_long_tailed(c["dataset"], 1, root=data_root, download=False, **dict(c.get("data_options") or {}))
        except DataNotFoundError as exc:
            missing.append(f"{c['dataset']}: {exc}")
    if missing:
        raise ValueError("no data for some of the runs to execute (nothing was trained):\n  " + "\n  ".join(missing)
                         + "\nPoint LTBENCH_DATA at the data, or leave those datasets out (e.g. -p 'datasets=[\"cifar10\"]').")


def _init_worker(threads: Optional[int]) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _work(spec: RunSpec, store_root: str, options: ExecOptions) -> Tuple[str, float, Optional[str]]:
    """One run in a worker process: (outcome, seconds, error)."""
    t0 = time.monotonic()
    try:
        was_done = RunStore(store_root).status(spec) == DONE
        run(spec, RunStore(store_root), options)
        return ("done" if was_done else "trained"), time.monotonic() - t0, None
    except DeadlineReached as exc:
        return "stopped", time.monotonic() - t0, str(exc)
    except RunLocked as exc:
        return "failed", time.monotonic() - t0, str(exc)
    except Exception as exc:  # noqa: BLE001 - one failing run must not stop the others
        tb = traceback.format_exc(limit=6)
        return "failed", time.monotonic() - t0, f"{type(exc).__name__}: {exc}\n{tb}"


def _work_pack(specs: List[RunSpec], store_root: str, options: ExecOptions) -> List[Tuple[str, float, Optional[str]]]:
    """One pack of runs trained together in a worker process (:func:`ltbench.fastpath.run_pack`):
    one (outcome, seconds, error) per run; the pack's seconds are shared equally."""
    from .fastpath import run_pack

    t0 = time.monotonic()
    store = RunStore(store_root)
    was_done = [store.status(s) == DONE for s in specs]
    try:
        run_pack(specs, store, options)
        dt = (time.monotonic() - t0) / len(specs)
        return [("done" if d else "trained", dt, None) for d in was_done]
    except DeadlineReached as exc:
        dt = (time.monotonic() - t0) / len(specs)
        return [("done" if d else "stopped", dt, None if d else str(exc)) for d in was_done]
    except Exception as exc:  # noqa: BLE001 - one failing pack must not stop the others
        dt = (time.monotonic() - t0) / len(specs)
        err = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
        return [("failed", dt, err) for _ in specs]


def _work_unit(specs: List[RunSpec], store_root: str, options: ExecOptions) -> List[Tuple[str, float, Optional[str]]]:
    """A unit of work: one run (:func:`_work`) or a pack (:func:`_work_pack`)."""
    if len(specs) == 1:
        return [_work(specs[0], store_root, options)]
    return _work_pack(specs, store_root, options)


def pack_units(entries: Sequence[PlanEntry], pack: int, store: RunStore) -> List[List[str]]:
    """The runs to train grouped into units of work, in plan order: with ``pack`` > 1, runs that
    can be packed (:func:`ltbench.fastpath.pack_key`: joint runs of one recipe) and start from
    the same epoch share a unit of up to ``pack`` runs, placed where its first run was; every
    other run is a unit of its own. ``pack=1``: one unit per run."""
    if pack == 1:
        return [[e.key] for e in entries]
    from .fastpath import pack_key, start_epoch

    units: List[List[str]] = []
    open_units: Dict[Any, List[str]] = {}
    for e in entries:
        k = pack_key(e.spec)
        if k is None:
            units.append([e.key])
            continue
        group = (k, start_epoch(store, e.spec))
        unit = open_units.get(group)
        if unit is None or len(unit) >= pack:
            unit = open_units[group] = []
            units.append(unit)
        unit.append(e.key)
    return units


def execute(profile: str, results_dir: Union[str, os.PathLike] = "results", tiers: Optional[Iterable[int]] = None,
            deadline: Optional[float] = None, workers: int = 1, seeds: Optional[int] = None,
            only: Optional[Iterable[str]] = None, overrides: Optional[Mapping[str, Any]] = None,
            notebooks_dir: Union[str, os.PathLike] = "notebooks", device: str = "auto",
            data_root: Optional[str] = None, progress: Union[bool, str] = "auto", threads: Optional[int] = None,
            compile: Union[bool, str] = "auto", verbose: bool = True, fast: Union[bool, str] = False,
            pack: int = 1) -> ExecuteReport:
    """Train the profile's pending runs of ``tiers`` (default all) in tier order.

    ``deadline``: seconds from now after which each worker stops at the end of its epoch (with a
    checkpoint) and nothing new starts. ``workers``: processes training at once (1: this
    process). ``threads``: torch threads per worker (default: the CPU count / workers). Every
    argument is checked, and every dataset found, before anything is trained. ``fast``: the
    fast path (:mod:`ltbench.fastpath`: ``"static"`` shapes, or ``"graph"`` / True whole-step
    graphs), an execution option. ``pack``: train up to this many compatible runs as one packed
    network (:func:`pack_units`; 1, the default, packs nothing).
    """
    from .runner import ConfigError

    tiers = check_tiers(tiers)
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not math.isfinite(deadline) or deadline <= 0):
        raise ValueError(f"invalid deadline={deadline!r}: must be a positive number of seconds")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"invalid workers={workers!r}: must be an int >= 1")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"invalid threads={threads!r}: must be an int >= 1 or None")
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ValueError(f"invalid pack={pack!r}: must be an int >= 1 (1: no packing)")
    from .fastpath import check_mode

    check_mode(fast)
    say = print if verbose else (lambda *a, **k: None)
    t_start = time.monotonic()
    stop_at = None if deadline is None else time.time() + deadline
    try:
        entries = plan(profile, results_dir, seeds, only, overrides, notebooks_dir)
    except ConfigError:
        raise
    store = RunStore(Path(results_dir) / profile)
    wanted = {e.key for e in entries if tiers is None or e.tier in tiers}
    by_key = {e.key: e for e in entries}
    # The dependencies of wanted runs are wanted too, whatever their tier.
    for e in list(entries):
        if e.key in wanted:
            for s in e.spec.walk():
                wanted.add(s.key)
    todo = [e for e in entries if e.key in wanted and e.status != DONE]
    report = ExecuteReport()
    for e in entries:
        if e.key in wanted and e.status == DONE:
            report.outcomes[e.key] = ("done", 0.0, None)
    if not todo:
        report.seconds = time.monotonic() - t_start
        say(report.summary())
        return report
    store.check_writable()
    check_data_available([e.spec for e in todo], data_root)
    say(f"execute: {len(todo)} runs to train ({sum(e.cost_left for e in todo) / 1e6:.2f} M image-passes) with "
        f"{workers} worker(s)" + (f", deadline in {deadline:g} s" if deadline else ""), flush=True)
    multi = workers > 1
    if progress == "auto":  # a bar on a terminal; else only the [i/n] line below, not run()'s own as well
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    opts = ExecOptions(device=device, data_root=data_root, compile=compile, deadline=stop_at,
                       progress=False if multi else progress, fast=fast)
    per_worker = threads or (max(1, (os.cpu_count() or 1) // workers) if multi else None)
    units = pack_units(todo, pack, store)
    if pack > 1:
        say(f"execute: {len(todo)} runs in {len(units)} unit(s) (packs of up to {pack})", flush=True)
    status: Dict[str, str] = {}

    def finish(key: str, outcome: Tuple[str, float, Optional[str]]) -> None:
        report.outcomes[key] = outcome
        status[key] = outcome[0]
        e = by_key[key]
        n = len(report.outcomes)
        msg = f"[{n}/{len(wanted)}] {outcome[0]:<8} tier {e.tier} {e.spec.describe()} [{key}] {outcome[1]:.1f} s"
        if outcome[2] and outcome[0] == "failed":
            msg += f"\n    {outcome[2].splitlines()[0]}"
        say(msg, flush=True)

    def ready(key: str) -> Optional[bool]:
        """True when every dependency is done; False to wait; None when one failed (skip)."""
        for d in by_key[key].deps:
            s = status.get(d, "done" if by_key[d].status == DONE else None)
            if s in ("failed", "skipped", "stopped", "not started"):
                return None
            if s not in ("done", "trained"):
                return False
        return True

    def ready_unit(unit: List[str]) -> Optional[bool]:
        states = [ready(k) for k in unit]
        return None if None in states else all(states)

    def specs_of(unit: List[str]) -> List[RunSpec]:
        return [by_key[k].spec for k in unit]

    if not multi:
        _init_worker(per_worker)
        for unit in units:
            if report.deadline_hit:
                for key in unit:
                    finish(key, ("not started", 0.0, None))
                continue
            r = ready_unit(unit)
            if r is None:
                for key in unit:
                    finish(key, ("skipped", 0.0, "a dependency did not finish"))
                continue
            outcomes = _work_unit(specs_of(unit), str(store.root), opts)
            for key, outcome in zip(unit, outcomes):
                finish(key, outcome)
            if (any(o[0] == "stopped" for o in outcomes) or (stop_at is not None and time.time() >= stop_at)
                    or stop_requested()):
                report.deadline_hit = True
    else:
        import multiprocessing as mp

        queue = list(units)
        running: Dict[Future, List[str]] = {}
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(per_worker,)) as pool:
            while queue or running:
                late = stop_at is not None and time.time() >= stop_at
                if late:
                    report.deadline_hit = True
                i = 0
                while i < len(queue) and len(running) < workers and not report.deadline_hit:
                    unit = queue[i]
                    r = ready_unit(unit)
                    if r is None:
                        queue.pop(i)
                        for key in unit:
                            finish(key, ("skipped", 0.0, "a dependency did not finish"))
                        continue
                    if r:
                        queue.pop(i)
                        running[pool.submit(_work_unit, specs_of(unit), str(store.root), opts)] = unit
                        continue
                    i += 1
                if report.deadline_hit and not running:
                    for unit in queue:
                        for key in unit:
                            finish(key, ("not started", 0.0, None))
                    queue = []
                    break
                if not running:
                    # Everything left waits on something that will never finish.
                    for unit in queue:
                        for key in unit:
                            finish(key, ("skipped", 0.0, "a dependency did not finish"))
                    break
                done, _ = wait(list(running), timeout=5.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    unit = running.pop(fut)
                    try:
                        outcomes = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker died (out of memory, native crash)
                        outcomes = [("failed", 0.0, f"worker process died: {exc}")] * len(unit)
                    for key, outcome in zip(unit, outcomes):
                        finish(key, outcome)
                    if any(o[0] == "stopped" for o in outcomes):
                        report.deadline_hit = True
    report.seconds = time.monotonic() - t_start
    say(report.summary(), flush=True)
    return report
