"""Tests for docs/methods.md §2's lr tables, DRW / DRS (docs/methods.md §6) and ltbench.two_stage (cRT, RW, RS, LWS, tau-norm)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltbench.config import TrainConfig
from ltbench.engine import CHECKPOINT_FILE, EXECUTION_FIELDS, Trainer, TrainResult
from ltbench.losses import class_balanced_weights
from ltbench.methods import bbn_spec, joint_spec, stage_two_spec
from ltbench.models import LWSClassifier, TauNormClassifier
from ltbench.runs import ExecOptions, RunStore, make_spec, run, train
from ltbench.samplers import ClassBalancedSampler, InstanceSampler
from ltbench.schedules import learning_rate
from ltbench.two_stage import (STAGE2_METHODS, ClassifierTrainer, FrozenBackboneClassifier, StageTwoConfig,
                               TauNormTrainer, stage_two_config, tau_sweep)

DATA = dict(dataset="synthetic", data_options={"n_train_per_class": 30, "n_test_per_class": 10},
            imbalance_ratio=10, device="cpu", batch_size=32, seed=0)


CPU = ExecOptions(device="cpu", progress=False)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A run store holding a finished stage-1 CE run (2 epochs) that every stage-2 test reuses,
    and that run's spec."""
    store = RunStore(tmp_path_factory.mktemp("store"))
    spec = joint_spec(TrainConfig(**DATA, epochs=2, warmup_epochs=1))
    run(spec, store, CPU)
    return store, spec


@pytest.fixture(scope="module")
def stage1_dir(stage1):
    """The folder of the finished stage-1 run (its checkpoint.pt is what stage 2 loads)."""
    store, spec = stage1
    return store.folder(spec)


@pytest.fixture(scope="module")
def stage1_spec(stage1):
    return stage1[1]


@pytest.fixture
def store(stage1, tmp_path):
    """A private copy of the store with the finished stage-1 run (tests add runs to it)."""
    import shutil

    return RunStore(shutil.copytree(stage1[0].root, tmp_path / "store"))


def backbone_state(model: FrozenBackboneClassifier):
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------- docs/methods.md §2 lr tables


def spec_step_cb(e: int) -> float:
    """docs/methods.md §2, CB / LDAM variant, 1-based epoch e: warm-up 0.1 e / 5 for e <= 5; x0.01 after
    epoch 160, x0.0001 after epoch 180."""
    if e <= 5:
        return 0.1 * e / 5
    if e > 180:
        return 0.1 * 1e-4
    if e > 160:
        return 0.1 * 1e-2
    return 0.1


def spec_step_bbn(e: int) -> float:
    """docs/methods.md §2, BBN variant, 1-based epoch e: 0.1 (1/3 (1 - e/5) + e/5) for e < 5; x0.01 from
    epoch 120, x0.0001 from epoch 160. (The released code steps WarmupMultiStepLR at the start of
    each 1-based epoch, so its counter equals e: epochs 1..4 warm up, epoch 5 has the full lr.)"""
    if e < 5:
        return 0.1 * (1 / 3 * (1 - e / 5) + e / 5)
    if e >= 160:
        return 0.1 * 1e-4
    if e >= 120:
        return 0.1 * 1e-2
    return 0.1


def test_lr_table_step_cb_matches_spec():
    got = [learning_rate("step_cb", e - 1, 200, 0.1, 5) for e in range(1, 201)]
    np.testing.assert_allclose(got, [spec_step_cb(e) for e in range(1, 201)], rtol=1e-12)


def test_lr_table_step_bbn_matches_spec():
    got = [learning_rate("step_bbn", e - 1, 200, 0.1, 5) for e in range(1, 201)]
    np.testing.assert_allclose(got, [spec_step_bbn(e) for e in range(1, 201)], rtol=1e-12)


def test_lr_table_step_bbn_shape():
    """The three levels, and a warm-up that starts near a third of the base lr (0.0467 at epoch 1)."""
    got = [learning_rate("step_bbn", t, 200, 0.1, 5) for t in range(200)]
    assert got[0] == pytest.approx(0.1 * (1 / 3 * 0.8 + 0.2)) and got[4] == 0.1
    assert sorted(set(np.round(got[10:], 12))) == [1e-5, 1e-3, 0.1]
    assert all(a <= b for a, b in zip(got[:6], got[1:6]))


@pytest.mark.parametrize("total", [1, 2, 3, 8])
def test_step_bbn_short_runs_do_not_start_decayed(total):
    got = [learning_rate("step_bbn", t, total, 0.1, min(5, total // 10)) for t in range(total)]
    assert got[0] == 0.1 and all(a >= b for a, b in zip(got, got[1:]))


def test_lr_table_step_crt():
    """cRT (docs/methods.md §6): 30 epochs, 5 warm-up epochs, lr 0.1, x0.1 at epochs 10 and 20."""
    got = [learning_rate("step_crt", t, 30, 0.1, 5) for t in range(30)]
    expected = [0.1 * (t + 1) / 5 if t < 5 else 0.1 if t < 10 else 0.01 if t < 20 else 0.001 for t in range(30)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# --------------------------------------------------------------------------------- DRW and DRS (docs/methods.md §6)


def test_drw_switches_to_class_balanced_weights():
    cfg = TrainConfig(**DATA, epochs=3, warmup_epochs=0, drw_epoch=2)
    tr = Trainer(cfg, progress=False)
    for epoch in (0, 1):
        tr.on_epoch_start(epoch)
        assert tr.loss_fn.class_weight is None  # plain CE before the DRW epoch (0-based index < drw_epoch)
    tr.on_epoch_start(2)
    n = np.array(tr.counts, dtype=float)
    w = (1 - 0.9999) / (1 - 0.9999 ** n)  # docs/methods.md §4 CB weights, beta 0.9999, normalised to sum C
    w = w * len(n) / w.sum()
    np.testing.assert_allclose(tr.loss_fn.class_weight.numpy(), w, rtol=1e-5)
    assert float(tr.loss_fn.class_weight.sum()) == pytest.approx(len(n), rel=1e-5)
    torch.testing.assert_close(tr.loss_fn.class_weight, class_balanced_weights(tr.counts, 0.9999))
    # The weighted loss is PyTorch's weighted mean.
    z, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    torch.testing.assert_close(tr.loss_fn(z, y), torch.nn.functional.cross_entropy(z, y, weight=tr.loss_fn.class_weight))


def test_drw_needs_a_weighted_loss():
    with pytest.raises(ValueError, match="drw_epoch"):
        Trainer(TrainConfig(**DATA, epochs=2, warmup_epochs=0, drw_epoch=1, loss="sigmoid_focal"), progress=False)
    with pytest.raises(ValueError, match="drw_epoch"):
        TrainConfig(**DATA, epochs=2, warmup_epochs=0, drw_epoch=2).validate()


def test_drs_switches_to_class_balanced_sampling():
    cfg = TrainConfig(**DATA, epochs=3, warmup_epochs=0, drs_epoch=2)
    tr = Trainer(cfg, progress=False)
    assert isinstance(tr.current_sampler(1), InstanceSampler)
    assert isinstance(tr.current_sampler(2), ClassBalancedSampler)
    labels = tr.data.train.targets
    # Before: every sample once per epoch. After: P_c = 1 / C (empirical over many epochs).
    first = torch.cat(list(tr.epoch_batches(0)))
    np.testing.assert_array_equal(np.bincount(labels[first].numpy(), minlength=10), tr.counts)
    drs = tr.samplers["drs"]
    drawn = torch.cat([drs.global_indices(e) for e in range(2, 200)])
    freq = np.bincount(labels[drawn].numpy(), minlength=10) / len(drawn)
    np.testing.assert_allclose(freq, np.full(10, 0.1), atol=0.01)


# --------------------------------------------------------------------------------- stage 2


def test_method_registry():
    assert STAGE2_METHODS.names() == ["ce", "crt", "lws", "rs", "rw", "tau_norm"]


def test_crt_recipe(stage1_spec):
    cfg = stage_two_config(stage1_spec, "crt")
    # docs/methods.md §6's lr 0.1 is for batch 128: linearly scaled to the stage-1 run's batch, like stage 1.
    assert (cfg.epochs, cfg.schedule, cfg.warmup_epochs) == (30, "crt_cifar", 5)
    assert cfg.lr == pytest.approx(0.1 * cfg.batch_size / 128) and cfg.batch_size != 128
    assert stage_two_config(stage1_spec, "crt", batch_size=128).lr == pytest.approx(0.1)
    assert stage_two_config(stage1_spec, "crt", lr=0.3).lr == 0.3
    assert cfg.sampler == "class_balanced" and cfg.loss == "ce"
    rw = stage_two_config(stage1_spec, "rw", epochs=3)
    assert rw.loss == "balanced_ce" and rw.loss_params == {"power": 1.0} and rw.warmup_epochs == 0
    assert stage_two_config(stage1_spec, "lws").epochs == 5
    # Data, model and seed come from the stage-1 run; the config names no folder and no stage-1 config.
    assert cfg.dataset == "synthetic" and cfg.data_options == DATA["data_options"] and cfg.seed == 0
    assert not {"stage1_dir", "stage1_config"} & set(cfg.to_dict())
    # A stage-1 spec, its TrainConfig or its config mapping give the same stage-2 config.
    s1_cfg = stage1_spec.train_config(CPU)
    assert stage_two_config(s1_cfg, "crt").to_dict() == stage_two_config(stage1_spec, "crt", device="cpu").to_dict()
    assert stage_two_config(stage1_spec.config, "crt").to_dict() == cfg.to_dict()
    # The spec of the stage-2 run: the recipe as its config, the stage-1 run as its dependency.
    crt = stage_two_spec(stage1_spec, "crt")
    assert crt.method == "crt" and crt.dependencies == {"stage1": stage1_spec}
    assert crt.config == {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_FIELDS}
    assert stage_two_spec(stage1_spec, "stage2_rw", epochs=3).config["loss"] == "balanced_ce"


def test_stage_two_config_touches_no_checkpoint(tmp_path):
    """The config is built from the stage-1 configuration alone (no run folder is read)."""
    cfg = stage_two_config(TrainConfig(**DATA, epochs=2, warmup_epochs=1), "crt", epochs=1)
    assert cfg.method == "crt" and cfg.epochs == 1 and cfg.dataset == "synthetic"
    spec = stage_two_spec(joint_spec(TrainConfig(**DATA, epochs=2, warmup_epochs=1)), "crt", epochs=1)
    assert RunStore(tmp_path).status(spec) == "pending" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("method", ["crt", "rw", "ce"])
def test_stage2_leaves_backbone_bit_identical(stage1_dir, stage1_spec, tmp_path, method):
    # backbone_bn="eval": the frozen backbone keeps stage 1's BatchNorm statistics too (the default,
    # "train", re-estimates them as the authors' code does: see tests/test_fidelity.py).
    cfg = stage_two_config(stage1_spec, method, epochs=2, device="cpu", backbone_bn="eval")
    tr = ClassifierTrainer(cfg, stage1_dir, progress=False)
    ckpt = torch.load(stage1_dir / CHECKPOINT_FILE, weights_only=True)["model"]
    before = backbone_state(tr.model)
    assert_bit_identical(before, {k: v for k, v in ckpt.items() if not k.startswith("fc.")})
    head_before = tr.model.fc.weight.detach().clone()
    assert not torch.equal(head_before, ckpt["fc.weight"])  # re-initialised classifier
    # Only the new classifier is optimised.
    opt_params = [p for g in tr.optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in opt_params} == {id(tr.model.fc.weight), id(tr.model.fc.bias)}
    result = tr.fit(tmp_path / method)
    assert_bit_identical(before, backbone_state(tr.model))  # parameters and BatchNorm statistics
    assert not torch.equal(head_before, tr.model.fc.weight)
    assert not tr.model.backbone.training and tr.model.training  # backbone stays in eval mode
    assert result.config["method"] == method and "stage1_dir" not in result.config  # no path in the result


def test_lws_trains_only_scales(stage1_dir, stage1_spec, store):
    # backbone_bn="eval" keeps stage 1's BatchNorm statistics as well, so the whole backbone state
    # must come back bit-identical (the default re-estimates them: tests/test_fidelity.py).
    spec = stage_two_spec(stage1_spec, "lws", epochs=2, backbone_bn="eval")
    res = run(spec, store, CPU)
    assert store.status(spec) == "done" and store.has_weights(spec)
    cfg = stage_two_config(stage1_spec, "lws", epochs=2, device="cpu", backbone_bn="eval")
    tr = ClassifierTrainer(cfg, stage1_dir, progress=False)
    tr.load_checkpoint(store.folder(spec) / CHECKPOINT_FILE)
    head = tr.model.fc
    assert isinstance(head, LWSClassifier)
    trainable = [n for n, p in tr.model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.scales"]
    ckpt = torch.load(stage1_dir / CHECKPOINT_FILE, weights_only=True)["model"]
    assert torch.equal(head.base_weight, ckpt["fc.weight"]) and torch.equal(head.base_bias, ckpt["fc.bias"])
    assert not torch.equal(head.scales.detach(), torch.ones(10))  # the scales did move
    assert_bit_identical(backbone_state(tr.model), {k: v for k, v in ckpt.items() if not k.startswith("fc.")})
    assert res.config["method"] == "lws" and len(res.history) == 2


def test_tau_zero_is_plain_classifier_without_bias(stage1_dir, stage1_spec):
    tr = TauNormTrainer(stage_two_config(stage1_spec, "tau_norm", tau=0.0, device="cpu"), stage1_dir, progress=False)
    ckpt = torch.load(stage1_dir / CHECKPOINT_FILE, weights_only=True)["model"]
    assert isinstance(tr.model.fc, TauNormClassifier)
    x, _ = tr.test_set.batch(torch.arange(8))
    with torch.no_grad():
        f = tr.model.features(x)
        torch.testing.assert_close(tr.model(x), f @ ckpt["fc.weight"].T)
        # tau = 1: unit-norm rows, still no bias.
        one = TauNormClassifier(tr.model.stage1_fc, 1.0)
        torch.testing.assert_close(one.weight.norm(dim=1), torch.ones(10))


def test_tau_norm_result_and_sweep(stage1_dir, stage1_spec, store):
    spec = stage_two_spec(stage1_spec, "tau_norm", tau=1.0)
    res = run(spec, store, CPU)
    assert TrainResult.load(store.folder(spec)).config["tau"] == 1.0
    sweep = tau_sweep(stage1_dir, taus=[0.0, 0.5, 1.0, 2.0], device="cpu")
    assert [d["tau"] for d in sweep] == [0.0, 0.5, 1.0, 2.0]
    assert sweep[2]["top1"] == pytest.approx(res.last.top1)
    assert all(len(d["per_class"]) == 10 for d in sweep)


# --------------------------------------------------------------------------------- bad input


def test_missing_checkpoint(stage1_spec, tmp_path):
    cfg = stage_two_config(stage1_spec, "crt", device="cpu")  # needs no checkpoint
    with pytest.raises(FileNotFoundError, match="no stage-1 checkpoint"):
        ClassifierTrainer(cfg, tmp_path / "nothing_here", progress=False)
    with pytest.raises(FileNotFoundError, match="no stage-1 checkpoint"):
        tau_sweep(tmp_path / "nothing_here", taus=[1.0], device="cpu")


def test_unfinished_checkpoint(stage1_dir, stage1_spec, tmp_path):
    state = torch.load(stage1_dir / CHECKPOINT_FILE, weights_only=True)
    state["epoch"] = 1
    (tmp_path / "half").mkdir()
    torch.save(state, tmp_path / "half" / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="unfinished"):
        ClassifierTrainer(stage_two_config(stage1_spec, "crt", device="cpu"), tmp_path / "half", progress=False)


def test_mismatched_num_classes(stage1_dir, stage1_spec):
    opts = {**DATA["data_options"], "num_classes": 5}
    with pytest.raises(ValueError, match="data_options"):
        stage_two_spec(stage1_spec, "crt", data_options=opts)
    cfg = stage_two_config(stage1_spec, "crt", data_options=opts, device="cpu")  # built by hand
    with pytest.raises(ValueError, match="dataset.*data_options"):
        ClassifierTrainer(cfg, stage1_dir, progress=False)


def test_mismatched_architecture(stage1_dir, stage1_spec, tmp_path):
    with pytest.raises(ValueError, match="model"):
        stage_two_spec(stage1_spec, "crt", model="resnet18_cifar")
    cfg = stage_two_config(stage1_spec, "crt", model="resnet18_cifar", device="cpu")
    with pytest.raises(ValueError, match="architecture"):
        ClassifierTrainer(cfg, stage1_dir, progress=False)
    # A checkpoint whose weights do not fit the architecture its configuration names.
    state = torch.load(stage1_dir / CHECKPOINT_FILE, weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("layers.2.4")}
    (tmp_path / "broken").mkdir()
    torch.save(state, tmp_path / "broken" / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="does not fit architecture"):
        ClassifierTrainer(stage_two_config(stage1_spec, "crt", device="cpu"), tmp_path / "broken", progress=False)


def test_changed_stage1_is_another_stage2_run(stage1_spec, store):
    """Stage 2 is tied to its stage-1 run by the spec: a stage 1 with another recipe gives another
    stage-2 run (same stage-2 config, another key and folder), trained on the new stage 1."""
    crt = stage_two_spec(stage1_spec, "crt", epochs=1)
    first = run(crt, store, CPU)
    changed = joint_spec(TrainConfig(**DATA, epochs=2, warmup_epochs=1, lr=0.05))
    crt2 = stage_two_spec(changed, "crt", epochs=1)
    assert crt2.config == crt.config and crt2.key != crt.key
    assert store.status(changed) == "pending" and store.status(crt2) == "pending"
    second = run(crt2, store, CPU)
    assert store.status(changed) == "done" and store.has_weights(changed)  # stage 1 trained first, in its own folder
    assert store.folder(crt2) != store.folder(crt) and store.status(crt) == "done"
    assert second.meta["spec"]["deps"]["stage1"]["key"] == changed.key
    assert first.meta["spec"]["deps"]["stage1"]["key"] == stage1_spec.key
    assert second.last.per_class != first.last.per_class


def test_a_finished_stage2_run_loads_without_its_stage1(stage1_spec, store, monkeypatch):
    """Loading a finished run reads its folder only: a stage 1 whose checkpoint (or whole folder)
    is gone is not retrained for it, as it was when every dependency ran first. Training one that
    needs it, or asking for the stage-2 weights, still rebuilds the stage 1."""
    import shutil

    from ltbench import runs as runs_mod

    crt = stage_two_spec(stage1_spec, "crt", epochs=1)
    first = run(crt, store, CPU)
    shutil.rmtree(store.folder(stage1_spec))
    trained = []
    real = runs_mod._train
    monkeypatch.setattr(runs_mod, "_train", lambda spec, *a, **k: trained.append(spec.key) or real(spec, *a, **k))
    again = run(crt, store, CPU)
    assert trained == [] and store.status(stage1_spec) == "pending"
    assert again.last.per_class == first.last.per_class
    (store.folder(crt) / CHECKPOINT_FILE).unlink()
    run(crt, store, CPU, require_weights=True)  # the weights need the stage 1: it is trained, then stage 2
    assert trained == [stage1_spec.key, crt.key] and store.has_weights(crt) and store.status(stage1_spec) == "done"


@pytest.mark.parametrize("tau", [-0.1, 5.5, float("nan"), float("inf"), "1", True])
def test_tau_outside_sane_range(stage1_spec, tau):
    with pytest.raises(ValueError, match="tau"):
        stage_two_config(stage1_spec, "tau_norm", tau=tau)
    with pytest.raises(ValueError, match="tau"):
        stage_two_spec(stage1_spec, "tau_norm", tau=tau)


def test_tau_sweep_rejects_bad_taus(stage1_dir):
    with pytest.raises(ValueError, match="tau"):
        tau_sweep(stage1_dir, taus=[0.5, 9.0], device="cpu")
    with pytest.raises(ValueError, match="empty"):
        tau_sweep(stage1_dir, taus=[], device="cpu")


def test_unknown_method_and_inconsistent_recipe(stage1_dir, stage1_spec):
    with pytest.raises(ValueError, match="method='crt2'.*crt.*lws.*tau_norm"):
        stage_two_config(stage1_spec, "crt2")
    with pytest.raises(ValueError, match="method='crt2'.*crt.*lws.*tau_norm"):
        stage_two_spec(stage1_spec, "crt2")
    with pytest.raises(ValueError, match="method='rs' needs sampler='class_balanced'"):
        stage_two_config(stage1_spec, "rs", sampler="instance")
    with pytest.raises(ValueError, match="StageTwoConfig"):
        ClassifierTrainer(TrainConfig(**DATA, epochs=1, warmup_epochs=0), stage1_dir, progress=False)
    # A stage-2 run without its stage-1 run, or with a recipe of another method.
    with pytest.raises(ValueError, match=r"method 'crt' needs dependencies \['stage1'\], got none"):
        make_spec("crt", StageTwoConfig(**DATA))
    with pytest.raises(ValueError, match="method 'lws' needs a StageTwoConfig with method='lws', got method='crt'"):
        make_spec("lws", stage_two_config(stage1_spec, "crt"), deps={"stage1": stage1_spec})


@pytest.mark.parametrize("epochs,frac,expected", [(200, 0.8, 160), (10, 0.8, 8), (1, 0.8, 0), (2, 0.9, 1), (5, 0.0, 0)])
def test_base_config_fractional_drw_epoch_stays_inside_the_run(epochs, frac, expected):
    from ltbench.experiments import base_config
    cfg = base_config("synthetic", 10, epochs=epochs, n_max=20, test_per_class=5, drw_epoch=frac)
    assert cfg.drw_epoch == expected


@pytest.mark.parametrize("frac", [1.0, -0.1, 1.5])
def test_base_config_rejects_fraction_outside_unit_interval(frac):
    from ltbench.experiments import base_config
    with pytest.raises(ValueError, match=r"drs_epoch=.*\[0, 1\)"):
        base_config("synthetic", 10, epochs=10, drs_epoch=frac)


@pytest.mark.parametrize("epochs,batch,lr,warmup", [(200, 128, 0.1, 5), (8, 64, 0.05, 1), (1, 32, 0.025, 1), (30, 256, 0.2, 3)])
def test_base_config_recipe_scales_lr_with_batch_and_warmup_with_length(epochs, batch, lr, warmup):
    from ltbench.experiments import base_config
    cfg = base_config("synthetic", 10, epochs=epochs, batch_size=batch)
    assert cfg.lr == pytest.approx(lr) and cfg.warmup_epochs == warmup
    assert base_config("synthetic", 10, epochs=epochs, batch_size=batch, lr=0.3).lr == 0.3  # explicit lr wins


def test_base_config_rejects_bad_batch_size_before_anything():
    from ltbench.experiments import base_config
    with pytest.raises(ValueError, match=r"batch_size=0"):
        base_config("synthetic", 10, batch_size=0)


def test_checkpoint_with_other_num_classes_is_refused_before_training(stage1_spec, store):
    # The saved config still matches; the weights and counts are those of a 5-class run.
    path = store.folder(stage1_spec) / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    state["num_classes"], state["counts"] = 5, list(state["counts"])[:5]
    torch.save(state, path)
    crt = stage_two_spec(stage1_spec, "crt", epochs=1)
    with pytest.raises(ValueError, match=r"has num_classes=5 .*but the data of this config has num_classes=10"):
        run(crt, store, CPU)
    assert not (store.folder(crt) / "metrics.json").exists() and not (store.folder(crt) / CHECKPOINT_FILE).exists()


def test_bbn_run_as_stage1_is_refused_with_a_reason(tmp_path):
    from ltbench.bbn import BBNConfig

    bbn_cfg = BBNConfig.from_train_config(TrainConfig(**DATA, epochs=1, warmup_epochs=0))
    bbn = bbn_spec(bbn_cfg)
    # Refused when the spec is built, before anything is trained.
    with pytest.raises(ValueError, match="dependency stage1 must be a whole-network run .*got method 'bbn'"):
        stage_two_spec(bbn, "crt", epochs=1)
    with pytest.raises(ValueError, match="dependency stage1 must be a whole-network run"):
        make_spec("crt", stage_two_config(bbn, "crt", epochs=1), deps={"stage1": bbn})
    assert not tmp_path.joinpath("runs").exists()
    # A BBN run's folder handed to the trainer directly is refused too, with the reason.
    store = RunStore(tmp_path)
    train(bbn_cfg, store, progress=False)
    with pytest.raises(ValueError, match="is a BBN run .* point stage1 at a CE, RW or RS run"):
        ClassifierTrainer(stage_two_config(bbn, "crt", epochs=1, device="cpu"), store.folder(bbn), progress=False)


def test_stage_two_config_is_refused_by_the_plain_trainer(stage1_spec, tmp_path):
    cfg = stage_two_config(stage1_spec, "crt", epochs=1, device="cpu")
    with pytest.raises(ValueError, match="Trainer trains a TrainConfig, got cfg of type StageTwoConfig; run it as method "
                                         "'crt' / 'lws'"):
        Trainer(cfg, progress=False)
    with pytest.raises(ValueError, match="method 'joint' trains a TrainConfig, got config of type StageTwoConfig"):
        train(cfg, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
