"""Learning-rate schedules of SPEC §2, as closed-form functions of the epoch.

Conventions: ``epoch`` is the 0-based epoch index ``t`` (the lr is set once at the start of each
epoch); SPEC's 1-based epoch is ``e = t + 1``.

- ``step_cb`` (CB / LDAM / BagofTricks): ``e <= 5`` -> ``lr * e / 5``; ``e > 180`` -> ``lr * 1e-4``;
  ``e > 160`` -> ``lr * 1e-2``; else ``lr``. For other totals the milestones scale as 0.8 T and 0.9 T.
- ``step_bbn`` (BBN, Nesterov): ``e < 5`` -> ``lr * (1/3 * (1 - e/5) + e/5)``; ``e >= 160`` ->
  ``lr * 1e-4``; ``e >= 120`` -> ``lr * 1e-2`` (milestones 0.6 T and 0.8 T). SPEC's closed form in
  the 1-based epoch, which is also what BBN's released loop does: it steps ``WarmupMultiStepLR``
  with the 1-based epoch before training it, so epoch 1 gets 0.0467 (not a third) and epoch 5 the
  full lr. For very short runs the milestones are kept after epoch 1 so that no run starts decayed.
- ``step_bbn_inat``: BBN's iNaturalist recipe, x0.1 at 2/3 and 8/9 of training (120 and 160 of 180).
- ``cosine``: linear warm-up as ``step_cb``, then ``0.5 lr (1 + cos(pi (e - w) / (T - w)))``.
- ``constant``: ``lr`` throughout (stage-2 fine-tuning such as FSA phase II).
"""
from __future__ import annotations

import math

from .registry import Registry

SCHEDULES: Registry = Registry("schedule", "schedule")


def _milestones(total: int, fractions: tuple[float, float]) -> tuple[int, int]:
    return round(fractions[0] * total), round(fractions[1] * total)


@SCHEDULES.register("step_cb")
def step_cb(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    e = epoch + 1
    m1, m2 = _milestones(total_epochs, (0.8, 0.9))
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    if e > m2:
        return base_lr * 1e-4
    if e > m1:
        return base_lr * 1e-2
    return base_lr


@SCHEDULES.register("step_bbn")
def step_bbn(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    e = epoch + 1
    m1, m2 = _milestones(total_epochs, (0.6, 0.8))
    m1 = max(m1, 2)
    m2 = max(m2, m1 + 1)
    if warmup_epochs > 0 and e < warmup_epochs:
        a = e / warmup_epochs
        return base_lr * (1.0 / 3.0 * (1 - a) + a)
    if e >= m2:
        return base_lr * 1e-4
    if e >= m1:
        return base_lr * 1e-2
    return base_lr


@SCHEDULES.register("step_bbn_inat")
def step_bbn_inat(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 0) -> float:
    """BBN's released iNaturalist schedule (``configs/iNaturalist2018.yaml``: ``MultiStepLR`` at
    epochs 120 and 160 of 180, factor 0.1, stepped once per epoch, no warm-up; SGD with Nesterov):
    ``lr`` until 0-based epoch ``round(2T/3)``, ``lr * 0.1`` from there and ``lr * 0.01`` from
    ``round(8T/9)`` (60 and 80 for the 90-epoch "1x" schedule). An optional linear warm-up
    ``lr * e / w`` for 1-based ``e <= w`` (0 in BBN's recipe).
    """
    e = epoch + 1
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    m1, m2 = round(2 * total_epochs / 3), round(8 * total_epochs / 9)
    return base_lr * 0.1 ** ((epoch >= m1) + (epoch >= m2))


@SCHEDULES.register("cosine")
def cosine(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    e = epoch + 1
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (e - 1 - warmup_epochs) / span))


@SCHEDULES.register("constant")
def constant(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 0) -> float:
    return base_lr


def learning_rate(schedule: str, epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    """The lr of 0-based ``epoch`` under ``schedule``."""
    return SCHEDULES.get(schedule)(epoch, total_epochs, base_lr, warmup_epochs)
