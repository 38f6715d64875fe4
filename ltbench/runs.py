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

import dataclasses
import hashlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .config import LEGACY_HEAD_BIAS_INIT, TrainConfig
from .engine import (CHECKPOINT_FILE, EXECUTION_FIELDS, METRICS_FILE, DeadlineReached, TrainResult, Trainer)
from .io import atomic_write_json

__all__ = [
    "RunSpec", "Method", "METHODS", "register_method", "make_spec", "ExecOptions", "RunStore", "RunLocked",
    "run", "train", "DONE", "PARTIAL", "PENDING", "SPEC_FILE", "LOCK_FILE", "DeadlineReached",
]

#: Version of the identity payload; bump only with a migration of stored runs.
SPEC_SCHEMA = 1
SPEC_FILE = "spec.json"
#: A parameter every method accepts: the launch options of ``python -m ltbench.train`` that change
#: the numbers (SyncBatchNorm, pretrained weights), present only when they are not the defaults.
LAUNCH_PARAM = "launch"
LOCK_FILE = ".lock"
DONE, PARTIAL, PENDING = "done", "partial", "pending"


# --------------------------------------------------------------------------------------------
# Identity


def _canonical(obj: Any, where: str = "spec") -> Any:
    """The JSON value that enters a run's hash: mappings with string keys, lists for tuples,
    integral floats as ints (``gamma=1`` and ``gamma=1.0`` name one run), no NaN/inf."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}={obj!r}: a run's description must hold finite numbers")
        return int(obj) if obj.is_integer() and abs(obj) < 2 ** 53 else obj
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{where}={obj!r}: a run's description holds only JSON values (numbers, strings, "
                     f"booleans, None, lists, dicts), got a {type(obj).__name__}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, eq=False)
class RunSpec:
    """A frozen description of one training run; equal specs have equal :attr:`key`.

    Build it with :func:`make_spec` (or the builders of :mod:`ltbench.methods`), which validates
    every field and parameter; the constructor itself only stores JSON.
    """

    method: str
    config_json: str
    params_json: str = "{}"
    deps: Tuple[Tuple[str, "RunSpec"], ...] = ()

    @property
    def config(self) -> Dict[str, Any]:
        """The configuration fields that define the run (a fresh dict; no execution options)."""
        return json.loads(self.config_json)

    @property
    def params(self) -> Dict[str, Any]:
        """The method's own parameters, defaults included (a fresh dict)."""
        return json.loads(self.params_json)

    @property
    def dependencies(self) -> Dict[str, "RunSpec"]:
        return dict(self.deps)

    def identity(self) -> Dict[str, Any]:
        """What the key hashes: method, canonical config and params, and the dependencies' keys."""
        config = self.config
        if config.get("head_bias_init") == LEGACY_HEAD_BIAS_INIT:
            # Runs described before the field existed had this head; their keys stay as they were.
            del config["head_bias_init"]
        return {"schema": SPEC_SCHEMA, "method": self.method, "config": _canonical(config),
                "params": _canonical(self.params), "deps": {n: d.key for n, d in self.deps}}

    @property
    def key(self) -> str:
        """20 hex digits of the SHA-256 of :meth:`identity`: the run's name in a store."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = hashlib.sha256(_dumps(self.identity()).encode()).hexdigest()[:20]
            object.__setattr__(self, "_key", cached)
        return cached

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"RunSpec({self.describe()!r}, key={self.key})"

    def walk(self) -> Iterator["RunSpec"]:
        """This spec's dependencies (recursively, each before its dependents), then itself."""
        for _, dep in self.deps:
            yield from dep.walk()
        yield self

    def describe(self) -> str:
        """A short human label: method, loss/sampler where they matter, data, seed."""
        c, p = self.config, self.params
        what = self.method
        if self.method in ("joint", "ohem", "mixup"):
            what += f" {c.get('loss')}" + (f"/{c.get('sampler')}" if c.get("sampler") != "instance" else "")
            for k in ("drw_epoch", "drs_epoch"):
                if c.get(k) is not None:
                    what += f" {k[:3]}@{c[k]}"
        if self.method == "ohem":
            what += f" {p.get('mode')} {p.get('keep_ratio')}"
        if self.method == "bbn":
            what += f" {c.get('bbn_sampler')}/{c.get('bbn_adaptor')}"
        if c.get("model") not in (None, "resnet32"):
            what += f" {c.get('model')}"
        for name, dep in self.deps:
            d = dep.config
            what += f" on {dep.method} {d.get('loss')}" + (f"/{d.get('sampler')}" if d.get("sampler") != "instance" else "")
        return (f"{what} {c.get('dataset')}-IR{float(c.get('imbalance_ratio', 0)):g} "
                f"seed{c.get('seed')} {c.get('epochs')}ep")

    def to_dict(self) -> Dict[str, Any]:
        """JSON form with the key and the dependencies' full specs (:meth:`from_dict` inverts it)."""
        return {"key": self.key, "method": self.method, "config": self.config, "params": self.params,
                "deps": {n: d.to_dict() for n, d in self.deps}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], validate: bool = True) -> "RunSpec":
        """The spec of :meth:`to_dict` (``validate``: through :func:`make_spec` again, so a spec
        read from disk obeys today's rules; a stored ``key`` must match)."""
        if not isinstance(d, Mapping) or not {"method", "config"} <= set(d):
            raise ValueError(f"not a run spec (needs 'method' and 'config'): {str(d)[:200]}")
        deps = {n: cls.from_dict(v, validate) for n, v in dict(d.get("deps") or {}).items()}
        if isinstance(d["config"], Mapping) and "head_bias_init" not in d["config"]:
            # Written before TrainConfig.head_bias_init existed: those runs zeroed the head's bias.
            d = {**d, "config": {**d["config"], "head_bias_init": LEGACY_HEAD_BIAS_INIT}}
        if validate:
            spec = make_spec(d["method"], d["config"], deps=deps, **dict(d.get("params") or {}))
        else:
            spec = cls(d["method"], _dumps(d["config"]), _dumps(dict(d.get("params") or {})),
                       tuple(sorted(deps.items())))
        if d.get("key") not in (None, spec.key):
            raise ValueError(f"run spec {d.get('key')} does not hash to its key (it hashes to {spec.key}): it was "
                             "edited by hand or written by an incompatible version")
        return spec

    def train_config(self, options: Optional["ExecOptions"] = None) -> TrainConfig:
        """The method's configuration object for this run, with ``options``' execution fields."""
        method = METHODS.get(self.method)
        fields = dict(self.config, **(options or ExecOptions()).config_fields(self))
        return method.config_cls.from_dict(fields).validate()


# --------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class Method:
    """What trains a method and how its parameters are checked.

    ``config_cls``: the exact configuration class (:class:`~ltbench.config.TrainConfig`,
    :class:`~ltbench.bbn.BBNConfig`, ...). ``trainer``: the :class:`~ltbench.engine.Trainer`
    subclass. ``params``: the method's own parameters with their defaults (passed to the trainer
    as keyword arguments). ``deps``: names of the runs it needs, each passed to the trainer as
    ``<name>_dir`` (the finished run's folder). ``check(config, params, deps)``: raise a
    ValueError naming parameter, value and what is valid. ``whole_network``: its checkpoint holds
    one ordinary network, so it can be a stage-1 / phase-I run. ``cost``: training image-passes
    per (epoch x training-set image), for ``plan``.
    """

    name: str
    description: str
    config_cls: type
    trainer: type
    params: Mapping[str, Any] = field(default_factory=dict)
    deps: Tuple[str, ...] = ()
    check: Optional[Callable[[TrainConfig, Dict[str, Any], Dict[str, RunSpec]], None]] = None
    whole_network: bool = False
    cost: float = 1.0

    def trainer_kwargs(self, spec: RunSpec, dep_dirs: Mapping[str, Path]) -> Dict[str, Any]:
        kwargs = dict(spec.params)
        kwargs.pop(LAUNCH_PARAM, None)
        kwargs.update({f"{name}_dir": dep_dirs[name] for name in self.deps})
        return kwargs


class MethodRegistry:
    """Method name -> :class:`Method`, with listing and errors naming every valid method."""

    def __init__(self) -> None:
        self._items: Dict[str, Method] = {}

    def register(self, method: Method) -> Method:
        if not isinstance(method, Method):
            raise ValueError(f"register a Method, got {method!r}")
        if method.name in self._items:
            raise ValueError(f"method {method.name!r} is already registered")
        if not (isinstance(method.trainer, type) and issubclass(method.trainer, Trainer)):
            raise ValueError(f"method {method.name!r}: trainer must be a Trainer subclass, got {method.trainer!r}")
        self._items[method.name] = method
        return method

    def get(self, name: str) -> Method:
        if not isinstance(name, str) or name not in self._items:
            raise ValueError(f"unknown method: method={name!r}; valid methods: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> List[str]:
        return sorted(self._items)

    def values(self) -> List[Method]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def table(self) -> List[str]:
        """One line per method: name, trainer, parameters with defaults, dependencies, description."""
        rows = [(m.name, m.trainer.__name__, ", ".join(f"{k}={v!r}" for k, v in m.params.items()) or "-",
                 ", ".join(m.deps) or "-", m.description) for m in self.values()]
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
        return [f"{n:<{widths[0]}}  {t:<{widths[1]}}  params: {p:<{widths[2]}}  deps: {d:<{widths[3]}}  {desc}"
                for n, t, p, d, desc in rows]


#: The method registry; the built-in methods are registered by :mod:`ltbench.methods`.
METHODS = MethodRegistry()


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (adding a method is one call)."""
    return METHODS.register(method)


def make_spec(method: str, config: Union[TrainConfig, Mapping[str, Any]], deps: Optional[Mapping[str, RunSpec]] = None,
              **params: Any) -> RunSpec:
    """Validate and build a :class:`RunSpec` (every error before anything is trained, read or deleted).

    ``config``: an instance of the method's configuration class, or a mapping of its fields;
    execution fields (:data:`~ltbench.engine.EXECUTION_FIELDS`) are dropped from the identity.
    ``deps``: the method's dependencies by name (specs). ``params``: the method's parameters.
    """
    m = METHODS.get(method)
    launch = params.pop(LAUNCH_PARAM, None)
    if launch is not None and not isinstance(launch, Mapping):
        raise ValueError(f"{LAUNCH_PARAM}={launch!r}: must be a mapping of launch options (ltbench.train)")
    if isinstance(config, TrainConfig):
        if type(config) is not m.config_cls:
            raise ValueError(f"method {method!r} trains a {m.config_cls.__name__}, got config of type "
                             f"{type(config).__name__}")
        cfg = config
    elif isinstance(config, Mapping):
        cfg = m.config_cls.from_dict(dict(config))
    else:
        raise ValueError(f"config must be a {m.config_cls.__name__} or a mapping of its fields, got {config!r}")
    cfg.validate()
    unknown = sorted(set(params) - set(m.params))
    if unknown:
        raise ValueError(f"method {method!r} does not take parameter(s) {unknown}; its parameters: "
                         f"{', '.join(m.params) or 'none'}")
    full = {**dict(m.params), **params}
    deps = dict(deps or {})
    if sorted(deps) != sorted(m.deps):
        raise ValueError(f"method {method!r} needs dependencies {list(m.deps) or 'none'}, got {sorted(deps) or 'none'}")
    for name, dep in deps.items():
        if not isinstance(dep, RunSpec):
            raise ValueError(f"dependency {name}={dep!r} must be a RunSpec")
    if m.check is not None:
        m.check(cfg, full, deps)
    if launch:
        full[LAUNCH_PARAM] = dict(launch)
    unused = tuple(getattr(cfg, "UNUSED_FIELDS", ()))
    identity = {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_FIELDS and k not in unused}
    _canonical(identity, "config")
    _canonical(full, "params")
    return RunSpec(method, _dumps(identity), _dumps(full), tuple(sorted(deps.items())))


def need_whole_network(name: str, dep: RunSpec, what: str) -> None:
    """Refuse a dependency that is not a one-network run (a BBN or stage-2 run as stage 1)."""
    if not METHODS.get(dep.method).whole_network:
        ok = [m.name for m in METHODS.values() if m.whole_network]
        raise ValueError(f"{what}: dependency {name} must be a whole-network run (method {' / '.join(ok)}), "
                         f"got method {dep.method!r} ({dep.describe()})")


# --------------------------------------------------------------------------------------------
# Execution options


#: ``compile="auto"`` compiles runs of at least this many training image-passes: on 2 CPU cores the
#: first compilation of ResNet-32 costs about a minute and saves ~2.4 ms per image (199.6 -> 379.5
#: images/s), so it pays from ~25,000 images; a quick-profile run (~10,000) stays eager.
COMPILE_MIN_IMAGE_PASSES = 100_000


@dataclass(frozen=True)
class ExecOptions:
    """How runs execute; none of it changes a run's identity.

    ``device``, ``compile``, ``data_root``, ``channels_last``: the configuration's execution
    fields. ``checkpoint_every``: epochs between checkpoints (None: every epoch up to 20 epochs,
    then ``epochs // 20``, at most 10). ``progress``: ``True`` (progress bar), ``False`` (silent)
    or ``"auto"``: a bar on a terminal, else one line per trained run (notebooks under papermill).
    ``deadline``: ``time.time()`` after which a run stops at the end of an epoch
    (:class:`~ltbench.engine.DeadlineReached`). ``lock_timeout``: seconds to wait when another live
    process is training the same run (None: until it finishes, then its result is loaded; 0: raise
    :class:`RunLocked` at once). The last three fields serve the torchrun entry
    point: a trainer wrapper (DDP), extra trainer keyword arguments, and whether this process
    writes files (rank 0). ``fast``: ``False`` (the eager loop), ``"static"`` (padded static
    shapes) or ``"graph"`` / ``True`` (static shapes and whole-step compiled graphs, CUDA graphs
    on CUDA): :mod:`ltbench.fastpath`; trainers it cannot run stay eager with a warning.
    """

    device: str = "auto"
    compile: Union[bool, str] = "auto"
    data_root: Optional[str] = None
    channels_last: bool = True
    checkpoint_every: Optional[int] = None
    progress: Union[bool, str] = "auto"
    deadline: Optional[float] = None
    lock_timeout: Optional[float] = None
    wrap_trainer: Optional[Callable[[type], type]] = None
    trainer_extra: Mapping[str, Any] = field(default_factory=dict)
    writer: bool = True
    notes: Mapping[str, Any] = field(default_factory=dict)
    fast: Union[bool, str] = False

    def __post_init__(self) -> None:
        if not isinstance(self.device, str):
            raise ValueError(f"invalid device={self.device!r}: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.compile not in (True, False, "auto") or not isinstance(self.compile, (bool, str)):
            raise ValueError(f"invalid compile={self.compile!r}: must be True, False or 'auto' (compiled where "
                             "the device and the trainer allow it; LTBENCH_COMPILE=0 turns 'auto' off)")
        for name in ("channels_last", "writer"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"invalid {name}={getattr(self, name)!r}: must be True or False")
        if self.data_root is not None and not isinstance(self.data_root, (str, os.PathLike)):
            raise ValueError(f"invalid data_root={self.data_root!r}: must be a folder path or None")
        ce = self.checkpoint_every
        if ce is not None and (isinstance(ce, bool) or not isinstance(ce, int) or ce < 1):
            raise ValueError(f"invalid checkpoint_every={ce!r}: must be a positive int or None")
        if self.progress not in (True, False, "auto"):
            raise ValueError(f"invalid progress={self.progress!r}: must be True, False or 'auto'")
        if self.deadline is not None and (isinstance(self.deadline, bool) or not isinstance(self.deadline, (int, float))
                                          or not math.isfinite(self.deadline)):
            raise ValueError(f"invalid deadline={self.deadline!r}: must be a time.time() value or None")
        from .fastpath import check_mode

        check_mode(self.fast)

    def compiled(self, spec: RunSpec) -> bool:
        """Whether ``spec`` runs with ``torch.compile``: ``compile`` itself when it is a bool; for
        ``"auto"``, on where it measured faster (CPU: 1.9x the eager model on 2 cores, CUDA), the
        method's trainer allows it (``Trainer.COMPILE_AUTO``) and the run is long enough to repay
        the compilation (:data:`COMPILE_MIN_IMAGE_PASSES`); off on MPS, on the fast path (which
        compiles the whole step itself) and when the environment sets ``LTBENCH_COMPILE=0``."""
        if isinstance(self.compile, bool):
            return self.compile
        if os.environ.get("LTBENCH_COMPILE", "").strip().lower() in ("0", "false", "off", "no") or self.fast:
            return False
        device = self.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        if not (device == "cpu" or device.startswith("cuda")):
            return False
        if not getattr(METHODS.get(spec.method).trainer, "COMPILE_AUTO", False):
            return False
        from .executor import cost  # noqa: PLC0415 - the planner imports this module

        passes = cost(spec)
        return passes is None or passes >= COMPILE_MIN_IMAGE_PASSES

    def config_fields(self, spec: RunSpec) -> Dict[str, Any]:
        epochs = int(spec.config.get("epochs", 1))
        every = self.checkpoint_every or max(1, min(10, epochs // 20))
        return {"device": self.device, "compile": self.compiled(spec),
                "data_root": None if self.data_root is None else str(self.data_root),
                "channels_last": self.channels_last, "checkpoint_every": every}

    def bar(self) -> bool:
        if self.progress == "auto":
            return bool(getattr(sys.stderr, "isatty", lambda: False)())
        return bool(self.progress)

    def record(self, spec: Optional[RunSpec] = None) -> Dict[str, Any]:
        """What ``metrics.json["execution"]`` keeps (JSON values only); with ``spec``, ``compile``
        is what that run used and ``compile_option`` what was asked."""
        compiled = self.compile if spec is None else self.compiled(spec)
        return {"code": code_version(), "device": self.device, "compile": compiled, "compile_option": self.compile,
                "channels_last": self.channels_last,
                "checkpoint_every": self.checkpoint_every, "host": socket.gethostname(), "pid": os.getpid(),
                "distributed": self.wrap_trainer is not None, **dict(self.notes),
                **({"fast": self.fast} if self.fast else {})}

    def attach_fast(self, trainer: Trainer) -> Any:
        """Put ``trainer`` on the fast path when ``fast`` asks for it (:func:`ltbench.fastpath.attach`)."""
        if not self.fast:
            return None
        from .fastpath import attach

        return attach(trainer, self.fast)

    @staticmethod
    def fast_record(trainer: Trainer, fast: Any) -> Dict[str, Any]:
        """How the fast path ran (``metrics.json["execution"]["fast"]``), or why it did not."""
        if fast is not None:
            return fast.record()
        from .fastpath import unsupported_reason

        return {"mode": None, "eager_because": unsupported_reason(trainer)}


_CODE_VERSION: Optional[Dict[str, Any]] = None


def code_version() -> Dict[str, Any]:
    """The code that trains: ltbench's version and the git commit of its checkout (``+dirty`` with
    uncommitted changes to tracked files outside ``results/``, which holds outputs, not code), or
    ``$LTBENCH_COMMIT`` where the checkout has no ``.git`` (a device machine gets it from
    ``make carry``). Computed once per process."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import subprocess

        from ._version import __version__

        commit = os.environ.get("LTBENCH_COMMIT") or None
        repo = Path(__file__).resolve().parents[1]
        if commit is None and (repo / ".git").exists():
            try:
                git = ["git", "-C", str(repo)]
                commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                        timeout=10, check=True).stdout.strip() or None
                dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                        ":(exclude)results"], capture_output=True, text=True, timeout=10).stdout.strip()
                if commit and dirty:
                    commit += "+dirty"
            except (OSError, subprocess.SubprocessError):
                commit = None
        _CODE_VERSION = {"ltbench": __version__, "commit": commit}
    return dict(_CODE_VERSION)


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
        return checkpoint_progress(path) if path.is_file() else None

    def has_weights(self, spec: RunSpec) -> bool:
        """Whether the run's folder holds the checkpoint of its last epoch (stage 2, FSA and
        analyses load the weights from it)."""
        return _finished_checkpoint(self.folder(spec) / CHECKPOINT_FILE) is not None

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


def _finished_checkpoint(path: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint at ``path`` if it exists, loads and is at its last epoch; else None."""
    if not path.is_file():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state if state["epoch"] == state["config"]["epochs"] else None
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is handled by run()
        return None


def checkpoint_progress(path: Path) -> Optional[Tuple[int, int]]:
    """(epochs trained, epochs of the run) of the checkpoint at ``path``, or None if unreadable."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["epoch"]), int(state["config"]["epochs"])
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported by the caller
        return None


def _checkpoint_readable(path: Path) -> bool:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return isinstance(state, dict) and {"config", "model", "epoch"} <= set(state)
    except Exception:  # noqa: BLE001
        return False


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

    Dependencies run first (their weights are needed: a finished dependency whose checkpoint is
    missing, as in committed results, is trained again; runs are deterministic on CPU). A
    finished run is loaded, an interrupted one resumes from its checkpoint, anything else is
    trained and saved atomically (``metrics.json`` last). ``require_weights``: also make sure the
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
    if options.writer and not (not force and store.load(spec) is not None and not require_weights):
        store.check_writable()  # before any dependency is trained
    dep_dirs: Dict[str, Path] = {}
    for name, dep in spec.deps:
        run(dep, store, options, require_weights=True)
        dep_dirs[name] = store.folder(dep)
    if not force:
        done = store.load(spec)
        if done is not None and (not require_weights or store.has_weights(spec)):
            return done
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


def _train(spec: RunSpec, method: Method, store: RunStore, options: ExecOptions, dep_dirs: Dict[str, Path],
           force: bool, save: bool = True) -> TrainResult:
    """Train (or resume) ``spec`` in its folder, holding its lock; save it atomically (``save``:
    the result files; the checkpoint is always written)."""
    folder = store.folder(spec)
    if True:
        ckpt = folder / CHECKPOINT_FILE
        if options.writer:
            if force:
                (folder / METRICS_FILE).unlink(missing_ok=True)
                ckpt.unlink(missing_ok=True)
            elif ckpt.is_file() and not _checkpoint_readable(ckpt):
                store._set_aside(ckpt, "is not a readable checkpoint")
        cfg = spec.train_config(options)
        trainer_cls = options.wrap_trainer(method.trainer) if options.wrap_trainer else method.trainer
        kwargs = {**method.trainer_kwargs(spec, dep_dirs), **dict(options.trainer_extra)}
        bar = options.bar()
        trainer = trainer_cls(cfg, progress=bar, **kwargs)
        trainer.label = spec.describe()
        trainer.run_key = spec.key
        if options.writer:  # written once the trainer accepted the spec: a refused run leaves no folder
            atomic_write_json(folder / SPEC_FILE, spec.to_dict())
        fast = options.attach_fast(trainer)
        result = trainer.fit(folder, deadline=options.deadline)
        result.meta = {"key": spec.key, "spec": spec.to_dict(), "execution": options.record(spec)}
        if options.fast:
            result.meta["execution"]["fast"] = options.fast_record(trainer, fast)
        if options.writer and save:
            result.save(folder)
            # What a later call would load (curves are stored to 6 digits): a run returns the same
            # result whether it was trained now or reused.
            result = TrainResult.load(folder)
            if options.progress == "auto" and not bar:
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
    from .methods import spec_for

    spec = spec_for(cfg, method, deps, **params)
    base = options or ExecOptions(device=cfg.device, compile=cfg.compile, data_root=cfg.data_root,
                                  channels_last=cfg.channels_last, checkpoint_every=cfg.checkpoint_every)
    options = dataclasses.replace(base, progress=progress)
    if store is not None:
        return run(spec, store, options, force=force, require_weights=require_weights)
    if spec.deps:
        raise ValueError(f"method {spec.method!r} needs its dependencies' weights: pass a store")
    m = METHODS.get(spec.method)
    trainer = m.trainer(spec.train_config(options), progress=options.bar(), **m.trainer_kwargs(spec, {}))
    trainer.label = spec.describe()
    fast = options.attach_fast(trainer)
    result = trainer.fit(None, deadline=options.deadline)
    result.meta = {"key": spec.key, "spec": spec.to_dict(), "execution": options.record(spec)}
    if options.fast:
        result.meta["execution"]["fast"] = options.fast_record(trainer, fast)
    return result


# The built-in methods (imported last: ltbench.methods imports this module's names).
from . import methods as _methods  # noqa: E402,F401
