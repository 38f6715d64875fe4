"""Training beyond one GPU: ``python -m ltbench.train --config FILE`` under ``torchrun`` (DDP).

::

    torchrun --nproc-per-node=8 -m ltbench.train --config configs/imagenet_lt_resnext50_joint.toml
    python -m ltbench.train --config configs/imagenet_lt_resnext50_joint.toml   # one process
    python -m ltbench.train --config FILE --dry-run          # check config and data, train nothing
    python -m ltbench.train --config FILE --set train.epochs=1 launch.num_workers=0

The same engine (:class:`ltbench.engine.Trainer` and its BBN / stage-2 subclasses) runs under
PyTorch's own ``DistributedDataParallel`` with:

- the samplers' rank sharding (docs/methods.md §5): every rank computes the same global draw and takes
  ``global[rank::world_size]``, cut to equal length (:meth:`ltbench.samplers.LTSampler.shard`);
  ``train.batch_size`` is the *global* batch and must be divisible by the world size;
- large datasets (ImageNet-LT, Places-LT, iNaturalist, :mod:`ltbench.data.large`) streamed from
  disk through a normal ``DataLoader`` with worker processes; each image's augmentation is seeded
  by its position in the epoch's global draw, so it does not depend on the rank or worker that
  loads it (N processes with batch B/N see exactly the batches one process with batch B sees).
  CIFAR-LT and the other in-memory sets keep the device-resident path;
- the stateful losses' statistics all-reduced inside ``backward`` (docs/methods.md §4, ``ltbench.losses``);
- ``launch.sync_batchnorm`` (``torch.nn.SyncBatchNorm``, CUDA only): without it each rank
  normalises with its own batch statistics, as in the papers' multi-GPU runs;
- checkpoints and results written by rank 0 only (atomic writes, :mod:`ltbench.io`), resume from
  ``checkpoint.pt`` on every rank, and evaluation sharded over ranks with the predictions gathered
  (:func:`ltbench.distributed.gather_shards`) before the metrics of docs/methods.md §3 are computed.

Config file (TOML, or JSON with the same structure)::

    kind = "train"                  # a RUN_KINDS name: train | bbn | stage2
    out_dir = "runs/imagenet_lt"    # the run store: the run lands in out_dir/runs/<key>/

    [train]                         # TrainConfig fields (BBNConfig for bbn; stage-2 overrides for stage2)
    dataset = "imagenet_lt"
    model = "timm/resnext50_32x4d"
    ...
    [train.data_options]            # ltbench.data.large.build_large_dataset options
    train_split = "ImageNet_LT_train.txt"

    [launch]                        # LaunchOptions: how it runs
    num_workers = 8
    sync_batchnorm = false

    [published]                     # the numbers to compare with (recorded in metrics.json)
    top1 = 44.4
    source = "Decoupling README; docs/methods.md §10"

``kind = "stage2"``: the top-level ``stage1`` names the stage-1 run's config file (relative to
this file's folder; its ``out_dir`` must be this one's, so both runs live in one store), and
``[train]`` holds ``method`` (crt, lws, tau_norm, ce, rw, rs) and overrides of the method's recipe;
data and model come from the stage-1 config (:func:`ltbench.methods.stage_two_spec`). A missing
stage-1 run is trained first.

Every run goes through :func:`ltbench.runs.run`: a config names a run spec (its identity is the
spec's content, not the folder), a finished run in the store is reused, an interrupted one resumes
on every rank, and ``[train]``'s execution fields (``device``, ``compile``, ``data_root``,
``checkpoint_every``, ``channels_last``) are execution options, not part of the identity.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data._utils.collate import default_collate

from . import bbn as _bbn  # noqa: F401 - BBN run kind (BBNTrainer, BBNConfig)
from . import distributed as D
from . import two_stage as _two_stage  # noqa: F401 - registers step_crt
from .checkpoint import load_state
from .config import TrainConfig
from .data import LARGE_DATASETS, LargeLTData, LargeLTDataset, build_large_dataset
from .data.large import LARGE_OPTIONS
from .bbn import BBNConfig
from .methods import STAGE2_METHOD_NAMES, stage_two_spec
from .runner import outside_clone_hint, parse_value
from .engine import EXECUTION_FIELDS, EvalResult, Trainer, TrainResult, derive_seed, load_data
from .metrics import confusion_matrix, expected_calibration_error, per_class_accuracy, shot_accuracy
from .models import get_classifier
from .registry import Registry
from .runs import ExecOptions, RunSpec, RunStore, make_spec
from .runs import run as runs_run
from .samplers import LTSampler, _splitmix64

__all__ = [
    "LaunchOptions", "RunKind", "RUN_KINDS", "RunConfig", "load_run_config", "StreamingSplit",
    "eval_result_from_predictions", "DistributedMixin", "distributed_trainer", "load_run_data", "run", "main",
]

_MASK63 = (1 << 63) - 1


# --------------------------------------------------------------------------------------------
# Launch options and run kinds


@dataclass
class LaunchOptions:
    """How a run is executed. Only ``sync_batchnorm``, ``pretrained`` and ``pretrained_file``
    change the numbers; they are recorded in ``metrics.json`` and checked on resume.

    ``num_workers``: DataLoader worker processes per rank (streamed datasets). ``eval_batch_size``:
    per-rank evaluation batch. ``prefetch_factor``: batches each worker loads ahead.
    ``pin_memory``: ``None`` = on for CUDA. ``sync_batchnorm``: convert BatchNorm layers to
    ``torch.nn.SyncBatchNorm`` (CUDA, world size > 1). ``pretrained`` / ``pretrained_file``: start
    a ``timm/`` backbone from timm's pretrained weights (or that file), classifier excluded.
    ``confusion_max_classes``: store the confusion matrix in ``metrics.json`` only up to this many
    classes (iNaturalist's 8142² matrix would be a gigabyte of JSON). ``dist_backend``: ``None``
    (nccl on CUDA, gloo on CPU), ``"gloo"`` or ``"nccl"``. ``find_unused_parameters``: DDP's flag.
    """

    num_workers: int = 8
    eval_batch_size: int = 256
    prefetch_factor: int = 2
    pin_memory: Optional[bool] = None
    sync_batchnorm: bool = False
    pretrained: bool = False
    pretrained_file: Optional[str] = None
    confusion_max_classes: int = 400
    dist_backend: Optional[str] = None
    find_unused_parameters: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LaunchOptions":
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown [launch] option(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**d).validate()

    def validate(self) -> "LaunchOptions":
        def need(ok: bool, name: str, valid: str) -> None:
            if not ok:
                raise ValueError(f"invalid launch.{name}={getattr(self, name)!r}: must be {valid}")

        def is_int(v: Any, lo: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        need(is_int(self.num_workers, 0), "num_workers", "an int >= 0")
        need(is_int(self.eval_batch_size, 1), "eval_batch_size", "a positive int")
        need(is_int(self.prefetch_factor, 1), "prefetch_factor", "a positive int")
        need(is_int(self.confusion_max_classes, 0), "confusion_max_classes", "an int >= 0")
        for name in ("sync_batchnorm", "pretrained", "find_unused_parameters", "progress"):
            need(isinstance(getattr(self, name), bool), name, "true or false")
        need(self.pin_memory is None or isinstance(self.pin_memory, bool), "pin_memory", "true, false or absent")
        need(self.dist_backend in (None, *D.BACKEND_FOR_DEVICE.values()), "dist_backend",
             f"absent or one of {', '.join(sorted(D.BACKEND_FOR_DEVICE.values()))}")
        need(self.pretrained_file is None or (isinstance(self.pretrained_file, str) and self.pretrained),
             "pretrained_file", "a path, together with pretrained = true")
        return self

    def record(self) -> Dict[str, Any]:
        """The options that change the numbers (checked on resume, kept in metrics.json)."""
        return {"sync_batchnorm": self.sync_batchnorm, "pretrained": self.pretrained,
                "pretrained_file": self.pretrained_file}


@dataclass(frozen=True)
class RunKind:
    """How a ``kind`` of config file becomes a run spec: ``build([train] fields, file data, file path)``."""

    build: Callable[[Dict[str, Any], Dict[str, Any], Path], RunSpec]
    description: str = ""


def _launch_params(data: Dict[str, Any]) -> Dict[str, Any]:
    """The launch options that change the numbers, as the spec's ``launch`` parameter (only when
    they differ from the defaults, so ordinary runs share their identity with every other path)."""
    record = LaunchOptions.from_dict(dict(data.get("launch", {}))).record()
    return {"launch": record} if record != LaunchOptions().record() else {}


def _train_spec(d: Dict[str, Any], data: Dict[str, Any], path: Path) -> RunSpec:
    return make_spec("joint", TrainConfig.from_dict(d), **_launch_params(data))


def _bbn_spec(d: Dict[str, Any], data: Dict[str, Any], path: Path) -> RunSpec:
    return make_spec("bbn", BBNConfig().replace(**d), **_launch_params(data))


def _stage2_spec(d: Dict[str, Any], data: Dict[str, Any], path: Path) -> RunSpec:
    d = dict(d)
    if "stage1_dir" in d:
        raise ValueError(f"--config {str(path)!r}: [train].stage1_dir is gone: name the stage-1 run's config file "
                         "with a top-level stage1 = \"<file>.toml\" (runs are found by their spec, not by folder)")
    if "method" not in d or not isinstance(data.get("stage1"), str):
        raise ValueError(f"--config {str(path)!r}: kind = 'stage2' needs a top-level stage1 = \"<stage-1 config file>\" "
                         "and [train].method (crt, lws, tau_norm, ce, rw, rs)")
    method = d.pop("method")
    name = {"ce": "stage2_ce", "rw": "stage2_rw", "rs": "stage2_rs"}.get(method, method)
    if name not in STAGE2_METHOD_NAMES:
        raise ValueError(f"--config {str(path)!r}: invalid [train].method={method!r}; valid: crt, lws, tau_norm, ce, rw, rs")
    s1_path = (path.parent / data["stage1"]).resolve()
    stage1 = load_run_config(s1_path)
    if Path(stage1.out_dir) != Path(data.get("out_dir", "")):
        raise ValueError(f"--config {str(path)!r}: its stage-1 config {data['stage1']!r} stores runs in "
                         f"out_dir={stage1.out_dir!r}, this one in out_dir={data.get('out_dir')!r}; use one out_dir (one "
                         "run store) for both")
    exec_fields = {k: d.pop(k) for k in list(d) if k in EXECUTION_FIELDS}
    del exec_fields
    spec = stage_two_spec(stage1.spec, name, **d)
    launch = _launch_params(data)
    return make_spec(spec.method, spec.train_config(), deps=spec.dependencies, **launch) if launch else spec


#: ``kind`` of a config file -> :class:`RunKind` (the registry stores the objects themselves).
RUN_KINDS: Registry[RunKind] = Registry("run kind", "kind")
RUN_KINDS.register("train")(RunKind(_train_spec, "one joint training run (method 'joint', TrainConfig)"))  # type: ignore[arg-type]
RUN_KINDS.register("bbn")(RunKind(_bbn_spec, "BBN, docs/methods.md §7 (method 'bbn', BBNConfig)"))  # type: ignore[arg-type]
RUN_KINDS.register("stage2")(RunKind(_stage2_spec,  # type: ignore[arg-type]
                                     "classifier re-training on a stage-1 run named by its config file, docs/methods.md §6"))


@dataclass
class RunConfig:
    """Everything a config file says: the kind, the run store (``out_dir``), the run spec, the
    execution fields of ``[train]``, the launch options and the published numbers to compare with."""

    kind: str
    out_dir: str
    spec: RunSpec
    execution: Dict[str, Any] = field(default_factory=dict)
    launch: LaunchOptions = field(default_factory=LaunchOptions)
    published: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None

    @property
    def train(self) -> TrainConfig:
        """The run's configuration with this file's execution fields."""
        return self.spec.train_config(self.exec_options())

    def exec_options(self, **changes: Any) -> ExecOptions:
        fields = {k: v for k, v in self.execution.items() if k in ("device", "compile", "data_root", "channels_last",
                                                                      "checkpoint_every")}
        return ExecOptions(**{**fields, **changes})


_TOP_LEVEL = ("kind", "out_dir", "stage1", "train", "launch", "published")


def read_config_file(path: str | os.PathLike) -> Dict[str, Any]:
    """A config file as a dict: ``.toml`` (``tomllib``) or ``.json``."""
    path = Path(path)
    if not path.is_file():
        hint = outside_clone_hint(path, "configs") if path.parts[:1] == ("configs",) else ""
        raise FileNotFoundError(f"config file not found: --config {str(path)!r}{hint}")
    suffix = path.suffix.lower()
    readers = {".toml": _read_toml, ".json": lambda p: json.loads(p.read_text())}
    if suffix not in readers:
        raise ValueError(f"--config {str(path)!r}: unknown format {suffix!r}; valid: {', '.join(readers)}")
    try:
        data = readers[suffix](path)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ValueError(f"--config {str(path)!r} could not be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {str(path)!r}: expected a table/object at the top level")
    return data


def _read_toml(path: Path) -> Dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ValueError("TOML configs need Python >= 3.11 (or `pip install tomli`); or use a .json config") from None
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``["train.epochs=1", "launch.num_workers=0"]`` applied to the nested config dict (values
    parsed as Python literals, else YAML, else strings, as the runner's ``-p``)."""
    data = json.loads(json.dumps(data))  # deep copy
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad --set {item!r}: expected SECTION.KEY=VALUE (e.g. train.epochs=1)")
        parts = key.strip().split(".")
        if parts[0] not in _TOP_LEVEL:
            raise ValueError(f"bad --set {item!r}: unknown section {parts[0]!r}; valid: {', '.join(_TOP_LEVEL)}")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"bad --set {item!r}: {p!r} is not a table")
        node[parts[-1]] = parse_value(value.strip())
    return data


def load_run_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a config file (raising ValueError naming what is wrong)."""
    path = Path(path)
    data = apply_overrides(read_config_file(path), overrides)
    unknown = sorted(set(data) - set(_TOP_LEVEL))
    if unknown:
        raise ValueError(f"--config {str(path)!r}: unknown top-level key(s) {unknown}; valid: {', '.join(_TOP_LEVEL)}")
    kind = data.get("kind", "train")
    if not isinstance(kind, str):
        raise ValueError(f"invalid kind={kind!r}: must be one of {', '.join(RUN_KINDS.names())}")
    rk: RunKind = RUN_KINDS.get(kind)  # type: ignore[assignment]
    out_dir = data.get("out_dir")
    if not isinstance(out_dir, str) or not out_dir:
        raise ValueError(f"--config {str(path)!r}: invalid out_dir={out_dir!r}: must be a folder path (the run store)")
    for section in ("train", "launch", "published"):
        if not isinstance(data.get(section, {}), dict):
            raise ValueError(f"--config {str(path)!r}: [{section}] must be a table")
    if kind != "stage2" and "stage1" in data:
        raise ValueError(f"--config {str(path)!r}: stage1 is only for kind = 'stage2'")
    launch = LaunchOptions.from_dict(data.get("launch", {}))
    train = dict(data.get("train", {}))
    execution = {k: train.pop(k) for k in list(train) if k in EXECUTION_FIELDS}
    spec = rk.build(train, data, path)
    cfg = RunConfig(kind, out_dir, spec, execution, launch, dict(data.get("published", {})), str(path))
    cfg.exec_options()  # validates the execution fields
    _check_spec(cfg)
    return cfg


def _check_spec(rc: RunConfig) -> None:
    """Problems that need the whole config (before any process group or data)."""
    cfg, launch = rc.train, rc.launch
    if launch.pretrained:
        if rc.kind != "train":
            raise ValueError(f"launch.pretrained=true is supported for kind = 'train' only, got kind={rc.kind!r}")
        if not cfg.model.startswith("timm/"):
            raise ValueError(f"launch.pretrained=true needs a timm backbone (model='timm/<name>'), got model={cfg.model!r}")
    if cfg.dataset in LARGE_DATASETS:
        unknown = sorted(set(cfg.data_options) - set(LARGE_OPTIONS))
        if unknown:
            raise ValueError(f"unknown data_options {unknown} for dataset={cfg.dataset!r}; valid: {', '.join(LARGE_OPTIONS)}")


# --------------------------------------------------------------------------------------------
# Streaming a dataset from disk through a DataLoader, behind the engine's dataset interface


class _PlannedBatches(Sampler[List[Any]]):
    """The batch sampler of a :class:`StreamingSplit`'s DataLoader: whatever list was planned."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: List[List[Any]] = []

    def __iter__(self) -> Iterator[List[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _sample_seed(base: int, stream: int, position: int) -> int:
    """Augmentation seed of the image at global ``position`` of sampler ``stream`` this epoch."""
    return _splitmix64(base ^ _splitmix64((stream << 48) ^ position)) & _MASK63


class StreamingSplit:
    """A :class:`LargeLTDataset` behind the interface the engine uses for its device-resident
    data (``batch``, ``iterate``, ``targets``, ``len``), loaded by a DataLoader with workers.

    The trainer plans each epoch (:meth:`plan`) with the index tensors it is about to request, in
    order; the DataLoader then decodes and augments them ahead, and :meth:`batch` returns them
    (moved to the device) when the same index tensor is asked for. An index tensor that was not
    planned is loaded synchronously, so every caller of the engine's interface keeps working.
    """

    def __init__(self, dataset: LargeLTDataset, device: torch.device, launch: LaunchOptions,
                 channels_last: bool = False) -> None:
        self.dataset = dataset
        self.device = device
        self.launch = launch
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.targets = dataset.targets
        self._batches = _PlannedBatches()
        self._loader: Optional[DataLoader] = None
        self._iter: Optional[Iterator[Any]] = None
        self._keys: Deque[torch.Tensor] = deque()
        self._unplanned = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def _get_loader(self) -> DataLoader:
        if self._loader is None:
            workers = self.launch.num_workers
            pin = self.launch.pin_memory if self.launch.pin_memory is not None else self.device.type == "cuda"
            extra: Dict[str, Any] = {"persistent_workers": True, "prefetch_factor": self.launch.prefetch_factor} \
                if workers > 0 else {}
            self._loader = DataLoader(self.dataset, batch_sampler=self._batches, num_workers=workers,
                                      pin_memory=pin, **extra)
        return self._loader

    def _start(self, items: List[List[Any]]) -> Iterator[Any]:
        self._batches.batches = items
        return iter(self._get_loader())

    def _to_device(self, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).to(dtype).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def plan(self, batches: Sequence[Any], base_seed: int, rank: int = 0, world_size: int = 1) -> None:
        """Queue this epoch's batches: each element is an index tensor or a tuple of them (one per
        sampler stream, as BBN's pairs). The image at local position ``p`` of stream ``j`` is
        at global position ``rank + world_size * p`` (docs/methods.md §5 sharding) and gets its augmentation
        seed from ``(base_seed, j, global position)``."""
        flat: List[Tuple[int, torch.Tensor]] = []
        for b in batches:
            parts = b if isinstance(b, (tuple, list)) else (b,)
            flat += list(enumerate(parts))
        if not flat:
            self._keys.clear()
            self._iter = None
            return
        all_idx = torch.cat([t.reshape(-1) for _, t in flat]).cpu().tolist()  # one host sync per epoch
        items: List[List[Any]] = []
        offsets: Dict[int, int] = {}
        pos = 0
        for stream, t in flat:
            n = t.numel()
            start = offsets.get(stream, 0)
            offsets[stream] = start + n
            items.append([(all_idx[pos + k], _sample_seed(base_seed, stream, rank + world_size * (start + k)), True)
                          for k in range(n)])
            pos += n
        self._keys = deque(t for _, t in flat)
        self._iter = self._start(items)

    def batch(self, idx: torch.Tensor, augment: bool = False, generator: Optional[torch.Generator] = None,
              dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as a normalised batch on the device (augmented with the training
        transform when ``augment``); ``generator`` is unused (seeds are per image)."""
        if augment and self._keys and self._keys[0] is idx and self._iter is not None:
            self._keys.popleft()
            x, y = next(self._iter)
            return self._to_device(x, y, dtype)
        items = []
        for i in idx.reshape(-1).tolist():
            self._unplanned += 1
            items.append((int(i), derive_seed("unplanned", self._unplanned), augment))
        x, y = default_collate([self.dataset[it] for it in items])
        return self._to_device(x, y, dtype)

    def iterate(self, batch_size: int, dtype: torch.dtype = torch.float32, rank: int = 0,
                world_size: int = 1) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented batches of positions ``rank::world_size`` in order (all of them by default)."""
        positions = list(range(rank, len(self), world_size))
        items = [[(i, 0, False) for i in positions[s:s + batch_size]] for s in range(0, len(positions), batch_size)]
        self._keys.clear()
        self._iter = None
        for x, y in self._start(items):
            yield self._to_device(x, y, dtype)


# --------------------------------------------------------------------------------------------
# Metrics from gathered predictions


def eval_result_from_predictions(preds: torch.Tensor, confidence: torch.Tensor, targets: torch.Tensor,
                                 train_counts: Sequence[int], keep_confusion: bool = True) -> EvalResult:
    """The :class:`EvalResult` of docs/methods.md §3 from argmax predictions and max-softmax confidences:
    the same numbers as :meth:`EvalResult.from_logits` on the logits, without gathering ``[N, C]``
    logits across ranks. ``keep_confusion=False`` stores an empty confusion matrix."""
    num_classes = len(train_counts)
    conf = confusion_matrix(preds, targets, num_classes)
    pc = per_class_accuracy(conf)
    shots = shot_accuracy(pc, list(train_counts))
    top1 = float(conf.diagonal().sum()) / max(1, int(conf.sum()))

    def pct(v: Optional[float]) -> Optional[float]:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * float(v)

    correct = preds.to(targets.device) == targets
    return EvalResult(
        top1=100.0 * top1,
        per_class=[pct(v) for v in pc.tolist()],
        confusion=conf.cpu().tolist() if keep_confusion else [],
        ece=100.0 * expected_calibration_error(confidence.to(torch.float64), correct),
        many=pct(shots["many"]), medium=pct(shots["medium"]), few=pct(shots["few"]),
    )


# --------------------------------------------------------------------------------------------
# The trainer mixin


def load_run_data(cfg: TrainConfig) -> Any:
    """A streamed :class:`LargeLTData` for large datasets, else the in-memory ``LongTailedData``."""
    if cfg.dataset in LARGE_DATASETS:
        return build_large_dataset(cfg.dataset, root=cfg.data_root, test_per_class=cfg.test_per_class,
                                   **cfg.data_options)
    return load_data(cfg)


def load_pretrained_backbone(model: nn.Module, name: str, file: Optional[str] = None) -> None:
    """Copy timm's pretrained weights of ``name`` ('timm/<model>') into ``model``, all but the
    classifier (which keeps its fresh initialisation)."""
    import timm

    kwargs: Dict[str, Any] = {"pretrained_cfg_overlay": {"file": file}} if file else {}
    src = timm.create_model(name[len("timm/"):], pretrained=True, num_classes=0, **kwargs)
    head_ids = {id(p) for p in get_classifier(model).parameters()}
    head = {n for n, p in model.named_parameters() if id(p) in head_ids}
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    extra = [k for k in missing if k not in head]
    if extra or unexpected:
        raise ValueError(f"pretrained weights of model={name!r} do not fit the built model: missing {extra[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")


class DistributedMixin:
    """Makes any :class:`~ltbench.engine.Trainer` subclass run under torchrun / DDP and on data
    streamed from disk (see the module docstring). Single-process runs on in-memory data go
    through unchanged code paths."""

    def __init__(self, cfg: TrainConfig, *args: Any, dist_info: Optional[D.DistInfo] = None,
                 launch: Optional[LaunchOptions] = None, data: Any = None, progress: bool = True,
                 **kwargs: Any) -> None:
        self.dist = dist_info or D.DistInfo()
        self.launch = (launch or LaunchOptions()).validate()
        self.world_size = self.dist.world_size
        cfg.validate()
        if cfg.batch_size % self.world_size:
            raise ValueError(f"batch_size={cfg.batch_size} (the global batch) is not divisible by the world size "
                             f"{self.world_size}; use a multiple of {self.world_size} or another --nproc-per-node")
        device_type = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available())
                                   else ("cpu" if cfg.device == "auto" else cfg.device)).type
        if self.launch.sync_batchnorm and self.world_size > 1 and device_type != "cuda":
            raise ValueError("launch.sync_batchnorm=true needs CUDA devices (torch.nn.SyncBatchNorm does not run on "
                             f"{device_type}); set it to false")
        if data is None:
            data = load_run_data(cfg)
        self._streaming = isinstance(data, LargeLTData)
        self.ddp: Optional[nn.Module] = None
        super().__init__(cfg, *args, data=data, progress=progress and self.dist.is_main, **kwargs)  # type: ignore[call-arg]

    # -- hooks of the engine --------------------------------------------------------------------
    def build_dataset(self, split: str) -> Any:
        if self._streaming:
            ds = self.data.train if split == "train" else self.data.test
            return StreamingSplit(ds, self.device, self.launch, self.channels_last)
        return super().build_dataset(split)  # type: ignore[misc]

    def build_model(self) -> nn.Module:
        model = super().build_model()  # type: ignore[misc]
        if self.launch.pretrained:
            load_pretrained_backbone(model, self.cfg.model, self.launch.pretrained_file)
        return model

    def build_samplers(self) -> Dict[str, Any]:
        samplers = super().build_samplers()  # type: ignore[misc]
        if self.world_size > 1:
            for s in samplers.values():
                if isinstance(s, LTSampler):
                    s.shard(self.dist.rank, self.world_size, even=True)
        return samplers

    def wrap_model(self, model: nn.Module) -> Any:
        trainable = any(p.requires_grad for p in model.parameters())
        if self.world_size == 1 or not trainable:
            return super().wrap_model(model)  # type: ignore[misc]
        from torch.nn.parallel import DistributedDataParallel

        if self.launch.sync_batchnorm:
            from timm.layers import convert_sync_batchnorm  # handles timm's BatchNormAct2d as well

            converted = convert_sync_batchnorm(model)
            if converted is not model:
                raise ValueError("sync_batchnorm: the model itself is a BatchNorm layer")
        device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(model, device_ids=device_ids,
                                           find_unused_parameters=self.launch.find_unused_parameters)
        return super().wrap_model(self.ddp)  # type: ignore[misc]

    def augment_generator(self, epoch: int) -> torch.Generator:
        if self.world_size == 1:
            return super().augment_generator(epoch)  # type: ignore[misc]
        # In-memory data: each rank augments its own shard, so its crop/flip stream must differ.
        return torch.Generator(device=self.device).manual_seed(derive_seed(self.cfg.seed, epoch, "augment",
                                                                           "rank", self.dist.rank))

    def epoch_batches(self, epoch: int) -> Iterator[Any]:
        batches = list(super().epoch_batches(epoch))  # type: ignore[misc]
        if self._streaming:
            self.train_set.plan(batches, derive_seed(self.cfg.seed, epoch, "augment"), self.dist.rank,
                                self.world_size)
        return iter(batches)

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        row = super().train_epoch(epoch)  # type: ignore[misc]
        if self.world_size > 1:  # every rank ran the same number of equal-size steps: mean of means
            row["train_loss"] = D.all_reduce_mean(row["train_loss"], self.device)
        return row

    # -- evaluation -----------------------------------------------------------------------------
    def _eval_batches(self, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        rank, world = self.dist.rank, self.world_size
        if isinstance(self.test_set, StreamingSplit):
            yield from self.test_set.iterate(batch_size, rank=rank, world_size=world)
            return
        positions = torch.arange(rank, len(self.test_set), world, device=self.device)
        for idx in positions.split(batch_size):
            yield self.test_set.batch(idx, augment=False)

    def build_val_set(self) -> Any:
        # Streamed data has no validation split, and under DDP only the test set is sharded.
        if self._streaming or self.world_size > 1:
            return None
        return super().build_val_set()  # type: ignore[misc]

    @torch.no_grad()
    def evaluate(self, batch_size: Optional[int] = None, split: str = "test") -> EvalResult:
        """Test metrics (docs/methods.md §3) with the test set sharded over ranks and the predictions gathered."""
        if not self._streaming and self.world_size == 1:
            kw = {} if batch_size is None else {"batch_size": batch_size}
            return super().evaluate(split=split, **kw)  # type: ignore[misc]
        bs = batch_size or self.launch.eval_batch_size
        if self.world_size > 1:
            D.broadcast_buffers(self.model)  # everyone evaluates the model rank 0 saves
        forward, self.forward = self.forward, self.model  # no DDP forward (and no collective) in evaluation
        self.model.eval()
        preds, confs, targets = [], [], []
        scale = self.eval_logit_scale()  # type: ignore[attr-defined]
        try:
            for x, y in self._eval_batches(bs):
                with self.autocast():
                    logits = self.predict(x).float() * scale
                c, p = logits.softmax(dim=1).max(dim=1)
                preds.append(p)
                confs.append(c)
                targets.append(y)
        finally:
            self.forward = forward
            self.model.train()
        total = len(self.test_set)
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.empty(0, dtype=dt, device=self.device)  # noqa: E731
        p = D.gather_shards(cat(preds, torch.int64), total)
        c = D.gather_shards(cat(confs, torch.float32), total)
        y = D.gather_shards(cat(targets, torch.int64).to(self.device), total)
        keep = self.num_classes <= self.launch.confusion_max_classes
        return eval_result_from_predictions(p, c, y, self.counts, keep_confusion=keep)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        state["launch"] = {**self.launch.record(), "world_size": self.world_size}
        return state

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        D.on_main(super().save_checkpoint, path)  # type: ignore[misc]

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        saved = load_state(path).get("launch")
        if saved is not None:
            changed = {k: (saved.get(k), v) for k, v in self.launch.record().items() if saved.get(k) != v}
            if changed:
                raise ValueError(f"checkpoint {path} was written with other launch options {changed} "
                                 "(saved, now); they change the results: restore them or use another out_dir")
        super().load_checkpoint(path)  # type: ignore[misc]


_CLASSES: Dict[type, type] = {}


def distributed_trainer(base: type) -> type:
    """``base`` (a Trainer subclass) with :class:`DistributedMixin` in front, cached."""
    if not (isinstance(base, type) and issubclass(base, Trainer)):
        raise ValueError(f"distributed_trainer needs a Trainer subclass, got {base!r}")
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Distributed{base.__name__}", (DistributedMixin, base), {})
    return _CLASSES[base]


# --------------------------------------------------------------------------------------------
# Running a spec


def run(rc: RunConfig, force: bool = False, progress: bool = True) -> TrainResult:
    """Run the config ``rc`` in this process (one of ``torchrun``'s, or alone) through
    :func:`ltbench.runs.run` and return its result.

    A finished run of the same spec in ``rc.out_dir``'s store is loaded, not retrained, unless
    ``force``; an interrupted one resumes from its checkpoint. Rank 0 writes every file.
    """
    info, _device = D.init_distributed(rc.train.device, rc.launch.dist_backend)
    try:
        options = rc.exec_options(
            progress=progress and rc.launch.progress and info.is_main, wrap_trainer=distributed_trainer,
            trainer_extra={"dist_info": info, "launch": rc.launch}, writer=info.is_main,
            notes={"launcher": {"world_size": info.world_size, "backend": info.backend, "config_file": rc.source,
                                "kind": rc.kind, **rc.launch.record()}})
        return runs_run(rc.spec, RunStore(rc.out_dir), options, force=force)
    finally:
        D.cleanup()


# --------------------------------------------------------------------------------------------
# Command line


def _describe(spec: RunConfig, info: D.DistInfo) -> str:
    cfg = spec.train
    lines = [f"kind={spec.kind} run {spec.spec.key} in store {spec.out_dir} dataset={cfg.dataset} model={cfg.model} loss={cfg.loss} "
             f"sampler={cfg.sampler} epochs={cfg.epochs} batch={cfg.batch_size} (global; "
             f"{cfg.batch_size // max(1, info.world_size)} per process x {info.world_size}) lr={cfg.lr} "
             f"schedule={cfg.schedule}"]
    if spec.published:
        lines.append("published: " + ", ".join(f"{k}={v}" for k, v in spec.published.items()))
    return "\n".join(lines)


def _dry_run(spec: RunConfig) -> int:
    info = D.env_info()
    print(_describe(spec, info))
    if spec.train.batch_size % info.world_size:
        raise ValueError(f"batch_size={spec.train.batch_size} (the global batch) is not divisible by the world size "
                         f"{info.world_size}")
    data = load_run_data(spec.train)
    groups = {k: len(v) for k, v in data.shot_groups().items()} if hasattr(data, "shot_groups") else {}
    print(f"data: {len(data.train.targets)} training / {len(data.test.targets)} test images, {len(data.counts)} "
          f"classes, {max(data.counts)}..{min(data.counts)} per class" + (f", shot groups {groups}" if groups else ""))
    print("dry run: configuration and data are valid; nothing was trained")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ltbench.train",
                                 description="Train one configuration, alone or under torchrun (DDP).")
    ap.add_argument("--config", required=True, metavar="FILE", help="a .toml or .json run configuration")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                    help="override config values, e.g. --set train.epochs=1 launch.num_workers=0 out_dir=runs/x")
    ap.add_argument("--force", action="store_true", help="retrain even if out_dir holds a finished run")
    ap.add_argument("--dry-run", action="store_true", help="validate the config and the data, train nothing")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m ltbench.train`` (one call per torchrun process)."""
    args = _build_parser().parse_args(argv)
    try:
        spec = load_run_config(args.config, args.set)
        if args.dry_run:
            return _dry_run(spec)
        result = run(spec, force=args.force, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if D.env_info().is_main:
        r = result
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{RunStore(spec.out_dir).folder(spec.spec)}: top-1 {fmt(r.top1_last)} (best {fmt(r.best_top1)} at epoch {r.best_epoch}); "
              f"many {fmt(r.last.many)} / medium {fmt(r.last.medium)} / few {fmt(r.last.few)}")
        if spec.published:
            print("published: " + ", ".join(f"{k} {v}" for k, v in spec.published.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
