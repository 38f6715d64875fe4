"""mixup (Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018),
the Mixup baseline of BBN's Table 1 (alpha 1 on CIFAR-LT, docs/methods.md §10).

As in the authors' reference implementation (facebookresearch/mixup-cifar10), one mixing
coefficient per batch and a random pairing within the batch::

    lam ~ Beta(alpha, alpha);  pi = a random permutation of the batch
    x' = lam x + (1 - lam) x[pi]
    loss = lam CE(f(x'), y) + (1 - lam) CE(f(x'), y[pi])

The images are mixed on the device after the batched augmentation. ``lam`` is drawn on the host
from a generator seeded by (run seed, epoch), one draw per step (a Python float: no host sync), and
the permutation from the epoch's augmentation generator, so a resumed run mixes exactly as an
uninterrupted one. Both are drawn in :meth:`MixupTrainer.step_inputs`; ``(lam, 1 - lam)`` reaches
the loss as a tensor input (computed in double on the host, as the Python floats were), so the
fast path's traced step takes a new lambda every step without recompiling.
"""
from __future__ import annotations

import math
import random
from typing import Any, Optional, Tuple, Union

import torch

from .config import TrainConfig
from .engine import Trainer, derive_seed

__all__ = ["MixupTrainer", "check_alpha", "mix_batch"]


def check_alpha(alpha: Any) -> float:
    """mixup's Beta parameter: a finite number > 0 (1 in BBN's baseline)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"invalid alpha={alpha!r}: mixup's Beta(alpha, alpha) needs a finite number > 0 (BBN: 1)")
    return float(alpha)


def mix_batch(x: torch.Tensor, lam: Union[float, torch.Tensor], perm: torch.Tensor) -> torch.Tensor:
    """``lam x + (1 - lam) x[perm]``; ``lam`` a float or the pair ``[lam, 1 - lam]`` as a tensor."""
    if isinstance(lam, torch.Tensor):
        return lam[0] * x + lam[1] * x[perm]
    return lam * x + (1.0 - lam) * x[perm]


class MixupTrainer(Trainer):
    """Joint training with mixup (docs/methods.md §10's "Mixup (alpha 1)" row): any loss of the config is
    applied to both label sets, weighted by ``lam`` and ``1 - lam``."""

    @classmethod
    def check_arguments(cls, cfg: TrainConfig, alpha: float = 1.0, **kwargs: Any) -> None:
        check_alpha(alpha)
        super().check_arguments(cfg, **kwargs)

    def __init__(self, cfg: TrainConfig, alpha: float = 1.0, data: Any = None, progress: bool = True) -> None:
        self.alpha = check_alpha(alpha)
        super().__init__(cfg, data=data, progress=progress)
        self._lam = random.Random(0)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._lam = random.Random(derive_seed(self.cfg.seed, epoch, "mixup"))

    #: The batch and its pairing are per sample; ``(lam, 1 - lam)`` is one per step.
    step_input_kinds = ("sample", "sample", "sample", None)

    def step_inputs(self, batch: Any, epoch: int, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        """``(x, y, perm, lams)``: the augmented batch, the pairing ``perm`` (from ``generator``)
        and ``lams = [lam, 1 - lam]`` in ``x``'s dtype (``lam`` from the epoch's host generator)."""
        x, y = super().step_inputs(batch, epoch, generator)
        lam = self._lam.betavariate(self.alpha, self.alpha)
        perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
        # Built on the host and copied without waiting (no host sync on CUDA).
        lams = torch.tensor([lam, 1.0 - lam], dtype=x.dtype).to(x.device, non_blocking=True)
        return x, y, perm, lams

    def step_loss(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lams: torch.Tensor, *,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``lam L(f(x'), y) + (1 - lam) L(f(x'), y[perm])``, ``x' = lam x + (1 - lam) x[perm]``."""
        with self.autocast():
            logits = self.forward(mix_batch(x, lams, perm))
        logits = logits.float()
        w = lams.to(logits.dtype)
        return w[0] * self.criterion(logits, y, mask) + w[1] * self.criterion(logits, y[perm], mask)
