"""Runs as data: one description of a training run, the method registry, a portable store and
the one function that runs it.

- :class:`RunSpec` is a frozen, hashable description of a run: the method's name, the training
  configuration (data, model, recipe and the method's configuration fields), the method's own
  parameters (OHEM's keep ratio, FSA's thresholds, ...) and the runs it depends on, *as specs*
  (a stage-2 run names its stage-1 spec; FSA phase II its phase I). Its content hash,
  :attr:`RunSpec.key`, is the run's identity. How a run executes (device, compilation, data
  folder, checkpoint interval, progress bars, workers) is not part of it
  (:data:`~ltbench.engine.EXECUTION_FIELDS`, :class:`ExecOptions`); it is recorded in
  ``metrics.json["execution"]``.
- :data:`METHODS` maps a method's name to what trains it (configuration class, trainer, parameters
  with defaults, dependencies) and validates its parameters once, at the boundary
  (:func:`make_spec`). ``python -m ltbench methods`` lists it; the built-in methods are
  registered in :mod:`ltbench.methods`.
- :class:`RunStore` keeps finished runs in one folder per run, ``<root>/runs/<key>/``, with
  relative paths only, so a results folder can be moved or cloned.
- :func:`run` is the only place that decides whether a run is finished, reusable, resumable or
  to be trained: every entry point (notebooks through :mod:`ltbench.experiments`, ``python -m
  ltbench execute``, ``python -m ltbench.train --config``) goes through it.

::

    from ltbench.methods import joint_spec, stage_two_spec
    from ltbench.runs import RunStore, run

    ce = joint_spec(base_config("cifar10", 100, epochs=200))
    crt = stage_two_spec(ce, "crt")
    result = run(crt, RunStore("results/paper"))   # trains CE first if needed, then cRT
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import checkpoint, plugins
from . import methods as _methods  # noqa: F401 - registers the built-in methods on METHODS
from .checkpoint import CHECKPOINT_FILE
from .config import TrainConfig
from .engine import METRICS_FILE, DeadlineReached, Trainer, TrainResult
from .fastpath import PACK_VARYING, check_mode, fit_pack, pack_key
from .io import atomic_write_json
from .methods import spec_for
from .spec import (COMPILE_MIN_IMAGE_PASSES, DONE, LAUNCH_PARAM, LOCK_FILE, METHODS, PARTIAL, PENDING, SPEC_FILE,
                   ExecOptions, Method, MethodRegistry, RunSpec, code_version, cost, make_spec, need_whole_network,
                   register_method, train_size)

__all__ = [
    "RunSpec", "Method", "METHODS", "register_method", "make_spec", "ExecOptions", "RunStore", "RunLocked",
    "run", "train", "run_pack", "build_trainer", "DONE", "PARTIAL", "PENDING", "SPEC_FILE", "LOCK_FILE",
    "DeadlineReached", "checkpoint_progress", "code_version", "cost", "train_size", "need_whole_network",
    "MethodRegistry", "COMPILE_MIN_IMAGE_PASSES", "LAUNCH_PARAM",
]

#: Kept for callers of the old names (ltbench.checkpoint is the one reader).
checkpoint_progress = checkpoint.progress


# --------------------------------------------------------------------------------------------
# The store


class RunLocked(RuntimeError):
    """Another live process is training this run (its folder holds a lock)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Finished and partial runs under ``<root>/runs/<key>/``.

    A run folder holds ``spec.json`` (the spec, written when training starts), ``checkpoint.pt``
    (resume state and weights; not committed with results), ``curves.csv``, ``per_class.csv``,
    ``extras.json`` and, written last, ``metrics.json``, which marks the run finished. Nothing in
    a folder names a path outside it, so a store can be moved or copied.
    """

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        if isinstance(root, RunStore):
            root = root.root
        if not isinstance(root, (str, os.PathLike)) or str(root) == "":
            raise ValueError(f"invalid store root={root!r}: must be a folder path")
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def folder(self, spec: Union[RunSpec, str]) -> Path:
        """The folder of ``spec`` (or of a run key)."""
        key = spec.key if isinstance(spec, RunSpec) else spec
        if not isinstance(key, str) or not key.isalnum():
            raise ValueError(f"invalid run key {key!r}: a RunSpec or its 20-hex-digit key")
        return self.runs_dir / key

    # -- reading ---------------------------------------------------------------------------------
    def _set_aside(self, path: Path, why: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.invalid-{stamp}")
        os.replace(path, target)
        print(f"ltbench: {path} {why}; moved aside to {target.name}, the run will be recomputed", file=sys.stderr)

    def load(self, spec: RunSpec) -> Optional[TrainResult]:
        """The finished result of ``spec``, or None. An unreadable or foreign ``metrics.json`` is
        moved aside (never deleted) with a message, and the run counts as not finished."""
        path = self.folder(spec) / METRICS_FILE
        if not path.is_file():
            return None
        try:
            m = json.loads(path.read_text())
            problem = _metrics_problem(m, spec)
            result = None if problem else TrainResult.load(path.parent)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem, result = f"cannot be read ({type(exc).__name__}: {exc})", None
        if problem:
            self._set_aside(path, problem)
            return None
        for msg in plugins.changed_sources((m.get("execution") or {}).get("plugins") or {}):
            print(f"ltbench: run {spec.key} is reused although {msg}; delete {path.parent} (or pass force=True) "
                  "to retrain it with the current source", file=sys.stderr)
        return result

    def status(self, spec: RunSpec) -> str:
        """``done`` (finished), ``partial`` (a checkpoint to resume from) or ``pending``."""
        folder = self.folder(spec)
        if (folder / METRICS_FILE).is_file() and self.load(spec) is not None:
            return DONE
        return PARTIAL if (folder / CHECKPOINT_FILE).is_file() else PENDING

    def progress(self, spec: RunSpec) -> Optional[Tuple[int, int]]:
        """(epochs trained, epochs) of the run's checkpoint, or None where it has none readable."""
        path = self.folder(spec) / CHECKPOINT_FILE
        return checkpoint.progress(path)

    def has_weights(self, spec: RunSpec) -> bool:
        """Whether the run's folder holds the checkpoint of its last epoch (stage 2, FSA and
        analyses load the weights from it)."""
        return checkpoint.finished_state(self.folder(spec) / CHECKPOINT_FILE) is not None

    def start_epoch(self, spec: RunSpec) -> int:
        """The epoch a run would start from: its checkpoint's, else 0."""
        return (self.progress(spec) or (0, 0))[0]

    def specs(self) -> List[RunSpec]:
        """Every run of the store that has a readable ``spec.json`` (not validated again)."""
        out = []
        for f in sorted(self.runs_dir.glob(f"*/{SPEC_FILE}")) if self.runs_dir.is_dir() else []:
            try:
                out.append(RunSpec.from_dict(json.loads(f.read_text()), validate=False))
            except (OSError, ValueError):
                continue
        return out

    # -- writing ---------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise before any work if runs cannot be written here."""
        probe_dir = self.runs_dir
        try:
            probe_dir.mkdir(parents=True, exist_ok=True)
            probe = probe_dir / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ValueError(f"run store {self.root} is not writable ({exc}); choose another results folder") from None

    def lock(self, spec: RunSpec, timeout: Optional[float] = 0.0) -> "_Lock":
        """The run's lock: ``timeout`` seconds to wait for a live holder (None: as long as it lives)."""
        return _Lock(self.folder(spec) / LOCK_FILE, timeout)


def _metrics_problem(m: Any, spec: RunSpec) -> Optional[str]:
    if not isinstance(m, dict):
        return "is not a JSON object"
    if m.get("key") != spec.key:
        return f"holds run {m.get('key')!r}, not {spec.key}"
    for name in ("top1_last", "top1_best", "ece", "train_seconds"):
        v = m.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"has {name}={v!r}, not a number"
    if not isinstance(m.get("top1_last"), (int, float)):
        return "has no top1_last"
    for name in ("per_class", "counts", "confusion"):
        if not isinstance(m.get(name), list):
            return f"has {name}={str(m.get(name))[:40]!r}, not a list"
    if not isinstance(m.get("config"), dict):
        return "has no config"
    return None


class _Lock:
    """A lock file per run folder: the owner's pid and host; a lock of a dead process on this
    host is stale and taken over."""

    def __init__(self, path: Path, timeout: Optional[float] = 0.0) -> None:
        self.path = path
        self.timeout = timeout
        self.held = False

    def __enter__(self) -> "_Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        t0, said = time.monotonic(), False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    owner = {}
                pid, host = owner.get("pid"), owner.get("host")
                stale = host == me["host"] and isinstance(pid, int) and not _pid_alive(pid)
                if not owner and time.time() - self._mtime() > 60:
                    stale = True  # an empty lock left by a crash between create and write
                if stale:
                    self.path.unlink(missing_ok=True)
                    continue
                holder = (f"{self.path.parent} is being trained by pid {pid} on {host} since {owner.get('since')}")
                if self.timeout is not None and time.monotonic() - t0 >= self.timeout:
                    raise RunLocked(f"{holder}; wait for it to finish, or delete {self.path} if that process is "
                                    "gone") from None
                if not said:
                    print(f"ltbench: {holder}; waiting for it (delete {self.path} if that process is gone)",
                          file=sys.stderr, flush=True)
                    said = True
                time.sleep(1.0)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class _NoLock:
    def __enter__(self) -> "_NoLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


# --------------------------------------------------------------------------------------------
# run()


def run(spec: RunSpec, store: Union[RunStore, str, os.PathLike], options: Optional[ExecOptions] = None, *,
        force: bool = False, require_weights: bool = False) -> TrainResult:
    """Return the finished result of ``spec`` from ``store``, training what is missing.

    A finished run is loaded without touching its dependencies. Otherwise its dependencies run
    first (their weights are needed: a finished dependency whose checkpoint is missing, as in
    committed results, is trained again; runs are deterministic on CPU), an interrupted run
    resumes from its checkpoint, and anything else is trained and saved atomically
    (``metrics.json`` last). ``require_weights``: also make sure the
    run's own last-epoch checkpoint exists. ``force``: recompute this run (not its dependencies).
    Raises :class:`~ltbench.engine.DeadlineReached` when ``options.deadline`` stops it (resume
    by calling again) and :class:`RunLocked` when another process is training it.
    """
    if not isinstance(spec, RunSpec):
        raise ValueError(f"run() needs a RunSpec, got {type(spec).__name__}; build one with ltbench.runs.make_spec "
                         "or the builders of ltbench.methods")
    method = METHODS.get(spec.method)
    store = RunStore(store)
    options = options or ExecOptions()
    if not isinstance(options, ExecOptions):
        raise ValueError(f"options must be an ExecOptions, got {options!r}")
    if not force:
        # A finished run is only read: its dependencies' weights are needed to train it, not to
        # load it (a render of committed results, or of a store whose stage 1 is gone, trains nothing).
        done = store.load(spec)
        if done is not None and (not require_weights or store.has_weights(spec)):
            return done
    if options.writer:
        store.check_writable()  # before any dependency is trained
    dep_dirs: Dict[str, Path] = {}
    for name, dep in spec.deps:
        run(dep, store, options, require_weights=True)
        dep_dirs[name] = store.folder(dep)
    folder = store.folder(spec)
    existed = folder.exists()
    try:
        with store.lock(spec, options.lock_timeout) if options.writer else _NoLock():
            done = None
            if not force:  # another process may have finished it while this one waited for the lock
                done = store.load(spec)
                if done is not None and (not require_weights or store.has_weights(spec)):
                    return done
            if done is not None:
                # A finished run without its weights (committed results): train it again for the
                # checkpoint only; its recorded result stays as it is (on a GPU a rerun differs in
                # the last digits, and the committed numbers are the ones the tables cite).
                _train(spec, method, store, options, dep_dirs, force, save=False)
                return done
            return _train(spec, method, store, options, dep_dirs, force)
    except BaseException:
        if options.writer and not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a run that failed before writing anything leaves no folder behind
        raise


def build_trainer(spec: RunSpec, options: ExecOptions, dep_dirs: Optional[Mapping[str, Path]] = None,
                  progress: Optional[bool] = None) -> Trainer:
    """The trainer of ``spec``: the one place a run's trainer is built (:func:`run`, in-memory
    :func:`train` and :func:`run_pack` all use it). ``dep_dirs``: the finished dependencies'
    folders by name; ``progress``: override ``options.bar()``."""
    method = METHODS.get(spec.method)
    cfg = spec.train_config(options)
    trainer_cls = options.wrap_trainer(method.trainer) if options.wrap_trainer else method.trainer
    kwargs = {**method.trainer_kwargs(spec, dep_dirs or {}), **dict(options.trainer_extra)}
    trainer = trainer_cls(cfg, progress=options.bar() if progress is None else progress, **kwargs)
    trainer.label = spec.describe()
    trainer.run_key = spec.key
    return trainer


def _meta(spec: RunSpec, options: ExecOptions, **execution: Any) -> Dict[str, Any]:
    """``metrics.json``'s identity and execution record of a run trained with ``options``."""
    return {"key": spec.key, "spec": spec.to_dict(), "execution": {**options.record(spec), **execution}}


def _fit(spec: RunSpec, trainer: Trainer, options: ExecOptions, folder: Optional[Path]) -> TrainResult:
    """Fit ``trainer`` (on the fast path when ``options.fast`` asks) and stamp its result."""
    fast = options.attach_fast(trainer)
    result = trainer.fit(folder, deadline=options.deadline)
    result.meta = _meta(spec, options)
    if options.fast:
        result.meta["execution"]["fast"] = options.fast_record(trainer, fast)
    return result


def _prepare_folder(store: RunStore, spec: RunSpec, force: bool) -> None:
    """Before (re)training in the run's folder: ``force`` clears the result and checkpoint; a
    checkpoint that cannot be resumed from is set aside."""
    folder = store.folder(spec)
    ckpt = folder / CHECKPOINT_FILE
    if force:
        (folder / METRICS_FILE).unlink(missing_ok=True)
        ckpt.unlink(missing_ok=True)
    elif ckpt.is_file() and not checkpoint.is_readable(ckpt):
        store._set_aside(ckpt, "is not a readable checkpoint")


def _save(store: RunStore, spec: RunSpec, result: TrainResult) -> TrainResult:
    """Save ``result`` in the run's folder and return what a later call would load (curves are
    stored to 6 digits): a run returns the same result whether it was trained now or reused."""
    result.save(store.folder(spec))
    return TrainResult.load(store.folder(spec))


def _train(spec: RunSpec, method: Method, store: RunStore, options: ExecOptions, dep_dirs: Dict[str, Path],
           force: bool, save: bool = True) -> TrainResult:
    """Train (or resume) ``spec`` in its folder, holding its lock; save it atomically (``save``:
    the result files; the checkpoint is always written)."""
    folder = store.folder(spec)
    if options.writer:
        _prepare_folder(store, spec, force)
    trainer = build_trainer(spec, options, dep_dirs)
    if options.writer:  # written once the trainer accepted the spec: a refused run leaves no folder
        atomic_write_json(folder / SPEC_FILE, spec.to_dict())
    result = _fit(spec, trainer, options, folder)
    if options.writer and save:
        result = _save(store, spec, result)
        if options.progress == "auto" and not options.bar():
            print(f"trained {spec.describe()} [{spec.key}]: top-1 {result.top1_last:.2f} "
                  f"in {result.train_seconds:.0f} s", flush=True)
    return result


def train(cfg: TrainConfig, store: Optional[Union[RunStore, str, os.PathLike]] = None, *, method: Optional[str] = None,
          deps: Optional[Mapping[str, RunSpec]] = None, options: Optional[ExecOptions] = None, force: bool = False,
          require_weights: bool = False, progress: Union[bool, str] = False, **params: Any) -> TrainResult:
    """Train ``cfg`` as a run of ``method`` (default: ``bbn`` for a BBNConfig, else ``joint``).

    With ``store`` this is :func:`run` on the spec :func:`make_spec` builds (finished runs are
    loaded, interrupted ones resume). Without it, the run is trained in memory and nothing is
    written. ``params`` are the method's parameters; ``options`` execution options (their
    ``progress`` is replaced by ``progress``); the config's own execution fields are kept.
    """
    spec = spec_for(cfg, method, deps, **params)
    base = options or ExecOptions(device=cfg.device, compile=cfg.compile, data_root=cfg.data_root,
                                  channels_last=cfg.channels_last, checkpoint_every=cfg.checkpoint_every)
    options = dataclasses.replace(base, progress=progress)
    if store is not None:
        return run(spec, store, options, force=force, require_weights=require_weights)
    if spec.deps:
        raise ValueError(f"method {spec.method!r} needs its dependencies' weights: pass a store")
    return _fit(spec, build_trainer(spec, options), options, None)


# --------------------------------------------------------------------------------------------
# Packs: K joint runs of one recipe trained as one network (ltbench.fastpath)


def run_pack(specs: Iterable[RunSpec], store: Union[RunStore, str, os.PathLike],
             options: Optional[ExecOptions] = None) -> List[TrainResult]:
    """Train the runs ``specs`` (one recipe: equal :func:`~ltbench.fastpath.pack_key`) as one pack
    and save each in ``store`` exactly as :func:`run` saves a run trained alone (same files, same
    ``metrics.json`` fields; ``execution`` also records the pack). Runs already finished (the
    store's :meth:`~RunStore.load`, the same test as ``run()``'s) are returned as they are and not
    trained. ``options.fast``: the pack's step mode (``"static"`` by default, ``"graph"``
    compiles it). Raises :class:`~ltbench.engine.DeadlineReached` when the deadline stopped the
    pack (every run checkpointed at the same epoch; call again to resume).
    """
    store = RunStore(store)
    options = options or ExecOptions()
    specs = list(specs)
    keys = {pack_key(s) for s in specs}
    if None in keys or len(keys) != 1:
        raise ValueError("run_pack needs runs of one recipe that can be packed (pack_key): joint runs of a CIFAR "
                         "ResNet that differ only in " + ", ".join(PACK_VARYING))
    if options.wrap_trainer is not None or not options.writer:
        raise ValueError("packs train in one process (no DDP wrapper, and this process writes)")
    store.check_writable()
    out: List[Any] = [None] * len(specs)
    with contextlib.ExitStack() as stack:
        todo = []
        for i, spec in enumerate(specs):
            stack.enter_context(store.lock(spec, options.lock_timeout))
            out[i] = store.load(spec)
            if out[i] is None:
                _prepare_folder(store, spec, force=False)
                todo.append(i)
        if not todo:
            return out
        trainers = []
        for i in todo:
            trainer = build_trainer(specs[i], options, progress=False)
            if type(trainer) is not Trainer:
                raise ValueError(f"{specs[i].describe()}: only method 'joint' runs can be packed")
            atomic_write_json(store.folder(specs[i]) / SPEC_FILE, specs[i].to_dict())
            trainers.append(trainer)
        mode = check_mode(options.fast) or "static"
        results = fit_pack(trainers, [store.folder(specs[i]) for i in todo], options.deadline, mode)
        pack_record = {"size": len(todo), "mode": mode, "runs": [specs[i].key for i in todo]}
        for i, result in zip(todo, results):
            result.meta = _meta(specs[i], options, pack=pack_record)
            out[i] = _save(store, specs[i], result)
    return out
