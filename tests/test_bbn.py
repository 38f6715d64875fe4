"""Tests for ltbench.bbn: adaptors, the BBN network, its training step and trainer (docs/methods.md §5, §7)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ltbench.bbn import (ADAPTORS, BBNConfig, BBNNetwork, BBNTrainer, adaptor_alpha, bbn_alpha_divisor, build_bbn,
                         cumulative_alpha, load_branches)
from ltbench.config import TrainConfig
from ltbench.engine import TrainResult
from ltbench.models import build_model
from ltbench.samplers import ReversedSampler, build_sampler

DATA = dict(dataset="synthetic", data_options={"n_train_per_class": 30, "n_test_per_class": 10},
            imbalance_ratio=10, device="cpu", batch_size=32, seed=0)


def small_cfg(**kw) -> BBNConfig:
    return BBNConfig(**{**DATA, "epochs": 2, "warmup_epochs": 1, **kw})


@pytest.fixture(scope="module")
def trainer() -> BBNTrainer:
    return BBNTrainer(small_cfg(), progress=False)


# --------------------------------------------------------------------------------- adaptors


def test_cumulative_alpha_ends_and_middle():
    E = 200
    assert cumulative_alpha(1, E) == 1.0  # conventional branch only at the start
    assert cumulative_alpha(E // 2 + 1, E) == pytest.approx(0.75)  # (100 / 200) ** 2 = 0.25
    assert cumulative_alpha(E, E) == pytest.approx(1 - (199 / 200) ** 2)
    assert 0 < cumulative_alpha(E, E) < 0.01
    alphas = [cumulative_alpha(e, E) for e in range(1, E + 1)]
    assert all(a > b for a, b in zip(alphas, alphas[1:]))  # strictly decreasing


@pytest.mark.parametrize("epoch,total", [(0, 10), (11, 10), (1, 0), (1.0, 10), (True, 10)])
def test_cumulative_alpha_rejects_bad_epochs(epoch, total):
    with pytest.raises(ValueError, match="epoch"):
        cumulative_alpha(epoch, total)


ADAPTOR_FORMULAS = {  # written independently of ltbench.bbn, from BBN Table 4 / the released combiner
    "parabolic_decay": lambda e, E: 1 - ((e - 1) / E) ** 2,
    "linear_decay": lambda e, E: 1 - (e - 1) / E,
    "cosine_decay": lambda e, E: math.cos((e - 1) / E * math.pi / 2),
    "constant": lambda e, E: 0.5,
    "parabolic_increment": lambda e, E: ((e - 1) / E) ** 2,
}


def test_adaptor_registry_names():
    assert ADAPTORS.names() == sorted(ADAPTOR_FORMULAS)
    assert ADAPTORS.get("parabolic_decay") is cumulative_alpha


@pytest.mark.parametrize("name", sorted(ADAPTOR_FORMULAS))
def test_each_adaptor(name):
    E = 200
    for e in (1, 2, 50, 101, 150, 199, 200):
        assert adaptor_alpha(name, e, E) == pytest.approx(ADAPTOR_FORMULAS[name](e, E), abs=1e-12)
        assert 0.0 <= adaptor_alpha(name, e, E) <= 1.0


def test_unknown_adaptor_lists_valid_names():
    with pytest.raises(ValueError, match="parabolic_decay.*parabolic_increment"):
        adaptor_alpha("step", 1, 10)
    with pytest.raises(ValueError, match="bbn_adaptor='nope'.*cosine_decay"):
        small_cfg(bbn_adaptor="nope").validate()


# --------------------------------------------------------------------------------- samplers


def test_reversed_sampler_frequencies_proportional_to_nmax_over_nc():
    counts = [500, 120, 40, 10, 5]
    labels = np.repeat(np.arange(len(counts)), counts)
    s = build_sampler("reversed", labels, seed=3, num_samples=200_000)
    got = np.bincount(labels[s.global_indices(0).numpy()], minlength=len(counts)) / 200_000
    w = max(counts) / np.array(counts, dtype=float)
    np.testing.assert_allclose(got, w / w.sum(), atol=0.005)


def test_trainer_samplers_default_uniform_and_reversed(trainer):
    conv, reb = trainer.samplers["conventional"], trainer.samplers["rebalancing"]
    assert conv.name == "instance" and isinstance(reb, ReversedSampler)
    labels = trainer.data.train.targets
    counts = np.array(trainer.counts, dtype=float)
    # Conventional branch: each sample once per epoch (class frequencies = n_c / N exactly).
    np.testing.assert_array_equal(np.bincount(labels[conv.global_indices(0)].numpy(), minlength=10), counts)
    # Re-balancing branch over many epochs: P_c ∝ n_max / n_c.
    drawn = torch.cat([reb.global_indices(e) for e in range(300)])
    got = np.bincount(labels[drawn].numpy(), minlength=10) / len(drawn)
    w = counts.max() / counts
    np.testing.assert_allclose(got, w / w.sum(), atol=0.01)


def test_epoch_batches_pair_the_two_samplers(trainer):
    batches = list(trainer.epoch_batches(0))
    # BBN's loop drops the last partial batch (DataLoader(drop_last=True) in main/train.py).
    assert trainer.cfg.drop_last is True
    assert sum(trainer.counts) % 32 != 0 and len(batches) == sum(trainer.counts) // 32
    for idx_c, idx_r in batches:
        assert idx_c.shape == idx_r.shape == (32,)


def test_keep_partial_batch_when_asked():
    tr = BBNTrainer(small_cfg(drop_last=False), progress=False)
    assert len(list(tr.epoch_batches(0))) == math.ceil(sum(tr.counts) / 32)


@pytest.mark.parametrize("bad", [dict(bbn_sampler="upside_down"), dict(sampler="nope")])
def test_unknown_sampler_lists_valid_names(bad):
    with pytest.raises(ValueError, match="unknown sampler.*class_balanced.*reversed"):
        small_cfg(**bad).validate()


def test_other_bad_configs():
    with pytest.raises(ValueError, match="BBNConfig"):
        BBNTrainer(TrainConfig(**{**DATA, "epochs": 1, "warmup_epochs": 0}), progress=False)
    with pytest.raises(ValueError, match="drs_epoch"):
        small_cfg(drs_epoch=1).validate()
    with pytest.raises(ValueError, match="classifier"):
        small_cfg(classifier="cosine").validate()
    with pytest.raises(ValueError, match="unknown option"):
        BBNTrainer(small_cfg(bbn_sampler_params={"kk": 4}), progress=False)


def test_from_train_config_keeps_fields():
    base = TrainConfig(**{**DATA, "epochs": 3, "warmup_epochs": 1})
    cfg = BBNConfig.from_train_config(base, bbn_adaptor="cosine_decay")
    assert cfg.epochs == 3 and cfg.dataset == "synthetic" and cfg.bbn_adaptor == "cosine_decay"
    assert cfg.bbn_sampler == "reversed" and cfg.schedule == "step_bbn"  # docs/methods.md §7: BBN's lr variant
    assert BBNConfig.from_train_config(base, schedule="cosine").schedule == "cosine"
    # BBN's loop drops the last partial batch, whatever the base run did; an option overrides it.
    assert base.drop_last is False and cfg.drop_last is True and BBNConfig().drop_last is True
    assert BBNConfig.from_train_config(base, drop_last=False).drop_last is False


# --------------------------------------------------------------------------------- network


def test_network_structure_resnet32():
    net = build_bbn("resnet32", 10)
    # trunk = stem + 5 + 5 + first 4 blocks of stage 3; one block per branch; fc 128 -> C.
    assert [len(s) for s in net.trunk.layers] == [5, 5, 4]
    assert net.fc.in_features == 128 and net.fc.out_features == 10
    cb = dict(net.cb_block.named_parameters())
    rb = dict(net.rb_block.named_parameters())
    assert cb.keys() == rb.keys() and cb["conv1.weight"].shape == (64, 64, 3, 3)
    assert not torch.equal(cb["conv1.weight"], rb["conv1.weight"])  # independent initialisation
    resnet32 = sum(p.numel() for p in build_model("resnet32", 10).parameters())
    block = 2 * (64 * 64 * 9) + 2 * (2 * 64)  # two 3x3 convs and two BatchNorms
    assert sum(p.numel() for p in net.parameters()) == resnet32 + block + 64 * 10  # + 64 more fc inputs


def test_classifier_keeps_pytorch_default_init():
    """BBN's Network builds its classifier outside the Kaiming-initialised backbone: nn.Linear's
    default, weight and bias uniform in +-1/sqrt(fan_in) (Kaiming normal would give std sqrt(2/128))."""
    torch.manual_seed(0)
    fc = build_bbn("resnet32", 10).fc
    w, b = fc.weight.detach(), fc.bias.detach()
    bound = 1 / math.sqrt(128)
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert (b != 0).all()  # not zeroed
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)  # uniform's std, not Kaiming's 0.125


def test_alpha_divisor_rule():
    assert [bbn_alpha_divisor(E) for E in (90, 180, 200, 100, 2, 181)] == [100, 200, 200, 100, 2, 181]
    for bad in (0, 9.0, True):
        with pytest.raises(ValueError, match="total_epochs must be an int >= 1"):
            bbn_alpha_divisor(bad)


@pytest.mark.parametrize("E,last", [(90, 1 - 0.89 ** 2), (180, 1 - (179 / 200) ** 2), (200, 1 - (199 / 200) ** 2)])
def test_trainer_alpha_uses_the_divisor(E, last):
    tr = BBNTrainer(small_cfg(epochs=E), progress=False)
    assert tr.alpha(0) == 1.0 and tr.alpha(E - 1) == pytest.approx(last, abs=1e-15)
    if E != 200:
        assert min(tr.alpha(t) for t in range(E)) > 0.19  # BBN's iNaturalist runs never go below ~0.2


def test_inference_is_fc_of_concatenated_branch_features():
    torch.manual_seed(0)
    net = build_bbn("resnet32", 7).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        t = net.trunk(x)
        f_c = net.cb_block(t).mean(dim=(2, 3))
        f_r = net.rb_block(t).mean(dim=(2, 3))
        expected = torch.cat([f_c, f_r], 1) @ net.fc.weight.T + net.fc.bias
        torch.testing.assert_close(net(x), expected)
        torch.testing.assert_close(net(x, x, 0.5), expected)  # alpha 0.5 with the factor 2
        torch.testing.assert_close(net.forward_head(net.forward_features(x)), expected)
        br = net.branch_logits(x)
        torch.testing.assert_close(br["combined"], expected)
        # A 64-wide matmul against the 128-wide one's halves: the CPU's BLAS may sum in another order
        # (3.6e-5 on logits of about 7 on a Xeon with AMX), so float32's default rtol is too tight.
        tol = dict(rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(br["conventional"], 2 * f_c @ net.fc.weight[:, :64].T + net.fc.bias, **tol)
        torch.testing.assert_close(br["rebalancing"], 2 * f_r @ net.fc.weight[:, 64:].T + net.fc.bias, **tol)


def test_trainer_predict_uses_inference_rule(trainer):
    x, _ = trainer.test_set.batch(torch.arange(6))
    trainer.model.eval()
    with torch.no_grad():
        f_c, f_r = trainer.model.branch_features(x)
        torch.testing.assert_close(trainer.predict(x), trainer.model.fc(torch.cat([f_c, f_r], 1)))
    trainer.model.train()


def test_training_rule_batches_pass_trunk_separately():
    """BatchNorm sees each batch alone: logits equal separate trunk passes, not a joint one."""
    torch.manual_seed(1)
    net = build_bbn("resnet32", 4).train()
    x_c, x_r = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32) * 3 + 1
    a = 0.3
    out = net(x_c, x_r, a)
    ref = copy.deepcopy(net)
    f_c = ref.cb_block(ref.trunk(x_c)).mean(dim=(2, 3))
    f_r = ref.rb_block(ref.trunk(x_r)).mean(dim=(2, 3))
    torch.testing.assert_close(out, ref.fc(torch.cat([2 * a * f_c, 2 * (1 - a) * f_r], 1)))
    joint = ref.trunk(torch.cat([x_c, x_r]))  # what a shared pass would give: different BN statistics
    f_c_joint = ref.cb_block(joint[:8]).mean(dim=(2, 3))
    assert not torch.allclose(f_c, f_c_joint, atol=1e-4)


def _grad_norms(model: BBNNetwork):
    parts = {"trunk": model.trunk, "cb_block": model.cb_block, "rb_block": model.rb_block, "fc": model.fc}
    return {k: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None) for k, m in parts.items()}


def test_training_step_gradient_flows_to_both_branches(trainer):
    batch = next(iter(trainer.epoch_batches(1)))
    gen = torch.Generator().manual_seed(0)
    trainer.on_epoch_start(1)  # epoch 2 of 2: alpha = 1 - (1/2)^2 = 0.75
    assert float(trainer._alpha) == pytest.approx(0.75)
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.training_step(batch, 1, gen)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    g = _grad_norms(trainer.model)
    assert all(v > 0 for v in g.values()), g
    # The loss is alpha CE(z, y_c) + (1 - alpha) CE(z, y_r) with z = fc(2 [alpha f_c, (1 - alpha) f_r]).
    idx_c, idx_r = batch
    gen = torch.Generator().manual_seed(0)
    x_c, y_c = trainer.train_set.batch(idx_c, augment=True, generator=gen)
    x_r, y_r = trainer.train_set.batch(idx_r, augment=True, generator=gen)
    z = trainer.model(x_c, x_r, 0.75)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, 0.75 * ce(z, y_c) + 0.25 * ce(z, y_r))
    # alpha = 1 (first epoch): the re-balancing branch gets no gradient.
    trainer.on_epoch_start(0)
    trainer.model.zero_grad(set_to_none=True)
    trainer.training_step(batch, 0, torch.Generator().manual_seed(0)).backward()
    g = _grad_norms(trainer.model)
    assert g["rb_block"] == 0 and g["cb_block"] > 0 and g["trunk"] > 0
    trainer.model.zero_grad(set_to_none=True)


def test_timm_bbn_duplicates_last_block():
    pytest.importorskip("timm")
    net = build_bbn("timm/resnet18", 5)
    assert len(net.trunk.backbone.layer4) == 1  # resnet18's layer4 had 2 blocks; the last is the branch block
    assert net.fc.in_features == 2 * 512
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f_c, f_r = net.branch_features(x)
        torch.testing.assert_close(net(x), net.fc(torch.cat([f_c, f_r], 1)))
    with pytest.raises(ValueError, match="unknown timm model"):
        build_bbn("timm/not_a_model_xyz", 5)


# --------------------------------------------------------------------------------- end to end


def test_train_end_to_end_records_options(tmp_path):
    # here, so that the other tests do not depend on the run entry point
    from ltbench.methods import bbn_spec
    from ltbench.runs import RunStore, train

    cfg = small_cfg(bbn_adaptor="linear_decay")
    store = RunStore(tmp_path / "store")
    res = train(cfg, store, progress=False)  # a BBNConfig is run as method 'bbn'
    assert res.meta["key"] == bbn_spec(cfg).key and res.meta["spec"]["method"] == "bbn"
    out = store.folder(res.meta["key"])
    assert [h["alpha"] for h in res.history] == [1.0, 0.5]
    loaded = TrainResult.load(out)
    assert loaded.config["bbn_adaptor"] == "linear_decay" and loaded.config["bbn_sampler"] == "reversed"
    assert loaded.config["schedule"] == "step_bbn"
    branches = load_branches(out)
    assert set(branches) == {"combined", "conventional", "rebalancing"}
    assert branches["combined"].top1 == pytest.approx(res.last.top1)
    assert len(branches["rebalancing"].per_class) == 10
    # A finished run is loaded, not retrained; a restored trainer predicts like the saved one.
    again = train(cfg, store, progress=False)
    assert again.train_seconds == loaded.train_seconds
    restored = BBNTrainer.from_checkpoint(out)
    assert restored.evaluate().top1 == pytest.approx(res.last.top1)
