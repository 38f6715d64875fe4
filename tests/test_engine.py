"""The training engine: end-to-end fit, exact resume, results on disk, bad input before training."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import real_cifar10_root
from ltbench.config import TrainConfig
from ltbench.engine import TrainResult, Trainer
from ltbench.methods import joint_spec, ohem_spec
from ltbench.runs import ExecOptions, RunStore, run, train
from ltbench.schedules import learning_rate

SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=60, data_options={"n_train_per_class": 60, "n_test_per_class": 20},
           batch_size=64, warmup_epochs=1, device="cpu", progress=None)
SYN.pop("progress")


def _cfg(**kw):
    return TrainConfig(**{**SYN, **kw})


def test_fit_on_synthetic_beats_chance_and_writes_results(tmp_path):
    cfg = _cfg(epochs=4, lr=0.01, batch_size=32, schedule="constant", warmup_epochs=0)
    r = train(cfg, tmp_path, progress=False)
    assert r.best_top1 > 30  # chance is 10%
    key = r.meta["key"]
    assert key == joint_spec(cfg).key
    run_dir = RunStore(tmp_path).folder(key)
    assert run_dir == tmp_path / "runs" / key
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["key"] == key and m["spec"]["method"] == "joint" and m["spec"]["key"] == key
    assert m["execution"]["device"] == "cpu"
    assert m["config"]["epochs"] == 4 and len(m["per_class"]) == 10
    assert all(math.isfinite(v) for v in (m["top1_last"], m["top1_best"], m["ece"]))
    assert m["top1_best"] >= m["top1_last"]
    assert (run_dir / "per_class.csv").read_text().count("\n") == 11
    assert json.loads((run_dir / "spec.json").read_text())["key"] == key
    # a finished run is loaded, not retrained
    again = train(_cfg(epochs=4, lr=0.01, batch_size=32, schedule="constant", warmup_epochs=0), tmp_path, progress=False)
    assert again.top1_last == r.top1_last and again.history == TrainResult.load(run_dir).history
    assert again.train_seconds == r.train_seconds


def test_resume_equals_uninterrupted(tmp_path):
    cfg = _cfg(epochs=4, checkpoint_every=2, loss="sigmoid_eql")
    full = train(cfg, tmp_path / "full", progress=False)

    def interrupted(cls):
        class Interrupted(cls):
            def train_epoch(self, epoch):
                if epoch == 2:
                    raise KeyboardInterrupt
                return super().train_epoch(epoch)
        return Interrupted

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False,
              options=ExecOptions(device="cpu", checkpoint_every=2, wrap_trainer=interrupted))
    folder = RunStore(tmp_path / "resumed").folder(joint_spec(cfg))
    assert (folder / "checkpoint.pt").exists() and not (folder / "metrics.json").exists()
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"] == 2
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert resumed.last.per_class == full.last.per_class
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a = torch.load(RunStore(tmp_path / "full").folder(joint_spec(cfg)) / "checkpoint.pt", weights_only=True)
    b = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert a["history"] == b["history"]  # full precision
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["loss"]["pos_grad"], b["loss"]["pos_grad"])


def test_sigmoid_bias_init_and_no_decay():
    t = Trainer(_cfg(epochs=1, loss="sigmoid_focal"), progress=False)
    assert torch.allclose(t.model.fc.bias, torch.full((10,), -math.log(9)))
    decayed = [g for g in t.optimizer.param_groups if g["weight_decay"] > 0][0]["params"]
    assert all(p is not t.model.fc.bias for p in decayed)


def test_drw_switches_weights_and_drs_switches_sampler():
    t = Trainer(_cfg(epochs=4, drw_epoch=2, drs_epoch=3), progress=False)
    t.on_epoch_start(1)
    assert t.loss_fn.class_weight is None
    t.on_epoch_start(2)
    w = t.loss_fn.class_weight
    assert w is not None and torch.isclose(w.sum(), torch.tensor(10.0)) and w[-1] > w[0]
    assert t.current_sampler(2) is t.samplers["main"] and t.current_sampler(3) is t.samplers["drs"]


def test_lr_schedules_closed_form():
    cb = [learning_rate("step_cb", e - 1, 200, 0.1) for e in range(1, 201)]
    assert cb[0] == pytest.approx(0.02) and cb[4] == pytest.approx(0.1) and cb[159] == 0.1
    assert cb[160] == pytest.approx(1e-3) and cb[180] == pytest.approx(1e-5)
    bbn = [learning_rate("step_bbn", e - 1, 200, 0.1) for e in range(1, 201)]
    assert bbn[0] == pytest.approx(0.1 * (1 / 3 * 0.8 + 0.2)) and bbn[4] == 0.1 and bbn[118] == 0.1
    assert bbn[119] == pytest.approx(1e-3) and bbn[159] == pytest.approx(1e-5)  # from epochs 120 and 160


@pytest.mark.parametrize("field,value,match", [
    ("imbalance_ratio", 0.5, "imbalance_ratio"), ("epochs", 0, "epochs"), ("batch_size", -1, "batch_size"),
    ("lr", 0.0, "lr"), ("dataset", "mnist", "cifar10"), ("sampler", "uniform", "class_balanced"),
    ("loss", "hinge", "sigmoid_focal"), ("model", "vgg", "resnet32"), ("drw_epoch", 10, "drw_epoch"),
])
def test_bad_config_fails_before_training(field, value, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        train(_cfg(**{"epochs": 2, field: value}), None, progress=False)
    with pytest.raises(ValueError, match=match):
        train(_cfg(**{"epochs": 2, field: value}), tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


def test_checkpoint_from_other_config_is_refused(tmp_path):
    store = RunStore(tmp_path)
    first = train(_cfg(epochs=1), store, progress=False)
    other = joint_spec(_cfg(epochs=1, lr=0.01))
    assert other.key != first.meta["key"]
    # A checkpoint copied into another run's folder is not resumed from.
    store.folder(other).mkdir(parents=True)
    (store.folder(other) / "checkpoint.pt").write_bytes((store.folder(first.meta["key"]) / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match="different configuration"):
        train(_cfg(epochs=1, lr=0.01), store, progress=False)
    assert not (store.folder(other) / "metrics.json").exists()
    t = Trainer(_cfg(epochs=1, lr=0.01), progress=False)
    with pytest.raises(ValueError, match=r"written by a different configuration \(differs in \['lr'\]\)"):
        t.load_checkpoint(store.folder(first.meta["key"]) / "checkpoint.pt")


@pytest.mark.slow
@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_short_cpu_fit_on_real_cifar10_lt(tmp_path):
    cfg = TrainConfig(dataset="cifar10", imbalance_ratio=10, n_max=300, test_per_class=50, epochs=4, warmup_epochs=0,
                      schedule="constant", batch_size=32, lr=0.01, device="cpu", data_root=real_cifar10_root())
    r = train(cfg, tmp_path / "c10", progress=False)
    assert r.best_top1 > 15  # chance is 10%


# ------------------------------------------------------------------ reuse: method, parameters, weights


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_finished_run_is_reused_only_by_the_same_method_and_parameters(tmp_path):
    cfg, store = _cfg(epochs=1), RunStore(tmp_path)
    first = train(cfg, store, method="ohem", keep_ratio=0.25, progress=False)
    spec = ohem_spec(cfg, keep_ratio=0.25)
    assert first.meta["key"] == spec.key
    folder = store.folder(spec)
    stored = json.loads((folder / "metrics.json").read_text())["spec"]
    # Defaults are recorded explicitly, so an omitted parameter and its default name one run.
    assert stored["method"] == "ohem" and stored["params"] == {"keep_ratio": 0.25, "mode": "two_pass"}
    assert ohem_spec(cfg, keep_ratio=0.25, mode="two_pass").key == spec.key
    before, before_folder = _snapshot(tmp_path), _snapshot(folder)
    again = train(cfg, store, method="ohem", keep_ratio=0.25, mode="two_pass", progress=False)
    assert again.meta["spec"] == stored and again.history == TrainResult.load(folder).history
    assert again.last.per_class == first.last.per_class
    assert again.train_seconds == first.train_seconds  # loaded, not retrained
    assert _snapshot(tmp_path) == before
    # Bad parameters fail before anything is read or written.
    for kwargs, match in [({"keep_ratio": 5.0}, r"\(0, 1\], got keep_ratio=5\.0"),
                          ({"keep_ratio": 0.25, "mode": "one_pass"}, "valid: two_pass, masked"),
                          ({"keep_ratoi": 0.25}, r"does not take parameter\(s\) \['keep_ratoi'\]")]:
        with pytest.raises(ValueError, match=match):
            train(cfg, store, method="ohem", progress=False, **kwargs)
    with pytest.raises(ValueError, match=r"method 'joint' does not take parameter\(s\) \['keep_ratio'\]"):
        train(cfg, store, keep_ratio=0.25, progress=False)
    assert _snapshot(tmp_path) == before
    # Same config, another parameter or method: another run in its own folder; the first is untouched.
    other = ohem_spec(cfg, keep_ratio=0.5)
    plain = joint_spec(cfg)
    assert len({spec.key, other.key, plain.key}) == 3
    assert store.status(other) == "pending" and store.status(plain) == "pending"
    half = train(cfg, store, method="ohem", keep_ratio=0.5, progress=False)
    assert half.meta["key"] == other.key and store.folder(other) != folder
    assert json.loads((store.folder(other) / "extras.json").read_text())["ohem"]["keep_ratio"] == 0.5
    assert train(cfg, store, progress=False).meta["spec"]["method"] == "joint"
    assert _snapshot(folder) == before_folder
    assert json.loads((folder / "extras.json").read_text())["ohem"]["keep_ratio"] == 0.25
    # A finished folder of one run is never handed back for another: its metrics name their key.
    import shutil

    shutil.rmtree(store.folder(other))
    shutil.copytree(folder, store.folder(other))
    assert store.status(other) == "partial"  # the foreign metrics.json is set aside, not returned
    assert not (store.folder(other) / "metrics.json").exists()
    assert list(store.folder(other).glob("metrics.json.invalid-*"))
    # force recomputes the run itself.
    redone = run(spec, store, force=True)
    assert redone.meta["key"] == spec.key and redone.history == first.history
    assert json.loads((folder / "extras.json").read_text())["ohem"]["keep_ratio"] == 0.25


def test_configs_of_special_trainers_are_refused_by_the_plain_trainer(tmp_path):
    from ltbench.bbn import BBNConfig, BBNTrainer

    bbn = BBNConfig.from_train_config(_cfg(epochs=1))
    with pytest.raises(ValueError, match="Trainer trains a TrainConfig, got cfg of type BBNConfig; run it as method 'bbn'"):
        Trainer(bbn, progress=False)
    with pytest.raises(ValueError, match="method 'joint' trains a TrainConfig, got config of type BBNConfig"):
        train(bbn, tmp_path / "bbn", method="joint", progress=False)
    with pytest.raises(ValueError, match="method 'ohem' trains a TrainConfig, got config of type BBNConfig"):
        train(bbn, tmp_path / "bbn", method="ohem", progress=False)
    with pytest.raises(ValueError, match="BBNTrainer needs a BBNConfig, got TrainConfig"):
        BBNTrainer(_cfg(epochs=1), progress=False)
    with pytest.raises(ValueError, match="method 'bbn' trains a BBNConfig, got config of type TrainConfig"):
        train(_cfg(epochs=1), tmp_path / "ce", method="bbn", progress=False)
    assert not (tmp_path / "bbn").exists() and not (tmp_path / "ce").exists()


def test_require_weights_rebuilds_the_weights_of_a_committed_result(tmp_path):
    cfg, store = _cfg(epochs=2), RunStore(tmp_path)
    spec = joint_spec(cfg)
    first = run(spec, store, ExecOptions(device="cpu", progress=False))
    out = store.folder(spec)
    weights = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    (out / "checkpoint.pt").unlink()  # results/ is committed without checkpoints
    assert store.status(spec) == "done" and not store.has_weights(spec)
    # Only the metrics are needed: loaded, nothing trained.
    loaded = TrainResult.load(out)
    assert run(spec, store).history == loaded.history and not (out / "checkpoint.pt").exists()
    again = run(spec, store, ExecOptions(device="cpu", progress=False), require_weights=True)
    assert again.last.per_class == first.last.per_class and store.has_weights(spec)
    rebuilt = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], rebuilt[k]) for k in weights)  # deterministic on CPU
