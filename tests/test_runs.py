"""Runs as data: spec identity, the method registry, the store and the one run()."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltbench.bbn import BBNConfig
from ltbench.config import TrainConfig
from ltbench.engine import EXECUTION_FIELDS, Trainer
from ltbench.methods import bbn_spec, fsa_spec, joint_spec, ohem_spec, stage_two_spec
from ltbench.runs import (DONE, LOCK_FILE, METHODS, PARTIAL, PENDING, ExecOptions, RunLocked, RunSpec, RunStore,
                          make_spec, run)

ROOT = Path(__file__).resolve().parents[1]
SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=40, data_options={"n_train_per_class": 40, "n_test_per_class": 10},
           batch_size=32, warmup_epochs=1, device="cpu", epochs=2, lr=0.05)
CPU = ExecOptions(device="cpu", progress=False)


def cfg(**kw):
    return TrainConfig(**{**SYN, **kw})


# --------------------------------------------------------------------------------------------
# Identity


def test_same_spec_gives_the_same_key_in_another_process():
    spec = stage_two_spec(joint_spec(cfg(loss="focal", loss_params={"gamma": 1.0})), "crt", epochs=1)
    code = ("from ltbench.config import TrainConfig; from ltbench.methods import joint_spec, stage_two_spec; "
            f"c = TrainConfig(**{SYN!r}); "
            "s = stage_two_spec(joint_spec(c.replace(loss='focal', loss_params={'gamma': 1.0})), 'crt', epochs=1); "
            "print(s.key)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == spec.key
    assert len(spec.key) == 20 and spec == RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))


def test_execution_options_do_not_change_the_key():
    base = joint_spec(cfg())
    for name, value in {"device": "cuda", "compile": True, "data_root": "/elsewhere", "checkpoint_every": 3,
                        "channels_last": False}.items():
        assert name in EXECUTION_FIELDS
        assert joint_spec(cfg(**{name: value})).key == base.key, name


# One changed value per identity field of TrainConfig: every one must move the key.
CHANGES = dict(dataset="cifar10", imbalance_ratio=10.0, lt_profile="step", n_max=30, test_per_class=5, val_per_class=3,
               data_seed=1,
               data_options={"n_train_per_class": 41, "n_test_per_class": 10}, model="resnet18_cifar", classifier="cosine",
               loss="sigmoid_ce", loss_params={"gamma": 2.0}, sampler="class_balanced", sampler_params={"k": 2},
               drw_epoch=1, drw_beta=0.999, drs_epoch=1, epochs=3, batch_size=16, lr=0.01, momentum=0.8,
               weight_decay=1e-4, schedule="cosine", warmup_epochs=0, nesterov=True, drop_last=True, seed=1,
               amp=False, amp_cpu=True, eval_every=2, head_bias_init="zero")


def test_every_identity_field_and_method_parameter_changes_the_key():
    identity = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in EXECUTION_FIELDS]
    assert sorted(identity) == sorted(CHANGES), "a TrainConfig field has no test value here"
    base = joint_spec(cfg())
    keys = {base.key}
    for name, value in CHANGES.items():
        # The CIFAR loaders refuse the synthetic set's options: the dataset changes without them.
        extra = {"data_options": {}} if name == "dataset" else {}
        changed = dataclasses.replace(cfg(), **{name: value}, **extra)
        spec = make_spec("joint", changed.to_dict()) if name != "loss_params" else make_spec(
            "joint", cfg(loss="focal", loss_params={"gamma": 2.0}))
        assert spec.key not in keys, name
        keys.add(spec.key)
    # method parameters, the method itself, and dependencies
    assert ohem_spec(cfg(), 0.25).key != ohem_spec(cfg(), 0.5).key != base.key
    assert ohem_spec(cfg(), 0.5, "masked").key != ohem_spec(cfg(), 0.5).key
    ce = joint_spec(cfg())
    assert stage_two_spec(ce, "crt", epochs=1).key != stage_two_spec(joint_spec(cfg(seed=1)), "crt", epochs=1).key
    assert stage_two_spec(ce, "crt", epochs=1).key != stage_two_spec(ce, "stage2_rs", epochs=1).key
    f = fsa_spec(ce, iterations=4)
    for kw in ({"tau_s": 0.7}, {"tau_g": 0.1}, {"n_f": 2}, {"n_a": 2}, {"head_fraction": 0.8}, {"iterations": 8}):
        assert fsa_spec(ce, **{"iterations": 4, **kw}).key != f.key, kw
    assert bbn_spec(cfg()).key != bbn_spec(cfg(), bbn_adaptor="linear_decay").key


def test_integral_floats_and_ints_name_one_run():
    a = joint_spec(cfg(loss="focal", loss_params={"gamma": 1}))
    b = joint_spec(cfg(loss="focal", loss_params={"gamma": 1.0}))
    assert a == b and hash(a) == hash(b)


# --------------------------------------------------------------------------------------------
# Bad input, before anything is trained, read or deleted


def test_bad_specs_fail_at_the_boundary(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method: method='erm'; valid methods: bbn, crt, fsa, joint"):
        make_spec("erm", cfg())
    with pytest.raises(ValueError, match=r"method 'joint' does not take parameter\(s\) \['keep_ratio'\]"):
        make_spec("joint", cfg(), keep_ratio=0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\], got keep_ratio=5"):
        ohem_spec(cfg(), keep_ratio=5.0)
    with pytest.raises(ValueError, match="must be a whole-network run"):
        stage_two_spec(bbn_spec(cfg()), "crt")
    with pytest.raises(ValueError, match="must be a whole-network run"):
        stage_two_spec(stage_two_spec(joint_spec(cfg()), "crt"), "lws")
    with pytest.raises(ValueError, match="needs dependencies"):
        make_spec("crt", stage_two_spec(joint_spec(cfg()), "crt").train_config())
    with pytest.raises(ValueError, match="trains a BBNConfig, got config of type TrainConfig"):
        make_spec("bbn", cfg())
    with pytest.raises(ValueError, match="run it as method 'bbn'"):
        Trainer(BBNConfig.from_train_config(cfg()), progress=False)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# The store and run()


def test_run_trains_once_and_reuses(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    spec = joint_spec(cfg())
    assert store.status(spec) == PENDING
    first = run(spec, store, CPU)
    folder = store.folder(spec)
    assert store.status(spec) == DONE and folder == tmp_path / "runs" / spec.key
    m = json.loads((folder / "metrics.json").read_text())
    assert m["key"] == spec.key and m["spec"]["method"] == "joint" and m["execution"]["device"] == "cpu"
    assert json.loads((folder / "spec.json").read_text())["key"] == spec.key
    assert not (folder / LOCK_FILE).exists()

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "fit", boom)
    again = run(spec, store, CPU)
    assert again.history == first.history and again.last.per_class == first.last.per_class


def test_dependencies_run_first_and_their_weights_are_rebuilt(tmp_path):
    store = RunStore(tmp_path)
    ce = joint_spec(cfg())
    crt = stage_two_spec(ce, "crt", epochs=1)
    run(crt, store, CPU)
    assert store.status(ce) == DONE and store.has_weights(ce)
    weights = torch.load(store.folder(ce) / "checkpoint.pt", weights_only=True)["model"]
    (store.folder(ce) / "checkpoint.pt").unlink()  # committed results carry no checkpoints
    recorded = {n: (store.folder(ce) / n).read_bytes() for n in ("metrics.json", "curves.csv", "per_class.csv")}
    run(stage_two_spec(ce, "lws", epochs=1), store, CPU)
    # only the weights are rebuilt: the recorded result of the finished run is left as it is
    assert recorded == {n: (store.folder(ce) / n).read_bytes() for n in recorded}
    rebuilt = torch.load(store.folder(ce) / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], rebuilt[k]) for k in weights)  # deterministic on CPU


def test_a_foreign_or_corrupt_result_is_moved_aside_and_recomputed(tmp_path):
    store = RunStore(tmp_path)
    a, b = joint_spec(cfg()), ohem_spec(cfg(), 0.25)
    run(a, store, CPU)
    fb = store.folder(b)
    fb.mkdir(parents=True)
    # another method's finished folder in b's place: never returned as b
    (fb / "metrics.json").write_text((store.folder(a) / "metrics.json").read_text())
    assert store.status(b) == PENDING
    assert any(p.name.startswith("metrics.json.invalid-") for p in fb.iterdir())
    (fb / "checkpoint.pt").write_bytes(b"truncated")
    result = run(b, store, CPU)
    assert result.meta["key"] == b.key and store.status(b) == DONE
    assert any(p.name.startswith("checkpoint.pt.invalid-") for p in fb.iterdir())
    # wrong-typed values are not a finished run either
    m = json.loads((fb / "metrics.json").read_text())
    m["top1_last"] = "abc"
    (fb / "metrics.json").write_text(json.dumps(m))
    assert store.load(b) is None


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    store = RunStore(tmp_path)
    spec = joint_spec(cfg(epochs=1))
    lock = store.folder(spec) / LOCK_FILE
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "since": "now"}))
    with pytest.raises(RunLocked, match=f"being trained by pid {os.getppid()}"):
        run(spec, store, dataclasses.replace(CPU, lock_timeout=0.0))
    assert not (store.folder(spec) / "metrics.json").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "since": "then"}))
    run(spec, store, CPU)  # the holder is gone: its lock is stale
    assert store.status(spec) == DONE and not lock.exists()


def test_deadline_stop_then_resume_equals_an_uninterrupted_run(tmp_path):
    import time

    from ltbench.engine import DeadlineReached

    spec = joint_spec(cfg(epochs=3, loss="sigmoid_eql"))
    full = run(spec, RunStore(tmp_path / "a"), CPU)
    store = RunStore(tmp_path / "b")
    with pytest.raises(DeadlineReached, match="after epoch 1 of 3"):
        run(spec, store, dataclasses.replace(CPU, deadline=time.time()))
    assert store.status(spec) == PARTIAL
    resumed = run(spec, store, CPU)
    assert resumed.last.per_class == full.last.per_class and resumed.top1_last == full.top1_last
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    wa = torch.load(tmp_path / "a" / "runs" / spec.key / "checkpoint.pt", weights_only=True)
    wb = torch.load(store.folder(spec) / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert torch.equal(wa["loss"]["pos_grad"], wb["loss"]["pos_grad"])


def test_a_moved_store_keeps_every_dependent_run_valid(tmp_path, monkeypatch):
    import shutil

    ce = joint_spec(cfg())
    f = fsa_spec(ce, iterations=4, batch_size=16)
    crt = stage_two_spec(ce, "crt", epochs=1)
    run(f, RunStore(tmp_path / "here"), CPU)
    run(crt, RunStore(tmp_path / "here"), CPU)
    shutil.move(str(tmp_path / "here"), str(tmp_path / "there"))
    for p in (tmp_path / "there").rglob("*.json"):
        assert str(tmp_path) not in p.read_text(), p  # nothing names an absolute path
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    moved = RunStore(tmp_path / "there")
    assert run(f, moved, CPU).meta["key"] == f.key and run(crt, moved, CPU).meta["key"] == crt.key


def test_methods_listing_has_one_line_per_method():
    out = subprocess.run([sys.executable, "-m", "ltbench", "methods"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.strip().splitlines()
    assert [line.split()[0] for line in out] == METHODS.names()
    assert {"joint", "bbn", "ohem", "crt", "lws", "tau_norm", "fsa"} <= set(METHODS.names())


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from ltbench.engine import NonFiniteLoss

    store = RunStore(tmp_path)
    spec = joint_spec(cfg(epochs=3))
    original = Trainer.training_step

    def poisoned(self, batch, epoch, generator):
        loss = original(self, batch, epoch, generator)
        return loss * float("nan") if epoch == 1 else loss

    monkeypatch.setattr(Trainer, "training_step", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"joint ce synthetic-IR5 seed0 3ep: the training loss became non-finite "
                                            r"\(NaN or inf\) in epoch 2 .*learning rate too high"):
        run(spec, store, dataclasses.replace(CPU, checkpoint_every=1))
    state = torch.load(store.folder(spec) / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (store.folder(spec) / "metrics.json").exists() and not (store.folder(spec) / LOCK_FILE).exists()
