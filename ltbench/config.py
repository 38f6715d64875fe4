"""One visible place for every training hyperparameter (SPEC §2 defaults), validated up front."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class TrainConfig:
    """Everything that determines a training run. Defaults are SPEC §2's ResNet-32 CIFAR-LT recipe."""

    # data (SPEC §1)
    dataset: str = "cifar10"
    imbalance_ratio: float = 100.0
    lt_profile: str = "exp"
    n_max: Optional[int] = None
    test_per_class: Optional[int] = None
    data_root: Optional[str] = None
    data_seed: int = 0
    data_options: Dict[str, Any] = field(default_factory=dict)
    # model
    model: str = "resnet32"
    classifier: str = "linear"
    # loss and sampling (SPEC §4-6)
    loss: str = "ce"
    loss_params: Dict[str, Any] = field(default_factory=dict)
    sampler: str = "instance"
    sampler_params: Dict[str, Any] = field(default_factory=dict)
    drw_epoch: Optional[int] = None  # 0-based epoch from which CB weights (drw_beta) are on
    drw_beta: float = 0.9999
    drs_epoch: Optional[int] = None  # 0-based epoch from which class-balanced sampling is on
    # optimisation (SPEC §2)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    schedule: str = "step_cb"
    warmup_epochs: int = 5
    nesterov: Optional[bool] = None  # None: True for step_bbn, else False
    drop_last: bool = False
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    eval_every: int = 1
    checkpoint_every: int = 10

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid: {', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        return cls().replace(**d)

    def validate(self) -> "TrainConfig":
        """Raise a ValueError naming the parameter, the value and what is valid, before any work."""
        from .data import LARGE_DATASETS, SOURCES
        from .losses import LOSSES
        from .models import CLASSIFIERS, MODELS
        from .samplers import SAMPLERS
        from .schedules import SCHEDULES

        def need(ok: bool, name: str, valid: str) -> None:
            if not ok:
                raise ValueError(f"invalid {name}={getattr(self, name)!r}: must be {valid}")

        if self.dataset not in SOURCES and self.dataset not in LARGE_DATASETS:
            raise ValueError(f"unknown dataset: dataset={self.dataset!r}; valid dataset names: "
                             f"{', '.join(SOURCES.names())} (in memory), {', '.join(LARGE_DATASETS.names())} "
                             "(streamed from disk by python -m ltbench.train)")
        need(isinstance(self.imbalance_ratio, (int, float)) and self.imbalance_ratio >= 1, "imbalance_ratio", "a number >= 1")
        need(self.lt_profile in ("exp", "step"), "lt_profile", "'exp' or 'step'")
        need(self.n_max is None or (isinstance(self.n_max, int) and self.n_max >= 1), "n_max", "None or a positive int")
        need(self.test_per_class is None or (isinstance(self.test_per_class, int) and self.test_per_class >= 1),
             "test_per_class", "None or a positive int")
        if not self.model.startswith("timm/"):
            MODELS.get(self.model)
        need(self.classifier in CLASSIFIERS, "classifier", f"one of {CLASSIFIERS}")
        LOSSES.get(self.loss)
        SAMPLERS.get(self.sampler)
        SCHEDULES.get(self.schedule)
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "a positive int")
        need(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a positive number")
        need(isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(isinstance(self.warmup_epochs, int) and 0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
             f"an int in [0, epochs={self.epochs}]")
        for name in ("drw_epoch", "drs_epoch"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and 0 <= v < self.epochs), name, f"None or an int in [0, {self.epochs})")
        need(0 <= self.drw_beta < 1, "drw_beta", "in [0, 1)")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps",
             "device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return self
