"""bf16 autocast on the CPU (TrainConfig.amp_cpu): part of a run's identity, left out of it when
False so every committed run keeps its key; what the cpu and paper profiles train with."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from ltbench import engine, executor, harvest
from ltbench.config import TrainConfig
from ltbench.engine import Trainer
from ltbench.fsa import phase2_config
from ltbench.methods import bbn_spec, joint_spec, stage_two_spec
from ltbench.runs import ExecOptions, RunSpec, RunStore, run

ROOT = Path(__file__).resolve().parents[1]
SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=40, data_options={"n_train_per_class": 40, "n_test_per_class": 10},
           batch_size=32, warmup_epochs=1, device="cpu", epochs=2, lr=0.05)
CPU = ExecOptions(device="cpu", progress=False, compile=False)


def test_float32_on_cpu_keeps_the_key_a_run_had_before_the_field_existed():
    fp32, bf16 = joint_spec(TrainConfig(**SYN)), joint_spec(TrainConfig(**SYN, amp_cpu=True))
    assert fp32.key != bf16.key
    assert "amp_cpu" not in fp32.identity()["config"] and bf16.identity()["config"]["amp_cpu"] is True
    old = fp32.to_dict()
    del old["config"]["amp_cpu"]
    read = RunSpec.from_dict(old)  # a spec.json written before the field: a float32 run, same key
    assert read.key == fp32.key and read.config["amp_cpu"] is False
    # BBN, stage 2 and FSA phase II inherit it from their base / stage-1 configuration
    assert bbn_spec(TrainConfig(**SYN, amp_cpu=True)).config["amp_cpu"] is True
    assert stage_two_spec(bf16, "crt", epochs=1).config["amp_cpu"] is True
    assert stage_two_spec(fp32, "crt", epochs=1).key != stage_two_spec(bf16, "crt", epochs=1).key
    assert phase2_config(TrainConfig(**SYN, amp_cpu=True), iterations=4).amp_cpu is True


def test_amp_cpu_is_a_bool_and_refused_otherwise():
    with pytest.raises(ValueError, match=r"amp_cpu.*'yes'.*bool"):
        TrainConfig(amp_cpu="yes").validate()  # type: ignore[arg-type]


def test_amp_cpu_trains_in_bf16_on_cpu_and_only_with_amp(monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    t = Trainer(TrainConfig(**SYN, amp_cpu=True), progress=False)
    assert t.amp_dtype is torch.bfloat16
    x, y = t.train_set.batch(torch.arange(8), augment=False)
    with t.autocast():
        logits = t.forward(x)
    assert logits.dtype is torch.bfloat16
    loss = t.step_loss(x, y)
    assert loss.dtype is torch.float32 and torch.isfinite(loss)  # the loss sees float32 logits
    assert Trainer(TrainConfig(**SYN), progress=False).amp_dtype is None
    assert Trainer(TrainConfig(**SYN, amp=False, amp_cpu=True), progress=False).amp_dtype is None


def test_a_bf16_run_differs_from_the_float32_run_but_stays_close_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    fp32 = run(joint_spec(TrainConfig(**SYN)), RunStore(tmp_path), CPU)
    bf16 = run(joint_spec(TrainConfig(**SYN, amp_cpu=True)), RunStore(tmp_path), CPU)
    assert [r["train_loss"] for r in fp32.history] != [r["train_loss"] for r in bf16.history]  # hence its own key
    # one step from the same weights on the same batch: the same loss and gradient to bf16's precision
    t32, t16 = Trainer(TrainConfig(**SYN), progress=False), Trainer(TrainConfig(**SYN, amp_cpu=True), progress=False)
    t16.model.load_state_dict(t32.model.state_dict())
    x, y = t32.train_set.batch(torch.arange(32), augment=False)
    grads = []
    for t in (t32, t16):
        t.model.zero_grad()
        loss = t.step_loss(x, y)
        loss.backward()
        grads.append((loss.detach().item(), torch.cat([p.grad.flatten() for p in t.model.parameters()])))
    (l32, g32), (l16, g16) = grads
    assert abs(l16 - l32) < 0.02 * l32 and torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.98
    # a checkpoint written before the field existed (no amp_cpu in its config) resumes as float32
    t = Trainer(TrainConfig(**SYN), progress=False)
    state = t.state_dict()
    del state["config"]["amp_cpu"]
    torch.save(state, tmp_path / "old.pt")
    Trainer(TrainConfig(**SYN), progress=False).load_checkpoint(tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"differs in \['amp_cpu'\]"):
        Trainer(TrainConfig(**SYN, amp_cpu=True), progress=False).load_checkpoint(tmp_path / "old.pt")


def test_a_cpu_without_native_bf16_is_warned_once(monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(engine, "_WARNED_BF16", False)
    with pytest.warns(RuntimeWarning, match="amp_cpu=True on a CPU without native bf16"):
        Trainer(TrainConfig(**SYN, amp_cpu=True), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(TrainConfig(**SYN, amp_cpu=True), progress=False)


def test_the_cpu_and_paper_profiles_train_bf16_and_the_calibration_stays_float32():
    for profile in ("cpu", "paper"):
        entries = executor.plan(profile, ROOT / "results", notebooks_dir=ROOT / "notebooks")
        assert entries and all(s.config.get("amp_cpu") is True for e in entries for s in e.spec.walk())
    for profile in ("quick", "smoke"):
        entries = executor.plan(profile, ROOT / "results", notebooks_dir=ROOT / "notebooks")
        assert entries and all("amp_cpu" not in s.identity()["config"] for e in entries for s in e.spec.walk())
    cal = [e for step in harvest.QUEUE[1:3] for e in harvest._plan(step, ROOT / "results", ROOT / "notebooks")]
    assert len(cal) == 6 and all(e.spec.config["amp_cpu"] is False for e in cal)
