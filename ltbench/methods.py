"""The built-in methods of :data:`ltbench.runs.METHODS` (defined in :mod:`ltbench.spec`), and builders of their run specs.

Each method is one :func:`~ltbench.runs.register_method` call naming its configuration class, its
trainer, its parameters with defaults, its dependencies and how its parameters are checked.
``python -m ltbench methods`` prints the table.

=============  =======================================================================
``joint``      one network trained end to end: every loss, sampler, DRW / DRS, LDAM's
               cosine head are fields of :class:`~ltbench.config.TrainConfig` (docs/methods.md §2-§6)
``bbn``        BBN's two-branch network and cumulative learning (docs/methods.md §7)
``ohem``       online hard example mining, two-pass or masked (docs/methods.md §9)
``mixup``      mixup (Zhang et al. 2018), BBN Table 1's baseline (docs/methods.md §10)
``crt``        classifier re-training on a frozen stage-1 backbone (docs/methods.md §6)
``lws``        learnable weight scaling on the stage-1 classifier (docs/methods.md §6)
``tau_norm``   tau-normalised stage-1 classifier, no training (docs/methods.md §6)
``stage2_ce``  the representation x classifier grid's CE / RW / RS classifiers (docs/methods.md §6)
``stage2_rw``
``stage2_rs``
``fsa``        feature space augmentation, phase II on a frozen phase-I network (docs/methods.md §8)
=============  =======================================================================
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

from .bbn import BBNConfig, BBNTrainer
from .config import TrainConfig
from .engine import Trainer
from .fsa import (DEFAULT_TAU_G, DEFAULT_TAU_S, HEAD_FRACTION, FSATrainer, check_fsa_params, check_phase2_config,
                  phase2_config)
from .mixup import MixupTrainer, check_alpha
from .ohem import OHEMTrainer
from .spec import Method, RunSpec, make_spec, need_whole_network, register_method
from .two_stage import (DATA_FIELDS, STAGE2_METHODS, ClassifierTrainer, StageTwoConfig, TauNormTrainer,
                        stage_two_config)

__all__ = ["joint_spec", "bbn_spec", "ohem_spec", "mixup_spec", "stage_two_spec", "fsa_spec", "spec_for",
           "STAGE2_METHOD_NAMES"]


# --------------------------------------------------------------------------------------------
# Registration


def _check_ohem(cfg: TrainConfig, params: Dict[str, Any], deps: Dict[str, RunSpec]) -> None:
    OHEMTrainer.check_arguments(cfg, **params)


register_method(Method("joint", "one network trained end to end (loss, sampler, DRW/DRS, head from the config)",
                       TrainConfig, Trainer, whole_network=True))
register_method(Method("bbn", "BBN: bilateral branches, cumulative learning", BBNConfig, BBNTrainer, cost=2.0))
register_method(Method("ohem", "online hard example mining on per-sample CE", TrainConfig, OHEMTrainer,
                       params={"keep_ratio": 0.5, "mode": "two_pass"}, check=_check_ohem, whole_network=True,
                       cost=4 / 3))

def _check_mixup(cfg: TrainConfig, params: Dict[str, Any], deps: Dict[str, RunSpec]) -> None:
    MixupTrainer.check_arguments(cfg, **params)


register_method(Method("mixup", "mixup: images and labels mixed within the batch, lam ~ Beta(alpha, alpha)",
                       TrainConfig, MixupTrainer, params={"alpha": 1.0}, check=_check_mixup, whole_network=True))

#: Registry method name -> StageTwoConfig.method (the stage-2 recipe's name in ltbench.two_stage).
STAGE2_METHOD_NAMES = {"crt": "crt", "lws": "lws", "tau_norm": "tau_norm",
                       "stage2_ce": "ce", "stage2_rw": "rw", "stage2_rs": "rs"}


def _stage2_check(name: str):
    def check(cfg: TrainConfig, params: Dict[str, Any], deps: Dict[str, RunSpec]) -> None:
        assert isinstance(cfg, StageTwoConfig)
        if cfg.method != STAGE2_METHOD_NAMES[name]:
            raise ValueError(f"method {name!r} needs a StageTwoConfig with method={STAGE2_METHOD_NAMES[name]!r}, "
                             f"got method={cfg.method!r}; build it with stage_two_spec(stage1, {name!r})")
        s1 = deps["stage1"]
        need_whole_network("stage1", s1, f"stage-2 method {name!r}")
        c1 = s1.config
        for k in DATA_FIELDS:
            if c1.get(k) != getattr(cfg, k) and not (k == "imbalance_ratio" and float(c1.get(k)) == float(cfg.imbalance_ratio)):
                raise ValueError(f"stage-2 {k}={getattr(cfg, k)!r} differs from its stage-1 run's {k}={c1.get(k)!r}")
        if c1.get("classifier", "linear") != "linear" and name in ("lws", "tau_norm"):
            raise ValueError(f"method {name!r} needs a stage-1 run with a linear classifier, got "
                             f"classifier={c1.get('classifier')!r}")
    return check


for _name, _recipe in STAGE2_METHOD_NAMES.items():
    _m = STAGE2_METHODS.get(_recipe)
    register_method(Method(
        _name, _m.description, StageTwoConfig, TauNormTrainer if _m.head == "tau_norm" else ClassifierTrainer,
        deps=("stage1",), check=_stage2_check(_name), cost=0.0 if _m.head == "tau_norm" else 1 / 3))


_FSA_PARAMS = {"tau_s": DEFAULT_TAU_S, "tau_g": DEFAULT_TAU_G, "n_f": 3, "n_a": 3, "head_fraction": HEAD_FRACTION}


def _check_fsa(cfg: TrainConfig, params: Dict[str, Any], deps: Dict[str, RunSpec]) -> None:
    check_fsa_params(**params)
    need_whole_network("phase1", deps["phase1"], "method 'fsa'")
    check_phase2_config(cfg, {"config": deps["phase1"].config}, "the phase-I spec")


register_method(Method("fsa", "FSA phase II: classifier fine-tuned on real + mixed tail features", TrainConfig,
                       FSATrainer, params=_FSA_PARAMS, deps=("phase1",), check=_check_fsa, cost=1 / 3))


# --------------------------------------------------------------------------------------------
# Builders


def joint_spec(cfg: TrainConfig) -> RunSpec:
    """One network trained end to end on ``cfg`` (any loss / sampler / DRW / DRS / head)."""
    return make_spec("joint", cfg)


def bbn_spec(cfg: TrainConfig, **bbn_options: Any) -> RunSpec:
    """BBN on ``cfg``'s data and recipe with its lr variant; ``bbn_options``: ``bbn_sampler``,
    ``bbn_adaptor``, ``bbn_sampler_params`` or other BBNConfig fields."""
    if not isinstance(cfg, BBNConfig):
        cfg = BBNConfig.from_train_config(cfg, **bbn_options)
    elif bbn_options:
        cfg = cfg.replace(**bbn_options)
    return make_spec("bbn", cfg)


def ohem_spec(cfg: TrainConfig, keep_ratio: float = 0.5, mode: str = "two_pass") -> RunSpec:
    """OHEM on ``cfg`` (plain CE) keeping ``keep_ratio`` of each batch, ``mode`` two_pass / masked."""
    return make_spec("ohem", cfg, keep_ratio=keep_ratio, mode=mode)


def mixup_spec(cfg: TrainConfig, alpha: float = 1.0) -> RunSpec:
    """mixup with Beta(``alpha``, ``alpha``) on ``cfg`` (BBN Table 1's baseline: alpha 1, CE)."""
    return make_spec("mixup", cfg, alpha=check_alpha(alpha))


def stage_two_spec(stage1: RunSpec, method: str = "crt", **overrides: Any) -> RunSpec:
    """Stage ``method`` (crt, lws, tau_norm, stage2_ce / _rw / _rs) on the frozen network of ``stage1``.

    The recipe is the method's (docs/methods.md §6) with ``overrides`` (e.g. ``epochs``, ``tau``); data and
    model come from ``stage1``.
    """
    if not isinstance(stage1, RunSpec):
        raise ValueError(f"stage1 must be the RunSpec of a whole-network run, got {stage1!r}")
    if method not in STAGE2_METHOD_NAMES:
        raise ValueError(f"unknown stage-2 method: method={method!r}; valid: {', '.join(STAGE2_METHOD_NAMES)}")
    cfg = stage_two_config(stage1.config, STAGE2_METHOD_NAMES[method], **overrides)
    return make_spec(method, cfg, deps={"stage1": stage1})


def fsa_spec(phase1: RunSpec, iterations: int = 6400, lr: float = 0.001, batch_size: int = 128,
             evaluations: int = 10, tau_s: float = DEFAULT_TAU_S, tau_g: float = DEFAULT_TAU_G, n_f: int = 3,
             n_a: int = 3, head_fraction: float = HEAD_FRACTION, **config_changes: Any) -> RunSpec:
    """FSA phase II (docs/methods.md §8) on the phase-I run ``phase1``: ``iterations`` steps of ``batch_size``
    at a constant ``lr``, evaluated ``evaluations`` times, with FSA's thresholds and counts."""
    if not isinstance(phase1, RunSpec):
        raise ValueError(f"phase1 must be the RunSpec of a whole-network run, got {phase1!r}")
    check_fsa_params(tau_s, tau_g, n_f, n_a, head_fraction)
    cfg = phase2_config(phase1.config, iterations, lr, batch_size, evaluations, **config_changes)
    return make_spec("fsa", cfg, deps={"phase1": phase1}, tau_s=float(tau_s), tau_g=float(tau_g), n_f=n_f, n_a=n_a,
                     head_fraction=float(head_fraction))


def spec_for(cfg: TrainConfig, method: Optional[str] = None, deps: Optional[Mapping[str, RunSpec]] = None,
             **params: Any) -> RunSpec:
    """``make_spec`` with the method inferred from ``cfg``'s class when not given (BBNConfig -> bbn,
    TrainConfig -> joint)."""
    if method is None:
        method = "bbn" if isinstance(cfg, BBNConfig) else "joint"
    return make_spec(method, cfg, deps=deps, **params)
