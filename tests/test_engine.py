"""The training engine: end-to-end fit, exact resume, results on disk, bad input before training."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import real_cifar10_root
from ltbench.config import TrainConfig
from ltbench.engine import TrainResult, Trainer, train
from ltbench.schedules import learning_rate

SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=60, data_options={"n_train_per_class": 60, "n_test_per_class": 20},
           batch_size=64, warmup_epochs=1, device="cpu", progress=None)
SYN.pop("progress")


def _cfg(**kw):
    return TrainConfig(**{**SYN, **kw})


def test_fit_on_synthetic_beats_chance_and_writes_results(tmp_path):
    r = train(_cfg(epochs=4, lr=0.01, batch_size=32, schedule="constant", warmup_epochs=0), tmp_path / "run", meta={"method": "CE"}, progress=False)
    assert r.best_top1 > 30  # chance is 10%
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["method"] == "CE" and m["config"]["epochs"] == 4 and len(m["per_class"]) == 10
    assert all(math.isfinite(v) for v in (m["top1_last"], m["top1_best"], m["ece"]))
    assert m["top1_best"] >= m["top1_last"]
    assert (tmp_path / "run" / "per_class.csv").read_text().count("\n") == 11
    # a finished run is loaded, not retrained
    again = train(_cfg(epochs=4, lr=0.01, batch_size=32, schedule="constant", warmup_epochs=0), tmp_path / "run", progress=False)
    assert again.top1_last == r.top1_last and again.history == TrainResult.load(tmp_path / "run").history


def test_resume_equals_uninterrupted(tmp_path):
    cfg = _cfg(epochs=4, checkpoint_every=2, loss="sigmoid_eql")
    full = train(cfg, tmp_path / "full", progress=False)

    class Interrupted(Trainer):
        def train_epoch(self, epoch):
            if epoch == 2:
                raise KeyboardInterrupt
            return super().train_epoch(epoch)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False, trainer_cls=Interrupted)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists() and not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert resumed.last.per_class == full.last.per_class
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
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
def test_bad_config_fails_before_training(field, value, match):
    with pytest.raises(ValueError, match=match):
        train(_cfg(**{"epochs": 2, field: value}), None, progress=False)


def test_checkpoint_from_other_config_is_refused(tmp_path):
    train(_cfg(epochs=1), tmp_path / "r", progress=False)
    (tmp_path / "r" / "metrics.json").unlink()
    with pytest.raises(ValueError, match="different configuration"):
        train(_cfg(epochs=1, lr=0.01), tmp_path / "r", progress=False)


@pytest.mark.slow
@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_short_cpu_fit_on_real_cifar10_lt(tmp_path):
    cfg = TrainConfig(dataset="cifar10", imbalance_ratio=10, n_max=300, test_per_class=50, epochs=4, warmup_epochs=0,
                      schedule="constant", batch_size=32, lr=0.01, device="cpu", data_root=real_cifar10_root())
    r = train(cfg, tmp_path / "c10", progress=False)
    assert r.best_top1 > 15  # chance is 10%


# ------------------------------------------------------------------ reuse: trainer, arguments, weights


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_finished_run_is_reused_only_by_the_same_trainer_and_arguments(tmp_path):
    from ltbench.ohem import OHEMTrainer

    cfg, out = _cfg(epochs=1), tmp_path / "ohem"
    train(cfg, out, progress=False, trainer_cls=OHEMTrainer, keep_ratio=0.25)
    stored = json.loads((out / "metrics.json").read_text())["trainer"]
    # Defaults are recorded explicitly, so an omitted argument and its default name one run.
    assert stored == {"class": "ltbench.ohem.OHEMTrainer", "kwargs": {"keep_ratio": 0.25, "mode": "two_pass"}}
    assert train(cfg, out, progress=False, trainer_cls=OHEMTrainer, keep_ratio=0.25, mode="two_pass").meta["trainer"] == stored
    before = _snapshot(out)
    # Bad arguments fail before the finished run is touched.
    for kwargs, err, match in [({"keep_ratio": 5.0}, ValueError, r"\(0, 1\], got keep_ratio=5\.0"),
                               ({"keep_ratio": 0.25, "mode": "one_pass"}, ValueError, "valid: two_pass, masked"),
                               ({"keep_ratoi": 0.25}, TypeError, "keep_ratoi")]:
        with pytest.raises(err, match=match):
            train(cfg, out, progress=False, trainer_cls=OHEMTrainer, **kwargs)
    # Same config, other arguments: a different run, neither returned nor overwritten silently.
    with pytest.raises(ValueError, match=r"finished run of trainer ltbench\.ohem\.OHEMTrainer.*keep_ratio': 0\.25"):
        train(cfg, out, progress=False, trainer_cls=OHEMTrainer, keep_ratio=0.5)
    with pytest.raises(ValueError, match="finished run of trainer"):
        train(cfg, out, progress=False)  # the plain trainer
    assert _snapshot(out) == before
    redone = train(cfg, out, progress=False, trainer_cls=OHEMTrainer, keep_ratio=0.5, force=True)
    assert redone.meta["trainer"]["kwargs"]["keep_ratio"] == 0.5
    assert json.loads((out / "extras.json").read_text())["ohem"]["keep_ratio"] == 0.5


def test_configs_of_special_trainers_are_refused_by_the_plain_trainer(tmp_path):
    from ltbench.bbn import BBNConfig, BBNTrainer

    bbn = BBNConfig.from_train_config(_cfg(epochs=1))
    with pytest.raises(ValueError, match="BBNConfig, which Trainer cannot train: pass trainer_cls=BBNTrainer"):
        train(bbn, tmp_path / "bbn", progress=False)
    with pytest.raises(ValueError, match="BBNTrainer needs a BBNConfig, got TrainConfig"):
        train(_cfg(epochs=1), tmp_path / "ce", progress=False, trainer_cls=BBNTrainer)
    assert not (tmp_path / "bbn").exists() and not (tmp_path / "ce").exists()


def test_require_checkpoint_rebuilds_the_weights_of_a_committed_result(tmp_path):
    cfg, out = _cfg(epochs=2), tmp_path / "r"
    first = train(cfg, out, progress=False)
    weights = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    (out / "checkpoint.pt").unlink()  # results/ is committed without checkpoints
    # Only the metrics are needed: loaded, nothing trained.
    loaded = TrainResult.load(out)
    assert train(cfg, out, progress=False).history == loaded.history and not (out / "checkpoint.pt").exists()
    again = train(cfg, out, progress=False, require_checkpoint=True)
    assert again.last.per_class == first.last.per_class
    rebuilt = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], rebuilt[k]) for k in weights)  # deterministic on CPU
