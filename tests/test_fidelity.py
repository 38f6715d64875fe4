"""Fidelity to the authors' released code (issue 16): lr tables, BBN's alpha on iNaturalist.

Each table is derived from the authors' configuration and the order in which their loops step the
scheduler, independently of ltbench.schedules:

- BagofTricks-LT (``configs/cao_cifar/two_stage/classifier_balance/{cRT,LWS}/*.yaml``,
  ``main/train.py``): 30 epochs, lr 0.1, ``WarmupMultiStepLR([10, 20], 0.1, warm-up 5)`` from BBN's
  code base (warm-up factor ``1/3 (1 - e/5) + e/5`` for ``last_epoch = e < 5``), ``scheduler.step()``
  before each 1-based epoch ``e``.
- Decoupling (classifier-balancing ``run_networks.py``, ``config/*/cls_{crt,lws}.yaml``):
  ``CosineAnnealingLR(T_max=num_epochs, eta_min=endlr=0)`` stepped before each epoch.
- BBN (``configs/iNaturalist2018.yaml``, ``main/train.py``, ``lib/core/combiner.py``):
  ``MultiStepLR([120, 160], 0.1)`` stepped before each epoch; alpha divides ``e - 1`` by
  ``100 * (E // 100 + 1)`` when ``E`` is 90 or 180.

PyTorch's own schedulers, stepped in the authors' order, give the reference lr where one exists.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, List

import pytest
import torch

from ltbench.bbn import BBNConfig, BBNTrainer, adaptor_alpha, bbn_alpha_divisor
from ltbench.schedules import SCHEDULES, learning_rate

DATA = dict(dataset="synthetic", data_options={"n_train_per_class": 30, "n_test_per_class": 10},
            imbalance_ratio=10, device="cpu", batch_size=32, seed=0)


def authors_loop(make_scheduler: Callable[[torch.optim.Optimizer], object], epochs: int, base_lr: float) -> List[float]:
    """The lr each 1-based epoch trains with when ``scheduler.step()`` runs before the epoch."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr, momentum=0.9)
    sched = make_scheduler(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": that is the point
        for _ in range(epochs):
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
    return lrs


def table(schedule: str, epochs: int, base_lr: float, warmup: int) -> List[float]:
    return [learning_rate(schedule, t, epochs, base_lr, warmup) for t in range(epochs)]


def test_new_schedules_are_registered_next_to_the_old_ones():
    names = set(SCHEDULES.names())
    assert {"crt_cifar", "cosine_decoupling", "step_bbn_inat", "cosine", "step_cb", "step_bbn"} <= names


# ------------------------------------------------------------------ cRT / LWS on CIFAR (BagofTricks-LT)

# Every epoch of BagofTricks-LT's CIFAR cRT and LWS runs (both configs: lr 0.1, 30 epochs,
# LR_STEP [10, 20], LR_FACTOR 0.1, WARM_EPOCH 5): 0.1 (1/3 (1 - e/5) + e/5) = 0.1 (5 + 2e) / 15 for
# e = 1..4, then 0.1 from e = 5, 0.01 from e = 10, 0.001 from e = 20.
CRT_CIFAR_TABLE = ([0.1 * (5 + 2 * e) / 15 for e in range(1, 5)]  # 0.0467, 0.06, 0.0733, 0.0867
                   + [0.1] * 5 + [0.01] * 10 + [0.001] * 11)


@pytest.mark.parametrize("method", ["cRT", "LWS"])
def test_crt_cifar_table_every_epoch(method):
    got = table("crt_cifar", 30, 0.1, 5)
    assert len(CRT_CIFAR_TABLE) == 30
    for e, (a, b) in enumerate(zip(got, CRT_CIFAR_TABLE), start=1):
        assert a == pytest.approx(b, rel=1e-12, abs=0), f"{method} epoch {e}"
    assert got[:4] == pytest.approx([0.7 / 15, 0.06, 1.1 / 15, 1.3 / 15], rel=1e-12)
    assert got[8] == pytest.approx(0.1) and got[9] == pytest.approx(0.01)  # x0.1 from epoch 10, not 11
    assert got[18] == pytest.approx(0.01) and got[19] == pytest.approx(0.001)  # and from 20, not 21


def test_crt_cifar_steps_match_pytorch_multistep_in_the_authors_order():
    ref = authors_loop(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 20], 0.1), 30, 0.1)
    got = table("crt_cifar", 30, 0.1, 5)
    assert got[4:] == pytest.approx(ref[4:], rel=1e-12)  # past the warm-up, the plain milestones


def test_crt_cifar_short_runs_never_start_decayed():
    for T in (1, 2, 3, 4, 6):
        lrs = table("crt_cifar", T, 0.1, 0)
        assert lrs[0] == pytest.approx(0.1) and all(b <= a for a, b in zip(lrs, lrs[1:]))


# ------------------------------------------------------------------ Decoupling's cosine


@pytest.mark.parametrize("epochs,lr", [(10, 0.2), (5, 0.2), (30, 0.2), (90, 0.2)])  # cRT IN-LT, LWS, cRT iNat, joint
def test_cosine_decoupling_matches_cosine_annealing_stepped_before_each_epoch(epochs, lr):
    ref = authors_loop(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs, eta_min=0.0), epochs, lr)
    got = table("cosine_decoupling", epochs, lr, 0)
    for e, (a, b) in enumerate(zip(got, ref), start=1):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-15), f"epoch {e}"
    assert got[-1] == 0.0  # the authors' last epoch trains at lr 0


def test_cosine_decoupling_lws_table():
    # LWS (5 epochs, lr 0.2): 0.1 (1 + cos(pi e / 5)), e = 1..5.
    expected = [0.1 * (1 + math.cos(math.pi * e / 5)) for e in range(1, 6)]
    assert table("cosine_decoupling", 5, 0.2, 0) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert expected[0] == pytest.approx(0.180902, abs=1e-6)
    # ltbench's "cosine" is one epoch behind: it starts at the full lr.
    assert table("cosine", 5, 0.2, 0)[0] == 0.2
    assert table("cosine", 5, 0.2, 0)[1:] == pytest.approx(expected[:-1], rel=1e-12)


# ------------------------------------------------------------------ BBN on iNaturalist


@pytest.mark.parametrize("epochs,milestones", [(180, [120, 160]), (90, [60, 80])])
def test_step_bbn_inat_table_every_epoch(epochs, milestones):
    ref = authors_loop(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, 0.1), epochs, 0.05)
    got = table("step_bbn_inat", epochs, 0.05, 0)
    for e, (a, b) in enumerate(zip(got, ref), start=1):
        assert a == pytest.approx(b, rel=1e-12), f"epoch {e}"
    m1, m2 = milestones
    assert got[m1 - 2] == pytest.approx(0.05) and got[m1 - 1] == pytest.approx(0.005)  # 1-based e = m1
    assert got[m2 - 2] == pytest.approx(0.005) and got[m2 - 1] == pytest.approx(0.0005)


def combiner_alpha(e: int, E: int) -> float:
    """BBN's released combiner, transcribed: parabolic decay with its divisor."""
    div = 100 * (E // 100 + 1) if E in (90, 180) else E
    return 1 - ((e - 1) / div) ** 2


@pytest.mark.parametrize("E,last", [(90, 0.2079), (180, 0.199)])
def test_bbn_alpha_table_inat(E, last):
    tr = BBNTrainer(BBNConfig(**DATA, epochs=E, warmup_epochs=0), progress=False)
    got = [tr.alpha(t) for t in range(E)]
    expected = [combiner_alpha(e, E) for e in range(1, E + 1)]
    assert got == pytest.approx(expected, rel=0, abs=1e-15)
    assert got[-1] == pytest.approx(last, abs=5e-4) and min(got) > 0.19
    assert bbn_alpha_divisor(E) == {90: 100, 180: 200}[E]
    # The other adaptors divide by the same D (the released combiner's commented-out variants).
    lin = BBNTrainer(BBNConfig(**DATA, epochs=E, warmup_epochs=0, bbn_adaptor="linear_decay"), progress=False)
    assert lin.alpha(E - 1) == pytest.approx(1 - (E - 1) / bbn_alpha_divisor(E))


def test_bbn_alpha_cifar_200_unchanged():
    tr = BBNTrainer(BBNConfig(**DATA, epochs=200, warmup_epochs=0), progress=False)
    got = [tr.alpha(t) for t in range(200)]
    assert got == pytest.approx([1 - ((e - 1) / 200) ** 2 for e in range(1, 201)], rel=0, abs=1e-15)
    assert got == [adaptor_alpha("parabolic_decay", e, 200) for e in range(1, 201)]
    assert got[-1] < 0.01


def test_bbn_cifar_lr_unchanged():
    # BBN CIFAR (configs/cifar10.yaml): WarmupMultiStepLR([120, 160], 0.01, warm-up 5), stepped first.
    got = table("step_bbn", 200, 0.1, 5)
    expected = [0.1 * ((5 + 2 * e) / 15 if e < 5 else 1.0) * 0.01 ** ((e >= 120) + (e >= 160)) for e in range(1, 201)]
    assert got == pytest.approx(expected, rel=1e-12)
