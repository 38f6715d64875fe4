"""What a run is and how it executes: :class:`RunSpec` (a run's frozen, hashed description),
the method registry :data:`METHODS` with :func:`make_spec`, the cost of a run in image-passes,
and :class:`ExecOptions` (execution choices that are not part of a run's identity).

This is the lower half of the runs layer: :mod:`ltbench.methods` registers the built-in methods
on it and :mod:`ltbench.runs` (the store and :func:`~ltbench.runs.run`) re-exports every name.
Import from :mod:`ltbench.runs` (or ``ltbench``), which guarantees the built-ins are registered.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from . import fastpath, plugins
from .checks import is_number, is_positive_int, require
from .config import LEGACY_HEAD_BIAS_INIT, TrainConfig
from .data.counts import long_tailed_counts
from .engine import CONFIG_METHODS, EXECUTION_FIELDS, Trainer
from .provenance import code_version

__all__ = ["RunSpec", "Method", "MethodRegistry", "METHODS", "register_method", "make_spec", "need_whole_network",
           "ExecOptions", "COMPILE_MIN_IMAGE_PASSES", "cost", "train_size", "code_version", "SPEC_FILE", "LOCK_FILE",
           "LAUNCH_PARAM", "DONE", "PARTIAL", "PENDING"]

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
        if config.get("amp_cpu") is False:
            del config["amp_cpu"]  # float32 on CPU: every run stored before the field existed
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
    """Method name -> :class:`Method`, with listing and errors naming every valid method.

    A reference ``"path/file.py:Name"`` or ``"module:Name"`` names a method outside the package
    (:func:`method_from_reference`); a name it does not know first runs the installed
    ``ltbench.plugins`` entry points (:func:`ltbench.plugins.load_entry_points`).
    """

    def __init__(self) -> None:
        self._items: Dict[str, Method] = {}
        self._references: Dict[str, Tuple[Any, Method]] = {}  # reference -> (object loaded, its Method)

    def register(self, method: Method) -> Method:
        if not isinstance(method, Method):
            raise ValueError(f"register a Method, got {method!r}")
        if method.name in self._items:
            raise ValueError(f"method {method.name!r} is already registered")
        if not (isinstance(method.trainer, type) and issubclass(method.trainer, Trainer)):
            raise ValueError(f"method {method.name!r}: trainer must be a Trainer subclass, got {method.trainer!r}")
        self._items[method.name] = method
        CONFIG_METHODS.setdefault(method.config_cls, []).append(method.name)
        plugins.note_external(method.name, method.trainer)
        return method

    def get(self, name: str) -> Method:
        if isinstance(name, str) and name not in self._items and plugins.is_reference(name):
            cached = self._references.get(name)
            if cached is None or cached[0] is not plugins.load(name):  # new, or its file was edited
                self._references[name] = (plugins.load(name), method_from_reference(name))
            return self._references[name][1]
        if isinstance(name, str) and name not in self._items:
            plugins.load_entry_points()
        if not isinstance(name, str) or name not in self._items:
            raise ValueError(f"unknown method: method={name!r}; valid methods: {', '.join(self.names())}, or a "
                             "reference '<file.py or module>:<Name>' to a Method or a Trainer subclass")
        return self._items[name]

    def names(self) -> List[str]:
        plugins.load_entry_points()
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

#: Trainer.__init__'s own arguments; a Trainer subclass's further keyword arguments are its parameters.
_TRAINER_ARGS = ("self", "cfg", "data", "progress")


def method_from_reference(ref: str) -> Method:
    """The method that ``ref`` names: a :class:`Method` (used as it is, renamed to ``ref``) or a
    :class:`~ltbench.engine.Trainer` subclass, which trains a TrainConfig and whose keyword
    arguments with defaults are the method's parameters; its checkpoint is taken to hold one
    ordinary network (a stage-1 run for cRT, ...) unless the class sets ``WHOLE_NETWORK = False``.
    The run's key holds ``ref``."""
    obj = plugins.load(ref)
    if isinstance(obj, Method):
        return Method(**{**{f: getattr(obj, f) for f in obj.__dataclass_fields__}, "name": ref})
    if not (isinstance(obj, type) and issubclass(obj, Trainer)):
        raise plugins.PluginError(f"method={ref!r} is a {type(obj).__name__}, not a ltbench.runs.Method or a "
                                  "ltbench.engine.Trainer subclass (a loss goes in loss=..., not method=...)")
    params: Dict[str, Any] = {}
    for p in inspect.signature(obj.__init__).parameters.values():
        if p.name in _TRAINER_ARGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is p.empty:
            raise plugins.PluginError(f"method={ref!r}: {obj.__name__}.__init__ parameter {p.name!r} has no "
                                      "default; give every method parameter a default (it is set per run)")
        params[p.name] = p.default
    doc = (obj.__doc__ or "").strip().splitlines()
    return Method(name=ref, description=doc[0] if doc else f"{obj.__name__} ({ref})", config_cls=TrainConfig,
                  trainer=obj, params=params, whole_network=bool(getattr(obj, "WHOLE_NETWORK", True)))


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


def _plugin_record(spec: Optional[RunSpec]) -> Dict[str, Any]:
    """``{"plugins": {reference: source digest}}`` for a run that names code outside the package."""
    found = plugins.digests(spec.config, spec.method) if spec is not None else {}
    return {"plugins": found} if found else {}


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
        require(ce is None or is_positive_int(ce), "checkpoint_every", ce, "a positive int or None")
        require(self.progress in (True, False, "auto"), "progress", self.progress, "True, False or 'auto'")
        require(self.deadline is None or is_number(self.deadline), "deadline", self.deadline,
                "a time.time() value or None")
        fastpath.check_mode(self.fast)

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
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if not (device == "cpu" or device.startswith("cuda")):
            return False
        if not getattr(METHODS.get(spec.method).trainer, "COMPILE_AUTO", False):
            return False
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
                **({"fast": self.fast} if self.fast else {}), **_plugin_record(spec)}

    def attach_fast(self, trainer: Trainer) -> Any:
        """Put ``trainer`` on the fast path when ``fast`` asks for it (:func:`ltbench.fastpath.attach`)."""
        if not self.fast:
            return None
        return fastpath.attach(trainer, self.fast)

    @staticmethod
    def fast_record(trainer: Trainer, fast: Any) -> Dict[str, Any]:
        """How the fast path ran (``metrics.json["execution"]["fast"]``), or why it did not."""
        if fast is not None:
            return fast.record()
        return {"mode": None, "eager_because": fastpath.unsupported_reason(trainer)}


# --------------------------------------------------------------------------------------------
# Cost

#: Per-class size of the full CIFAR training sets.
_CIFAR = {"cifar10": (10, 5000), "cifar100": (100, 500)}


def train_size(config: Mapping[str, Any]) -> Optional[int]:
    """Images per epoch of a run's configuration (None for datasets whose size needs the data)."""
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
