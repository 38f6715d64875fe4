"""Decoupled classifier learning on a frozen stage-1 backbone (docs/methods.md §6).

Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020; and the representation x classifier grid of Zhou et al.,
"BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition",
CVPR 2020 (Fig. 2 / Table 5).

Stage 1 is an ordinary run (method ``joint``), whose ``checkpoint.pt`` stage 2 loads
instead of retraining. Stage 2 freezes the backbone's parameters (features are computed under ``no_grad``) and learns only a
classifier on pooled features ``f``. As in the authors' code (classifier-balancing, BagofTricks-LT),
the backbone's BatchNorm stays in train mode by default, so its running statistics are re-estimated
under the stage-2 sampler (``backbone_bn="eval"`` keeps stage 1's):

- ``ce`` / ``rw`` / ``rs``: a re-initialised linear classifier ``z = W f + b`` trained with CE,
  RW (inverse-frequency weighted CE, ``w_j ∝ 1 / n_j`` normalised to ``sum_j w_j = C``:
  loss ``balanced_ce`` with power 1, docs/methods.md §4) or RS (class-balanced sampling, ``P_c = 1 / C``).
- ``crt`` (classifier re-training) is RS with BagofTricks-LT's CIFAR recipe (docs/methods.md §6): 30 epochs,
  lr 0.1 with a 5-epoch warm-up from a third of it, x0.1 from epochs 10 and 20 (schedule
  ``crt_cifar``), weight decay 5e-4, Nesterov momentum, last partial batch dropped. ``ce``, ``rw``
  and ``rs`` use the same recipe, so the 3 x 3 grid differs only in the classifier's loss/sampler.
- ``lws`` (learnable weight scaling): ``W`` and ``b`` of the stage-1 classifier frozen, one scale
  per class learnt, ``z_c = s_c (w_c . f + b_c)``, class-balanced sampling, 5 epochs (docs/methods.md §6),
  Decoupling's cosine lr stepped before each epoch (``cosine_decoupling``).
- ``tau_norm``: no training, ``w_c <- w_c / ||w_c|| ** tau`` on the stage-1 classifier, bias
  dropped (tau = 1 by default); :func:`tau_sweep` evaluates a whole sweep of tau from features
  computed once.

Everything that determines a stage-2 run is in :class:`StageTwoConfig` (a ``TrainConfig`` with
the method and tau) plus its stage-1 run, which a run spec names as a dependency (a spec, never a
path): :func:`ltbench.methods.stage_two_spec` builds it and :func:`ltbench.runs.run` trains the
stage-1 run first when its weights are missing, then passes its folder to the trainer::

    ce = joint_spec(base_config("cifar10", 100))
    result = run(stage_two_spec(ce, "crt"), RunStore("results/paper"))
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .checkpoint import load_finished
from .config import TrainConfig
from .engine import CHECKPOINT_FILE, EvalResult, Trainer, TrainResult, device_name
from .models import LWSClassifier, TauNormClassifier, build_model, get_classifier, set_classifier
from .registry import Registry
from .schedules import SCHEDULES, _milestones

__all__ = [
    "STAGE2_METHODS", "StageTwoMethod", "StageTwoConfig", "stage_two_config", "load_stage1_checkpoint",
    "FrozenBackboneClassifier", "ClassifierTrainer", "TauNormTrainer", "tau_sweep",
    "step_crt", "TAU_RANGE", "select_tau",
]

#: tau must lie here (docs/methods.md §6 sweeps [0, 2]; TauNormClassifier accepts up to 5).
TAU_RANGE = (0.0, 5.0)

#: Modes of the frozen backbone's BatchNorm during stage 2 (:attr:`StageTwoConfig.backbone_bn`).
BACKBONE_BN = ("train", "eval")

#: Fields that define the data and the backbone: stage 2 must match the stage-1 checkpoint on these.
DATA_FIELDS = ("dataset", "imbalance_ratio", "lt_profile", "n_max", "data_seed", "data_options", "model")


# --------------------------------------------------------------------------------------------
# Schedule of cRT (docs/methods.md §6)


@SCHEDULES.register("step_crt")
def step_crt(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    """cRT's CIFAR schedule (docs/methods.md §6): linear warm-up ``lr * e / w`` for 1-based ``e <= w``, then
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


#: Samplers that draw every class equally often: independent draws (BagofTricks-LT's CIFAR setting)
#: or classifier-balancing's class-aware cycles (Decoupling's ImageNet-LT / iNaturalist / Places-LT).
CLASS_BALANCED = ("class_balanced", "class_aware")

# BagofTricks-LT's CIFAR cRT config (configs/cao_cifar/two_stage/classifier_balance/cRT): 30 epochs,
# lr 0.1 with BBN's warm-up from a third of it, x0.1 from epochs 10 and 20, weight decay 5e-4, Nesterov
# momentum, the last partial batch dropped.
_CRT_RECIPE = dict(epochs=30, lr=0.1, schedule="crt_cifar", warmup_epochs=5, weight_decay=5e-4, nesterov=True,
                   drop_last=True, drw_epoch=None, drs_epoch=None, sampler_params={}, loss_params={})

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
                         dict(loss="ce", sampler=CLASS_BALANCED),
                         "re-initialised linear classifier, CE with class-balanced sampling (RS)"),
    "crt": StageTwoMethod("linear", dict(_CRT_RECIPE, loss="ce", sampler="class_balanced"),
                          dict(loss="ce", sampler=CLASS_BALANCED), "cRT: RS with the CIFAR recipe of docs/methods.md §6"),
    # docs/methods.md §6 pins 5 epochs; the lr follows Decoupling's cosine stepped before each epoch.
    "lws": StageTwoMethod("lws", dict(_CRT_RECIPE, epochs=5, warmup_epochs=0, schedule="cosine_decoupling", loss="ce",
                                      sampler="class_balanced"),
                          dict(sampler=CLASS_BALANCED),
                          "LWS: frozen W and b, one learnt scale per class, class-balanced sampling, 5 epochs"),
    "tau_norm": StageTwoMethod("tau_norm", dict(_CRT_RECIPE, epochs=1, warmup_epochs=0, schedule="constant",
                                                nesterov=None, drop_last=False, weight_decay=2e-4,
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
                         "(docs/methods.md §6 sweeps [0, 2]; tau = 0 is the plain classifier without bias)")
    return float(tau)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class StageTwoConfig(TrainConfig):
    """A :class:`TrainConfig` for stage 2 on the frozen backbone of a stage-1 run.

    ``method``: a name of :data:`STAGE2_METHODS`. ``tau``: tau-normalisation's exponent
    (``tau_norm`` only). The stage-1 run is the spec's dependency ``stage1``; data and model fields
    must equal its (:data:`DATA_FIELDS`). The defaults are cRT's recipe.
    """

    # cRT's recipe (docs/methods.md §6) as the defaults, so StageTwoConfig() is cRT.
    sampler: str = "class_balanced"
    epochs: int = 30
    schedule: str = "crt_cifar"
    weight_decay: float = 5e-4
    nesterov: Optional[bool] = True
    drop_last: bool = True
    method: str = "crt"
    tau: float = 1.0
    #: The frozen backbone's BatchNorm while the classifier trains: "train" re-estimates its running
    #: statistics on the stage-2 batches (the authors' code: classifier-balancing, BagofTricks-LT;
    #: conv weights stay frozen), "eval" keeps stage 1's statistics.
    backbone_bn: str = "train"

    def validate(self) -> "StageTwoConfig":
        super().validate()
        if not isinstance(self.method, str):
            raise ValueError(f"invalid method={self.method!r}: must be one of {', '.join(STAGE2_METHODS.names())}")
        method = get_method(self.method)
        _check_tau(self.tau)
        for k, v in method.requires.items():
            allowed = v if isinstance(v, tuple) else (v,)
            if getattr(self, k) not in allowed:
                want = " or ".join(repr(a) for a in allowed)
                raise ValueError(f"method={self.method!r} needs {k}={want}, got {k}={getattr(self, k)!r}")
        if self.drs_epoch is not None or self.drw_epoch is not None:
            raise ValueError("stage 2 trains with one loss and one sampler: drw_epoch and drs_epoch must be None")
        if self.classifier != "linear":
            raise ValueError(f"invalid classifier={self.classifier!r} for stage 2: must be 'linear'")
        if self.backbone_bn not in BACKBONE_BN:
            raise ValueError(f"invalid backbone_bn={self.backbone_bn!r}: must be one of {', '.join(BACKBONE_BN)}")
        return self


def load_stage1_checkpoint(stage1_dir: str | os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """The finished stage-1 checkpoint of ``stage1_dir`` (ValueError/FileNotFoundError if missing
    or unfinished)."""
    return load_finished(stage1_dir, "stage-1", "run the stage-1 spec first with ltbench.runs.run(spec, store, "
                         "require_weights=True) (results/ is committed without checkpoints; require_weights "
                         "retrains a finished run that lacks one)", ("config", "model", "num_classes", "counts", "epoch"),
                         map_location)


def stage_two_config(stage1_config: Any, method: str = "crt", **overrides: Any) -> StageTwoConfig:
    """A stage-2 config on a stage-1 run: its data, model, seed and run fields (``stage1_config``:
    a ``TrainConfig``, a config mapping or a run spec), ``method``'s recipe, then ``overrides``
    (e.g. ``epochs``, ``device``).

    If ``epochs`` is overridden and ``warmup_epochs`` is not, the warm-up scales with it
    (``round(5 * epochs / 30)`` for the cRT recipe). Unless ``lr`` is given, the recipe's lr
    (docs/methods.md §6: 0.1 at batch 128) scales linearly with the batch size, as stage 1's does.
    """
    m = get_method(method)
    if isinstance(stage1_config, TrainConfig):
        s1 = stage1_config.to_dict()
    elif hasattr(stage1_config, "config") and hasattr(stage1_config, "key"):  # a RunSpec
        s1 = stage1_config.config
    elif isinstance(stage1_config, dict):
        s1 = dict(stage1_config)
    else:
        raise ValueError(f"stage1_config must be a TrainConfig, a config dict or a RunSpec, got {stage1_config!r}")
    base = {f.name: s1[f.name] for f in dataclasses.fields(TrainConfig) if f.name in s1}
    base.update(classifier="linear", **copy.deepcopy(m.defaults))
    if "epochs" in overrides and "warmup_epochs" not in overrides and m.defaults.get("warmup_epochs"):
        overrides["warmup_epochs"] = min(overrides["epochs"],
                                         round(m.defaults["warmup_epochs"] * overrides["epochs"] / m.defaults["epochs"]))
    if "lr" not in overrides and "lr" in m.defaults:
        # docs/methods.md §6's lr is for batch 128; scaled linearly with the batch as stage 1 is (base_config).
        overrides["lr"] = m.defaults["lr"] * overrides.get("batch_size", base["batch_size"]) / 128
    cfg = StageTwoConfig(**base, method=method)
    return cfg.replace(**overrides).validate()


# --------------------------------------------------------------------------------------------
# Model


class FrozenBackboneClassifier(nn.Module):
    """``z = fc(backbone(x))``: a frozen stage-1 backbone (its own classifier removed) and a head.

    The backbone's parameters do not require gradients and it runs under ``no_grad``.
    ``backbone_bn``: ``"train"`` (the authors' code) lets its BatchNorm layers use batch statistics
    and re-estimate their running statistics while the classifier trains (the conv weights stay
    bit-identical); ``"eval"`` keeps the backbone in eval mode whatever ``train()`` is called with,
    so nothing of stage 1 changes. ``stage1_fc`` keeps the stage-1 classifier (frozen) for tau-norm
    and LWS.
    """

    def __init__(self, stage1_model: nn.Module, head: Optional[nn.Module] = None, backbone_bn: str = "eval") -> None:
        super().__init__()
        if backbone_bn not in BACKBONE_BN:
            raise ValueError(f"invalid backbone_bn={backbone_bn!r}: must be one of {', '.join(BACKBONE_BN)}")
        stage1_fc = get_classifier(stage1_model)
        set_classifier(stage1_model, nn.Identity())
        self.backbone = stage1_model
        self.stage1_fc = stage1_fc
        self.backbone_bn = backbone_bn
        for p in list(self.backbone.parameters()) + list(self.stage1_fc.parameters()):
            p.requires_grad_(False)
        self.num_features = stage1_model.num_features
        self.fc: nn.Module = head if head is not None else nn.Linear(self.num_features, stage1_fc.out_features)
        self.train()

    def train(self, mode: bool = True) -> "FrozenBackboneClassifier":
        super().train(mode)
        if self.backbone_bn == "eval":
            self.backbone.eval()
        self.stage1_fc.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``f = backbone(x)`` (no gradient)."""
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


def _check_against_checkpoint(cfg: StageTwoConfig, state: Dict[str, Any], path: Path) -> None:
    s1 = state["config"]
    if "bbn_adaptor" in s1:
        raise ValueError(f"stage-1 checkpoint {path} is a BBN run (two branches, a 2x-wide classifier): stage 2 "
                         "re-trains the classifier of a one-branch network; point stage1 at a CE, RW or RS run")
    for k in DATA_FIELDS:
        mine, theirs = getattr(cfg, k), s1.get(k)
        if theirs != mine and not (k == "imbalance_ratio" and float(theirs) == float(mine)):
            what = "architecture" if k == "model" else "dataset"
            raise ValueError(f"stage-1 checkpoint {path} does not match this stage-2 config ({what}): "
                             f"checkpoint {k}={theirs!r}, stage 2 {k}={mine!r}")
    if s1.get("classifier", "linear") != "linear" and get_method(cfg.method).head != "linear":
        raise ValueError(f"method={cfg.method!r} needs a stage-1 run with a linear classifier, got "
                         f"classifier={s1.get('classifier')!r}")


class ClassifierTrainer(Trainer):
    """Stage 2 (docs/methods.md §6): trains only the classifier of :class:`FrozenBackboneClassifier`.

    ``stage1_dir``: the finished stage-1 run's folder (the run spec's ``stage1`` dependency,
    resolved by :func:`ltbench.runs.run`). Its checkpoint is loaded and checked (exists, finished,
    same data and architecture) before any data is loaded; the number of classes and the training
    counts are checked against the data before training. Batches are augmented as in stage 1 and
    pass through the frozen backbone every step (what cRT does).
    """

    #: A short stage on a frozen backbone: the compile time would not be repaid (not measured faster).
    COMPILE_AUTO = False

    cfg: StageTwoConfig
    config_cls = StageTwoConfig

    def __init__(self, cfg: StageTwoConfig, stage1_dir: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        type(self).check_config(cfg)
        cfg.validate()
        self.stage1_dir = Path(stage1_dir)
        self.stage1_state = load_stage1_checkpoint(stage1_dir)
        _check_against_checkpoint(cfg, self.stage1_state, self.stage1_dir / CHECKPOINT_FILE)
        super().__init__(cfg, *args, **kwargs)

    def build_model(self) -> nn.Module:
        state = self.stage1_state
        s1 = state["config"]
        path = self.stage1_dir / CHECKPOINT_FILE
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
        # tau-norm trains nothing: its backbone keeps stage 1's statistics whatever backbone_bn says.
        bn = "eval" if get_method(self.cfg.method).head == "tau_norm" else self.cfg.backbone_bn
        model = FrozenBackboneClassifier(stage1, backbone_bn=bn)
        model.fc = HEADS.build(get_method(self.cfg.method).head, model, self.cfg)
        if getattr(self.loss_fn, "uses_sigmoid", False) and isinstance(model.fc, nn.Linear) \
                and model.fc.bias is not None:
            nn.init.constant_(model.fc.bias, -math.log(max(self.num_classes - 1, 1)))  # docs/methods.md §2
        return model


class TauNormTrainer(ClassifierTrainer):
    """tau-normalisation (docs/methods.md §6): no training; ``fit`` evaluates the tau-normalised classifier."""

    def build_optimizer(self) -> Optional[torch.optim.Optimizer]:  # type: ignore[override]
        return None  # nothing to train

    def fit(self, out_dir: Optional[str | os.PathLike] = None, deadline: Optional[float] = None) -> TrainResult:
        ev = self.evaluate()
        self.last_eval = ev
        history = [{"epoch": 0, "lr": 0.0, "train_loss": None, "test_top1": ev.top1}]
        val: Dict[str, Any] = {}
        if self.val_set is not None:
            vev = self.evaluate(split="val")
            history[0]["val_top1"] = vev.top1
            val = {"best_epoch_val": 0, "best_val_top1": vev.top1, "top1_at_best_val": ev.top1}
        return TrainResult(self.cfg.to_dict(), self.counts, list(self.data.classes), ev, ev.top1, 0, history, 0.0,
                           device_name(self.device), val=val)


def _trainer_for(cfg: StageTwoConfig) -> type:
    return TauNormTrainer if get_method(cfg.method).head == "tau_norm" else ClassifierTrainer


@torch.no_grad()
def tau_sweep(stage1_dir: str | os.PathLike, taus: Sequence[float] = tuple(i / 10 for i in range(21)),
              device: str = "auto", data_root: Optional[str] = None, batch_size: int = 1000) -> List[Dict[str, Any]]:
    """Test metrics of the tau-normalised stage-1 classifier for every ``tau`` (docs/methods.md §6), without
    retraining: test features are computed once through the frozen backbone.

    Returns one dict per tau: ``tau``, ``top1``, ``many``, ``medium``, ``few``, ``per_class`` (test)
    and ``val_top1`` (the validation split's top-1 when the run has one, else None): choose tau on
    it with :func:`select_tau`, not on the test set.
    """
    taus = [_check_tau(t) for t in taus]
    if not taus:
        raise ValueError("taus is empty")
    overrides: Dict[str, Any] = {"device": device}
    if data_root is not None:
        overrides["data_root"] = data_root
    cfg = stage_two_config(load_stage1_checkpoint(stage1_dir)["config"], "tau_norm", **overrides)
    trainer = TauNormTrainer(cfg, stage1_dir, progress=False)
    model: FrozenBackboneClassifier = trainer.model  # type: ignore[assignment]
    model.eval()
    def features(dataset: Any) -> Any:
        feats, targets = [], []
        for x, y in dataset.iterate(batch_size):
            with trainer.autocast():
                feats.append(model.features(x).float())
            targets.append(y)
        return torch.cat(feats), torch.cat(targets)

    f, y = features(trainer.test_set)
    fv, yv = features(trainer.val_set) if trainer.val_set is not None else (None, None)
    out = []
    for tau in taus:
        head = TauNormClassifier(model.stage1_fc, tau).to(f.device)
        ev = EvalResult.from_logits(head(f), y, trainer.counts)
        row = {"tau": tau, "top1": ev.top1, "many": ev.many, "medium": ev.medium, "few": ev.few,
               "per_class": ev.per_class, "val_top1": None}
        if fv is not None:
            row["val_top1"] = EvalResult.from_logits(head(fv), yv, trainer.counts).top1
        out.append(row)
    return out


def select_tau(sweep: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The row of :func:`tau_sweep` with the best validation top-1 (ties: the smaller tau), or None
    when the run has no validation split. Its ``top1`` is the test accuracy to report."""
    rows = [r for r in sweep if r.get("val_top1") is not None]
    return max(rows, key=lambda r: (r["val_top1"], -r["tau"])) if rows else None
