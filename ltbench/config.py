"""One visible place for every training hyperparameter (docs/methods.md §2 defaults), validated up front."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple

from .data import LARGE_DATASETS, SOURCES, known_long_tail_shape, zero_count_message
from .data.jpeg import check_quality
from .losses import LOSSES, check_loss
from .plugins import is_reference
from .models import CLASSIFIERS, MODELS
from .samplers import SAMPLERS
from .schedules import SCHEDULES


@dataclass
class TrainConfig:
    """Everything that determines a training run. Defaults are docs/methods.md §2's ResNet-32 CIFAR-LT recipe."""

    #: Fields a subclass's trainer does not read: left out of a run's identity (ltbench.runs.make_spec).
    UNUSED_FIELDS: ClassVar[Tuple[str, ...]] = ()

    # data (docs/methods.md §1)
    dataset: str = "cifar10"
    imbalance_ratio: float = 100.0
    lt_profile: str = "exp"
    n_max: Optional[int] = None
    test_per_class: Optional[int] = None
    #: A balanced validation split of this many unused training images per class (model selection
    #: without the test set: best epoch, tau); None = none (CIFAR-100-LT's head classes have no
    #: unused images). See ltbench.data.validation_indices.
    val_per_class: Optional[int] = None
    data_root: Optional[str] = None
    data_seed: int = 0
    data_options: Dict[str, Any] = field(default_factory=dict)
    # model
    model: str = "resnet32"
    classifier: str = "linear"
    #: The linear head's bias at initialisation: "uniform" is PyTorch's nn.Linear default
    #: U(+-1/sqrt(fan_in)), as LDAM-DRW's ResNet-32 leaves it (its init touches only weights);
    #: "zero" is what ltbench did before 2026-12 (runs stored without this field are "zero" runs).
    head_bias_init: str = "uniform"
    # loss and sampling (docs/methods.md §4-6)
    loss: str = "ce"
    loss_params: Dict[str, Any] = field(default_factory=dict)
    sampler: str = "instance"
    sampler_params: Dict[str, Any] = field(default_factory=dict)
    drw_epoch: Optional[int] = None  # 0-based epoch from which CB weights (drw_beta) are on
    drw_beta: float = 0.9999
    drs_epoch: Optional[int] = None  # 0-based epoch from which class-balanced sampling is on
    # optimisation (docs/methods.md §2)
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
    amp: bool = True  # bf16 autocast on CUDA
    #: bf16 autocast on the CPU too (with ``amp``): 1.6x a float32 step on a CPU with native bf16
    #: (AVX512-BF16 or AMX; benchmarks/throughput.py rows *_bf16), emulated and slow on one without. A change of
    #: numerics, so part of a run's identity; False (float32 on CPU, what every run stored before
    #: the field existed did) is left out of the key.
    amp_cpu: bool = False
    channels_last: bool = True  # CUDA only
    compile: bool = False
    eval_every: int = 1
    # Every epoch: an interrupted run resumes from its last finished epoch, which matters most
    # for short runs (an epoch of ResNet-32 on CIFAR-LT costs far more than writing its ~2 MB).
    checkpoint_every: int = 1

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a plain dict (nested dicts copied): what metrics.json records."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied; unknown field names raise a ValueError listing the valid ones."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            valid = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid: {valid}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """The defaults with the fields of ``d`` (a mapping of field names) applied; not validated."""
        if not isinstance(d, Mapping):
            raise ValueError(f"invalid config {d!r}: must be a dict of {cls.__name__} fields (got {type(d).__name__})")
        return cls().replace(**d)

    def validate(self) -> "TrainConfig":
        """Raise a ValueError naming the parameter, the value and what is valid, before any work.

        Every field is type-checked first (``bool`` fields take real booleans only, ``int`` fields
        real ints and no booleans, numbers must be finite), then checked for its valid values.
        Subclasses extend this and call ``super().validate()``.
        """
        def need(ok: bool, name: str, valid: str) -> None:
            if not ok:
                raise ValueError(f"invalid {name}={getattr(self, name)!r}: must be {valid}")

        self._check_types()
        if self.dataset not in SOURCES and self.dataset not in LARGE_DATASETS:
            raise ValueError(f"unknown dataset: dataset={self.dataset!r}; valid dataset names: "
                             f"{', '.join(SOURCES.names())} (in memory), {', '.join(LARGE_DATASETS.names())} "
                             "(streamed from disk by python -m ltbench.train)")
        need(self.imbalance_ratio >= 1, "imbalance_ratio", "a finite number >= 1")
        need(self.lt_profile in ("exp", "step"), "lt_profile", "'exp' or 'step'")
        need(self.n_max is None or self.n_max >= 1, "n_max", "None or a positive int")
        need(self.test_per_class is None or self.test_per_class >= 1, "test_per_class", "None or a positive int")
        need(self.val_per_class is None or self.val_per_class >= 1, "val_per_class", "None or a positive int")
        need(0 <= self.data_seed < 2**32, "data_seed", "an int in [0, 2**32) (NumPy's legacy seed range)")
        if not self.model.startswith("timm/"):
            MODELS.get(self.model)
        need(self.classifier in CLASSIFIERS, "classifier", f"one of {CLASSIFIERS}")
        need(self.head_bias_init in HEAD_BIAS_INITS, "head_bias_init", f"one of {HEAD_BIAS_INITS}")
        LOSSES.get(self.loss)
        if is_reference(self.loss):  # outside the package: refuse a broken loss before any work
            check_loss(self.loss, **self.loss_params)
        SAMPLERS.get(self.sampler)
        SCHEDULES.get(self.schedule)
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every"):
            need(getattr(self, name) >= 1, name, "a positive int")
        need(self.lr > 0, "lr", "a finite number > 0")
        need(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "a finite number >= 0")
        need(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", f"an int in [0, epochs={self.epochs}]")
        for name in ("drw_epoch", "drs_epoch"):
            v = getattr(self, name)
            need(v is None or 0 <= v < self.epochs, name, f"None or an int in [0, {self.epochs})")
        need(0 <= self.drw_beta < 1, "drw_beta", "a number in [0, 1)")
        need(self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda"),
             "device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.dataset in CIFAR_DATA_OPTIONS:  # the CIFAR loaders take no other option: a typo must not pass
            unknown = sorted(set(self.data_options) - set(CIFAR_DATA_OPTIONS[self.dataset]))
            if unknown:
                raise ValueError(f"unknown data_options {unknown} for dataset={self.dataset!r}; valid: "
                                 f"{', '.join(CIFAR_DATA_OPTIONS[self.dataset])}")
        if self.dataset not in LARGE_DATASETS:
            check_quality(self.data_options.get("jpeg_quality"))
            self._check_long_tail()  # IR = inf is reported here in terms of IR and n_max when it can be
        need(math.isfinite(self.imbalance_ratio), "imbalance_ratio", "a finite number >= 1")
        return self

    def _check_types(self) -> None:
        """Type-check every TrainConfig field: ValueError naming the field, the value and the type."""
        for f in dataclasses.fields(TrainConfig):
            kind = _FIELD_TYPES[f.name]
            value = getattr(self, f.name)
            if not _TYPE_CHECKS[kind](value):
                raise ValueError(f"invalid {f.name}={value!r}: must be {_TYPE_NAMES[kind]} "
                                 f"(got {type(value).__name__})")
            if kind.startswith("dict"):
                bad = [k for k in value if not isinstance(k, str)]
                if bad:
                    raise ValueError(f"invalid {f.name}={value!r}: must be a dict with str keys "
                                     f"(got key {bad[0]!r} of type {type(bad[0]).__name__})")

    def _check_long_tail(self) -> None:
        """IR and n_max must leave every class at least one image: checked here when n_max and the
        class count are known before the data is read (else by ``build_long_tailed``)."""
        shape = known_long_tail_shape(self.dataset, self.n_max, self.data_options)
        if shape is None:
            return
        msg = zero_count_message(shape[0], shape[1], self.imbalance_ratio, self.lt_profile)
        if msg:
            raise ValueError(f"invalid imbalance_ratio={self.imbalance_ratio!r} for n_max={shape[0]}: {msg}")


#: ``TrainConfig.data_options`` the CIFAR datasets accept (``build_long_tailed``'s options).
CIFAR_DATA_OPTIONS: Dict[str, Tuple[str, ...]] = {"cifar10": ("jpeg_quality",), "cifar100": ("jpeg_quality",)}
#: Valid ``TrainConfig.head_bias_init`` values; the first is the default.
HEAD_BIAS_INITS = ("uniform", "zero")
#: The value a stored run description without ``head_bias_init`` had: its key hashes without the field.
LEGACY_HEAD_BIAS_INIT = "zero"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


_TYPE_CHECKS: Dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "number": _is_number,
    "ratio": lambda v: _is_int(v) or (isinstance(v, float) and not math.isnan(v)),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "opt_int": lambda v: v is None or _is_int(v),
    "opt_str": lambda v: v is None or isinstance(v, str),
    "opt_bool": lambda v: v is None or isinstance(v, bool),
}
_TYPE_NAMES: Dict[str, str] = {
    "str": "a str",
    "int": "an int (not a bool or a float)",
    "number": "a finite number (int or float, not a bool, NaN or inf)",
    "ratio": "a finite number >= 1 (int or float, not a bool or NaN)",
    "bool": "a bool (True or False, not a string or a number)",
    "dict": "a dict",
    "opt_int": "None or an int (not a bool or a float)",
    "opt_str": "None or a str (a path; pass str(path))",
    "opt_bool": "None or a bool (True or False, not a string or a number)",
}
#: The type each TrainConfig field must have (checked by ``TrainConfig.validate``).
_FIELD_TYPES: Dict[str, str] = {
    "dataset": "str", "imbalance_ratio": "ratio", "lt_profile": "str", "n_max": "opt_int",
    "test_per_class": "opt_int", "val_per_class": "opt_int", "data_root": "opt_str", "data_seed": "int", "data_options": "dict",
    "model": "str", "classifier": "str", "head_bias_init": "str", "loss": "str", "loss_params": "dict", "sampler": "str",
    "sampler_params": "dict", "drw_epoch": "opt_int", "drw_beta": "number", "drs_epoch": "opt_int",
    "epochs": "int", "batch_size": "int", "lr": "number", "momentum": "number", "weight_decay": "number",
    "schedule": "str", "warmup_epochs": "int", "nesterov": "opt_bool", "drop_last": "bool", "seed": "int",
    "device": "str", "amp": "bool", "amp_cpu": "bool", "channels_last": "bool", "compile": "bool", "eval_every": "int",
    "checkpoint_every": "int",
}
