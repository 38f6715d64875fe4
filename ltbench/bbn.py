"""BBN: the bilateral-branch network with cumulative learning (docs/methods.md §7).

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020.

Network (docs/methods.md §7): a ResNet whose last residual block is duplicated. For ResNet-32 the shared
trunk is stem + stage 1 (5 blocks) + stage 2 (5) + the first 4 blocks of stage 3; then a
conventional-branch block and a re-balancing-branch block (64 -> 64), each followed by global
average pooling, give ``f_c`` and ``f_r``; one linear layer maps ``[f_c, f_r]`` (128) to C.

Training step (docs/methods.md §7): a batch ``(x_c, y_c)`` from the conventional sampler (``instance`` by
default) and a batch ``(x_r, y_r)`` of the same size from the re-balancing sampler (``reversed``
by default) each pass through the trunk on their own, so BatchNorm sees each batch alone. With the
adaptor ``alpha`` of the 1-based epoch ``e`` of ``E`` (cumulative learning, parabolic decay
``alpha = 1 - ((e - 1) / D) ** 2`` by default, ``D`` = :func:`bbn_alpha_divisor` of ``E``: ``E``
itself, except 100 for ``E = 90`` and 200 for ``E = 180`` as in BBN's released combiner)::

    z    = fc(2 * [alpha * f_c(x_c), (1 - alpha) * f_r(x_r)])
    loss = alpha * CE(z, y_c) + (1 - alpha) * CE(z, y_r)

Inference: both branches on the same image, ``z = fc([f_c, f_r])`` (alpha 0.5 with the factor 2).

Per-branch prediction (for per-class analysis): the conventional branch alone is the training
logit at ``alpha = 1``, ``fc(2 * [f_c, 0])``; the re-balancing branch alone is ``alpha = 0``,
``fc(2 * [0, f_r])`` (both keep the classifier bias). :meth:`BBNTrainer.fit` records the three
on the test set in ``extras["branches"]`` (read back with :func:`load_branches`);
``BBNTrainer.from_checkpoint(out_dir).evaluate_branches()`` recomputes them.

Configuration lives in :class:`BBNConfig` (a :class:`~ltbench.config.TrainConfig` with three more
fields, so that everything that determines a BBN run is in ``metrics.json`` and in the
checkpoint's configuration check)::

    cfg = BBNConfig(dataset="cifar10", imbalance_ratio=50, bbn_adaptor="parabolic_decay")
    result = run(bbn_spec(cfg), RunStore(root))   # ltbench.runs / ltbench.methods

``cfg.sampler`` / ``cfg.sampler_params`` drive the conventional branch, ``cfg.bbn_sampler`` /
``cfg.bbn_sampler_params`` the re-balancing branch; the recipe is docs/methods.md §2 with the BBN lr
variant (``schedule="step_bbn"``, Nesterov), which is BBNConfig's default.

Details of BBN's released loop (megvii-research/BBN ``main/train.py``, ``lib/net/network.py``)
that BBNConfig / :func:`build_bbn` follow: the last partial batch is dropped (``drop_last=True``)
and the classifier keeps PyTorch's default ``nn.Linear`` initialisation (the backbone's Kaiming
initialisation does not reach it).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_state
from .config import TrainConfig
from .engine import CHECKPOINT_FILE, EvalResult, Trainer, TrainResult, derive_seed
from .models import MODELS, CifarResNet, get_classifier
from .registry import Registry
from .samplers import SAMPLERS, build_sampler

__all__ = [
    "ADAPTORS", "cumulative_alpha", "adaptor_alpha", "bbn_alpha_divisor", "BBNNetwork", "build_bbn",
    "bbn_from_cifar_resnet", "bbn_from_timm", "BBNConfig", "BBNTrainer", "BRANCHES", "load_branches",
]

#: Names of the three predictions :meth:`BBNNetwork.branch_logits` returns.
BRANCHES = ("combined", "conventional", "rebalancing")

# --------------------------------------------------------------------------------------------
# Adaptors (cumulative learning, BBN §3.3 and the ablation of Table 4)

#: ``alpha(epoch, total_epochs)`` with 1-based ``epoch`` in ``[1, total_epochs]``.
ADAPTORS: Registry[float] = Registry("adaptor", "bbn_adaptor")


def _progress(epoch: int, total_epochs: int) -> float:
    """``(e - 1) / E`` after checking ``1 <= e <= E`` (both ints)."""
    for name, v in (("epoch", epoch), ("total_epochs", total_epochs)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {name}={v!r}")
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got total_epochs={total_epochs}")
    if not 1 <= epoch <= total_epochs:
        raise ValueError(f"epoch is 1-based and must lie in [1, total_epochs={total_epochs}], got epoch={epoch}")
    return (epoch - 1) / total_epochs


@ADAPTORS.register("parabolic_decay")
def cumulative_alpha(epoch: int, total_epochs: int) -> float:
    """BBN's cumulative-learning adaptor (docs/methods.md §7), parabolic decay: ``1 - ((e - 1) / E) ** 2``.

    ``epoch`` is 1-based: ``alpha = 1`` in the first epoch (conventional branch only), 0.75 at
    ``e = E / 2 + 1`` and ``1 - ((E - 1) / E) ** 2`` (just above 0) in the last epoch.
    """
    return 1.0 - _progress(epoch, total_epochs) ** 2


@ADAPTORS.register("linear_decay")
def linear_decay(epoch: int, total_epochs: int) -> float:
    """BBN Table 4, linear decay: ``1 - (e - 1) / E``."""
    return 1.0 - _progress(epoch, total_epochs)


@ADAPTORS.register("cosine_decay")
def cosine_decay(epoch: int, total_epochs: int) -> float:
    """BBN Table 4, cosine decay: ``cos((e - 1) / E * pi / 2)``."""
    return math.cos(_progress(epoch, total_epochs) * math.pi / 2)


@ADAPTORS.register("constant")
def constant_half(epoch: int, total_epochs: int) -> float:
    """BBN Table 4, equal weight: ``alpha = 0.5`` throughout (progress-ignoring)."""
    _progress(epoch, total_epochs)
    return 0.5


@ADAPTORS.register("parabolic_increment")
def parabolic_increment(epoch: int, total_epochs: int) -> float:
    """BBN Table 4, parabolic increment: ``((e - 1) / E) ** 2`` (re-balancing branch first)."""
    return _progress(epoch, total_epochs) ** 2


def adaptor_alpha(name: str, epoch: int, total_epochs: int) -> float:
    """``alpha`` of adaptor ``name`` (one of ``ADAPTORS.names()``) at 1-based ``epoch`` of ``total_epochs``."""
    return ADAPTORS.get(name)(epoch, total_epochs)


#: Run lengths for which BBN's released combiner divides by a rounded-up epoch count.
_ROUNDED_DIVISOR_EPOCHS = (90, 180)


def bbn_alpha_divisor(total_epochs: int) -> int:
    """The ``E`` the adaptors divide the epoch by in a run of ``total_epochs`` epochs (docs/methods.md §7).

    BBN's released combiner (``lib/core/combiner.py``) uses ``100 * (E // 100 + 1)`` when the run
    has 90 or 180 epochs (the iNaturalist "1x" / "2x" schedules), so ``D = 100`` and ``200`` and the
    parabolic alpha of the last epoch stays at ``1 - (89/100) ** 2 = 0.208`` /
    ``1 - (179/200) ** 2 = 0.199`` instead of falling to about 0.02 / 0.01; every other run length
    (CIFAR's 200 included) divides by ``E`` itself.
    """
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
        raise ValueError(f"total_epochs must be an int >= 1, got total_epochs={total_epochs!r}")
    if total_epochs in _ROUNDED_DIVISOR_EPOCHS:
        return 100 * (total_epochs // 100 + 1)
    return total_epochs


# --------------------------------------------------------------------------------------------
# The network


def _reinit_cifar_block(block: nn.Module) -> None:
    """Kaiming-normal convolutions, unit BatchNorm (docs/methods.md §2's initialisation)."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def _reinit_timm_block(block: nn.Module) -> None:
    """timm's ResNet initialisation: kaiming-normal (fan_out) convolutions, unit BN, zero last BN gamma."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
    if hasattr(block, "zero_init_last"):
        block.zero_init_last()


class _CifarTrunk(nn.Module):
    """Stem + every stage of a :class:`CifarResNet`, the last stage without its last block."""

    def __init__(self, resnet: CifarResNet) -> None:
        super().__init__()
        self.conv1, self.bn1 = resnet.conv1, resnet.bn1
        stages = list(resnet.layers)
        self.layers = nn.ModuleList(stages[:-1] + [nn.Sequential(*list(stages[-1])[:-1])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            x = stage(x)
        return x


class _TimmTrunk(nn.Module):
    """A timm ResNet's ``forward_features`` with the last block of ``layer4`` removed."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


class BBNNetwork(nn.Module):
    """Shared trunk, conventional block ``cb_block``, re-balancing block ``rb_block``, one ``fc``.

    ``forward(x)`` is the inference rule ``fc([f_c, f_r])`` (the trunk runs once);
    ``forward(x_c, x_r, alpha)`` is the training rule ``fc(2 * [alpha f_c(x_c), (1 - alpha) f_r(x_r)])``
    with each batch through the trunk on its own. ``alpha`` may be a float or a 0-d tensor (a
    tensor avoids recompiles under ``torch.compile``).
    """

    def __init__(self, trunk: nn.Module, cb_block: nn.Module, rb_block: nn.Module, num_features: int,
                 num_classes: int) -> None:
        super().__init__()
        self.trunk, self.cb_block, self.rb_block = trunk, cb_block, rb_block
        self.num_features = 2 * num_features  # of the classifier input [f_c, f_r]
        self.branch_features_dim = num_features
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(2 * num_features, num_classes)

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))

    def conventional_features(self, x: torch.Tensor) -> torch.Tensor:
        """``f_c(x)``: trunk, conventional block, global average pool."""
        return self.pool(self.cb_block(self.trunk(x)))

    def rebalancing_features(self, x: torch.Tensor) -> torch.Tensor:
        """``f_r(x)``: trunk, re-balancing block, global average pool."""
        return self.pool(self.rb_block(self.trunk(x)))

    def branch_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(f_c(x), f_r(x))`` of the same images, the trunk computed once."""
        t = self.trunk(x)
        return self.pool(self.cb_block(t)), self.pool(self.rb_block(t))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The two branches' last feature maps concatenated along channels ``[N, 2 D, H, W]``.

        With :meth:`forward_head` this is the timm-style split other modules use (e.g. a
        classifier re-trained on frozen BBN features sees ``[f_c, f_r]``).
        """
        t = self.trunk(x)
        return torch.cat([self.cb_block(t), self.rb_block(t)], dim=1)

    def forward_head(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(feature_map))

    def forward(self, x: torch.Tensor, x_r: Optional[torch.Tensor] = None,
                alpha: Optional[float | torch.Tensor] = None) -> torch.Tensor:
        if x_r is None:
            f_c, f_r = self.branch_features(x)
            if alpha is None:
                return self.fc(torch.cat([f_c, f_r], dim=1))  # inference rule
        else:
            if alpha is None:
                raise ValueError("BBNNetwork.forward(x_c, x_r, alpha): the training rule needs alpha")
            f_c, f_r = self.conventional_features(x), self.rebalancing_features(x_r)
        return self.fc(torch.cat([2 * alpha * f_c, 2 * (1 - alpha) * f_r], dim=1))

    def branch_logits(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Logits of the combined model ``fc([f_c, f_r])`` and of each branch alone:
        ``conventional = fc(2 [f_c, 0])`` (alpha 1), ``rebalancing = fc(2 [0, f_r])`` (alpha 0)."""
        f_c, f_r = self.branch_features(x)
        zero_c, zero_r = torch.zeros_like(f_c), torch.zeros_like(f_r)
        return {
            "combined": self.fc(torch.cat([f_c, f_r], dim=1)),
            "conventional": self.fc(torch.cat([2 * f_c, zero_r], dim=1)),
            "rebalancing": self.fc(torch.cat([zero_c, 2 * f_r], dim=1)),
        }


def bbn_from_cifar_resnet(resnet: CifarResNet, num_classes: int) -> BBNNetwork:
    """BBN from a CIFAR ResNet (docs/methods.md §7): duplicate the last block of the last stage.

    The conventional block is the ResNet's own last block; the re-balancing block is a copy with
    fresh Kaiming-normal weights (as BBN's ``bbn_res32_cifar``); the classifier is a new
    ``Linear(2 D, C)`` with PyTorch's default initialisation, as BBN's ``Network`` builds it
    outside the Kaiming-initialised backbone.
    """
    if not isinstance(resnet, CifarResNet):
        raise ValueError(f"bbn_from_cifar_resnet needs a CifarResNet, got {type(resnet).__name__}")
    last_stage = resnet.layers[-1]
    if len(last_stage) < 1:
        raise ValueError("the last stage has no block to duplicate")
    cb_block = last_stage[-1]
    rb_block = copy.deepcopy(cb_block)
    _reinit_cifar_block(rb_block)
    return BBNNetwork(_CifarTrunk(resnet), cb_block, rb_block, resnet.num_features, num_classes)


def bbn_from_timm(name: str, num_classes: int, pretrained: bool = False) -> BBNNetwork:
    """BBN from a timm ResNet for larger images: the last block of ``layer4`` is duplicated.

    ``name`` is a timm model name with ``layer4`` (resnet18/34/50, resnext, ...). With
    ``pretrained`` both branch blocks start from the pretrained last block; otherwise the
    re-balancing block gets timm's initialisation.
    """
    import timm

    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models('resnet*'))")
    backbone = timm.create_model(name, pretrained=pretrained, num_classes=0)
    last_stage = getattr(backbone, "layer4", None)
    if not isinstance(last_stage, nn.Sequential) or len(last_stage) < 1:
        raise ValueError(f"timm model {name!r} has no 'layer4' stage of blocks; BBN supports timm ResNets "
                         "(resnet18, resnet34, resnet50, resnext50_32x4d, ...)")
    cb_block = last_stage[-1]
    rb_block = copy.deepcopy(cb_block)
    if not pretrained:
        _reinit_timm_block(rb_block)
    backbone.layer4 = nn.Sequential(*list(last_stage)[:-1])
    return BBNNetwork(_TimmTrunk(backbone), cb_block, rb_block, backbone.num_features, num_classes)


def build_bbn(name: str, num_classes: int, pretrained: bool = False) -> BBNNetwork:
    """The BBN network of backbone ``name``: a CIFAR ResNet of :data:`ltbench.models.MODELS`
    ('resnet32', docs/methods.md §7) or ``'timm/<timm resnet>'`` for larger images."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if name.startswith("timm/"):
        return bbn_from_timm(name[len("timm/"):], num_classes, pretrained)
    resnet = MODELS.build(name, num_classes)
    return bbn_from_cifar_resnet(resnet, num_classes)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class BBNConfig(TrainConfig):
    """A :class:`TrainConfig` for BBN (docs/methods.md §7): the recipe of §2 with the BBN lr variant, plus
    the re-balancing branch's sampler and the adaptor.

    ``sampler`` / ``sampler_params``: the conventional branch's sampler (``instance``, uniform).
    ``bbn_sampler`` / ``bbn_sampler_params``: the re-balancing branch's (``reversed``).
    ``bbn_adaptor``: a name of :data:`ADAPTORS` (``parabolic_decay`` = :func:`cumulative_alpha`).
    ``drop_last`` defaults to True here: BBN's released loop drops the last partial batch.
    """

    #: Only BBNTrainer (and its subclasses) train it: :meth:`Trainer.check_config`.
    TRAINER: ClassVar[str] = "ltbench.bbn.BBNTrainer"
    #: Fields BBN does not read, left out of a run's identity: its classifier is a new Linear with
    #: PyTorch's default initialisation, bias included, as BBN's Network builds it.
    UNUSED_FIELDS: ClassVar[Tuple[str, ...]] = ("head_bias_init",)

    schedule: str = "step_bbn"
    drop_last: bool = True
    bbn_sampler: str = "reversed"
    bbn_sampler_params: Dict[str, Any] = field(default_factory=dict)
    bbn_adaptor: str = "parabolic_decay"

    @classmethod
    def from_train_config(cls, cfg: TrainConfig, **options: Any) -> "BBNConfig":
        """A BBNConfig with every field of ``cfg``, BBN's lr variant (``schedule="step_bbn"``, docs/methods.md §7)
        and BBN's ``drop_last=True`` unless ``options`` set them, and the given ``bbn_*`` options /
        other overrides."""
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
        return cls(**fields).replace(**{"schedule": "step_bbn", "drop_last": True, **options})

    def validate(self) -> "BBNConfig":
        super().validate()
        for name, value in (("bbn_sampler", self.bbn_sampler), ("bbn_adaptor", self.bbn_adaptor)):
            if not isinstance(value, str):
                raise ValueError(f"invalid {name}={value!r}: must be a name (str)")
        if self.bbn_adaptor not in ADAPTORS:
            raise ValueError(f"unknown adaptor: bbn_adaptor={self.bbn_adaptor!r}; valid adaptors: "
                             f"{', '.join(ADAPTORS.names())}")
        if self.bbn_sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler: bbn_sampler={self.bbn_sampler!r}; valid samplers: "
                             f"{', '.join(SAMPLERS.names())}")
        if not isinstance(self.bbn_sampler_params, dict):
            raise ValueError(f"invalid bbn_sampler_params={self.bbn_sampler_params!r}: must be a dict")
        if self.classifier != "linear":
            raise ValueError(f"invalid classifier={self.classifier!r} for BBN: must be 'linear' (docs/methods.md §7)")
        if self.drs_epoch is not None:
            raise ValueError(f"invalid drs_epoch={self.drs_epoch!r} for BBN: must be None (the re-balancing "
                             "branch has its own sampler, bbn_sampler)")
        return self


# --------------------------------------------------------------------------------------------
# Trainer


def _sampler_options(name: str, cfg: TrainConfig, num_classes: int, params: Dict[str, Any]) -> Dict[str, Any]:
    opts = dict(num_classes=num_classes, **params)
    if name == "progressive":
        opts.setdefault("total_epochs", cfg.epochs)
    return opts


class BBNTrainer(Trainer):
    """Trains a :class:`BBNConfig` with BBN's two-sampler step and cumulative learning (docs/methods.md §7).

    Per epoch ``t`` (0-based) the adaptor gives ``alpha`` of the 1-based epoch ``t + 1`` once,
    written in place into one 0-d tensor on the device (no host synchronisation inside the step,
    and the fast path's traced step reads the same tensor every epoch). The history gets an
    ``alpha`` column; :meth:`fit` also records the combined model and each branch alone on the
    test set in ``extras["branches"]``.
    """

    cfg: BBNConfig
    config_cls = BBNConfig

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        if not isinstance(cfg, BBNConfig):
            raise ValueError(f"BBNTrainer needs a BBNConfig, got {type(cfg).__name__}; build one with "
                             "BBNConfig(...) or BBNConfig.from_train_config(cfg, bbn_adaptor=..., bbn_sampler=...)")
        super().check_config(cfg)

    def __init__(self, cfg: BBNConfig, *args: Any, **kwargs: Any) -> None:
        type(self).check_config(cfg)
        self.alpha_fn: Callable[[int, int], float] = ADAPTORS.get(cfg.validate().bbn_adaptor)
        super().__init__(cfg, *args, **kwargs)
        self._alpha = torch.ones((), device=self.device)

    # -- construction ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        model = build_bbn(self.cfg.model, self.num_classes)
        head = get_classifier(model)
        if getattr(self.loss_fn, "uses_sigmoid", False):
            nn.init.constant_(head.bias, -math.log(max(self.num_classes - 1, 1)))  # docs/methods.md §2
        return model

    def build_samplers(self) -> Dict[str, Any]:
        cfg, labels = self.cfg, self.data.train.targets
        return {
            "conventional": build_sampler(cfg.sampler, labels, seed=derive_seed(cfg.seed, "sampler"),
                                          **_sampler_options(cfg.sampler, cfg, self.num_classes, cfg.sampler_params)),
            "rebalancing": build_sampler(cfg.bbn_sampler, labels, seed=derive_seed(cfg.seed, "bbn_sampler"),
                                         **_sampler_options(cfg.bbn_sampler, cfg, self.num_classes,
                                                            cfg.bbn_sampler_params)),
        }

    # -- per-epoch / per-step -------------------------------------------------------------------
    def alpha(self, epoch: int) -> float:
        """``alpha`` of 0-based ``epoch``: the adaptor at 1-based ``epoch + 1`` with the divisor
        :func:`bbn_alpha_divisor` of ``cfg.epochs`` (``cfg.epochs`` itself except for 90 and 180)."""
        return self.alpha_fn(epoch + 1, bbn_alpha_divisor(self.cfg.epochs))

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._alpha.fill_(self.alpha(epoch))

    def epoch_batches(self, epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Pairs ``(idx_c, idx_r)`` of index tensors on the device, one batch from each sampler."""
        bs = self.local_batch_size
        idx_c = self.samplers["conventional"].indices(epoch, device=self.device)
        idx_r = self.samplers["rebalancing"].indices(epoch, device=self.device)
        n = min(len(idx_c), len(idx_r))
        n = (n // bs) * bs if self.cfg.drop_last else n
        return zip(idx_c[:n].split(bs), idx_r[:n].split(bs))

    #: The conventional and the re-balancing batch, both per sample (equal sizes).
    step_input_kinds = ("sample",) * 4

    def step_inputs(self, batch: Tuple[torch.Tensor, torch.Tensor], epoch: int,
                    generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        """``(x_c, y_c, x_r, y_r)``: both batches augmented, the conventional one first."""
        idx_c, idx_r = batch
        x_c, y_c = self.train_set.batch(idx_c, augment=True, generator=generator)
        x_r, y_r = self.train_set.batch(idx_r, augment=True, generator=generator)
        return x_c, y_c, x_r, y_r

    def step_loss(self, x_c: torch.Tensor, y_c: torch.Tensor, x_r: torch.Tensor, y_r: torch.Tensor, *,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``alpha CE(z, y_c) + (1 - alpha) CE(z, y_r)``, ``z = fc(2 [alpha f_c(x_c), (1 - alpha) f_r(x_r)])``."""
        a = self._alpha
        with self.autocast():
            logits = self.forward(x_c, x_r, a)
        logits = logits.float()
        return a * self.criterion(logits, y_c, mask) + (1 - a) * self.criterion(logits, y_r, mask)

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        row = super().train_epoch(epoch)
        row["alpha"] = self.alpha(epoch)
        return row

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_branches(self, batch_size: int = 1000) -> Dict[str, EvalResult]:
        """Test-set metrics of the combined model and of each branch alone (see :data:`BRANCHES`)."""
        self.model.eval()
        logits: Dict[str, List[torch.Tensor]] = {k: [] for k in BRANCHES}
        targets = []
        for x, y in self.test_set.iterate(batch_size):
            with self.autocast():
                out = self.model.branch_logits(x)
            for k in BRANCHES:
                logits[k].append(out[k].float())
            targets.append(y)
        self.model.train()
        y = torch.cat(targets)
        return {k: EvalResult.from_logits(torch.cat(v), y, self.counts) for k, v in logits.items()}

    def fit(self, out_dir: Optional[str | os.PathLike] = None, deadline: Optional[float] = None) -> TrainResult:
        """Train, then record the combined model and each branch alone on the test set in
        ``result.extras["branches"]`` (saved to ``extras.json`` with the run)."""
        result = super().fit(out_dir, deadline=deadline)
        result.extras["branches"] = {k: dataclasses.asdict(v) for k, v in self.evaluate_branches().items()}
        return result

    @classmethod
    def from_checkpoint(cls, out_dir: str | os.PathLike, progress: bool = False, **overrides: Any) -> "BBNTrainer":
        """A trainer restored from ``out_dir/checkpoint.pt`` (e.g. to evaluate the branches).

        ``overrides`` change run-only fields (``device``, ``data_root``) of the saved configuration.
        """
        path = Path(out_dir) / CHECKPOINT_FILE
        if not path.exists():
            raise FileNotFoundError(f"no BBN checkpoint at {path}; train it first with "
                                    "ltbench.runs.run(ltbench.methods.bbn_spec(cfg), store)")
        state = load_state(path)
        try:
            cfg = BBNConfig.from_dict(state["config"])
        except ValueError as exc:
            raise ValueError(f"{path} is not a BBN checkpoint: {exc}") from None
        cfg = cfg.replace(**overrides)
        trainer = cls(cfg, progress=progress)
        trainer.model.load_state_dict(state["model"])
        trainer.start_epoch = state["epoch"]
        return trainer


def load_branches(out_dir: str | os.PathLike) -> Dict[str, EvalResult]:
    """The per-branch test metrics of a finished BBN run in ``out_dir`` (see :meth:`BBNTrainer.fit`)."""
    extras = TrainResult.load(out_dir).extras
    if "branches" not in extras:
        raise ValueError(f"{out_dir} holds no per-branch metrics (not a finished BBN run)")
    return {k: EvalResult(**v) for k, v in extras["branches"].items()}
