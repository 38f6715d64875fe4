"""Decoupled classifier learning on a frozen stage-1 backbone (SPEC §6).

Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020; and the representation x classifier grid of Zhou et al.,
"BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition",
CVPR 2020 (Fig. 2 / Table 5).

Stage 1 is an ordinary run, ``train(cfg, stage1_dir)``, whose ``checkpoint.pt`` stage 2 loads
instead of retraining. Stage 2 freezes the whole backbone (parameters *and* BatchNorm statistics:
the backbone stays in eval mode, features are computed under ``no_grad``) and learns only a
classifier on pooled features ``f``:

- ``ce`` / ``rw`` / ``rs``: a re-initialised linear classifier ``z = W f + b`` trained with CE,
  RW (inverse-frequency weighted CE, ``w_j ∝ 1 / n_j`` normalised to ``sum_j w_j = C``:
  loss ``balanced_ce`` with power 1, SPEC §4) or RS (class-balanced sampling, ``P_c = 1 / C``).
- ``crt`` (classifier re-training) is RS with the CIFAR recipe of SPEC §6: 30 epochs, lr 0.1,
  x0.1 at epochs 10 and 20, 5 warm-up epochs (schedule ``step_crt``). ``ce``, ``rw`` and ``rs``
  use the same recipe, so the 3 x 3 grid differs only in the classifier's loss/sampler.
- ``lws`` (learnable weight scaling): ``W`` and ``b`` of the stage-1 classifier frozen, one scale
  per class learnt, ``z_c = s_c (w_c . f + b_c)``, class-balanced sampling, 5 epochs (SPEC §6).
- ``tau_norm``: no training, ``w_c <- w_c / ||w_c|| ** tau`` on the stage-1 classifier, bias
  dropped (tau = 1 by default); :func:`tau_sweep` evaluates a whole sweep of tau from features
  computed once.

Everything that determines a stage-2 run is in :class:`StageTwoConfig` (a ``TrainConfig`` with
the stage-1 directory, the method, tau and the stage-1 run's own configuration), so it is recorded
in ``metrics.json``. Build one with :func:`stage_two_config` and run it with
:func:`train_stage_two`::

    cfg2 = stage_two_config(stage1_dir, "crt")
    result = train_stage_two(cfg2, out_dir, meta={...})
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence

import torch
from torch import nn

from .config import TrainConfig
from .engine import CHECKPOINT_FILE, EvalResult, Trainer, TrainResult, device_name, train
from .models import LWSClassifier, TauNormClassifier, build_model, get_classifier, set_classifier
from .registry import Registry
from .schedules import SCHEDULES, _milestones

__all__ = [
    "STAGE2_METHODS", "StageTwoMethod", "StageTwoConfig", "stage_two_config", "load_stage1_checkpoint",
    "FrozenBackboneClassifier", "ClassifierTrainer", "TauNormTrainer", "train_stage_two", "tau_sweep",
    "step_crt", "TAU_RANGE",
]

#: tau must lie here (SPEC §6 sweeps [0, 2]; TauNormClassifier accepts up to 5).
TAU_RANGE = (0.0, 5.0)

#: Fields that define the data and the backbone: stage 2 must match the stage-1 checkpoint on these.
DATA_FIELDS = ("dataset", "imbalance_ratio", "lt_profile", "n_max", "data_seed", "data_options", "model")


# --------------------------------------------------------------------------------------------
# Schedule of cRT (SPEC §6)


@SCHEDULES.register("step_crt")
def step_crt(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    """cRT's CIFAR schedule (SPEC §6): linear warm-up ``lr * e / w`` for 1-based ``e <= w``, then
    ``lr`` until epoch 10, ``lr * 0.1`` from 10 and ``lr * 0.01`` from 20 (0-based ``t >= 10``,
    ``t >= 20``: ``MultiStepLR([10, 20])`` stepped once per epoch); the milestones scale as T/3, 2T/3.
    """
    e = epoch + 1
    m1, m2 = _milestones(total_epochs, (1 / 3, 2 / 3))
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    return base_lr * 0.1 ** ((epoch >= m1) + (epoch >= m2))


# --------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class StageTwoMethod:
    """A stage-2 method: its classifier head, the config fields it sets, and the ones it needs.

    ``head``: ``"linear"`` (re-initialised), ``"lws"`` (frozen W, b and learnt scales) or
    ``"tau_norm"`` (no training). ``defaults`` are the recipe :func:`stage_two_config` applies;
    ``requires`` are the values that make the method what its name says (checked by
    :meth:`StageTwoConfig.validate`).
    """

    head: str
    defaults: Dict[str, Any]
    requires: Dict[str, Any] = field(default_factory=dict)
    description: str = ""


_CRT_RECIPE = dict(epochs=30, lr=0.1, schedule="step_crt", warmup_epochs=5, drw_epoch=None, drs_epoch=None,
                   sampler_params={}, loss_params={})

#: method name -> :class:`StageTwoMethod` (the registry stores the method objects themselves).
STAGE2_METHODS: Registry[StageTwoMethod] = Registry("stage-2 method", "method")
_METHODS: Dict[str, StageTwoMethod] = {
    "ce": StageTwoMethod("linear", dict(_CRT_RECIPE, loss="ce", sampler="instance"),
                         dict(loss="ce", sampler="instance"), "re-initialised linear classifier, CE"),
    "rw": StageTwoMethod("linear", dict(_CRT_RECIPE, loss="balanced_ce", loss_params={"power": 1.0},
                                        sampler="instance"),
                         dict(loss="balanced_ce", loss_params={"power": 1.0}, sampler="instance"),
                         "re-initialised linear classifier, inverse-frequency weighted CE (RW)"),
    "rs": StageTwoMethod("linear", dict(_CRT_RECIPE, loss="ce", sampler="class_balanced"),
                         dict(loss="ce", sampler="class_balanced"),
                         "re-initialised linear classifier, CE with class-balanced sampling (RS)"),
    "crt": StageTwoMethod("linear", dict(_CRT_RECIPE, loss="ce", sampler="class_balanced"),
                          dict(loss="ce", sampler="class_balanced"), "cRT: RS with the CIFAR recipe of SPEC §6"),
    "lws": StageTwoMethod("lws", dict(_CRT_RECIPE, epochs=5, warmup_epochs=0, schedule="cosine", loss="ce",
                                      sampler="class_balanced"),
                          dict(sampler="class_balanced"),
                          "LWS: frozen W and b, one learnt scale per class, class-balanced sampling, 5 epochs"),
    "tau_norm": StageTwoMethod("tau_norm", dict(_CRT_RECIPE, epochs=1, warmup_epochs=0, schedule="constant",
                                                loss="ce", sampler="instance"),
                               {}, "tau-normalised stage-1 classifier, no training (epochs unused)"),
}
for _name, _method in _METHODS.items():
    STAGE2_METHODS.register(_name)(_method)  # type: ignore[arg-type]


def get_method(name: str) -> StageTwoMethod:
    """The :class:`StageTwoMethod` ``name`` (ValueError listing the valid names otherwise)."""
    return STAGE2_METHODS.get(name)  # type: ignore[return-value]


def _check_tau(tau: Any) -> float:
    lo, hi = TAU_RANGE
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(float(tau)) \
            or not lo <= float(tau) <= hi:
        raise ValueError(f"invalid tau={tau!r}: must be a finite number in [{lo:g}, {hi:g}] "
                         "(SPEC §6 sweeps [0, 2]; tau = 0 is the plain classifier without bias)")
    return float(tau)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class StageTwoConfig(TrainConfig):
    """A :class:`TrainConfig` for stage 2 on the frozen backbone of the run in ``stage1_dir``.

    ``method``: a name of :data:`STAGE2_METHODS`. ``tau``: tau-normalisation's exponent
    (``tau_norm`` only). ``stage1_config``: the stage-1 run's configuration as saved in its
    checkpoint (filled by :func:`stage_two_config`); when set, the checkpoint must still hold
    exactly that run. Data and model fields must equal the stage-1 run's (:data:`DATA_FIELDS`).
    The defaults are cRT's recipe.
    """

    #: Only ClassifierTrainer (TauNormTrainer) trains it: a plain Trainer would retrain a whole
    #: network and never read the stage-1 checkpoint (:meth:`Trainer.check_config`).
    TRAINER: ClassVar[str] = "ltbench.two_stage.ClassifierTrainer"

    # cRT's recipe (SPEC §6) as the defaults, so StageTwoConfig(stage1_dir=...) is cRT.
    sampler: str = "class_balanced"
    epochs: int = 30
    schedule: str = "step_crt"
    stage1_dir: str = ""
    method: str = "crt"
    tau: float = 1.0
    stage1_config: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "StageTwoConfig":
        super().validate()
        if not isinstance(self.method, str):
            raise ValueError(f"invalid method={self.method!r}: must be one of {', '.join(STAGE2_METHODS.names())}")
        method = get_method(self.method)
        if not isinstance(self.stage1_dir, (str, os.PathLike)) or str(self.stage1_dir) == "":
            raise ValueError(f"invalid stage1_dir={self.stage1_dir!r}: must be the directory of a finished "
                             "stage-1 run (holding checkpoint.pt)")
        _check_tau(self.tau)
        for k, v in method.requires.items():
            if getattr(self, k) != v:
                raise ValueError(f"method={self.method!r} needs {k}={v!r}, got {k}={getattr(self, k)!r}")
        if self.drs_epoch is not None or self.drw_epoch is not None:
            raise ValueError("stage 2 trains with one loss and one sampler: drw_epoch and drs_epoch must be None")
        if self.classifier != "linear":
            raise ValueError(f"invalid classifier={self.classifier!r} for stage 2: must be 'linear'")
        if self.stage1_config:
            for k in DATA_FIELDS:
                if k in self.stage1_config and self.stage1_config[k] != getattr(self, k):
                    raise ValueError(f"stage-2 {k}={getattr(self, k)!r} differs from the stage-1 run's "
                                     f"{k}={self.stage1_config[k]!r}")
        return self


def load_stage1_checkpoint(stage1_dir: str | os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """The finished stage-1 checkpoint of ``stage1_dir`` (ValueError/FileNotFoundError if missing
    or unfinished)."""
    path = Path(stage1_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no stage-1 checkpoint at {path}: train stage 1 first with "
                                f"train(cfg, {str(stage1_dir)!r}, require_checkpoint=True) (stage 2 reuses it "
                                "instead of retraining; results/ is committed without checkpoints, and "
                                "require_checkpoint retrains a finished run that lacks one)")
    state = torch.load(path, map_location=map_location, weights_only=False)
    for k in ("config", "model", "num_classes", "counts", "epoch"):
        if k not in state:
            raise ValueError(f"{path} is not an ltbench checkpoint (missing {k!r})")
    epochs = state["config"].get("epochs")
    if state["epoch"] != epochs:
        raise ValueError(f"stage-1 run {stage1_dir} is unfinished (epoch {state['epoch']} of {epochs}); "
                         "finish it with train(cfg, stage1_dir) first")
    return state


def stage_two_config(stage1_dir: str | os.PathLike, method: str = "crt", **overrides: Any) -> StageTwoConfig:
    """A stage-2 config on the finished run in ``stage1_dir``: the stage-1 run's data, model, seed
    and run fields, ``method``'s recipe, then ``overrides`` (e.g. ``epochs``, ``device``).

    If ``epochs`` is overridden and ``warmup_epochs`` is not, the warm-up scales with it
    (``round(5 * epochs / 30)`` for the cRT recipe). Unless ``lr`` is given, the recipe's lr
    (SPEC §6: 0.1 at batch 128) scales linearly with the batch size, as stage 1's does.
    """
    m = get_method(method)
    state = load_stage1_checkpoint(stage1_dir)
    s1 = dict(state["config"])
    base = {f.name: s1[f.name] for f in dataclasses.fields(TrainConfig) if f.name in s1}
    base.update(classifier="linear", **copy.deepcopy(m.defaults))
    if "epochs" in overrides and "warmup_epochs" not in overrides and m.defaults.get("warmup_epochs"):
        overrides["warmup_epochs"] = min(overrides["epochs"],
                                         round(m.defaults["warmup_epochs"] * overrides["epochs"] / m.defaults["epochs"]))
    if "lr" not in overrides and "lr" in m.defaults:
        # SPEC §6's lr is for batch 128; scaled linearly with the batch as stage 1 is (base_config).
        overrides["lr"] = m.defaults["lr"] * overrides.get("batch_size", base["batch_size"]) / 128
    cfg = StageTwoConfig(**base, stage1_dir=str(stage1_dir), method=method, stage1_config=s1)
    return cfg.replace(**overrides).validate()


# --------------------------------------------------------------------------------------------
# Model


class FrozenBackboneClassifier(nn.Module):
    """``z = fc(backbone(x))``: a frozen stage-1 backbone (its own classifier removed) and a head.

    The backbone's parameters do not require gradients, it runs under ``no_grad`` and stays in
    eval mode whatever ``train()`` is called with, so its BatchNorm statistics never change.
    ``stage1_fc`` keeps the stage-1 classifier (frozen) for tau-norm and LWS.
    """

    def __init__(self, stage1_model: nn.Module, head: Optional[nn.Module] = None) -> None:
        super().__init__()
        stage1_fc = get_classifier(stage1_model)
        set_classifier(stage1_model, nn.Identity())
        self.backbone = stage1_model
        self.stage1_fc = stage1_fc
        for p in list(self.backbone.parameters()) + list(self.stage1_fc.parameters()):
            p.requires_grad_(False)
        self.num_features = stage1_model.num_features
        self.fc: nn.Module = head if head is not None else nn.Linear(self.num_features, stage1_fc.out_features)
        self.train()

    def train(self, mode: bool = True) -> "FrozenBackboneClassifier":
        super().train(mode)
        self.backbone.eval()
        self.stage1_fc.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``f = backbone(x)`` (no gradient, eval-mode BatchNorm)."""
        with torch.no_grad():
            return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _linear_head(model: FrozenBackboneClassifier, cfg: StageTwoConfig) -> nn.Module:
    return nn.Linear(model.num_features, model.stage1_fc.out_features)


def _lws_head(model: FrozenBackboneClassifier, cfg: StageTwoConfig) -> nn.Module:
    return LWSClassifier(model.stage1_fc)


def _tau_head(model: FrozenBackboneClassifier, cfg: StageTwoConfig) -> nn.Module:
    return TauNormClassifier(model.stage1_fc, cfg.tau)


#: head name -> factory(model, cfg) of the stage-2 classifier.
HEADS: Registry[nn.Module] = Registry("stage-2 head", "head")
HEADS.register("linear")(_linear_head)
HEADS.register("lws")(_lws_head)
HEADS.register("tau_norm")(_tau_head)


# --------------------------------------------------------------------------------------------
# Trainers


def _check_against_checkpoint(cfg: StageTwoConfig, state: Dict[str, Any]) -> None:
    s1 = state["config"]
    path = Path(cfg.stage1_dir) / CHECKPOINT_FILE
    if cfg.stage1_config and cfg.stage1_config != s1:
        changed = sorted(k for k in set(s1) | set(cfg.stage1_config) if s1.get(k) != cfg.stage1_config.get(k))
        raise ValueError(f"stage-1 checkpoint {path} no longer holds the run this stage-2 config was built "
                         f"from (differs in {changed}); rebuild it with stage_two_config()")
    if "bbn_adaptor" in s1:
        raise ValueError(f"stage-1 checkpoint {path} is a BBN run (two branches, a 2x-wide classifier): stage 2 "
                         "re-trains the classifier of a one-branch network; point stage1_dir at a CE, RW or RS run")
    for k in DATA_FIELDS:
        if s1.get(k) != getattr(cfg, k):
            what = "architecture" if k == "model" else "dataset"
            raise ValueError(f"stage-1 checkpoint {path} does not match this stage-2 config ({what}): "
                             f"checkpoint {k}={s1.get(k)!r}, stage 2 {k}={getattr(cfg, k)!r}")
    if s1.get("classifier", "linear") != "linear" and get_method(cfg.method).head != "linear":
        raise ValueError(f"method={cfg.method!r} needs a stage-1 run with a linear classifier, got "
                         f"classifier={s1.get('classifier')!r}")


class ClassifierTrainer(Trainer):
    """Stage 2 (SPEC §6): trains only the classifier of :class:`FrozenBackboneClassifier`.

    The stage-1 checkpoint is loaded and checked (exists, finished, same data and architecture)
    before any data is loaded; the number of classes and the training counts are checked against
    the data before training. Batches are augmented as in stage 1 and pass through the frozen
    backbone every step (what cRT does).
    """

    cfg: StageTwoConfig
    config_cls = StageTwoConfig

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        if not isinstance(cfg, StageTwoConfig):
            raise ValueError(f"{cls.__name__} needs a StageTwoConfig, got {type(cfg).__name__}; "
                             "build one with stage_two_config(stage1_dir, method)")
        super().check_config(cfg)

    def __init__(self, cfg: StageTwoConfig, *args: Any, **kwargs: Any) -> None:
        type(self).check_config(cfg)
        cfg.validate()
        self.stage1_state = load_stage1_checkpoint(cfg.stage1_dir)
        _check_against_checkpoint(cfg, self.stage1_state)
        super().__init__(cfg, *args, **kwargs)

    def build_model(self) -> nn.Module:
        state = self.stage1_state
        s1 = state["config"]
        path = Path(self.cfg.stage1_dir) / CHECKPOINT_FILE
        if state["num_classes"] != self.num_classes or list(state["counts"]) != list(self.counts):
            raise ValueError(f"stage-1 checkpoint {path} has num_classes={state['num_classes']} and counts "
                             f"{list(state['counts'])}, but the data of this config has num_classes="
                             f"{self.num_classes} and counts {self.counts}")
        stage1 = build_model(s1["model"], self.num_classes, classifier=s1.get("classifier", "linear"))
        try:
            stage1.load_state_dict(state["model"])
        except RuntimeError as exc:
            # PyTorch's first line is only a heading; the key and shape details follow it.
            detail = " ".join(line.strip() for line in str(exc).splitlines()[1:])[:500]
            raise ValueError(f"stage-1 checkpoint {path} does not fit architecture model={s1['model']!r}: "
                             f"{detail or exc}") from None
        model = FrozenBackboneClassifier(stage1)
        model.fc = HEADS.build(get_method(self.cfg.method).head, model, self.cfg)
        if getattr(self.loss_fn, "uses_sigmoid", False) and isinstance(model.fc, nn.Linear) \
                and model.fc.bias is not None:
            nn.init.constant_(model.fc.bias, -math.log(max(self.num_classes - 1, 1)))  # SPEC §2
        return model


class TauNormTrainer(ClassifierTrainer):
    """tau-normalisation (SPEC §6): no training; ``fit`` evaluates the tau-normalised classifier."""

    def build_optimizer(self) -> Optional[torch.optim.Optimizer]:  # type: ignore[override]
        return None  # nothing to train

    def fit(self, out_dir: Optional[str | os.PathLike] = None) -> TrainResult:
        ev = self.evaluate()
        self.last_eval = ev
        history = [{"epoch": 0, "lr": 0.0, "train_loss": None, "test_top1": ev.top1}]
        return TrainResult(self.cfg.to_dict(), self.counts, list(self.data.classes), ev, ev.top1, 0, history, 0.0,
                           device_name(self.device))


def _trainer_for(cfg: StageTwoConfig) -> type:
    return TauNormTrainer if get_method(cfg.method).head == "tau_norm" else ClassifierTrainer


def train_stage_two(cfg: StageTwoConfig, out_dir: Optional[str | os.PathLike] = None,
                    meta: Optional[Dict[str, Any]] = None, force: bool = False, progress: bool = True) -> TrainResult:
    """Run stage 2 ``cfg`` (or load its finished result) through :func:`ltbench.engine.train`."""
    if not isinstance(cfg, StageTwoConfig):
        raise ValueError(f"train_stage_two needs a StageTwoConfig, got {type(cfg).__name__}")
    cfg.validate()
    return train(cfg, out_dir, meta=meta, force=force, progress=progress, trainer_cls=_trainer_for(cfg))


@torch.no_grad()
def tau_sweep(stage1_dir: str | os.PathLike, taus: Sequence[float] = tuple(i / 10 for i in range(21)),
              device: str = "auto", data_root: Optional[str] = None, batch_size: int = 1000) -> List[Dict[str, Any]]:
    """Test metrics of the tau-normalised stage-1 classifier for every ``tau`` (SPEC §6), without
    retraining: test features are computed once through the frozen backbone.

    Returns one dict per tau: ``tau``, ``top1``, ``many``, ``medium``, ``few``, ``per_class``.
    """
    taus = [_check_tau(t) for t in taus]
    if not taus:
        raise ValueError("taus is empty")
    overrides: Dict[str, Any] = {"device": device}
    if data_root is not None:
        overrides["data_root"] = data_root
    cfg = stage_two_config(stage1_dir, "tau_norm", **overrides)
    trainer = TauNormTrainer(cfg, progress=False)
    model: FrozenBackboneClassifier = trainer.model  # type: ignore[assignment]
    model.eval()
    feats, targets = [], []
    for x, y in trainer.test_set.iterate(batch_size):
        with trainer.autocast():
            feats.append(model.features(x).float())
        targets.append(y)
    f, y = torch.cat(feats), torch.cat(targets)
    out = []
    for tau in taus:
        head = TauNormClassifier(model.stage1_fc, tau).to(f.device)
        ev = EvalResult.from_logits(head(f), y, trainer.counts)
        out.append({"tau": tau, "top1": ev.top1, "many": ev.many, "medium": ev.medium, "few": ev.few,
                    "per_class": ev.per_class})
    return out
