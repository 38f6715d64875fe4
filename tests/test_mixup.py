"""mixup (Zhang et al. 2018), BBN Table 1's baseline: closed form, determinism, registry, bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltbench.config import TrainConfig
from ltbench.methods import mixup_spec
from ltbench.mixup import MixupTrainer, check_alpha, mix_batch
from ltbench.runs import ExecOptions, RunStore, make_spec, run

SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=20, data_options={"n_train_per_class": 20, "n_test_per_class": 4},
           batch_size=8, warmup_epochs=0, device="cpu", epochs=2, lr=0.01)


def test_mixed_images_and_loss_equal_the_closed_form():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    perm = torch.tensor([1, 0])
    mixed = mix_batch(x, 0.25, perm)
    assert torch.equal(mixed[0], 0.25 * x[0] + 0.75 * x[1]) and torch.equal(mixed[1], 0.25 * x[1] + 0.75 * x[0])
    # the loss of a hand-made batch: lam CE(z, y) + (1 - lam) CE(z, y[perm]) with the trainer's own step
    t = MixupTrainer(TrainConfig(**SYN), alpha=1.0, progress=False)
    t.on_epoch_start(0)
    idx = torch.tensor([0, 5, 30, 60])
    gen = torch.Generator().manual_seed(7)
    lam_rng_state = t._lam.getstate()
    loss = t.training_step(idx, 0, gen)
    # redo by hand with the same random draws
    t._lam.setstate(lam_rng_state)
    gen2 = torch.Generator().manual_seed(7)
    xb, yb = t.train_set.batch(idx, augment=True, generator=gen2)
    lam = t._lam.betavariate(1.0, 1.0)
    p = torch.randperm(4, generator=gen2)
    z = t.model(lam * xb + (1 - lam) * xb[p])
    expected = lam * F.cross_entropy(z, yb) + (1 - lam) * F.cross_entropy(z, yb[p])
    assert torch.allclose(loss, expected, atol=1e-6) and 0 < lam < 1


def test_mixup_runs_through_the_store_and_resumes_deterministically(tmp_path):
    import dataclasses
    import time

    from ltbench.engine import DeadlineReached

    spec = mixup_spec(TrainConfig(**SYN), alpha=1.0)
    opts = ExecOptions(device="cpu", progress=False)
    full = run(spec, RunStore(tmp_path / "a"), opts)
    with pytest.raises(DeadlineReached):
        run(spec, RunStore(tmp_path / "b"), dataclasses.replace(opts, deadline=time.time()))
    resumed = run(spec, RunStore(tmp_path / "b"), opts)
    assert resumed.history == full.history and resumed.last.per_class == full.last.per_class
    assert all(math.isfinite(h["train_loss"]) for h in full.history)
    assert mixup_spec(TrainConfig(**SYN), alpha=0.5).key != spec.key


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        check_alpha(alpha)
    with pytest.raises(ValueError, match="alpha"):
        make_spec("mixup", TrainConfig(**SYN), alpha=alpha)
