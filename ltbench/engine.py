"""The one training engine behind every run (docs/methods.md §2-§6).

``Trainer`` holds the data on the device, draws batches as index tensors from a sampler, runs
batched augmentation and one optimiser step per batch with no host synchronisation inside the
step, evaluates every ``eval_every`` epochs and checkpoints every ``checkpoint_every`` epochs with
exact resume. Methods that need a different step (BBN, FSA, OHEM, mixup) subclass it and
override :meth:`Trainer.step_inputs` / :meth:`Trainer.step_loss` (the step contract, see
:class:`Trainer`) and :meth:`Trainer.predict`.

Multi-process training (torchrun + DistributedDataParallel) and datasets streamed from disk
plug in through four hooks that are no-ops here (:meth:`Trainer.build_dataset`,
:meth:`Trainer.wrap_model`, :meth:`Trainer.augment_generator`, ``world_size``); see
:mod:`ltbench.train`.

The engine knows nothing of run identity, reuse or storage: :func:`ltbench.runs.run` decides
whether a run is finished, where it lives and which trainer trains it, then calls
:meth:`Trainer.fit` with the run's folder (for checkpoints) and, optionally, a deadline.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .checkpoint import CHECKPOINT_FILE, load_state
from .config import LEGACY_HEAD_BIAS_INIT, TrainConfig
from .data import DeviceDataset, LongTailedData, build_long_tailed
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .losses import build_loss, class_balanced_weights
from .losses.ldam import LDAMLoss
from .metrics import confusion_matrix, expected_calibration_error, per_class_accuracy, shot_accuracy
from .models import build_model, get_classifier
from .samplers import build_sampler
from .schedules import learning_rate

METRICS_FILE = "metrics.json"
EXTRAS_FILE = "extras.json"
#: Configuration class -> names of the methods that train it, for error messages; the method
#: registry (:data:`ltbench.runs.METHODS`) fills it as methods are registered.
CONFIG_METHODS: Dict[type, List[str]] = {}

#: TrainConfig fields that say how a run executes, not what it computes: they are not part of a
#: run's identity (:class:`ltbench.runs.RunSpec`), and a checkpoint resumes across them.
EXECUTION_FIELDS = ("device", "compile", "data_root", "checkpoint_every", "channels_last")

#: Keys of ``metrics.json`` that :meth:`TrainResult.load` returns as ``meta`` (the run's identity
#: and how it was executed; see :func:`ltbench.runs.run`).
META_KEYS = ("key", "spec", "execution")


class NonFiniteLoss(FloatingPointError):
    """A training epoch's loss was NaN or infinite: training stops, the last good checkpoint stays."""

    def __init__(self, run: str, epoch: int, lr: Optional[float], checkpoint: Optional[Path]) -> None:
        self.run, self.epoch, self.lr, self.checkpoint = run, epoch, lr, checkpoint
        kept = f"the last good checkpoint {checkpoint} is kept" if checkpoint else "no checkpoint was written"
        super().__init__(f"run {run}: the training loss became non-finite (NaN or inf) in epoch {epoch} at lr={lr}; "
                         f"likely causes: a learning rate too high for this loss/batch (training diverged), or "
                         f"non-finite inputs in the data; {kept}")


class DeadlineReached(RuntimeError):
    """:meth:`Trainer.fit` stopped at a deadline after checkpointing a finished epoch; calling it
    again with the same folder resumes from there."""

    def __init__(self, epoch: int, epochs: int, checkpoint: Optional[Path]) -> None:
        self.epoch, self.epochs, self.checkpoint = epoch, epochs, checkpoint
        super().__init__(f"deadline reached after epoch {epoch} of {epochs}; "
                         f"{'checkpoint ' + str(checkpoint) if checkpoint else 'no checkpoint (no folder)'}")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (seed, epoch, purpose): stable across processes and devices."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} threads visible, torch {torch.get_num_threads()})"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo), where
    ``amp_cpu`` is a speed-up; False where that cannot be read (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_WARNED_BF16 = False


def warn_if_cpu_bf16_emulated() -> None:
    """Warn once per process when ``amp_cpu`` trains on a CPU without native bf16: the run is the
    same run, but its convolutions are emulated and slow (``amp_cpu=False`` is a different run)."""
    global _WARNED_BF16
    if not _WARNED_BF16 and not cpu_has_native_bf16():
        _WARNED_BF16 = True
        warnings.warn("amp_cpu=True on a CPU without native bf16 (no avx512_bf16 / amx_bf16 flag): the run "
                      "trains as specified but slowly; amp_cpu=False (a different run, its own key) is float32",
                      RuntimeWarning, stacklevel=3)


_DATA_CACHE: Dict[Tuple, LongTailedData] = {}
_DEVICE_CACHE: Dict[Tuple, DeviceDataset] = {}


def load_data(cfg: TrainConfig) -> LongTailedData:
    """The long-tailed data of ``cfg``, memoised in-process so runs in one notebook share it."""
    key = (cfg.dataset, float(cfg.imbalance_ratio), cfg.data_root, cfg.n_max, cfg.lt_profile, cfg.data_seed,
           cfg.test_per_class, cfg.val_per_class, json.dumps(cfg.data_options, sort_keys=True))
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = build_long_tailed(
            cfg.dataset, cfg.imbalance_ratio, root=cfg.data_root, n_max=cfg.n_max, profile=cfg.lt_profile,
            seed=cfg.data_seed, test_per_class=cfg.test_per_class, val_per_class=cfg.val_per_class,
            **cfg.data_options)
    return _DATA_CACHE[key]


def _device_dataset(data: LongTailedData, split: str, device: torch.device, channels_last: bool) -> DeviceDataset:
    key = (id(data), split, str(device), channels_last)
    if key not in _DEVICE_CACHE:
        s = {"train": data.train, "test": data.test, "val": getattr(data, "val", None)}[split]
        _DEVICE_CACHE[key] = DeviceDataset(s.images, s.targets, device, channels_last=channels_last)
    return _DEVICE_CACHE[key]


@dataclass
class EvalResult:
    """Test-set metrics of one evaluation (docs/methods.md §3); accuracies in percent."""

    top1: float
    per_class: List[float]
    confusion: List[List[int]]
    ece: float
    many: Optional[float]
    medium: Optional[float]
    few: Optional[float]

    @classmethod
    def from_logits(cls, logits: torch.Tensor, targets: torch.Tensor, train_counts: List[int]) -> "EvalResult":
        num_classes = len(train_counts)
        probs = logits.float().softmax(dim=1)
        conf = confusion_matrix(probs.argmax(dim=1), targets, num_classes)
        pc = per_class_accuracy(conf)
        shots = shot_accuracy(pc, train_counts)
        top1 = float(conf.diagonal().sum()) / max(1, int(conf.sum()))
        pct = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * float(v)
        return cls(
            top1=100.0 * top1,
            per_class=[pct(v) for v in pc.tolist()],
            confusion=conf.cpu().tolist(),
            ece=100.0 * expected_calibration_error(probs, targets),
            many=pct(shots["many"]), medium=pct(shots["medium"]), few=pct(shots["few"]),
        )


@dataclass
class TrainResult:
    """What a run produced: last-epoch and best-epoch accuracy, per-class metrics, curves."""

    config: Dict[str, Any]
    counts: List[int]
    classes: List[str]
    last: EvalResult
    best_top1: float
    best_epoch: int
    history: List[Dict[str, Any]]
    train_seconds: float
    device: str
    meta: Dict[str, Any] = field(default_factory=dict)
    extras: Dict[str, Any] = field(default_factory=dict)  # per-method records, e.g. loss statistics per epoch
    #: Model selection on the validation split (runs with ``val_per_class``): the epoch with the best
    #: validation top-1 (``best_epoch_val``), that top-1 (``best_val_top1``) and the test top-1 at
    #: that epoch (``top1_at_best_val``, the number to report instead of the test-picked best).
    val: Dict[str, Any] = field(default_factory=dict)

    @property
    def top1_last(self) -> float:
        return self.last.top1

    def to_metrics(self) -> Dict[str, Any]:
        m = dict(self.meta)
        m.update(
            schema=1,
            dataset=self.config["dataset"], imbalance_ratio=float(self.config["imbalance_ratio"]),
            seed=self.config["seed"], epochs=self.config["epochs"],
            top1_last=self.last.top1, top1_best=self.best_top1, best_epoch=self.best_epoch,
            many=self.last.many, medium=self.last.medium, few=self.last.few, ece=self.last.ece,
            train_seconds=self.train_seconds, device=self.device, torch=torch.__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            counts=self.counts, classes=self.classes, per_class=self.last.per_class,
            confusion=self.last.confusion, config=self.config,
            best_epoch_val=self.val.get("best_epoch_val"), best_val_top1=self.val.get("best_val_top1"),
            top1_at_best_val=self.val.get("top1_at_best_val"),
        )
        return m

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``per_class.csv``, ``curves.csv`` and (last, marking completion) ``metrics.json``."""
        out = Path(out_dir)
        rows = [["class", "name", "train_count", "accuracy"]] + [
            [i, n, c, "" if a is None else f"{a:.4f}"]
            for i, (n, c, a) in enumerate(zip(self.classes, self.counts, self.last.per_class))
        ]
        atomic_write_text(out / "per_class.csv", _csv_text(rows))
        keys = list(self.history[0].keys()) if self.history else ["epoch"]
        rows = [keys] + [["" if h.get(k) is None else f"{h[k]:.6g}" for k in keys] for h in self.history]
        atomic_write_text(out / "curves.csv", _csv_text(rows))
        if self.extras:
            atomic_write_json(out / EXTRAS_FILE, self.extras)
        return atomic_write_json(out / METRICS_FILE, self.to_metrics())

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "TrainResult":
        m = json.loads((Path(out_dir) / METRICS_FILE).read_text())
        last = EvalResult(m["top1_last"], m["per_class"], m["confusion"], m["ece"], m["many"], m["medium"], m["few"])
        history: List[Dict[str, Any]] = []
        curves = Path(out_dir) / "curves.csv"
        if curves.exists():
            with open(curves, newline="") as fh:
                for row in csv.DictReader(fh):
                    history.append({k: (float(v) if v != "" else None) for k, v in row.items()})
        meta = {k: m[k] for k in META_KEYS if k in m}
        extras_file = Path(out_dir) / EXTRAS_FILE
        extras = json.loads(extras_file.read_text()) if extras_file.exists() else {}
        val = {k: m[k] for k in ("best_epoch_val", "best_val_top1", "top1_at_best_val") if m.get(k) is not None}
        return cls(m["config"], m["counts"], m["classes"], last, m["top1_best"], m["best_epoch"], history,
                   m["train_seconds"], m["device"], meta, extras, val)


def _csv_text(rows: List[List[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


_STOP = {"requested": False}


def request_stop(requested: bool = True) -> None:
    """Ask every run of this process to stop at the end of its current epoch, as at a deadline
    (checkpoint, then :class:`DeadlineReached`): what the harvest's SIGTERM / SIGINT handler calls.
    ``request_stop(False)`` withdraws the request."""
    _STOP["requested"] = bool(requested)


def stop_requested() -> bool:
    """Whether :func:`request_stop` was called (and not withdrawn)."""
    return _STOP["requested"]


class Trainer:
    """Trains ``cfg`` on device-resident data. Subclass and override the hooks for other methods.

    A method is its step: override :meth:`step_inputs` / :meth:`step_loss`. One step is
    ``step_loss(*step_inputs(batch, epoch, generator))`` (:meth:`training_step`), then backward and
    the optimiser step. :meth:`step_inputs` is the eager part: index gathering, augmentation and
    every random draw of the step (from ``generator`` or the trainer's own host generators), in
    a fixed order; it returns a tuple of tensors. :meth:`step_loss` is the pure part: forward and
    loss of those tensors only, with no host synchronisation and no random draw, so that
    :mod:`ltbench.fastpath` can trace it whole (static shapes, one graph per step). State that
    changes between steps or epochs is a tensor attribute of the trainer updated in place (or a
    tensor input), never a new tensor or a Python number read by :meth:`step_loss`.

    ``step_loss(*inputs, mask=None)``: ``mask`` is the fast path's 0/1 sample mask of a padded
    static batch (None on the eager path); every reduction over samples then counts the
    masked-in ones only (:meth:`criterion` hands it to the loss). :attr:`step_input_kinds` says
    how the fast path pads each input. A trainer that overrides :meth:`training_step` itself (or
    :meth:`train_epoch`) trains eagerly only.
    """

    #: Processes sharing one step (DDP); ``cfg.batch_size`` is the global batch of all of them.
    world_size: int = 1
    #: The configuration class this trainer trains (subclasses of it included).
    config_cls: type = TrainConfig
    #: Runs an epoch's steps instead of the eager loop of :meth:`train_epoch` when set: the fast
    #: path of :mod:`ltbench.fastpath` (static shapes, whole-step graphs), an execution option.
    step_runner: Any = None
    #: ``ExecOptions(compile="auto")`` compiles this trainer's model on CPU and CUDA.
    COMPILE_AUTO: bool = True
    #: One entry per tensor :meth:`step_inputs` returns, how the fast path pads it to a full batch:
    #: ``"sample"``: rows are the batch's samples (or ``m`` rows per sample, sample-major), repeated
    #: cyclically; ``"mask"``: a 0/1 sample mask, already static, of a sub-batch that
    #: :meth:`step_loss` forwards (the masked BatchNorm uses it for forwards of its length); None:
    #: passed as it is (per-step scalars such as mixup's lambda).
    step_input_kinds: Tuple[Optional[str], ...] = ("sample", "sample")

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Refuse a configuration this class cannot train, before any data is loaded.

        The configuration's class must be exactly :attr:`config_cls`: a :class:`Trainer` given a
        :class:`~ltbench.bbn.BBNConfig` would silently train an ordinary network. The method
        registry (:data:`ltbench.runs.METHODS`) pairs every configuration class with its trainer.
        """
        if not isinstance(cfg, TrainConfig) or type(cfg) is not cls.config_cls:
            hint = sorted(CONFIG_METHODS.get(type(cfg), ()))
            raise ValueError(f"{cls.__name__} trains a {cls.config_cls.__name__}, got cfg of type "
                             f"{type(cfg).__name__}" + (f"; run it as method {' / '.join(map(repr, hint))} "
                                                        "(ltbench.runs.METHODS)" if hint else ""))

    @classmethod
    def check_arguments(cls, cfg: TrainConfig, **kwargs: Any) -> None:
        """Validate ``cfg`` and the constructor's keyword arguments without building anything.

        :func:`train` calls it first, so bad input fails before a finished run is reused, copied or
        deleted. Subclasses with arguments of their own (OHEM's ``keep_ratio``) extend it.
        """
        try:
            inspect.signature(cls).bind(cfg, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}({', '.join(['cfg', *kwargs])}): {exc}") from None
        cls.check_config(cfg)
        cfg.validate()

    def __init__(self, cfg: TrainConfig, data: Optional[LongTailedData] = None, progress: bool = True) -> None:
        type(self).check_config(cfg)
        self.cfg = cfg.validate()
        self.device = resolve_device(cfg.device)
        self.progress = progress
        self.data = data if data is not None else load_data(cfg)
        cuda = self.device.type == "cuda"
        self.channels_last = cfg.channels_last and cuda
        self.amp_dtype = torch.bfloat16 if cfg.amp and (cuda or (cfg.amp_cpu and self.device.type == "cpu")) else None
        if self.amp_dtype is not None and not cuda:
            warn_if_cpu_bf16_emulated()
        self.train_set = self.build_dataset("train")
        self.test_set = self.build_dataset("test")
        self.val_set = self.build_val_set()
        self.counts = list(self.data.counts)
        self.num_classes = len(self.counts)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        self.loss_fn = self.build_loss().to(self.device)
        if cfg.drw_epoch is not None and not hasattr(self.loss_fn, "set_class_weight"):
            raise ValueError(f"drw_epoch={cfg.drw_epoch} needs a loss with class weights (ce, ldam); got loss={cfg.loss!r}")
        self.model = self.build_model().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = self.build_optimizer()
        self.samplers = self.build_samplers()
        self.forward = self.wrap_model(self.model)
        self.start_epoch = 0
        self.history: List[Dict[str, Any]] = []
        self.best_top1, self.best_epoch = -1.0, -1
        self.best_val: Dict[str, Any] = {}
        self.last_eval: Optional[EvalResult] = None
        self.train_seconds = 0.0
        self.extras: Dict[str, Any] = {}

    # -- construction hooks -------------------------------------------------------------------
    def build_dataset(self, split: str) -> Any:
        """The ``"train"`` / ``"test"`` split as the engine uses it (``batch``, ``iterate``, ``targets``):
        device-resident here; streamed from disk by :mod:`ltbench.train` for large datasets."""
        return _device_dataset(self.data, split, self.device, self.channels_last)

    def build_val_set(self) -> Any:
        """The validation split (same interface as the test split), or None when the run has none."""
        return self.build_dataset("val") if getattr(self.data, "val", None) is not None else None

    def wrap_model(self, model: nn.Module) -> Any:
        """The callable that training steps run (``self.forward``): the model, compiled if asked;
        :mod:`ltbench.train` wraps it in DistributedDataParallel."""
        return torch.compile(model) if self.cfg.compile else model

    @property
    def local_batch_size(self) -> int:
        """Batch of this process: ``cfg.batch_size`` (the global batch) / ``world_size``."""
        return self.cfg.batch_size // self.world_size

    def build_loss(self) -> nn.Module:
        return build_loss(self.cfg.loss, self.counts, **self.cfg.loss_params)

    def build_model(self) -> nn.Module:
        model = build_model(self.cfg.model, self.num_classes, classifier=self.cfg.classifier,
                            head_bias_init=self.cfg.head_bias_init)
        head = get_classifier(model)
        if getattr(self.loss_fn, "uses_sigmoid", False) and getattr(head, "bias", None) is not None:
            # docs/methods.md §2: sigmoid losses start from the prior 1/C.
            nn.init.constant_(head.bias, -math.log(max(self.num_classes - 1, 1)))
        return model

    def trainable_parameters(self) -> List[Tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        head = get_classifier(self.model)
        no_decay = set()
        if getattr(self.loss_fn, "uses_sigmoid", False) and getattr(head, "bias", None) is not None:
            no_decay.add(id(head.bias))  # docs/methods.md §2: the prior bias is not decayed
        params = self.trainable_parameters()
        groups = [
            {"params": [p for _, p in params if id(p) not in no_decay], "weight_decay": cfg.weight_decay},
            {"params": [p for _, p in params if id(p) in no_decay], "weight_decay": 0.0},
        ]
        nesterov = cfg.nesterov if cfg.nesterov is not None else cfg.schedule == "step_bbn"
        return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)

    def build_samplers(self) -> Dict[str, Any]:
        labels = self.data.train.targets
        s = {"main": build_sampler(self.cfg.sampler, labels, seed=derive_seed(self.cfg.seed, "sampler"),
                                   num_classes=self.num_classes, total_epochs=self.cfg.epochs, **self.cfg.sampler_params)
             if self.cfg.sampler == "progressive" else
             build_sampler(self.cfg.sampler, labels, seed=derive_seed(self.cfg.seed, "sampler"),
                           num_classes=self.num_classes, **self.cfg.sampler_params)}
        if self.cfg.drs_epoch is not None:
            s["drs"] = build_sampler("class_balanced", labels, seed=derive_seed(self.cfg.seed, "drs"), num_classes=self.num_classes)
        return s

    # -- per-epoch / per-step hooks -----------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        cfg = self.cfg
        lr = learning_rate(cfg.schedule, epoch, cfg.epochs, cfg.lr, cfg.warmup_epochs)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if cfg.drw_epoch is not None:
            w = class_balanced_weights(self.counts, cfg.drw_beta).to(self.device) if epoch >= cfg.drw_epoch else None
            self.loss_fn.set_class_weight(w)

    def current_sampler(self, epoch: int):
        if self.cfg.drs_epoch is not None and epoch >= self.cfg.drs_epoch:
            return self.samplers["drs"]
        return self.samplers["main"]

    def epoch_batches(self, epoch: int) -> Iterator[Any]:
        """Index tensors (on the device) of this epoch's batches."""
        idx = self.current_sampler(epoch).indices(epoch, device=self.device)
        bs = self.local_batch_size
        n = (len(idx) // bs) * bs if self.cfg.drop_last else len(idx)
        return iter(idx[:n].split(bs))

    def augment_generator(self, epoch: int) -> torch.Generator:
        """The generator of this epoch's batched augmentation (crop offsets, flips)."""
        return torch.Generator(device=self.device).manual_seed(derive_seed(self.cfg.seed, epoch, "augment"))

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def training_step(self, batch: Any, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """Loss of one batch, ``step_loss(*step_inputs(...))`` (the engine does backward and the
        optimiser step). Override :meth:`step_inputs` / :meth:`step_loss`, not this."""
        return self.step_loss(*self.step_inputs(batch, epoch, generator))

    def step_inputs(self, batch: Any, epoch: int, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        """The eager part of a step: the augmented batch ``(x, y)`` (crop offsets and flips drawn
        from ``generator``)."""
        x, y = self.train_set.batch(batch, augment=True, generator=generator)
        return x, y

    def step_loss(self, x: torch.Tensor, y: torch.Tensor, *, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The traced part of a step: forward and loss (docs/methods.md §4)."""
        with self.autocast():
            logits = self.forward(x)
        return self.criterion(logits.float(), y, mask)

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``loss_fn(logits, targets)``, given ``mask=`` only on a padded batch (a user's loss may
        take none)."""
        return self.loss_fn(logits, targets) if mask is None else self.loss_fn(logits, targets, mask=mask)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation (BBN overrides this with its inference rule)."""
        return self.forward(x)

    def on_epoch_end(self, epoch: int, row: Dict[str, Any]) -> None:
        """Record per-epoch extras (one host sync per epoch at most): stateful losses' statistics."""
        stats = self.loss_fn.statistics() if getattr(self.loss_fn, "stateful", False) else {}
        if stats:
            rec = self.extras.setdefault("loss_statistics", [])
            rec.append({"epoch": epoch + 1, **{k: v.detach().float().cpu().tolist() for k, v in stats.items()}})

    # -- loop ---------------------------------------------------------------------------------
    def eval_logit_scale(self) -> float:
        """The factor between the model's output and the logits its loss sees: LDAM's ``s`` on a
        cosine head (which outputs cosines), else 1. Evaluation multiplies by it, so the softmax
        behind ECE is the one the loss trained; predictions do not change."""
        return float(self.loss_fn.s) if isinstance(self.loss_fn, LDAMLoss) else 1.0

    @torch.no_grad()
    def evaluate(self, batch_size: int = 1000, split: str = "test") -> EvalResult:
        """Metrics of the ``"test"`` (default) or ``"val"`` split."""
        dataset = {"test": self.test_set, "val": self.val_set}[split]
        self.model.eval()
        logits, targets = [], []
        scale = self.eval_logit_scale()
        for x, y in dataset.iterate(batch_size):
            with self.autocast():
                logits.append(self.predict(x).float() * scale)
            targets.append(y)
        self.model.train()
        return EvalResult.from_logits(torch.cat(logits), torch.cat(targets), self.counts)

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        self.model.train()
        self.on_epoch_start(epoch)
        gen = self.augment_generator(epoch)
        if self.step_runner is not None:
            loss_sum, steps = self.step_runner.run_epoch(epoch, gen)
        else:
            loss_sum = torch.zeros((), device=self.device)
            steps = 0
            for batch in self.epoch_batches(epoch):
                loss = self.training_step(batch, epoch, gen)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.detach()
                steps += 1
        return {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": float(loss_sum) / max(steps, 1)}

    def fit(self, out_dir: Optional[str | os.PathLike] = None, deadline: Optional[float] = None) -> "TrainResult":
        """Train from the checkpoint in ``out_dir`` (if any) to the last epoch and evaluate.

        ``deadline`` (``time.time()`` seconds): once an epoch ends at or after it, the state is
        checkpointed and :class:`DeadlineReached` is raised; a later call resumes exactly there.
        """
        loop = self.fit_epochs(out_dir, deadline)
        row = None
        while True:
            try:
                epoch = loop.send(row)
            except StopIteration as done:
                return done.value
            row = self.train_epoch(epoch)

    def fit_epochs(self, out_dir: Optional[str | os.PathLike] = None,
                   deadline: Optional[float] = None) -> Generator[int, Optional[Dict[str, Any]], "TrainResult"]:
        """:meth:`fit` as a generator: yields each epoch to train and receives its
        :meth:`train_epoch` row; returns the result. Everything else of an epoch (loss check,
        evaluation, history, checkpoint, deadline) happens here. A driver training several runs
        in one step (:mod:`ltbench.fastpath` packs) sends each run its row, with ``"_seconds"``
        (this run's share of the epoch's time) and ``"_stop"`` (the deadline decision, the same
        for every run of the pack) when it decides them itself.
        """
        from tqdm.auto import tqdm

        cfg = self.cfg
        ckpt = Path(out_dir) / CHECKPOINT_FILE if out_dir is not None else None
        if ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
        label = getattr(self, "label", None) or f"{cfg.loss}/{cfg.sampler} {cfg.dataset}-IR{cfg.imbalance_ratio:g}"
        bar = tqdm(range(self.start_epoch, cfg.epochs), desc=label, disable=not self.progress, leave=False,
                   mininterval=1.0)
        for epoch in bar:
            t0 = time.perf_counter()
            row = yield epoch
            seconds, decided_stop = row.pop("_seconds", None), row.pop("_stop", None)
            if not math.isfinite(row["train_loss"]):
                # Read once per epoch (the epoch's summed loss): no host sync inside the step. The
                # weights may already be non-finite, so nothing of this epoch is saved.
                bar.close()
                raise NonFiniteLoss(label, epoch + 1, row.get("lr"), ckpt if ckpt is not None and ckpt.exists() else None)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - t0 if seconds is None else seconds
            row["test_top1"] = None
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                ev = self.evaluate()
                self.last_eval = ev
                row["test_top1"] = ev.top1
                if ev.top1 > self.best_top1:
                    self.best_top1, self.best_epoch = ev.top1, epoch + 1
                if self.val_set is not None:
                    vev = self.evaluate(split="val")
                    row["val_top1"] = vev.top1
                    if vev.top1 > self.best_val.get("best_val_top1", -1.0):
                        self.best_val = {"best_epoch_val": epoch + 1, "best_val_top1": vev.top1,
                                         "top1_at_best_val": ev.top1}
            elif self.val_set is not None:
                row["val_top1"] = None
            self.on_epoch_end(epoch, row)
            self.history.append(row)
            self.start_epoch = epoch + 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=row["test_top1"] and f"{row['test_top1']:.1f}")
            last = epoch + 1 == cfg.epochs
            stop = not last and ((deadline is not None and time.time() >= deadline) or stop_requested())
            if decided_stop is not None:
                stop = bool(decided_stop) and not last
            if ckpt is not None and (stop or last or (epoch + 1) % cfg.checkpoint_every == 0):
                self.save_checkpoint(ckpt)
            if stop:
                bar.close()
                raise DeadlineReached(epoch + 1, cfg.epochs, ckpt)
        if self.last_eval is None:
            self.last_eval = self.evaluate()
        return TrainResult(cfg.to_dict(), self.counts, list(self.data.classes), self.last_eval, self.best_top1,
                           self.best_epoch, self.history, self.train_seconds, device_name(self.device),
                           extras=self.extras, val=dict(self.best_val))

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"config": self.cfg.to_dict(), "key": getattr(self, "run_key", None), "epoch": self.start_epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "loss": self.loss_fn.state_dict(), "history": self.history,
                "best": (self.best_top1, self.best_epoch), "best_val": self.best_val, "train_seconds": self.train_seconds,
                "last_eval": None if self.last_eval is None else self.last_eval.__dict__,
                "num_classes": self.num_classes, "counts": self.counts, "extras": self.extras}

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        atomic_torch_save(path, self.state_dict())

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = load_state(path, map_location=self.device)
        mine, theirs = self.cfg.to_dict(), dict(state["config"])
        theirs.setdefault("head_bias_init", LEGACY_HEAD_BIAS_INIT)  # written before the field existed
        theirs.setdefault("amp_cpu", False)  # likewise: those runs trained in float32 on CPU
        changed = sorted(k for k in set(mine) | set(theirs)
                         if k not in EXECUTION_FIELDS and theirs.get(k) != mine.get(k))
        if changed:
            raise ValueError(f"checkpoint {path} was written by a different configuration (differs in {changed}); "
                             "delete it or use another out_dir")
        mine_key, their_key = getattr(self, "run_key", None), state.get("key")
        if mine_key and their_key and mine_key != their_key:
            raise ValueError(f"checkpoint {path} belongs to run {their_key}, not {mine_key} (same configuration, "
                             "another method or method parameters); delete it or move it to its run's folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss_fn.load_state_dict(state["loss"])
        self.history = state["history"]
        self.best_top1, self.best_epoch = state["best"]
        self.best_val = dict(state.get("best_val") or {})
        self.train_seconds = state["train_seconds"]
        self.last_eval = EvalResult(**state["last_eval"]) if state["last_eval"] else None
        self.start_epoch = state["epoch"]
        self.extras = state.get("extras", {})
