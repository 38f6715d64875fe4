"""The fast path (ltbench.fastpath): padded static shapes and whole-step graphs equal the eager path.

Equivalence is checked on CPU in float64 (model, data and optimiser; the losses compute in float32
as always), so any difference larger than rounding is a bug, not float32 noise: ResNet-32's
float32 gradients at initialisation already differ by ~1% between two correct BatchNorm
implementations. Most graph tests use ``backend="aot_eager"`` (dynamo + AOT autograd: the
capture, the in-place updates and the static tensors, without inductor's C++ compile); one test
compiles with inductor.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltbench import fastpath
from ltbench.bbn import BBNConfig, BBNTrainer
from ltbench.config import TrainConfig
from ltbench.engine import Trainer
from ltbench.fsa import FSATrainer, phase2_config
from ltbench.losses import LOSSES, build_loss, supports_mask
from ltbench.methods import joint_spec
from ltbench.mixup import MixupTrainer
from ltbench.models import MODELS, CifarResNet, CosineClassifier
from ltbench.ohem import OHEMTrainer
from ltbench.runs import ExecOptions, RunStore, run
from ltbench.two_stage import ClassifierTrainer, stage_two_config

if "tiny_cifar" not in MODELS:
    MODELS.register("tiny_cifar")(lambda num_classes=10: CifarResNet([1, 1, 1], [4, 8, 16], num_classes, shortcut="A"))

SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=60, device="cpu", warmup_epochs=1, epochs=3,
           data_options={"n_train_per_class": 60, "n_test_per_class": 10, "image_size": 16}, batch_size=64,
           model="tiny_cifar")  # 302 training images: batches of 64 end with one of 46


def _cfg(cls=TrainConfig, **kw):
    return cls(**{**SYN, **kw})


class _Double:
    """A DeviceDataset view whose batches are float64."""

    def __init__(self, ds):
        self.ds = ds

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def __len__(self):
        return len(self.ds)

    def batch(self, *a, **k):
        x, y = self.ds.batch(*a, **k)
        return x.double(), y

    def iterate(self, *a, **k):
        for x, y in self.ds.iterate(*a, **k):
            yield x.double(), y


def _double(trainer):
    trainer.model.double()
    trainer.train_set, trainer.test_set = _Double(trainer.train_set), _Double(trainer.test_set)
    return trainer


def _pair(make, mode, backend=None, epochs=3, double=True):
    """Train two copies of a trainer for ``epochs``: eager, and on the fast path."""
    eager, fast = make(), make()
    if double:
        _double(eager), _double(fast)
    fp = fastpath.attach(fast, mode, backend=backend, strict=True)
    rows = []
    for e in range(epochs):
        rows.append((eager.train_epoch(e), fast.train_epoch(e)))
    return eager, fast, fp, rows


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-6)).item()


def _assert_same_state(eager, fast, rows, tol=1e-5):
    for ra, rb in rows:
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
    for (name, a), b in zip(eager.model.state_dict().items(), fast.model.state_dict().values()):
        assert _rel(a, b) < tol, name  # weights, BatchNorm statistics, num_batches_tracked
    for (name, a), b in zip(eager.loss_fn.state_dict().items(), fast.loss_fn.state_dict().values()):
        assert _rel(a, b) < 1e-5, name  # stateful losses' statistics (float32), DRW weights
    sa, sb = eager.optimizer.state_dict()["state"], fast.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert _rel(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) < tol


# --------------------------------------------------------------------------------------------
# 1. Static shapes: masked losses and BatchNorm


@pytest.mark.parametrize("name", sorted(LOSSES.names()))
def test_masked_loss_equals_the_unpadded_loss_for_every_loss(name):
    counts = [40, 20, 10, 5, 2]
    torch.manual_seed(0)
    z = torch.randn(7, 5, dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2, 3, 4, 1, 0])
    n = 5
    mask = (torch.arange(7) < n).double()
    a, b = build_loss(name, counts), build_loss(name, counts)
    assert supports_mask(a)
    weight = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0]) if hasattr(a, "set_class_weight") else None
    for step in range(3):  # stateful losses: the statistics of each step feed the next
        if weight is not None and step == 1:
            a.set_class_weight(weight), b.set_class_weight(weight)  # DRW's weighted mean
        za, zb = z[:n].clone().requires_grad_(), z.clone().requires_grad_()
        la, lb = a(za, y[:n]), b(zb, y, mask=mask)
        la.backward(), lb.backward()
        assert lb.item() == pytest.approx(la.item(), rel=1e-12, abs=1e-12)
        assert torch.allclose(zb.grad[:n], za.grad, rtol=1e-10, atol=1e-12)
        assert torch.equal(zb.grad[n:], torch.zeros_like(zb.grad[n:]))  # padding gets no gradient
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(va, vb, rtol=1e-6, atol=1e-9), k  # padding is not in the statistics
        z = z + 0.1


def test_a_loss_without_a_mask_is_refused_with_a_mask():
    class Plain(nn.Module):
        pass

    assert not supports_mask(Plain())
    loss = build_loss("ce", [3, 2])

    class NoMask(type(loss)):
        def compute(self, z, y):
            return z.sum()

    with pytest.raises(ValueError, match="no sample mask"):
        NoMask([3, 2])(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), mask=torch.ones(2))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_equals_batch_norm_of_the_real_samples(momentum):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, momentum=momentum).double()
    nn.init.uniform_(bn.weight), nn.init.uniform_(bn.bias)
    ref = copy.deepcopy(bn)
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.float64)
    g = torch.randn(4, 4, 5, 5, dtype=torch.float64)
    for _ in range(2):
        x.grad = None
        yr = ref(x[:4])
        (yr * g).sum().backward()
        gx, gw = x.grad.clone(), ref.weight.grad.clone()
        x.grad = None
        y = fastpath.masked_batch_norm(bn, x, mask)
        (y[:4] * g).sum().backward()
        assert torch.allclose(y[:4], yr, atol=1e-12)
        assert torch.allclose(x.grad, gx, atol=1e-12) and torch.equal(x.grad[4:], torch.zeros_like(x.grad[4:]))
        assert torch.allclose(bn.weight.grad, gw, atol=1e-12)
        bn.weight.grad = None
        ref.weight.grad = None
    with torch.no_grad():
        assert torch.allclose(fastpath.masked_batch_norm(copy.deepcopy(bn), x, mask, track=False)[:4],
                              copy.deepcopy(ref)(x[:4]), atol=1e-12)
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(bn, k).double(), getattr(ref, k).double(), atol=1e-12), k


@pytest.mark.parametrize("bn_mode", ["none", "eval", "train"])
def test_padded_batch_gives_the_loss_and_gradients_of_the_unpadded_batch(bn_mode):
    """Closed-form check: a conv net without BatchNorm, with BatchNorm in eval mode, and in
    training mode (masked BatchNorm), on a batch of 5 padded to 8."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 6, 3, padding=1)] + ([nn.BatchNorm2d(6)] if bn_mode != "none" else []) + \
        [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)]
    net = nn.Sequential(*layers).double()
    net.train(bn_mode != "eval")
    padded_net = copy.deepcopy(net)
    masks = fastpath.BatchMasks()
    fastpath.install_masked_bn(padded_net, masks)
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    (xp, yp), mask = fastpath.pad_batch(8, x, y)
    assert torch.equal(xp[5:], x[:3]) and mask.tolist() == [1] * 5 + [0] * 3
    masks.by_size[8] = mask.double()
    loss = build_loss("focal", [9, 5, 3, 2])
    la = loss(net(x), y)
    lb = loss(padded_net(xp), yp, mask=mask)
    la.backward(), lb.backward()
    assert lb.item() == pytest.approx(la.item(), rel=1e-12)
    for (name, p), q in zip(net.named_parameters(), padded_net.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-10, atol=1e-13), name
    for (name, b), c in zip(net.named_buffers(), padded_net.buffers()):
        assert torch.allclose(b.double(), c.double(), atol=1e-12), name


@pytest.mark.parametrize("kw", [dict(loss="ce"), dict(loss="focal"), dict(loss="sigmoid_eql"),
                                dict(loss="ldam", classifier="cosine", drw_epoch=1), dict(loss="cb_focal", drs_epoch=2)],
                         ids=lambda kw: kw["loss"])
def test_static_shapes_equal_the_eager_path(kw):
    """Three epochs ending in a padded batch of 46: weights, BatchNorm statistics, momentum and
    the stateful losses' statistics equal the eager loop's."""
    eager, fast, fp, rows = _pair(lambda: Trainer(_cfg(**kw), progress=False), "static")
    _assert_same_state(eager, fast, rows)
    assert fp.record()["padded"] and fp.record()["bn_layers_masked"] == 7


# --------------------------------------------------------------------------------------------
# 2. Whole-step graphs


def _stage1_dir(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("stage1"))
    spec = joint_spec(_cfg(epochs=1, batch_size=32))
    run(spec, store, ExecOptions(device="cpu", progress=False), require_weights=True)
    return store.folder(spec)


@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory):
    return _stage1_dir(tmp_path_factory)


GRAPH_CASES = {
    "ce": lambda d: Trainer(_cfg(), progress=False),
    "ldam_drw": lambda d: Trainer(_cfg(loss="ldam", classifier="cosine", drw_epoch=1), progress=False),
    "sigmoid_eql": lambda d: Trainer(_cfg(loss="sigmoid_eql"), progress=False),
    "bbn": lambda d: BBNTrainer(_cfg(BBNConfig, drop_last=False), progress=False),
    "ohem_two_pass": lambda d: OHEMTrainer(_cfg(), keep_ratio=0.5, mode="two_pass", progress=False),
    "ohem_masked": lambda d: OHEMTrainer(_cfg(), keep_ratio=0.5, mode="masked", progress=False),
    "mixup": lambda d: MixupTrainer(_cfg(), alpha=1.0, progress=False),
    "crt": lambda d: ClassifierTrainer(stage_two_config(_cfg().to_dict(), "crt", epochs=3, drop_last=False,
                                                        batch_size=64), d, progress=False),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_whole_step_graph_equals_the_eager_path(case, stage1_dir):
    eager, fast, fp, rows = _pair(lambda: GRAPH_CASES[case](stage1_dir), "graph", backend="aot_eager")
    _assert_same_state(eager, fast, rows)
    rec = fp.record()
    assert rec["mode"] == "graph" and rec["compile"]["fullgraph"]
    assert rec["graphs"] == (2 if case == "ldam_drw" else 1)  # DRW: one graph before, one after
    if case.startswith("ohem"):
        assert torch.equal(eager._mined, fast._mined) and torch.equal(eager._seen, fast._seen)
    if case == "bbn":
        assert any(t is fast._alpha for t in fp.trainer_state(fast)) and float(fast._alpha) == float(eager._alpha)
        alpha = fast._alpha
        fast.on_epoch_start(1)
        assert fast._alpha is alpha  # updated in place: the graph reads one static tensor
    assert rec["step"] == type(fast).step_loss.__qualname__  # the trainer's own step, traced


def test_whole_step_graph_fsa_phase2(stage1_dir):
    """FSA phase II (float32: its feature bank is float32), partial last batch included."""
    cfg = phase2_config(json.loads((stage1_dir / "metrics.json").read_text())["config"], iterations=3,
                        batch_size=48, evaluations=1)
    cfg = cfg.replace(sampler_params={"num_samples": 130})  # 3 batches of 48, 48, 34

    eager, fast, fp, rows = _pair(lambda: FSATrainer(cfg, stage1_dir, progress=False), "graph",
                                  backend="aot_eager", epochs=1, double=False)
    _assert_same_state(eager, fast, rows, tol=2e-5)
    assert fp.record()["graphs"] == 1


@pytest.mark.slow
def test_whole_step_graph_with_inductor():
    """The real compiler (inductor, the default backend on CPU) on the small network, with a
    stateful loss and a padded last batch (about a minute of C++ compilation on 2 cores)."""
    eager, fast, fp, rows = _pair(lambda: Trainer(_cfg(loss="sigmoid_eql"), progress=False), "graph", epochs=2)
    _assert_same_state(eager, fast, rows)
    rec = fp.record()
    assert rec["graphs"] == 1 and "backend" not in rec["compile"] and rec["compile_seconds"] > 0


@pytest.mark.slow
def test_whole_step_graph_resnet32():
    """ResNet-32 itself (31 masked BatchNorm layers, the shortcut), one epoch of 128 + 128 + a
    padded 46 (16-pixel images), traced whole (dynamo + AOT autograd)."""
    cfg = dict(model="resnet32", epochs=1, batch_size=128)
    eager, fast, fp, rows = _pair(lambda: Trainer(_cfg(**cfg), progress=False), "graph", backend="aot_eager",
                                  epochs=1)
    _assert_same_state(eager, fast, rows)
    assert fp.record()["graphs"] == 1 and fp.record()["bn_layers_masked"] == 31


class LogitAdjusted(Trainer):
    """A user's method as a ``step_loss`` override: logit-adjusted CE (the log prior added to the
    logits), with a state tensor of its own."""

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        counts = torch.tensor(self.counts, dtype=torch.float32, device=self.device)
        self.log_prior = (counts / counts.sum()).log()

    def step_loss(self, x, y, *, mask=None):
        with self.autocast():
            logits = self.forward(x)
        return self.criterion(logits.float() + self.log_prior + 0.0 * logits.sum(), y, mask)


@pytest.mark.parametrize("mode", ["static", "graph"])
def test_a_user_step_loss_runs_on_the_fast_path_and_equals_its_eager_run(mode):
    eager, fast, fp, rows = _pair(lambda: LogitAdjusted(_cfg(loss="focal"), progress=False), mode,
                                  backend="aot_eager" if mode == "graph" else None)
    _assert_same_state(eager, fast, rows)
    assert fastpath.unsupported_reason(fast) is None and fast.step_runner is fp
    rec = ExecOptions.fast_record(fast, fp)  # metrics.json["execution"]["fast"]
    assert rec["mode"] == mode and rec["step"] == "LogitAdjusted.step_loss" and rec["padded"]
    assert rec["graphs"] == (1 if mode == "graph" else 0)
    # the eager run really ran the override: plain focal training differs
    plain = _double(Trainer(_cfg(loss="focal"), progress=False))
    assert plain.train_epoch(0)["train_loss"] != pytest.approx(rows[0][0]["train_loss"], rel=1e-6)


def test_a_step_input_kinds_mismatch_is_refused():
    class Extra(Trainer):
        def step_inputs(self, batch, epoch, generator):
            x, y = super().step_inputs(batch, epoch, generator)
            return x, y, torch.zeros(())

        def step_loss(self, x, y, extra, *, mask=None):
            return super().step_loss(x, y, mask=mask) + extra

    t = Extra(_cfg(epochs=1), progress=False)
    fastpath.attach(t, "static", strict=True)
    with pytest.raises(ValueError, match="step_inputs returned 3 tensors but step_input_kinds names 2"):
        t.train_epoch(0)


def test_unsupported_trainers_stay_eager_with_a_reason():
    class Custom(Trainer):
        def training_step(self, batch, epoch, generator):
            return super().training_step(batch, epoch, generator)

    t = Custom(_cfg(epochs=1), progress=False)
    with pytest.warns(UserWarning, match="own training_step"):
        assert fastpath.attach(t, "graph") is None
    assert t.step_runner is None
    with pytest.raises(ValueError, match="own training_step"):
        fastpath.attach(t, "static", strict=True)
    with pytest.raises(ValueError, match="invalid fast"):
        ExecOptions(fast="turbo")


def test_fast_option_is_not_part_of_the_run_and_is_recorded(tmp_path):
    cfg = _cfg(epochs=2, checkpoint_every=1)
    spec = joint_spec(cfg)
    eager = run(spec, RunStore(tmp_path / "eager"), ExecOptions(device="cpu", progress=False))
    fast = run(spec, RunStore(tmp_path / "fast"), ExecOptions(device="cpu", progress=False, fast="static"))
    assert eager.meta["key"] == fast.meta["key"] == spec.key
    a = json.loads((RunStore(tmp_path / "eager").folder(spec) / "metrics.json").read_text())
    b = json.loads((RunStore(tmp_path / "fast").folder(spec) / "metrics.json").read_text())
    assert "fast" not in a["execution"] and b["execution"]["fast"]["mode"] == "static"
    assert set(a) == set(b)
    assert b["top1_last"] == pytest.approx(a["top1_last"], abs=15)  # float32, chaotic: same fields, close
    # a fast-path checkpoint resumes on the eager path (the optimiser state is the usual one)
    ck = torch.load(RunStore(tmp_path / "fast").folder(spec) / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and all("momentum_buffer" in s for s in ck["optimizer"]["state"].values())


# --------------------------------------------------------------------------------------------
# 4. LDAM's cosine head under bf16 autocast


def test_cosine_head_is_float32_under_bf16_autocast():
    torch.manual_seed(0)
    head = CosineClassifier(64, 10)
    x = torch.randn(32, 64)
    ref = head(x.double().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16())
    assert out.dtype == torch.float32
    # bf16 inputs lose ~3 digits; the cosine itself is computed in float32 (no bf16 matmul error on top)
    exact = F.linear(F.normalize(x.bfloat16().double(), dim=1), F.normalize(head.weight.double(), dim=1))
    assert (out.double() - exact).abs().max() < 1e-6
    assert (ref - head(x)).abs().max() == 0  # outside autocast: unchanged


def test_many_runs_in_one_process_do_not_hit_the_recompile_limit():
    """Every FastPath compiles its own code object: a notebook or an executor process training
    many runs never reaches dynamo's recompile limit (8 per code object)."""
    import torch._dynamo

    limit = torch._dynamo.config.recompile_limit
    for i in range(limit + 2):
        t = Trainer(_cfg(epochs=1, seed=i, batch_size=151), progress=False)
        fp = fastpath.attach(t, "graph", backend="eager", strict=True)
        t.train_epoch(0)
        assert fp.record()["graphs"] == 1
