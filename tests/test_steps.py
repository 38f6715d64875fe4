"""One step per method: every trainer's eager step (``step_loss(*step_inputs(...))``) is, bit for
bit, the hand-written training step it replaced (the formulas of docs/methods.md §4-§10 written
out below), so the committed CPU runs stay reproducible. Float32 on CPU, compared with torch.equal."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ltbench.bbn import BBNConfig, BBNTrainer
from ltbench.engine import Trainer
from ltbench.fsa import FSATrainer, phase2_config
from ltbench.methods import joint_spec
from ltbench.mixup import MixupTrainer
from ltbench.ohem import OHEMTrainer, ohem_masked, ohem_two_pass
from ltbench.runs import ExecOptions, RunStore, run
from ltbench.two_stage import ClassifierTrainer, stage_two_config
from test_fastpath import _cfg


def _plain(t, batch, gen):
    x, y = t.train_set.batch(batch, augment=True, generator=gen)
    return t.loss_fn(t.model(x).float(), y)


def _bbn(t, batch, gen):
    (x_c, y_c), (x_r, y_r) = (t.train_set.batch(i, augment=True, generator=gen) for i in batch)
    a = torch.tensor(t.alpha(t._epoch))
    logits = t.model(x_c, x_r, a).float()
    return a * t.loss_fn(logits, y_c) + (1 - a) * t.loss_fn(logits, y_r)


def _ohem(t, batch, gen):
    x, y = t.train_set.batch(batch, augment=True, generator=gen)
    if t.mode == "two_pass":
        out = ohem_two_pass(t.model, x, y, t.keep_ratio, model=t.model)
    else:
        out = ohem_masked(t.model, x, y, t.keep_ratio)
    t._seen.index_add_(0, y, torch.ones_like(y))
    t._mined.index_add_(0, y[out.kept], torch.ones_like(y[out.kept]))
    return out.loss


def _mixup(t, batch, gen):
    x, y = t.train_set.batch(batch, augment=True, generator=gen)
    lam = t._lam.betavariate(t.alpha, t.alpha)  # a Python float, as the step had it
    perm = torch.randperm(x.shape[0], generator=gen)
    logits = t.model(lam * x + (1.0 - lam) * x[perm]).float()
    return lam * t.loss_fn(logits, y) + (1.0 - lam) * t.loss_fn(logits, y[perm])


def _fsa(t, batch, gen):
    x, y = t.train_set.batch(batch, augment=True, generator=gen)
    with torch.no_grad():
        f = t.model.forward_features(x).float()
    aug = t.augmenter.augment(f, y, gen)  # drawing as it goes
    weights = torch.cat([torch.ones_like(y, dtype=torch.float32), aug.valid.float()])
    logits = t.model.forward_head(torch.cat([f, aug.features]))
    per = F.cross_entropy(logits.float(), torch.cat([y, aug.labels]), reduction="none")
    return (per * weights).sum() / weights.sum()


def _hand_written(t, step, epochs):
    losses = []
    for epoch in range(epochs):
        t.model.train()
        t.on_epoch_start(epoch)
        t._epoch = epoch
        gen = t.augment_generator(epoch)
        total = torch.zeros(())
        for batch in t.epoch_batches(epoch):
            loss = step(t, batch, gen)
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t.optimizer.step()
            total += loss.detach()
        losses.append(total)
    return losses


@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("stage1"))
    spec = joint_spec(_cfg(epochs=1, batch_size=32))
    run(spec, store, ExecOptions(device="cpu", progress=False), require_weights=True)
    return store.folder(spec)


def _fsa_cfg(d):
    cfg = phase2_config(json.loads((d / "metrics.json").read_text())["config"], iterations=2, batch_size=48,
                        evaluations=2)  # two epochs
    return cfg.replace(sampler_params={"num_samples": 130})  # 48, 48, 34


CASES = {  # (make, hand-written step); batches of 64 end with a partial one of 46 (BBN: dropped)
    "ce": (lambda d: Trainer(_cfg(), progress=False), _plain),
    "ldam_drw": (lambda d: Trainer(_cfg(loss="ldam", classifier="cosine", drw_epoch=1), progress=False), _plain),
    "sigmoid_eql": (lambda d: Trainer(_cfg(loss="sigmoid_eql"), progress=False), _plain),
    "bbn": (lambda d: BBNTrainer(_cfg(BBNConfig), progress=False), _bbn),
    "ohem_two_pass": (lambda d: OHEMTrainer(_cfg(), keep_ratio=0.5, mode="two_pass", progress=False), _ohem),
    "ohem_masked": (lambda d: OHEMTrainer(_cfg(), keep_ratio=0.5, mode="masked", progress=False), _ohem),
    "mixup": (lambda d: MixupTrainer(_cfg(loss="ldam", drw_epoch=1), alpha=0.5, progress=False), _mixup),
    "crt": (lambda d: ClassifierTrainer(stage_two_config(_cfg().to_dict(), "crt", epochs=2, drop_last=False,
                                                         batch_size=64), d, progress=False), _plain),
    "fsa": (lambda d: FSATrainer(_fsa_cfg(d), d, progress=False), _fsa),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_eager_step_is_the_hand_written_step_bit_for_bit(case, stage1_dir):
    make, step = CASES[case]
    engine, hand = make(stage1_dir), make(stage1_dir)
    rows = [engine.train_epoch(e) for e in range(2)]
    losses = _hand_written(hand, step, 2)
    steps = [len(list(hand.epoch_batches(e))) for e in range(2)]
    assert [r["train_loss"] for r in rows] == [float(s) / n for s, n in zip(losses, steps)]
    for (name, a), b in zip(engine.model.state_dict().items(), hand.model.state_dict().values()):
        assert torch.equal(a, b), name
    sa, sb = engine.optimizer.state_dict()["state"], hand.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)
    for (name, a), b in zip(engine.loss_fn.state_dict().items(), hand.loss_fn.state_dict().values()):
        assert torch.equal(a, b), name
    if case.startswith("ohem"):
        assert torch.equal(engine._mined, hand._mined) and torch.equal(engine._seen, hand._seen)
