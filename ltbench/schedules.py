"""Learning-rate schedules of SPEC §2, as closed-form functions of the epoch.

Conventions: ``epoch`` is the 0-based epoch index ``t`` (the lr is set once at the start of each
epoch); SPEC's 1-based epoch is ``e = t + 1``.

- ``step_cb`` (CB / LDAM / BagofTricks): ``e <= 5`` -> ``lr * e / 5``; ``e > 180`` -> ``lr * 1e-4``;
  ``e > 160`` -> ``lr * 1e-2``; else ``lr``. For other totals the milestones scale as 0.8 T and 0.9 T.
- ``step_bbn`` (BBN, Nesterov): ``t < 5`` -> ``lr * (1/3 * (1 - t/5) + t/5)``; ``t >= 160`` ->
  ``lr * 1e-4``; ``t >= 120`` -> ``lr * 1e-2`` (milestones 0.6 T and 0.8 T). This is the released
  code's ``WarmupMultiStepLR`` stepped once per epoch, whose counter starts at 0.
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
    t = epoch
    m1, m2 = _milestones(total_epochs, (0.6, 0.8))
    if warmup_epochs > 0 and t < warmup_epochs:
        a = t / warmup_epochs
        return base_lr * (1.0 / 3.0 * (1 - a) + a)
    if t >= m2:
        return base_lr * 1e-4
    if t >= m1:
        return base_lr * 1e-2
    return base_lr


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
