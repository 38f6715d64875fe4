"""DDP under torchrun (gloo, CPU): ``python -m ltbench.train`` on 2 processes equals 1 process.

The equality test trains a tiny synthetic image-folder dataset (4 classes, 40 training PNGs of
32x32, 15 test images) streamed through the DataLoader path, once with one process and global
batch 8, once with ``torchrun --nproc-per-node=2`` and 4 images per process, and compares the
final metrics, the curves, the weights and the loss's statistics.

Why they can be equal: the class-balanced sampler's global draw is the same on every rank and the
shards ``global[r::2]`` of a batch are exactly the single-process batch (docs/methods.md §5); each image's
augmentation is seeded by its position in that global draw, not by the rank that loads it; DDP
averages the two ranks' mean-loss gradients, which is the gradient of the mean over the 8 images;
the stateful loss (Sigmoid-EQL) all-reduces its statistics, whose docs/methods.md §4 sums carry no 1/N.

BatchNorm: with BN each rank would normalise its 4 images with their own statistics while one
process normalises all 8 together, so the two runs would legitimately differ. SyncBatchNorm would
make them agree, but PyTorch implements it for GPUs only. The test therefore uses a network
without BatchNorm, timm's ``test_nfnet`` (normaliser-free, scaled weight standardisation: every
sample is processed independently), which isolates what DDP itself must get right. Float
summation order (gradient buckets, all-reduce) is the only difference left: tolerances 1e-5.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from ltbench import distributed as D
from ltbench.config import TrainConfig
from ltbench.engine import EvalResult, TrainResult
from ltbench.losses import build_loss
from ltbench.samplers import EpochSampler, build_sampler
from ltbench.engine import Trainer
from ltbench.train import DistributedMixin, LaunchOptions, distributed_trainer, eval_result_from_predictions

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

STATEFUL = ("sigmoid_eql", "softmax_eql", "softmax_eql_v2", "efl")
COUNTS = [16, 10, 8, 6]
TEST_COUNTS = [4, 4, 4, 3]

# Runs under torchrun: the stateful losses' statistics after two steps on rank-specific data are
# saved, then the same processes run the training entry point.
LAUNCHER = r'''
import sys, torch
from ltbench import distributed as D
from ltbench.losses import build_loss
from ltbench.train import main
info, _ = D.init_distributed("cpu")
torch.manual_seed(100 + info.rank)
record = {}
for name in %r:
    loss = build_loss(name, [30, 10, 5, 2]).train()
    steps = []
    for step in range(2):
        z = (3 * torch.randn(6, 4)).requires_grad_(); y = torch.randint(0, 4, (6,))
        before = {k: v.clone() for k, v in loss.state_dict().items()}
        loss(z, y).backward()
        steps.append({"z": z.detach(), "y": y, "before": before,
                      "after": {k: v.clone() for k, v in loss.state_dict().items()}})
    record[name] = steps
torch.save(record, sys.argv[1] + "/losses_rank%%d.pt" %% info.rank)
D.barrier()
sys.exit(main(sys.argv[2:]))
''' % (STATEFUL,)


def _write_dataset(root: Path) -> None:
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    palette = torch.tensor([[200, 60, 60], [60, 180, 60], [60, 60, 200], [170, 170, 60]], dtype=torch.float32)
    for split, counts in (("train", COUNTS), ("test", TEST_COUNTS)):
        lines = []
        for c, n in enumerate(counts):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = (0.5 * palette[c].view(3, 1, 1) + 120 * torch.rand(3, 32, 32, generator=g)).clamp(0, 255)
                write_png(img.to(torch.uint8), str(folder / f"{i:03d}.png"))
                lines.append(f"{split}/class{c}/{i:03d}.png {c}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _config(tmp: Path) -> Path:
    cfg = {
        "kind": "train",
        "out_dir": str(tmp / "unused"),  # the run store; each test run sets its own with --set
        "train": {
            "dataset": "lt_splits", "data_root": str(tmp / "data"), "model": "timm/test_nfnet",
            "loss": "sigmoid_eql", "sampler": "class_balanced", "sampler_params": {"k": 2},
            "epochs": 2, "batch_size": 8, "lr": 0.002, "schedule": "cosine", "warmup_epochs": 0,
            "device": "cpu", "checkpoint_every": 1,
            "data_options": {"train_split": "train.txt", "test_split": "test.txt", "image_size": 32, "resize": 36},
        },
        "launch": {"num_workers": 1, "eval_batch_size": 4},
    }
    path = tmp / "run.json"
    path.write_text(json.dumps(cfg))
    return path


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _write_dataset(tmp / "data")
    cfg = _config(tmp)
    single = subprocess.run([sys.executable, "-m", "ltbench.train", "--config", str(cfg), "--no-progress",
                             "--set", f"out_dir={tmp / 'single'}"], env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = tmp / "launch.py"
    launcher.write_text(LAUNCHER)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          str(launcher), str(tmp), "--config", str(cfg), "--no-progress", "--set",
                          f"out_dir={tmp / 'ddp'}"], env=_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-4000:]
    return tmp


def _run_dir(runs: Path, store: str) -> Path:
    """The one run folder of the store ``runs/<store>`` (the config's spec decides its key)."""
    from ltbench.train import load_run_config

    key = load_run_config(runs / "run.json").spec.key
    folders = [p for p in (runs / store / "runs").iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [key]
    return folders[0]


def test_two_process_run_equals_one_process_run(runs):
    a = json.loads((_run_dir(runs, "single") / "metrics.json").read_text())
    b = json.loads((_run_dir(runs, "ddp") / "metrics.json").read_text())
    la, lb = a["execution"]["launcher"], b["execution"]["launcher"]
    assert la["world_size"] == 1 and lb["world_size"] == 2 and lb["backend"] == "gloo"
    assert a["execution"]["distributed"] and b["execution"]["distributed"]
    # One run, whatever the number of processes: the same spec, key and config.
    assert a["key"] == b["key"] and a["spec"] == b["spec"] and a["spec"]["method"] == "joint"
    assert a["config"] == b["config"]
    assert b["top1_last"] == pytest.approx(a["top1_last"], abs=1e-9)
    assert b["per_class"] == pytest.approx(a["per_class"], abs=1e-9)
    assert b["confusion"] == a["confusion"] and sum(map(sum, a["confusion"])) == sum(TEST_COUNTS)
    for key in ("ece", "top1_best", "few", "medium"):
        assert b[key] == pytest.approx(a[key], abs=1e-4), key
    ha = (_run_dir(runs, "single") / "curves.csv").read_text().splitlines()
    hb = (_run_dir(runs, "ddp") / "curves.csv").read_text().splitlines()
    assert len(ha) == len(hb) == 3
    for la, lb in zip(ha[1:], hb[1:]):
        assert [float(v) for v in la.split(",")] == pytest.approx([float(v) for v in lb.split(",")], rel=1e-5)
    ca = torch.load(_run_dir(runs, "single") / "checkpoint.pt", weights_only=True)
    cb = torch.load(_run_dir(runs, "ddp") / "checkpoint.pt", weights_only=True)
    assert cb["launch"]["world_size"] == 2
    for k, v in ca["model"].items():
        torch.testing.assert_close(cb["model"][k], v, rtol=1e-5, atol=1e-5, msg=k)
    for k in ("pos_grad", "neg_grad", "ratio"):  # Sigmoid-EQL's all-reduced statistics
        torch.testing.assert_close(cb["loss"][k], ca["loss"][k], rtol=1e-5, atol=1e-6, msg=k)
    assert float(ca["loss"]["pos_grad"].sum()) > 0


def test_only_rank_zero_wrote_and_a_finished_run_is_not_retrained(runs):
    run_dir = _run_dir(runs, "ddp")
    assert sorted(p.name for p in (runs / "ddp").iterdir()) == ["runs"]
    files = sorted(p.name for p in run_dir.iterdir())
    assert files == ["checkpoint.pt", "curves.csv", "extras.json", "metrics.json", "per_class.csv", "spec.json"]
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    again = subprocess.run([sys.executable, "-m", "ltbench.train", "--config", str(runs / "run.json"), "--no-progress",
                            "--set", f"out_dir={runs / 'ddp'}"], env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    assert str(run_dir) in again.stdout  # it reports the run's folder in the store



def test_a_loss_by_reference_trains_under_ddp_as_in_one_process(tmp_path):
    """Each rank imports the user's loss file again from its reference (issue 24): 2 processes
    equal 1, and both record the file's digest."""
    from ltbench import plugins

    _write_dataset(tmp_path / "data")
    cfg_path = _config(tmp_path)
    ref = "examples/logit_adjustment.py:LogitAdjustedLoss"
    cfg = json.loads(cfg_path.read_text())
    cfg["train"].update(loss=ref, loss_params={"tau": 1.0}, epochs=1)
    cfg_path.write_text(json.dumps(cfg))
    single = subprocess.run([sys.executable, "-m", "ltbench.train", "--config", str(cfg_path), "--no-progress",
                             "--set", f"out_dir={tmp_path / 'single'}"], env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "ltbench.train", "--config", str(cfg_path), "--no-progress", "--set",
                          f"out_dir={tmp_path / 'ddp'}"], env=_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-4000:]
    a, b = (json.loads((_run_dir(tmp_path, s) / "metrics.json").read_text()) for s in ("single", "ddp"))
    assert a["spec"]["config"]["loss"] == ref and a["key"] == b["key"]
    assert b["execution"]["launcher"]["world_size"] == 2
    assert a["execution"]["plugins"] == b["execution"]["plugins"] == {ref: plugins.source_digest(ref)}
    assert b["per_class"] == pytest.approx(a["per_class"], abs=1e-9)
    ca, cb = (torch.load(_run_dir(tmp_path, s) / "checkpoint.pt", weights_only=True) for s in ("single", "ddp"))
    for k, v in ca["model"].items():
        torch.testing.assert_close(cb["model"][k], v, rtol=1e-5, atol=1e-5, msg=k)

@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_loss_statistics_identical_across_ranks(runs, name):
    """After each step every rank holds the same state, equal to the shared start plus the sum of
    what each rank's own batch contributes (docs/methods.md §4: per-step sums all-reduced before being added)."""
    ranks = [torch.load(runs / f"losses_rank{r}.pt", weights_only=False)[name] for r in range(2)]
    for step in range(2):
        s0, s1 = ranks[0][step], ranks[1][step]
        assert not torch.equal(s0["z"], s1["z"])  # the ranks saw different data
        for k in s0["after"]:
            torch.testing.assert_close(s0["before"][k], s1["before"][k], rtol=0, atol=0, msg=k)
            torch.testing.assert_close(s0["after"][k], s1["after"][k], rtol=0, atol=0, msg=k)
        expected = {k: s0["before"][k].clone() for k in ("pos_grad", "neg_grad")}
        for s in (s0, s1):  # each rank's contribution, computed alone (no process group here)
            alone = build_loss(name, [30, 10, 5, 2]).train()
            alone.load_state_dict(s["before"])
            alone(s["z"].clone().requires_grad_(), s["y"]).backward()
            for k in expected:
                expected[k] += alone.state_dict()[k] - s["before"][k]
        for k, v in expected.items():
            torch.testing.assert_close(s0["after"][k], v, rtol=1e-5, atol=1e-7, msg=k)
        assert float(s0["after"]["pos_grad"].sum()) > float(s0["before"]["pos_grad"].sum())


# --------------------------------------------------------------------------------------------
# In-process: sharding, gathering, metrics, bad input


@pytest.mark.parametrize("name,opts", [("class_balanced", {"k": 4}), ("instance", {}), ("reversed", {}),
                                       ("progressive", {"total_epochs": 5})])
@pytest.mark.parametrize("world", [2, 3])
def test_sampler_shards_partition_the_global_draw(name, opts, world):
    labels = [c for c, n in enumerate([40, 20, 9, 4, 2]) for _ in range(n)]  # 75 samples
    ref = build_sampler(name, labels, seed=7, **opts)
    for epoch in (0, 3):
        glob = ref.global_indices(epoch)
        shards = [build_sampler(name, labels, seed=7, **opts).shard(r, world, even=False).indices(epoch)
                  for r in range(world)]
        woven = torch.empty_like(glob)
        for r, s in enumerate(shards):
            woven[r::world] = s
        assert torch.equal(woven, glob)  # all shards together are exactly the single-process draw
        even = [build_sampler(name, labels, seed=7, **opts).shard(r, world) for r in range(world)]
        assert len({len(s) for s in even}) == 1 and len(even[0]) == len(labels) // world
        cut = torch.stack([s.indices(epoch) for s in even], 1).reshape(-1)
        assert torch.equal(cut, glob[: len(cut)])  # even shards: a prefix of the global draw


def test_epoch_sampler_drives_a_dataloader_per_rank():
    from torch.utils.data import DataLoader, TensorDataset

    labels = torch.tensor([c for c, n in enumerate([30, 6, 3]) for _ in range(n)])
    ds = TensorDataset(torch.arange(len(labels)), labels)
    glob = build_sampler("class_balanced", labels, seed=1, k=4).global_indices(2)
    got = []
    for r in range(2):
        s = build_sampler("class_balanced", labels, seed=1, k=4).shard(r, 2, even=False)
        loader = DataLoader(ds, batch_size=5, sampler=EpochSampler(s, 2), num_workers=0)
        got.append(torch.cat([i for i, _ in loader]))
        assert len(EpochSampler(s, 2)) == len(got[-1])
    woven = torch.empty_like(glob)
    woven[0::2], woven[1::2] = got
    assert torch.equal(woven, glob)
    with pytest.raises(ValueError, match="LTSampler"):
        EpochSampler(list(range(5)), 0)  # type: ignore[arg-type]


def test_gather_shards_single_process_and_predictions_metrics_match_logits():
    assert torch.equal(D.gather_shards(torch.arange(5), 5), torch.arange(5))
    with pytest.raises(ValueError, match="total=6"):
        D.gather_shards(torch.arange(5), 6)
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(200, 7, generator=g) * 3, torch.randint(0, 7, (200,), generator=g)
    counts = [300, 150, 90, 40, 20, 10, 3]
    ref = EvalResult.from_logits(logits, y, counts)
    conf, pred = logits.softmax(1).max(1)
    got = eval_result_from_predictions(pred, conf, y, counts)
    assert got.top1 == ref.top1 and got.per_class == ref.per_class and got.confusion == ref.confusion
    assert (got.many, got.medium, got.few) == (ref.many, ref.medium, ref.few)
    assert got.ece == pytest.approx(ref.ece, abs=1e-9)
    assert eval_result_from_predictions(pred, conf, y, counts, keep_confusion=False).confusion == []


SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=20, data_options={"n_train_per_class": 20,
           "n_test_per_class": 5}, epochs=1, warmup_epochs=0, device="cpu", batch_size=8)


def test_world_size_that_does_not_divide_the_batch_fails_before_training():
    cls = distributed_trainer(Trainer)
    with pytest.raises(ValueError, match=r"batch_size=8 .* not divisible by the world size 3"):
        cls(TrainConfig(**SYN), dist_info=D.DistInfo(0, 3, 0, "gloo"), progress=False)


def test_sync_batchnorm_on_cpu_is_refused_before_training():
    cls = distributed_trainer(Trainer)
    with pytest.raises(ValueError, match="sync_batchnorm=true needs CUDA"):
        cls(TrainConfig(**SYN), dist_info=D.DistInfo(0, 2, 0, "gloo"), launch=LaunchOptions(sync_batchnorm=True),
            progress=False)


def test_single_process_in_memory_run_is_the_engine_run(tmp_path):
    """Without torchrun, the entry point's trainer on CIFAR-style in-memory data is the engine's."""
    from ltbench.runs import RunStore, train

    cfg = TrainConfig(**SYN)
    ref = train(cfg, tmp_path / "engine", progress=False)
    t = distributed_trainer(Trainer)(cfg, progress=False)
    assert isinstance(t, DistributedMixin) and t.world_size == 1
    got = t.fit(tmp_path / "mixin")
    got.save(tmp_path / "mixin")  # stored as run() stores it (curves to 6 digits), to compare like with like
    assert got.last.per_class == ref.last.per_class and TrainResult.load(tmp_path / "mixin").history == ref.history
    a = torch.load(RunStore(tmp_path / "engine").folder(ref.meta["key"]) / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "mixin" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_env_info_and_bad_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert D.env_info() == D.DistInfo(0, 1, 0, None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5, WORLD_SIZE=2"):
        D.env_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x'"):
        D.env_info()


def test_shipped_configs_are_valid():
    """configs/*.toml: every config loads and validates fully (a stage-2 config with the stage-1
    run its top-level ``stage1`` names, in the same run store); every config carries its
    published number."""
    from ltbench.methods import STAGE2_METHOD_NAMES
    from ltbench.train import load_run_config, read_config_file

    files = sorted((ROOT / "configs").glob("*.toml"))
    assert len(files) >= 10
    raw = {f.name: read_config_file(f) for f in files}
    loaded = {name: load_run_config(ROOT / "configs" / name) for name in raw}
    for name, d in raw.items():
        rc = loaded[name]
        assert isinstance(d["published"]["top1"], float) and d["published"]["source"], name
        assert rc.published == d["published"] and rc.out_dir == d["out_dir"], name
        assert rc.train.dataset in ("imagenet_lt", "inat2018", "places_lt"), name
        if d.get("kind", "train") == "stage2":
            assert "stage1_dir" not in d["train"], name
            assert d["stage1"] in raw and raw[d["stage1"]].get("kind", "train") != "stage2", name
            s1 = loaded[d["stage1"]]
            assert rc.spec.method in STAGE2_METHOD_NAMES and rc.spec.dependencies == {"stage1": s1.spec}, name
            assert s1.out_dir == rc.out_dir, name  # one run store for both stages
            assert (rc.train.dataset, rc.train.model) == (s1.train.dataset, s1.train.model), name
        else:
            assert "stage1" not in d, name
            assert rc.spec.method == {"train": "joint", "bbn": "bbn"}[d.get("kind", "train")], name
            assert rc.train.batch_size % 8 == 0, name  # divisible by 1, 2, 4 and 8 processes
    joint = load_run_config(ROOT / "configs" / "imagenet_lt_resnext50_joint.toml")
    assert (joint.train.model, joint.train.epochs, joint.train.batch_size, joint.train.lr, joint.train.schedule) == \
        ("timm/resnext50_32x4d", 90, 512, 0.2, "cosine")
    bbn = load_run_config(ROOT / "configs" / "inat2018_resnet50_bbn_180e.toml")
    assert type(bbn.train).__name__ == "BBNConfig" and bbn.published["top1"] == 69.62


def test_config_file_errors(tmp_path):
    from ltbench.train import load_run_config

    base = {"out_dir": str(tmp_path / "o"), "train": dict(SYN)}
    cases = [
        ({**base, "trian": {}}, r"unknown top-level key\(s\) \['trian'\]"),
        ({**base, "kind": "joint"}, r"unknown run kind: kind='joint'; valid run kind names: bbn, stage2, train"),
        ({**base, "launch": {"workers": 2}}, r"unknown \[launch\] option\(s\) \['workers'\]"),
        ({**base, "launch": {"num_workers": -1}}, r"launch.num_workers=-1"),
        ({**base, "train": {**SYN, "lr": -1}}, r"invalid lr=-1"),
        ({"train": dict(SYN)}, r"invalid out_dir=None"),
        ({**base, "kind": "stage2", "train": {"epochs": 1}}, r"kind = 'stage2' needs a top-level stage1 = "),
        ({**base, "kind": "stage2", "train": {"method": "crt", "stage1_dir": "x"}},
         r"\[train\]\.stage1_dir is gone: name the stage-1 run's config file"),
        ({**base, "stage1": "other.toml"}, r"stage1 is only for kind = 'stage2'"),
        ({**base, "train": {**SYN, "dataset": "imagenet_lt", "data_options": {"split": "x"}}},
         r"unknown data_options \['split'\] for dataset='imagenet_lt'"),
    ]
    for i, (data, match) in enumerate(cases):
        f = tmp_path / f"c{i}.json"
        f.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=match):
            load_run_config(f)
    f = tmp_path / "c.json"
    f.write_text(json.dumps(base))
    spec = load_run_config(f, ["train.epochs=3", "launch.num_workers=0", f"out_dir={tmp_path / 'x'}"])
    assert spec.train.epochs == 3 and spec.launch.num_workers == 0 and spec.out_dir == str(tmp_path / "x")
    # The config names a run spec; [train]'s execution fields are options, not part of its identity.
    from ltbench.methods import joint_spec

    assert spec.spec == joint_spec(TrainConfig(**SYN).replace(epochs=3))
    assert load_run_config(f, ["train.device=auto", "train.checkpoint_every=3"]).spec == load_run_config(f).spec
    assert load_run_config(f, ["train.lr=0.5"]).spec != load_run_config(f).spec
    with pytest.raises(ValueError, match="unknown section 'trian'"):
        load_run_config(f, ["trian.epochs=3"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_run_config(tmp_path / "nope.toml")
    (tmp_path / "c.yaml").write_text("x: 1")
    with pytest.raises(ValueError, match=r"unknown format '.yaml'; valid: .toml, .json"):
        load_run_config(tmp_path / "c.yaml")
