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

import functools
import math
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .checks import is_positive_int, is_positive_number, require
from .data import DataNotFoundError, build_long_tailed
from .data.large import LARGE_DATASETS
from .engine import stop_requested
from .experiments import EXPERIMENTS, TIERS, PlannedRun, runs_for_notebook
from .fastpath import check_mode, pack_key
from .profiles import check_profile
from .parameters import ConfigError, outside_clone_hint, resolve
from .runs import (DONE, PARTIAL, PENDING, DeadlineReached, ExecOptions, RunLocked, RunSpec, RunStore, cost,
                   run, run_pack, train_size)
from .text import markdown_table

__all__ = ["PlanEntry", "collect", "plan", "execute", "ExecuteReport", "cost", "train_size", "check_tiers", "pack_units",
           "check_data_available", "format_plan"]

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


def collect(profile: str, seeds: Optional[int] = None, only: Optional[Iterable[str]] = None,
            overrides: Optional[Mapping[str, Any]] = None,
            notebooks_dir: Union[str, os.PathLike] = "notebooks") -> Dict[str, List[PlannedRun]]:
    """Notebook stem -> its planned runs under ``profile``: the notebook's ``parameters`` cell,
    the profile's layers and ``overrides`` (``name`` or ``"<notebook>:name"``, as for ``ltbench
    run``), through :func:`ltbench.parameters.resolve`. ``seeds=N`` means ``seeds=list(range(N))``."""
    try:
        check_profile(profile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    nb_dir = Path(notebooks_dir)
    available = [s for s in EXPERIMENTS if (nb_dir / f"{s}.ipynb").is_file()]
    if not available:
        raise ConfigError(f"no notebooks of the project found in {nb_dir} (expected {', '.join(EXPERIMENTS)})"
                          + outside_clone_hint(nb_dir, "notebooks"))
    out = {}
    for nb in resolve(profile, only, seeds, overrides, nb_dir, stems=available):
        unknown = sorted(set(nb.layer) - set(nb.declared))
        if unknown:
            raise ConfigError(f"{nb.stem}: unknown parameter(s) {unknown}; its parameters: {', '.join(nb.declared)}")
        if nb.problems:
            raise ConfigError("invalid parameters (nothing was planned):\n  " + "\n  ".join(nb.problems))
        try:
            out[nb.stem] = runs_for_notebook(nb.stem, nb.values)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{nb.stem}: {exc}") from None
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
    """One pack of runs trained together in a worker process (:func:`ltbench.runs.run_pack`):
    one (outcome, seconds, error) per run; the pack's seconds are shared equally."""
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
    units: List[List[str]] = []
    open_units: Dict[Any, List[str]] = {}
    for e in entries:
        k = pack_key(e.spec)
        if k is None:
            units.append([e.key])
            continue
        group = (k, store.start_epoch(e.spec))
        unit = open_units.get(group)
        if unit is None or len(unit) >= pack:
            unit = open_units[group] = []
            units.append(unit)
        unit.append(e.key)
    return units


class _InlinePool:
    """:class:`~concurrent.futures.ProcessPoolExecutor`'s ``submit`` run in this process
    (``workers=1``), so one worker and many share one scheduling loop (:class:`_Schedule`)."""

    def __init__(self, threads: Optional[int]) -> None:
        _init_worker(threads)

    def __enter__(self) -> "_InlinePool":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))  # _work_unit catches a run's errors; KeyboardInterrupt propagates
        return fut


def _pool(workers: int, threads: Optional[int]) -> Any:
    if workers == 1:
        return _InlinePool(threads)
    import multiprocessing as mp  # stdlib; only needed for the spawn context

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(threads,))


@dataclass
class _Schedule:
    """The one scheduling loop of :func:`execute`: units start when their dependencies are done,
    at most ``workers`` at once, in plan order; a failed dependency skips its dependents; at the
    deadline (or a stop request) nothing new starts and the rest is "not started"."""

    by_key: Dict[str, PlanEntry]
    wanted: set
    report: ExecuteReport
    stop_at: Optional[float]
    say: Any
    status: Dict[str, str] = field(default_factory=dict)
    started: bool = False

    def finish(self, key: str, outcome: Tuple[str, float, Optional[str]]) -> None:
        self.report.outcomes[key] = outcome
        self.status[key] = outcome[0]
        e = self.by_key[key]
        msg = (f"[{len(self.report.outcomes)}/{len(self.wanted)}] {outcome[0]:<8} tier {e.tier} {e.spec.describe()} "
               f"[{key}] {outcome[1]:.1f} s")
        if outcome[2] and outcome[0] == "failed":
            msg += f"\n    {outcome[2].splitlines()[0]}"
        self.say(msg, flush=True)

    def finish_all(self, units: Iterable[List[str]], outcome: Tuple[str, float, Optional[str]]) -> None:
        for unit in units:
            for key in unit:
                self.finish(key, outcome)

    def ready(self, unit: List[str]) -> Optional[bool]:
        """True when every dependency of the unit is done; False to wait; None when one failed (skip)."""
        states = []
        for key in unit:
            state: Optional[bool] = True
            for d in self.by_key[key].deps:
                s = self.status.get(d, "done" if self.by_key[d].status == DONE else None)
                if s in ("failed", "skipped", "stopped", "not started"):
                    state = None
                    break
                if s not in ("done", "trained"):
                    state = False
            states.append(state)
        return None if None in states else all(states)

    def _stop_now(self) -> bool:
        # The first unit always starts: past the deadline it trains one epoch, checkpoints and stops,
        # so a short deadline still makes progress.
        late = self.started and self.stop_at is not None and time.time() >= self.stop_at
        self.report.deadline_hit = self.report.deadline_hit or late or stop_requested()
        return self.report.deadline_hit

    def _start(self, queue: List[List[str]], running: Dict[Future, List[str]], pool: Any, workers: int,
               work: Any) -> None:
        i = 0
        while i < len(queue) and len(running) < workers and not self._stop_now():
            r = self.ready(queue[i])
            if r is None:
                self.finish_all([queue.pop(i)], ("skipped", 0.0, "a dependency did not finish"))
            elif r:
                unit = queue.pop(i)
                self.started = True
                running[pool.submit(work, unit)] = unit
            else:
                i += 1

    def _collect(self, running: Dict[Future, List[str]]) -> None:
        done, _ = wait(list(running), timeout=5.0, return_when=FIRST_COMPLETED)
        for fut in done:
            unit = running.pop(fut)
            try:
                outcomes = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (out of memory, native crash)
                outcomes = [("failed", 0.0, f"worker process died: {exc}")] * len(unit)
            for key, outcome in zip(unit, outcomes):
                self.finish(key, outcome)
            if any(o[0] == "stopped" for o in outcomes):
                self.report.deadline_hit = True

    def run(self, units: List[List[str]], pool: Any, workers: int, work: Any) -> None:
        queue, running = list(units), {}
        with pool:
            while queue or running:
                self._start(queue, running, pool, workers, work)
                if not running:
                    if self.report.deadline_hit:
                        self.finish_all(queue, ("not started", 0.0, None))
                    else:  # everything left waits on something that will never finish
                        self.finish_all(queue, ("skipped", 0.0, "a dependency did not finish"))
                    return
                self._collect(running)


def _check_execute_args(tiers: Optional[Iterable[int]], deadline: Optional[float], workers: int,
                        threads: Optional[int], pack: int, fast: Union[bool, str]) -> Optional[List[int]]:
    """Every scalar argument of :func:`execute` checked before any work; returns the tiers."""
    tiers = check_tiers(tiers)
    require(deadline is None or is_positive_number(deadline), "deadline", deadline, "a positive number of seconds")
    require(is_positive_int(workers), "workers", workers, "an int >= 1")
    require(threads is None or is_positive_int(threads), "threads", threads, "an int >= 1 or None")
    require(is_positive_int(pack), "pack", pack, "an int >= 1 (1: no packing)")
    check_mode(fast)
    return tiers


def _wanted(entries: Sequence[PlanEntry], tiers: Optional[List[int]]) -> set:
    """Keys of the runs of ``tiers``, and of their dependencies whatever their tier."""
    wanted = {e.key for e in entries if tiers is None or e.tier in tiers}
    for e in entries:
        if e.key in wanted:
            wanted.update(s.key for s in e.spec.walk())
    return wanted


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
    tiers = _check_execute_args(tiers, deadline, workers, threads, pack, fast)
    say = print if verbose else (lambda *a, **k: None)
    t_start = time.monotonic()
    stop_at = None if deadline is None else time.time() + deadline
    entries = plan(profile, results_dir, seeds, only, overrides, notebooks_dir)
    store = RunStore(Path(results_dir) / profile)
    wanted = _wanted(entries, tiers)
    todo = [e for e in entries if e.key in wanted and e.status != DONE]
    report = ExecuteReport()
    report.outcomes.update({e.key: ("done", 0.0, None) for e in entries if e.key in wanted and e.status == DONE})
    if todo:
        store.check_writable()
        check_data_available([e.spec for e in todo], data_root)
        say(f"execute: {len(todo)} runs to train ({sum(e.cost_left for e in todo) / 1e6:.2f} M image-passes) with "
            f"{workers} worker(s)" + (f", deadline in {deadline:g} s" if deadline else ""), flush=True)
        if progress == "auto":  # a bar on a terminal; else only the [i/n] line, not run()'s own as well
            progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
        opts = ExecOptions(device=device, data_root=data_root, compile=compile, deadline=stop_at,
                           progress=False if workers > 1 else progress, fast=fast)
        per_worker = threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
        units = pack_units(todo, pack, store)
        if pack > 1:
            say(f"execute: {len(todo)} runs in {len(units)} unit(s) (packs of up to {pack})", flush=True)
        by_key = {e.key: e for e in entries}
        work = functools.partial(_work_keys, by_key={k: by_key[k].spec for k in wanted}, store_root=str(store.root),
                                 options=opts)
        _Schedule(by_key, wanted, report, stop_at, say).run(units, _pool(workers, per_worker), workers, work)
    report.seconds = time.monotonic() - t_start
    say(report.summary(), flush=True)
    return report


def _work_keys(unit: List[str], by_key: Mapping[str, RunSpec], store_root: str,
               options: ExecOptions) -> List[Tuple[str, float, Optional[str]]]:
    """:func:`_work_unit` for the run keys of ``unit`` (what a worker process is sent)."""
    return _work_unit([by_key[k] for k in unit], store_root, options)
