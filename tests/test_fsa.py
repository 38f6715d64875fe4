"""Tests for ltbench.fsa: feature space augmentation (Chu et al., ECCV 2020; docs/methods.md §8)."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from ltbench.config import TrainConfig
from ltbench.data import long_tailed_counts
from ltbench import engine
from ltbench.engine import TrainResult, load_data
from ltbench.fsa import (
    AugmentedBatch, FeatureAugmenter, FSATrainer, class_activation_maps, check_thresholds, confusing_classes,
    confusion_scores, decompose, load_phase1, mix_features, normalize_maps, phase2_config, split_head_tail,
)
from ltbench.methods import fsa_spec, joint_spec
from ltbench.models import resnet32
from ltbench.runs import ExecOptions, RunStore, run

SYNTH = {"n_train_per_class": 60, "n_test_per_class": 20, "image_size": 16}


def synthetic_cfg(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", imbalance_ratio=10, data_options=dict(SYNTH), epochs=2, warmup_epochs=1,
                batch_size=32, device="cpu", checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- CAMs and masks


def test_cam_equals_per_position_class_score_of_a_linear_head():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 5, 4, 6, generator=g)
    fc = torch.nn.Linear(5, 7)
    # The per-position class score: the classifier applied at every position (a 1x1 convolution).
    per_position = F.conv2d(f, fc.weight[:, :, None, None], fc.bias)
    raw = class_activation_maps(f, fc.weight, normalize=False)
    torch.testing.assert_close(raw + fc.bias[None, :, None, None], per_position)
    # Min-max normalisation removes the bias: the normalised CAM is the normalised score map.
    torch.testing.assert_close(class_activation_maps(f, fc.weight), normalize_maps(per_position))
    # The class-indexed form picks each sample's own map.
    y = torch.tensor([6, 0, 3])
    torch.testing.assert_close(class_activation_maps(f, fc.weight, y), normalize_maps(per_position)[torch.arange(3), y])


def test_cam_of_a_cifar_resnet_averages_to_its_logits():
    model = resnet32(num_classes=4).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        fmap = model.forward_features(x)
        logits = model(x)
    cams = class_activation_maps(fmap, model.fc.weight, normalize=False)
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + model.fc.bias, logits, rtol=1e-4, atol=1e-4)


def test_normalised_maps_span_zero_to_one_and_constant_maps_are_zero():
    m = normalize_maps(torch.randn(4, 3, 5, 5) * 10)
    assert torch.allclose(m.amin(dim=(-2, -1)), torch.zeros(4, 3))
    assert torch.allclose(m.amax(dim=(-2, -1)), torch.ones(4, 3))
    assert torch.equal(normalize_maps(torch.full((1, 3, 3), 2.5)), torch.zeros(1, 3, 3))


@pytest.mark.parametrize("tau_s,tau_g", [(0.8, 0.2), (0.5, 0.5), (0.9, 0.05)])
def test_decomposition_masks_respect_the_thresholds(tau_s, tau_g):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(4, 6, 5, 5, generator=g)
    cam = normalize_maps(torch.rand(4, 5, 5, generator=g))
    d = decompose(f, cam, tau_s, tau_g)
    assert torch.equal(d.specific_mask, cam >= tau_s) and torch.equal(d.generic_mask, cam <= tau_g)
    keep_s, keep_g = d.specific_mask[:, None].expand_as(f), d.generic_mask[:, None].expand_as(f)
    assert torch.equal(d.specific[keep_s], f[keep_s]) and bool((d.specific[~keep_s] == 0).all())
    assert torch.equal(d.generic[keep_g], f[keep_g]) and bool((d.generic[~keep_g] == 0).all())
    if tau_g < tau_s:
        assert not bool((d.specific_mask & d.generic_mask).any())


@pytest.mark.parametrize("tau_s,tau_g", [(1.0, 0.2), (0.8, 0.0), (0.3, 0.4), (1.2, 0.5), (0.8, -0.1),
                                         (float("nan"), 0.2), (True, 0.2), ("0.8", 0.2)])
def test_bad_thresholds_raise(tau_s, tau_g):
    with pytest.raises(ValueError, match="tau"):
        check_thresholds(tau_s, tau_g)
    with pytest.raises(ValueError, match="tau"):
        decompose(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3), tau_s, tau_g)


@pytest.mark.parametrize("tau_s,tau_g,name", [(float("inf"), 0.2, "tau_s"), (0.8, float("nan"), "tau_g"),
                                              ("0.8", 0.2, "tau_s"), (0.8, None, "tau_g")])
def test_non_numeric_threshold_errors_state_the_valid_range(tau_s, tau_g, name):
    bad = tau_s if name == "tau_s" else tau_g
    with pytest.raises(ValueError, match=rf"{name} must be a finite real number in \(0, 1\).*got {name}={bad!r}"):
        check_thresholds(tau_s, tau_g)


def test_equal_thresholds_put_a_position_exactly_at_the_threshold_in_both_parts():
    f = torch.arange(1.0, 1.0 + 2 * 4).view(1, 2, 2, 2)
    cam = torch.tensor([[[0.0, 0.5], [0.5, 1.0]]])
    d = decompose(f, cam, 0.5, 0.5)
    both = torch.tensor([[[False, True], [True, False]]])
    assert torch.equal(d.specific_mask, cam >= 0.5) and torch.equal(d.generic_mask, cam <= 0.5)
    assert torch.equal(d.specific_mask & d.generic_mask, both)
    # The features at those positions are kept, unchanged, in both parts.
    assert torch.equal(d.specific[:, :, both[0]], f[:, :, both[0]])
    assert torch.equal(d.generic[:, :, both[0]], f[:, :, both[0]])
    assert float(d.specific[0, :, 0, 0].abs().sum()) == 0 and float(d.generic[0, :, 1, 1].abs().sum()) == 0


# --------------------------------------------------------------------------- head/tail and confusing classes


def test_head_tail_rule_on_hand_made_counts():
    # 50 + 30 + 10 = 90 of 100: exactly 90% closes the head.
    assert split_head_tail([50, 30, 10, 5, 5]) == ([0, 1, 2], [3, 4])
    # 50 + 30 = 80 < 89.1 of 99; + 9 = 89 < 89.1, so the 4th class joins the head.
    assert split_head_tail([50, 30, 9, 5, 5]) == ([0, 1, 2, 3], [4])
    # Classes are sorted by size, whatever their index.
    assert split_head_tail([5, 50, 10, 30, 5]) == ([1, 3, 2], [0, 4])
    # CIFAR-10-LT IR100 (docs/methods.md §1 counts): 5000+2997+1796+1077+645 = 11515 >= 0.9 * 12406.
    assert split_head_tail(long_tailed_counts(5000, 10, 100)) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert split_head_tail([10, 10]) == ([0, 1], [])
    with pytest.raises(ValueError):
        split_head_tail([0, 0])
    with pytest.raises(ValueError, match=r"head_fraction must be .*in \(0, 1\], got head_fraction=1.5"):
        split_head_tail([3, 2], head_fraction=1.5)
    with pytest.raises(ValueError, match=r"head_fraction must be a finite real number in \(0, 1\]"):
        split_head_tail([3, 2], head_fraction=float("nan"))


def test_confusing_class_ranking_on_hand_made_scores():
    probs = torch.tensor([
        [0.70, 0.10, 0.15, 0.05],  # class 0
        [0.50, 0.20, 0.20, 0.10],  # class 0
        [0.05, 0.60, 0.05, 0.30],  # class 1
        [0.30, 0.10, 0.20, 0.40],  # class 3
        [0.10, 0.50, 0.20, 0.20],  # class 3
    ])
    labels = torch.tensor([0, 0, 1, 3, 3])
    s = confusion_scores(probs, labels, 4)
    torch.testing.assert_close(s[0], torch.tensor([0.60, 0.15, 0.175, 0.075]))
    torch.testing.assert_close(s[3], torch.tensor([0.20, 0.30, 0.20, 0.30]))
    assert torch.equal(s[2], torch.zeros(4))  # no sample of class 2
    top = confusing_classes(s, n_f=3)
    assert top[0].tolist() == [2, 1, 3]
    assert top[1].tolist() == [3, 0, 2]
    assert top[3].tolist() == [1, 0, 2]  # own class excluded; tie 0 vs 2 broken by index
    assert not bool((top == torch.arange(4)[:, None]).any())
    with pytest.raises(ValueError, match=r"n_f must be .*<= num_classes - 1 = 3.*got n_f=4"):
        confusing_classes(s, n_f=4)


# --------------------------------------------------------------------------- mixing


def test_mix_takes_every_position_from_exactly_one_source():
    g = torch.Generator().manual_seed(2)
    m, k, h, w = 64, 3, 4, 4
    specific, generic = torch.full((m, k, h, w), 2.0), torch.full((m, k, h, w), -1.0)
    gamma = torch.rand(m, generator=g)
    mixed, source = mix_features(specific, generic, gamma, g)
    assert source.shape == (m, h, w) and source.dtype == torch.bool
    assert torch.equal(mixed, torch.where(source[:, None], specific, generic))
    # All channels of a position come from the same source.
    assert bool(((mixed == 2.0).all(dim=1) | (mixed == -1.0).all(dim=1)).all())
    # gamma is the probability of the specific source.
    _, all_generic = mix_features(specific, generic, torch.zeros(m), g)
    _, all_specific = mix_features(specific, generic, torch.ones(m), g)
    assert not bool(all_generic.any()) and bool(all_specific.all())
    frac = source.float().mean(dim=(1, 2))
    assert float((frac - gamma).abs().mean()) < 0.15


def test_augmenter_keeps_the_tail_label_and_draws_confusing_partners():
    g = torch.Generator().manual_seed(3)
    c, k, h, w = 4, 5, 3, 3
    bank_labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 3 + [3] * 2)
    bank = torch.randn(len(bank_labels), k, h, w, generator=g)
    confusing = torch.tensor([[1, 2], [0, 2], [0, 1], [0, 1]])
    is_tail = torch.tensor([False, False, True, True])
    aug = FeatureAugmenter(bank, bank_labels, confusing, is_tail, torch.randn(c, k, generator=g), n_a=3)
    f = torch.randn(8, k, h, w, generator=g) + 0.1
    y = torch.tensor([0, 2, 3, 1, 2, 3, 0, 3])
    out = aug.augment(f, y, g)
    assert out.features.shape == (24, k, h, w)
    assert torch.equal(out.labels, y.repeat_interleave(3))  # the tail sample's own class
    assert torch.equal(out.valid, is_tail[y].repeat_interleave(3))
    assert torch.equal(bank_labels[out.partner], out.partner_class)
    assert bool((out.partner_class[:, None] == confusing[out.labels]).any(dim=1).all())
    specific = aug.specific(f, y).specific.repeat_interleave(3, dim=0)
    expected = torch.where(out.source[:, None], specific, bank[out.partner])
    assert torch.equal(out.features, expected)


# --------------------------------------------------------------------------- phase II through the engine


CPU = ExecOptions(device="cpu", progress=False)


@pytest.fixture(scope="module")
def phase1(tmp_path_factory):
    """A run store with a finished phase-I CE run, and that run's spec."""
    store = RunStore(tmp_path_factory.mktemp("fsa"))
    spec = joint_spec(synthetic_cfg())
    run(spec, store, CPU)
    return store, spec


@pytest.fixture(scope="module")
def phase1_dir(phase1):
    store, spec = phase1
    return store.folder(spec)


def test_phase2_leaves_the_backbone_bit_identical(phase1_dir, tmp_path):
    before = load_phase1(phase1_dir)["model"]
    cfg = phase2_config(load_phase1(phase1_dir)["config"], iterations=4, batch_size=32, evaluations=2)
    assert (cfg.epochs, cfg.sampler_params["num_samples"], cfg.lr, cfg.schedule) == (2, 64, 0.001, "constant")
    trainer = FSATrainer(cfg, phase1_dir, progress=False)
    assert [n for n, _ in trainer.trainable_parameters()] == ["fc.weight", "fc.bias"]
    result = trainer.fit(tmp_path / "phase2")
    after = trainer.model.state_dict()
    backbone = [n for n in before if not n.startswith("fc.")]
    assert any("running_mean" in n for n in backbone)
    for n in backbone:
        assert torch.equal(before[n], after[n]), n
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert math.isfinite(result.last.top1) and len(result.history) == 2
    assert trainer.tail_classes == split_head_tail(trainer.counts)[1]
    assert result.extras["fsa"]["tail"] == trainer.tail_classes and len(result.extras["fsa"]["confusing"]) == 10


def test_fsa_runs_are_keyed_by_their_settings(phase1, tmp_path):
    store = RunStore(shutil.copytree(phase1[0].root, tmp_path / "store"))
    spec = fsa_spec(phase1[1], iterations=2, batch_size=16, evaluations=1)
    assert spec.dependencies == {"phase1": phase1[1]}
    r1 = run(spec, store, CPU)
    folder = store.folder(spec)
    before = _snapshot(folder)
    r2 = run(fsa_spec(phase1[1], iterations=2, batch_size=16, evaluations=1), store, CPU)
    assert r2.last.top1 == r1.last.top1 and r2.train_seconds == r1.train_seconds  # reused
    assert _snapshot(folder) == before
    # The FSA settings are the run's parameters: stored with the spec and in the result's extras.
    assert r2.meta["spec"]["params"] == {"tau_s": 0.8, "tau_g": 0.2, "n_f": 3, "n_a": 3, "head_fraction": 0.9}
    assert r2.extras["fsa"]["tau_s"] == 0.8
    other = fsa_spec(phase1[1], iterations=2, batch_size=16, evaluations=1, tau_s=0.7)
    assert other.key != spec.key and other.config == spec.config  # other thresholds: another run
    assert store.status(other) == "pending"
    r3 = run(other, store, CPU)
    assert r3.train_seconds != r1.train_seconds and r3.extras["fsa"]["tau_s"] == 0.7  # trained
    assert store.folder(other) != folder and _snapshot(folder) == before  # the first run is untouched
    assert store.status(spec) == "done" and store.status(other) == "done"


def test_mismatched_phase1_checkpoint_is_rejected_before_training(phase1_dir, tmp_path):
    p1 = load_phase1(phase1_dir)["config"]
    five = phase2_config(p1, iterations=2, data_options=dict(SYNTH, num_classes=5))
    with pytest.raises(ValueError, match=r"data_options: Phase I .* vs Phase II .*'num_classes': 5"):
        FSATrainer(five, phase1_dir, progress=False)
    # Data handed in directly bypasses the config fields; the class count still has to match.
    with pytest.raises(ValueError, match="num_classes=10 but the data"):
        FSATrainer(phase2_config(p1, iterations=2), phase1_dir, data=load_data(five), progress=False)
    with pytest.raises(ValueError, match="resnet32"):
        FSATrainer(phase2_config(p1, iterations=2, model="resnet18_cifar"), phase1_dir, progress=False)
    with pytest.raises(ValueError, match="other data.*imbalance_ratio: Phase I 10 vs Phase II 5"):
        FSATrainer(phase2_config(p1, iterations=2, imbalance_ratio=5), phase1_dir, progress=False)
    with pytest.raises(ValueError, match="loss must be 'ce'"):
        FSATrainer(phase2_config(p1, iterations=2, loss="focal"), phase1_dir, progress=False)
    with pytest.raises(FileNotFoundError, match="Phase-I"):
        FSATrainer(phase2_config(p1, iterations=2), tmp_path / "nothing", progress=False)
    unfinished = dict(load_phase1(phase1_dir), epoch=1)
    (tmp_path / "unfinished").mkdir()
    torch.save(unfinished, tmp_path / "unfinished" / "checkpoint.pt")
    with pytest.raises(ValueError, match="unfinished"):
        FSATrainer(phase2_config(p1, iterations=2), tmp_path / "unfinished", progress=False)
    with pytest.raises(ValueError, match="tau"):
        FSATrainer(phase2_config(p1, iterations=2), phase1_dir, tau_s=0.1, tau_g=0.3, progress=False)


def test_phase1_trained_on_another_data_seed_or_profile_is_rejected(phase1_dir, monkeypatch):
    p1 = load_phase1(phase1_dir)["config"]
    assert p1["data_seed"] == 0 and p1["lt_profile"] == "exp"
    loaded = []
    monkeypatch.setattr(engine, "load_data", lambda cfg: loaded.append(cfg))
    # The class counts do not depend on the data seed (only which images are kept), so only the
    # config comparison catches it, and it must do so before any data is loaded.
    with pytest.raises(ValueError, match=r"other data .*data_seed: Phase I 0 vs Phase II 1") as exc:
        FSATrainer(phase2_config(p1, iterations=2, data_seed=1), phase1_dir, progress=False)
    assert "lt_profile:" not in str(exc.value) and loaded == []
    with pytest.raises(ValueError, match=r"lt_profile: Phase I 'exp' vs Phase II 'step'; "
                                         r"data_seed: Phase I 0 vs Phase II 2"):
        FSATrainer(phase2_config(p1, iterations=2, data_seed=2, lt_profile="step"), phase1_dir, progress=False)
    with pytest.raises(ValueError, match=r"dataset: Phase I 'synthetic' vs Phase II 'cifar10'"):
        FSATrainer(phase2_config(p1, iterations=2, dataset="cifar10", data_options={}), phase1_dir, progress=False)
    assert loaded == []
    monkeypatch.undo()
    # The matching config (only the training schedule differs) is accepted.
    trainer = FSATrainer(phase2_config(p1, iterations=2, batch_size=16), phase1_dir, progress=False)
    assert trainer.counts == list(load_phase1(phase1_dir)["counts"])


FSA_ARGS = dict(iterations=2, batch_size=16, evaluations=1)


@pytest.fixture(scope="module")
def finished_fsa(phase1, tmp_path_factory):
    """A store holding a finished phase-I run and a finished FSA run on it; the FSA run's spec."""
    store = RunStore(shutil.copytree(phase1[0].root, tmp_path_factory.mktemp("fsa_done") / "store"))
    spec = fsa_spec(phase1[1], **FSA_ARGS)
    run(spec, store, CPU)
    return store, phase1[1], spec


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad,match", [
    (dict(n_f=0), r"n_f must be a positive int \(>= 1\), got n_f=0"),
    (dict(n_a=0), r"n_a must be a positive int \(>= 1\), got n_a=0"),
    (dict(n_a=2.0), r"n_a must be a positive int \(>= 1\), got n_a=2.0"),
    (dict(head_fraction=0.0), r"head_fraction must be in \(0, 1\], got head_fraction=0.0"),
    (dict(head_fraction=1.5), r"head_fraction must be in \(0, 1\], got head_fraction=1.5"),
    (dict(tau_s=float("inf")), r"tau_s must be a finite real number in \(0, 1\).*got tau_s=inf"),
    (dict(tau_s=0.1, tau_g=0.3), r"0 < tau_g <= tau_s < 1.*tau_s=0.1, tau_g=0.3"),
    (dict(iterations=0), r"iterations must be a positive int \(>= 1\), got iterations=0"),
    (dict(evaluations=0), r"evaluations must be a positive int \(>= 1\), got evaluations=0"),
    (dict(lr=-1.0), r"invalid lr=-1.0: must be a (positive|finite) number"),
    (dict(batch_size=0), r"invalid batch_size=0: must be a positive int"),
    (dict(data_seed=1), r"data_seed: Phase I 0 vs Phase II 1"),
    (dict(loss="focal"), r"loss must be 'ce'.*got loss='focal'"),
    (dict(nonsense=1), r"unknown TrainConfig field\(s\) \['nonsense'\]"),
])
def test_bad_fsa_argument_fails_before_anything_is_written(finished_fsa, bad, match, tmp_path):
    done, phase1_spec, spec = finished_fsa
    store = RunStore(shutil.copytree(done.root, tmp_path / "store"))  # one case destroying it must not fail the others
    assert run(fsa_spec(phase1_spec, **FSA_ARGS), store, CPU).train_seconds == \
        TrainResult.load(done.folder(spec)).train_seconds  # reusable
    before = _snapshot(store.root)
    assert {"metrics.json", "checkpoint.pt", "spec.json", "extras.json"} <= set(_snapshot(store.folder(spec)))
    with pytest.raises(ValueError, match=match):
        run(fsa_spec(phase1_spec, **dict(FSA_ARGS, **bad)), store, CPU)
    assert _snapshot(store.root) == before


def test_n_f_beyond_the_phase1_classes_fails_before_training(finished_fsa, tmp_path):
    """n_f is checked against the phase-I network's classes, known once its checkpoint is read:
    the FSA trainer refuses it before any data is loaded; the finished runs are untouched."""
    done, phase1_spec, spec = finished_fsa
    store = RunStore(shutil.copytree(done.root, tmp_path / "store"))
    before = {f: _snapshot(store.folder(s)) for f, s in (("phase1", phase1_spec), ("fsa", spec))}
    bad = fsa_spec(phase1_spec, **FSA_ARGS, n_f=10)
    with pytest.raises(ValueError, match=r"n_f must be a positive int <= num_classes - 1 = 9 .*got n_f=10"):
        run(bad, store, CPU)
    assert {f: _snapshot(store.folder(s)) for f, s in (("phase1", phase1_spec), ("fsa", spec))} == before
    assert store.status(bad) == "pending"
    assert not {"metrics.json", "checkpoint.pt"} & set(_snapshot(store.folder(bad)) if store.folder(bad).exists() else {})


def test_training_step_puts_the_mixed_tail_features_into_the_loss(phase1_dir):
    p1 = load_phase1(phase1_dir)["config"]
    trainer = FSATrainer(phase2_config(p1, iterations=2, batch_size=16), phase1_dir, progress=False)
    real = trainer.augmenter
    targets = trainer.train_set.targets
    tail = torch.tensor(trainer.tail_classes)
    tail_idx = torch.nonzero(torch.isin(targets, tail)).flatten()[:6]
    head_idx = torch.nonzero(~torch.isin(targets, tail)).flatten()[:4]
    batch = torch.cat([tail_idx, head_idx])
    assert len(tail_idx) == 6 and len(head_idx) == 4

    class Recording:
        """The real augmenter, recording its input and output; ``scale`` rescales the mixed maps."""

        def __init__(self, scale: float = 1.0, valid=None):
            self.scale, self.valid, self.seen = scale, valid, None

        def augment(self, f, y, generator=None):
            out = real.augment(f, y, generator)
            out = out._replace(features=out.features * self.scale,
                               valid=out.valid if self.valid is None else torch.full_like(out.valid, self.valid))
            self.seen = (f.detach().clone(), y.clone(), out)
            return out

    def step(aug):
        trainer.augmenter = aug
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.training_step(batch, 0, torch.Generator().manual_seed(5))
        loss.backward()
        return loss.detach(), trainer.model.fc.weight.grad.clone()

    def expected(seen):
        f, y, out = seen
        fc = trainer.model.fc
        w = fc.weight.detach().clone().requires_grad_(True)
        head = lambda t: F.linear(t.mean(dim=(2, 3)), w, fc.bias.detach())
        ce_real = F.cross_entropy(head(f), y, reduction="none")
        ce_mixed = F.cross_entropy(head(out.features), out.labels, reduction="none")
        v = out.valid.float()
        loss = (ce_real.sum() + (ce_mixed * v).sum()) / (len(y) + v.sum())
        (grad,) = torch.autograd.grad(loss, w)
        return loss.detach(), grad, ce_real.mean().detach()

    rec = Recording()
    loss, grad = step(rec)
    f, y, out = rec.seen
    assert int(out.valid.sum()) == 6 * real.n_a  # every tail sample's N_a maps count
    want, want_grad, real_only = expected(rec.seen)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(grad, want_grad)
    assert abs(float(want) - float(real_only)) > 1e-3  # so ignoring the mixed maps would fail above
    # Scaled mixed maps change the loss and gradient exactly as the formula says.
    rec3 = Recording(scale=3.0)
    loss3, grad3 = step(rec3)
    want3, want_grad3, _ = expected(rec3.seen)
    torch.testing.assert_close(loss3, want3)
    torch.testing.assert_close(grad3, want_grad3)
    assert abs(float(loss3) - float(loss)) > 1e-3
    # Mixed maps marked invalid get weight 0: only the real samples remain.
    none = Recording(valid=False)
    loss0, _ = step(none)
    torch.testing.assert_close(loss0, expected(none.seen)[2])
