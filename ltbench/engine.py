"""The one training engine behind every notebook (SPEC §2-§6).

``Trainer`` holds the data on the device, draws batches as index tensors from a sampler, runs
batched augmentation and one optimiser step per batch with no host synchronisation inside the
step, evaluates every ``eval_every`` epochs and checkpoints every ``checkpoint_every`` epochs with
exact resume. Methods that need a different step (BBN, classifier re-training, FSA, OHEM)
subclass it and override :meth:`Trainer.training_step` / :meth:`Trainer.predict`.

Multi-process training (torchrun + DistributedDataParallel) and datasets streamed from disk
plug in through four hooks that are no-ops here (:meth:`Trainer.build_dataset`,
:meth:`Trainer.wrap_model`, :meth:`Trainer.augment_generator`, ``world_size``); see
:mod:`ltbench.train`.

``train(cfg, out_dir)`` is the entry point the notebooks call: it skips a run whose
``metrics.json`` already exists for the same configuration and resumes an interrupted one.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .config import TrainConfig
from .data import DeviceDataset, LongTailedData, build_long_tailed
from . import runcache
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .losses import build_loss, class_balanced_weights
from .metrics import confusion_matrix, expected_calibration_error, per_class_accuracy, shot_accuracy
from .models import build_model, get_classifier
from .samplers import build_sampler
from .schedules import learning_rate

METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
EXTRAS_FILE = "extras.json"


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


_DATA_CACHE: Dict[Tuple, LongTailedData] = {}
_DEVICE_CACHE: Dict[Tuple, DeviceDataset] = {}


def load_data(cfg: TrainConfig) -> LongTailedData:
    """The long-tailed data of ``cfg``, memoised in-process so runs in one notebook share it."""
    key = (cfg.dataset, float(cfg.imbalance_ratio), cfg.data_root, cfg.n_max, cfg.lt_profile, cfg.data_seed,
           cfg.test_per_class, json.dumps(cfg.data_options, sort_keys=True))
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = build_long_tailed(
            cfg.dataset, cfg.imbalance_ratio, root=cfg.data_root, n_max=cfg.n_max, profile=cfg.lt_profile,
            seed=cfg.data_seed, test_per_class=cfg.test_per_class, **cfg.data_options)
    return _DATA_CACHE[key]


def _device_dataset(data: LongTailedData, split: str, device: torch.device, channels_last: bool) -> DeviceDataset:
    key = (id(data), split, str(device), channels_last)
    if key not in _DEVICE_CACHE:
        s = data.train if split == "train" else data.test
        _DEVICE_CACHE[key] = DeviceDataset(s.images, s.targets, device, channels_last=channels_last)
    return _DEVICE_CACHE[key]


@dataclass
class EvalResult:
    """Test-set metrics of one evaluation (SPEC §3); accuracies in percent."""

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
        )
        return m

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``per_class.csv``, ``curves.csv`` and (last, marking completion) ``metrics.json``."""
        out = Path(out_dir)
        rows = ["class,name,train_count,accuracy"] + [
            f"{i},{n},{c},{'' if a is None else f'{a:.4f}'}"
            for i, (n, c, a) in enumerate(zip(self.classes, self.counts, self.last.per_class))
        ]
        atomic_write_text(out / "per_class.csv", "\n".join(rows) + "\n")
        keys = list(self.history[0].keys()) if self.history else ["epoch"]
        lines = [",".join(keys)] + [",".join("" if h.get(k) is None else f"{h[k]:.6g}" for k in keys) for h in self.history]
        atomic_write_text(out / "curves.csv", "\n".join(lines) + "\n")
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
            lines = curves.read_text().strip().splitlines()
            keys = lines[0].split(",")
            for line in lines[1:]:
                history.append({k: (float(v) if v != "" else None) for k, v in zip(keys, line.split(","))})
        meta = {k: m[k] for k in runcache.META_KEYS if k in m}
        extras_file = Path(out_dir) / EXTRAS_FILE
        extras = json.loads(extras_file.read_text()) if extras_file.exists() else {}
        return cls(m["config"], m["counts"], m["classes"], last, m["top1_best"], m["best_epoch"], history,
                   m["train_seconds"], m["device"], meta, extras)


class Trainer:
    """Trains ``cfg`` on device-resident data. Subclass and override the hooks for other methods."""

    #: Processes sharing one step (DDP); ``cfg.batch_size`` is the global batch of all of them.
    world_size: int = 1
    #: The configuration class this trainer trains (subclasses of it included).
    config_cls: type = TrainConfig

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Refuse a configuration this class cannot train, before any data is loaded.

        A config subclass that names its trainer (``TRAINER``, e.g. :class:`~ltbench.bbn.BBNConfig`)
        is refused by other trainers: a plain :class:`Trainer` would silently train an ordinary
        network on it.
        """
        if not isinstance(cfg, cls.config_cls):
            raise ValueError(f"{cls.__name__} trains a {cls.config_cls.__name__}, got cfg of type "
                             f"{type(cfg).__name__}")
        needed = getattr(type(cfg), "TRAINER", None)
        if needed and needed not in {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}:
            raise ValueError(f"cfg is a {type(cfg).__name__}, which {cls.__name__} cannot train: pass "
                             f"trainer_cls={needed.rsplit('.', 1)[-1]} (from {needed.rsplit('.', 1)[0]})")

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
        self.amp_dtype = torch.bfloat16 if (cfg.amp and cuda) else None
        self.train_set = self.build_dataset("train")
        self.test_set = self.build_dataset("test")
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
        self.last_eval: Optional[EvalResult] = None
        self.train_seconds = 0.0
        self.extras: Dict[str, Any] = {}

    # -- construction hooks -------------------------------------------------------------------
    def build_dataset(self, split: str) -> Any:
        """The ``"train"`` / ``"test"`` split as the engine uses it (``batch``, ``iterate``, ``targets``):
        device-resident here; streamed from disk by :mod:`ltbench.train` for large datasets."""
        return _device_dataset(self.data, split, self.device, self.channels_last)

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
        model = build_model(self.cfg.model, self.num_classes, classifier=self.cfg.classifier)
        head = get_classifier(model)
        if getattr(self.loss_fn, "uses_sigmoid", False) and getattr(head, "bias", None) is not None:
            # SPEC §2: sigmoid losses start from the prior 1/C.
            nn.init.constant_(head.bias, -math.log(max(self.num_classes - 1, 1)))
        return model

    def trainable_parameters(self) -> List[Tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        head = get_classifier(self.model)
        no_decay = set()
        if getattr(self.loss_fn, "uses_sigmoid", False) and getattr(head, "bias", None) is not None:
            no_decay.add(id(head.bias))  # SPEC §2: the prior bias is not decayed
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
        """Loss of one batch (the engine does backward and the optimiser step)."""
        x, y = self.train_set.batch(batch, augment=True, generator=generator)
        with self.autocast():
            logits = self.forward(x)
        return self.loss_fn(logits.float(), y)

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
    @torch.no_grad()
    def evaluate(self, batch_size: int = 1000) -> EvalResult:
        self.model.eval()
        logits, targets = [], []
        for x, y in self.test_set.iterate(batch_size):
            with self.autocast():
                logits.append(self.predict(x).float())
            targets.append(y)
        self.model.train()
        return EvalResult.from_logits(torch.cat(logits), torch.cat(targets), self.counts)

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        self.model.train()
        self.on_epoch_start(epoch)
        gen = self.augment_generator(epoch)
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

    def fit(self, out_dir: Optional[str | os.PathLike] = None) -> "TrainResult":
        from tqdm.auto import tqdm

        cfg = self.cfg
        ckpt = Path(out_dir) / CHECKPOINT_FILE if out_dir is not None else None
        if ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
        bar = tqdm(range(self.start_epoch, cfg.epochs), desc=f"{cfg.loss}/{cfg.sampler} {cfg.dataset}-IR{cfg.imbalance_ratio:g}",
                   disable=not self.progress, leave=False, mininterval=1.0)
        for epoch in bar:
            t0 = time.perf_counter()
            row = self.train_epoch(epoch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - t0
            row["test_top1"] = None
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                ev = self.evaluate()
                self.last_eval = ev
                row["test_top1"] = ev.top1
                if ev.top1 > self.best_top1:
                    self.best_top1, self.best_epoch = ev.top1, epoch + 1
            self.on_epoch_end(epoch, row)
            self.history.append(row)
            self.start_epoch = epoch + 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=row["test_top1"] and f"{row['test_top1']:.1f}")
            if ckpt is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
                self.save_checkpoint(ckpt)
        if self.last_eval is None:
            self.last_eval = self.evaluate()
        return TrainResult(cfg.to_dict(), self.counts, list(self.data.classes), self.last_eval, self.best_top1,
                           self.best_epoch, self.history, self.train_seconds, device_name(self.device),
                           extras=self.extras)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"config": self.cfg.to_dict(), "epoch": self.start_epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "loss": self.loss_fn.state_dict(), "history": self.history,
                "best": (self.best_top1, self.best_epoch), "train_seconds": self.train_seconds,
                "last_eval": None if self.last_eval is None else self.last_eval.__dict__,
                "num_classes": self.num_classes, "counts": self.counts, "extras": self.extras}

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        atomic_torch_save(path, self.state_dict())

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config"] != self.cfg.to_dict():
            changed = sorted(k for k in state["config"] if state["config"].get(k) != self.cfg.to_dict().get(k))
            raise ValueError(f"checkpoint {path} was written by a different configuration (differs in {changed}); "
                             "delete it or use another out_dir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss_fn.load_state_dict(state["loss"])
        self.history = state["history"]
        self.best_top1, self.best_epoch = state["best"]
        self.train_seconds = state["train_seconds"]
        self.last_eval = EvalResult(**state["last_eval"]) if state["last_eval"] else None
        self.start_epoch = state["epoch"]
        self.extras = state.get("extras", {})


def trainer_record(trainer_cls: type, trainer_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """What :func:`train` stores as ``metrics.json["trainer"]``: the class and its keyword arguments
    (JSON values as they are, anything else by ``repr``), so a finished run is reused only by the
    same trainer with the same arguments (OHEM's ``keep_ratio`` is not part of the config)."""
    kwargs = dict(trainer_kwargs)
    # Defaults made explicit, so keep_ratio=0.5 and an omitted keep_ratio name the same run.
    for name, p in inspect.signature(trainer_cls).parameters.items():
        if name not in _NOT_RECORDED and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) \
                and p.default is not p.empty:
            kwargs.setdefault(name, p.default)
    for name in _NOT_RECORDED:
        kwargs.pop(name, None)
    return json.loads(json.dumps({"class": f"{trainer_cls.__module__}.{trainer_cls.__qualname__}",
                                  "kwargs": {k: kwargs[k] for k in sorted(kwargs)}}, default=repr))


#: Trainer arguments that do not change what a run computes.
_NOT_RECORDED = ("cfg", "data", "progress")


def _reusable(done: TrainResult, cfg: TrainConfig, trainer: Dict[str, Any], out_dir: Path,
              require_checkpoint: bool) -> bool:
    if done.config != cfg.to_dict():
        return False
    # Results written before the trainer was recorded count as the plain trainer's.
    stored = done.meta.get("trainer", {"class": f"{Trainer.__module__}.{Trainer.__qualname__}", "kwargs": {}})
    if stored != trainer:
        # Same config, another trainer or other arguments: a different run. Like a checkpoint of
        # another configuration, it is not silently overwritten.
        raise ValueError(f"{out_dir} holds a finished run of trainer {stored['class']} with {stored['kwargs']}, "
                         f"not {trainer['class']} with {trainer['kwargs']}; use another out_dir, or force=True "
                         "to replace it")
    return not require_checkpoint or (out_dir / CHECKPOINT_FILE).is_file()


def train(
    cfg: TrainConfig,
    out_dir: Optional[str | os.PathLike] = None,
    meta: Optional[Dict[str, Any]] = None,
    force: bool = False,
    progress: bool = True,
    trainer_cls: type = Trainer,
    require_checkpoint: bool = False,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Train ``cfg`` (or load its finished result) and save it under ``out_dir``.

    A run whose ``metrics.json`` exists with the same configuration, trainer class and trainer
    arguments is loaded, not retrained (unless ``force``); an interrupted run resumes from
    ``checkpoint.pt``. ``require_checkpoint``: the caller needs the finished weights (a stage-1 or
    FSA phase-I run), so a finished result without ``checkpoint.pt`` (checkpoints are not
    committed with ``results/``) is trained again, deterministically, to rebuild them. ``meta``
    (paper, table, method, published_method, notebook, profile, ...) is recorded in
    ``metrics.json``. With ``$LTBENCH_RUN_INDEX`` set (the runner sets it), a run that another
    notebook already finished with the same configuration and trainer is copied, not retrained
    (:mod:`ltbench.runcache`). Bad arguments raise before any file is read or removed.
    """
    trainer_cls.check_arguments(cfg, **trainer_kwargs)
    trainer = trainer_record(trainer_cls, trainer_kwargs)
    meta = dict(meta or {}, trainer=trainer)
    if out_dir is not None:
        out = Path(out_dir)
        key = runcache.run_key(cfg.to_dict(), trainer_cls, trainer["kwargs"])
        metrics = out / METRICS_FILE
        if metrics.exists() and not force:
            try:
                done: Optional[TrainResult] = TrainResult.load(out_dir)
            except (KeyError, ValueError):
                done = None  # an unreadable result is recomputed
            if done is not None and _reusable(done, cfg, trainer, out, require_checkpoint):
                runcache.record(key, out_dir)
                return done
            if require_checkpoint and progress and not (out / CHECKPOINT_FILE).is_file():
                print(f"{out}: finished result has no {CHECKPOINT_FILE}; training it again to rebuild the weights")
        if force:
            for f in (metrics, out / CHECKPOINT_FILE):
                f.unlink(missing_ok=True)
        shared = None if force else runcache.lookup(key, exclude=out)
        if shared is not None and (not require_checkpoint or (shared / CHECKPOINT_FILE).is_file()):
            runcache.adopt(shared, out_dir, meta)
            done = TrainResult.load(out_dir)
            if _reusable(done, cfg, trainer, out, require_checkpoint):
                return done
    trainer = trainer_cls(cfg, progress=progress, **trainer_kwargs)
    result = trainer.fit(out_dir)
    result.meta = meta
    if out_dir is not None:
        result.save(out_dir)
        runcache.record(key, out_dir)
    return result
