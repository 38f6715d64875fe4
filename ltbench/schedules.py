"""Learning-rate schedules of docs/methods.md §2, as closed-form functions of the epoch.

Conventions: ``epoch`` is the 0-based epoch index ``t`` (the lr is set once at the start of each
epoch); SPEC's 1-based epoch is ``e = t + 1``.

- ``step_cb`` (CB / LDAM / BagofTricks): ``e <= 5`` -> ``lr * e / 5``; ``e > 180`` -> ``lr * 1e-4``;
  ``e > 160`` -> ``lr * 1e-2``; else ``lr``. For other totals the milestones scale as 0.8 T and 0.9 T.
- ``step_bbn`` (BBN, Nesterov): ``e < 5`` -> ``lr * (1/3 * (1 - e/5) + e/5)``; ``e >= 160`` ->
  ``lr * 1e-4``; ``e >= 120`` -> ``lr * 1e-2`` (milestones 0.6 T and 0.8 T). SPEC's closed form in
  the 1-based epoch, which is also what BBN's released loop does: it steps ``WarmupMultiStepLR``
  with the 1-based epoch before training it, so epoch 1 gets 0.0467 (not a third) and epoch 5 the
  full lr. For very short runs the milestones are kept after epoch 1 so that no run starts decayed.
- ``step_bbn_inat``: BBN's iNaturalist recipe, x0.1 from 1-based epochs 120 and 160 of 180 (2/3
  and 8/9 of training), as BBN's ``MultiStepLR`` stepped before each epoch.
- ``crt_cifar``: BagofTricks-LT's CIFAR cRT / LWS recipe, x0.1 from 1-based epochs 10 and 20 of 30
  with BBN's warm-up from a third of the lr (``WarmupMultiStepLR`` stepped before each epoch).
- ``cosine``: linear warm-up as ``step_cb``, then ``0.5 lr (1 + cos(pi (e - 1 - w) / (T - w)))``.
- ``cosine_decoupling``: Decoupling's cosine, ``0.5 lr (1 + cos(pi e / T))`` (``CosineAnnealingLR``
  stepped before each epoch: one epoch ahead of ``cosine``, and 0 in the last epoch).
- ``constant``: ``lr`` throughout (stage-2 fine-tuning such as FSA phase II).

``step_bbn``, ``step_bbn_inat``, ``crt_cifar`` and ``cosine_decoupling`` follow the authors' loops,
which call ``scheduler.step()`` at the start of every epoch, so that the 1-based epoch ``e`` trains
with the scheduler's ``last_epoch = e``.
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


def _guarded(m1: int, m2: int) -> tuple[int, int]:
    """Milestones (1-based ``e >= m`` decays) kept after epoch 1 and apart, so that very short
    runs never start decayed (the recipes' own totals are far from this guard)."""
    m1 = max(m1, 2)
    return m1, max(m2, m1 + 1)


def _warmup_multistep(e: int, base_lr: float, warmup_epochs: int, milestones: tuple[int, int],
                      gamma: float = 0.1) -> float:
    """BBN's / BagofTricks-LT's ``WarmupMultiStepLR`` at ``last_epoch = e``: a linear warm-up from
    a third of the lr for ``e < w``, times ``gamma`` per milestone ``m <= e``."""
    factor = 1.0
    if warmup_epochs > 0 and e < warmup_epochs:
        a = e / warmup_epochs
        factor = 1.0 / 3.0 * (1 - a) + a
    return base_lr * factor * gamma ** sum(e >= m for m in milestones)


@SCHEDULES.register("step_bbn_inat")
def step_bbn_inat(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 0) -> float:
    """BBN's released iNaturalist schedule (``configs/iNaturalist2018.yaml``: ``MultiStepLR`` at
    [120, 160] of 180, factor 0.1, no warm-up; SGD with Nesterov), docs/methods.md §7.

    BBN's ``main/train.py`` calls ``scheduler.step()`` before training each 1-based epoch ``e``,
    so ``e`` trains at ``lr * 0.1 ** #{m <= e}``: ``lr`` for ``e <= 119``, ``lr * 0.1`` from
    ``e = 120`` (0-based 119) and ``lr * 0.01`` from ``e = 160``. The milestones scale as
    ``round(2T/3)`` and ``round(8T/9)`` (60 and 80 for the 90-epoch "1x" schedule). An optional
    linear warm-up ``lr * e / w`` for ``e <= w`` (0 in BBN's recipe).
    """
    e = epoch + 1
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    m = _guarded(round(2 * total_epochs / 3), round(8 * total_epochs / 9))
    return _warmup_multistep(e, base_lr, 0, m)


@SCHEDULES.register("crt_cifar")
def crt_cifar(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    """BagofTricks-LT's CIFAR cRT and LWS schedule (docs/methods.md §6; ``configs/cao_cifar/two_stage/
    classifier_balance/{cRT,LWS}/*.yaml``: 30 epochs, lr 0.1, ``WarmupMultiStepLR`` with
    ``LR_STEP [10, 20]``, ``LR_FACTOR 0.1``, ``WARM_EPOCH 5``; stepped before each epoch).

    For 1-based ``e``: ``lr * (1/3 (1 - e/w) + e/w)`` while ``e < w`` (0.0467, 0.06, 0.0733,
    0.0867 for lr 0.1 and ``w = 5``), then ``lr`` from ``e = w``, ``lr * 0.1`` from ``e = 10`` and
    ``lr * 0.01`` from ``e = 20``. Milestones scale as ``round(T/3)``, ``round(2T/3)``.
    """
    e = epoch + 1
    m = _guarded(*_milestones(total_epochs, (1 / 3, 2 / 3)))
    return _warmup_multistep(e, base_lr, warmup_epochs, m)


@SCHEDULES.register("cosine")
def cosine(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    e = epoch + 1
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (e - 1 - warmup_epochs) / span))


@SCHEDULES.register("cosine_decoupling")
def cosine_decoupling(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 0) -> float:
    """Decoupling's cosine (classifier-balancing ``run_networks.py``: ``CosineAnnealingLR(T_max=T,
    eta_min=endlr = 0)`` stepped before each epoch), docs/methods.md §6.

    1-based epoch ``e`` trains at ``0.5 lr (1 + cos(pi e / T))``: already below ``lr`` in epoch 1,
    and exactly 0 in the last epoch (as in the authors' runs). Decoupling has no warm-up; with
    ``w > 0`` epochs ``e <= w`` get ``lr * e / w`` and the cosine runs over ``e - w`` of ``T - w``.
    """
    e = epoch + 1
    if warmup_epochs > 0 and e <= warmup_epochs:
        return base_lr * e / warmup_epochs
    span = max(1, total_epochs - warmup_epochs)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(e - warmup_epochs, span) / span))


@SCHEDULES.register("constant")
def constant(epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 0) -> float:
    return base_lr


def learning_rate(schedule: str, epoch: int, total_epochs: int, base_lr: float, warmup_epochs: int = 5) -> float:
    """The lr of 0-based ``epoch`` under ``schedule``."""
    return SCHEDULES.get(schedule)(epoch, total_epochs, base_lr, warmup_epochs)
