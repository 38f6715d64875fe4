"""Bring your own method (issue 24): a loss from outside the package is a run like any built-in,
a bad one is refused before any training, and ``ltbench compare`` trains only the user's runs and
loads the baselines from the store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import real_cifar10_root
from test_fastpath import SYN as FASTPATH_SYN
from ltbench import plugins
from ltbench.compare import check_method
from ltbench.config import TrainConfig
from ltbench.losses import build_loss
from ltbench.methods import joint_spec
from ltbench.parameters import ConfigError
from ltbench.runs import ExecOptions, RunStore, run

ROOT = Path(__file__).resolve().parent.parent
LA = "examples/logit_adjustment.py:LogitAdjustedLoss"
BS = "examples/balanced_softmax.py:BalancedSoftmaxLoss"
SYN = {**FASTPATH_SYN, "epochs": 2}  # a tiny synthetic recipe (test_fastpath registers its tiny model)


def test_the_examples_are_the_closed_form_losses():
    counts = [100, 10, 1]
    z = torch.tensor([[100.0, -100.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([1, 2])
    prior = torch.tensor(counts, dtype=torch.float64) / 111
    shifted = z.double() + torch.log(prior)
    expected = torch.nn.functional.cross_entropy(shifted, y)
    la = build_loss(LA, counts, tau=1.0)
    assert torch.allclose(la(z, y).double(), expected, atol=1e-4)
    # Balanced Softmax = logit adjustment with tau 1 (log counts and log prior differ by a constant).
    assert torch.allclose(build_loss(BS, counts)(z, y), la(z, y), atol=1e-5)
    # tau = 0 is plain CE.
    assert torch.allclose(build_loss(LA, counts, tau=0.0)(z, y), torch.nn.functional.cross_entropy(z, y), atol=1e-5)


def _bad(tmp_path: Path, body: str) -> str:
    f = tmp_path / "bad_loss.py"
    f.write_text("import torch\nfrom ltbench.losses import LossBase\n\n\nclass Bad(LossBase):\n"
                 "    def __init__(self, class_counts, k=1.0):\n        super().__init__(class_counts)\n\n"
                 f"    def compute(self, z, y):\n        {body}\n")
    return f"{f}:Bad"


@pytest.mark.parametrize("method, params, match", [
    ("logit_adjustment", {}, "name your loss or Trainer subclass as '<file.py or module>:<Name>'"),
    ("examples/missing.py:X", {}, "file not found; looked for"),
    ("examples/logit_adjustment.py:Missing", {}, "has no 'Missing'; it defines: .*LogitAdjustedLoss"),
    ("no_such_module_xyz:Loss", {}, "module 'no_such_module_xyz' not found"),
    (LA, {"taux": 1.0}, r"unknown hyper-parameter\(s\) \['taux'\]; valid: tau"),
])
def test_a_bad_method_is_refused_before_training_naming_the_problem(tmp_path, method, params, match):
    with pytest.raises(ConfigError, match=match):
        check_method(method, params)


def test_a_malformed_published_number_is_refused_before_training(tmp_path):
    f = tmp_path / "pub_loss.py"
    src = (ROOT / "examples" / "logit_adjustment.py").read_text()
    f.write_text(src.replace('"top1": 77.89', '"top1": "77.89"'))
    with pytest.raises(ConfigError, match=r"PUBLISHED: top1='77.89' must be numbers"):
        check_method(f"{f}:LogitAdjustedLoss", {})
    g = tmp_path / "pub_loss_2.py"  # another file: a reference is imported once per process
    g.write_text(src.replace('"baseline_top1": 71.36', '"baseline": 71.36'))
    with pytest.raises(ConfigError, match=r"PUBLISHED must be a dict with source, .*; missing \['baseline_top1'\]"):
        check_method(f"{g}:LogitAdjustedLoss", {})


@pytest.mark.parametrize("body, match", [
    ("return torch.nn.functional.cross_entropy(z, y, reduction='none')", "must return a scalar tensor"),
    ("return z.sum() * float('nan')", "must be finite"),
    ("return torch.tensor(1.0)", "no finite gradient"),
    ("raise RuntimeError('boom')", "failed on a test batch.*boom"),
])
def test_a_broken_loss_is_refused_with_what_to_fix(tmp_path, body, match):
    ref = _bad(tmp_path, body)
    with pytest.raises(ConfigError, match=match):
        check_method(ref, {})
    with pytest.raises(ValueError, match=match):  # a config naming it fails validation the same way
        TrainConfig(**SYN, loss=ref).validate()


def test_a_loss_by_reference_is_a_run_whose_key_names_it_and_its_parameters(tmp_path, capsys):
    src = tmp_path / "my_loss.py"
    src.write_text((ROOT / "examples" / "logit_adjustment.py").read_text())
    ref = f"{src}:LogitAdjustedLoss"
    a = joint_spec(TrainConfig(**SYN, loss=ref, loss_params={"tau": 1.0}))
    b = joint_spec(TrainConfig(**SYN, loss=ref, loss_params={"tau": 0.5}))
    assert a.key != b.key and a.config["loss"] == ref
    store = RunStore(tmp_path / "store")
    first = run(a, store, ExecOptions(device="cpu", progress=False, compile=False))
    record = json.loads((store.folder(a) / "metrics.json").read_text())["execution"]["plugins"]
    # the loss's source, and the tiny model's, which test_fastpath registers from outside the package
    assert record == {ref: plugins.source_digest(ref), "tiny_cifar": plugins.source_digest("tiny_cifar")}
    capsys.readouterr()
    assert run(a, store).top1_last == first.top1_last  # reused, silently while the source is the same
    assert "source changed" not in capsys.readouterr().err
    src.write_text(src.read_text() + "\n# an edit\n")
    again = run(a, store)
    assert again.top1_last == first.top1_last
    err = capsys.readouterr().err
    assert f"run {a.key} is reused although {ref}: its source changed" in err and "force=True" in err


@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_compare_on_smoke_trains_only_the_users_runs_and_loads_the_baselines(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "LTBENCH_COMPILE": "0"}
    cli = [sys.executable, "-m", "ltbench"]
    base = subprocess.run([*cli, "execute", "--profile", "smoke", "--only", "03", "04",
                           "--results", str(results), "--device", "cpu", "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert base.returncode == 0, base.stdout + base.stderr
    runs = results / "smoke" / "runs"
    before = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    out = subprocess.run([*cli, "compare", "--method", LA, "--param", "tau=1.0", "--profile", "smoke",
                          "--results", str(results), "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    folder = results / "smoke" / "compare" / "LogitAdjustedLoss_tau_1.0"  # the class and its parameters
    record = json.loads((folder / "comparison.json").read_text())
    assert record["trained"] == record["user_runs"] and len(record["user_runs"]) == 1
    assert {"CE", "LDAM-DRW", "cRT", "BBN"} <= set(record["baselines"])
    for keys in record["baselines"].values():  # every baseline was in the store and was loaded, not rewritten
        for k in keys:
            assert (runs / k / "metrics.json").stat().st_mtime_ns == before[k]
    after = {p.parent.name for p in runs.glob("*/metrics.json")}
    assert after - set(before) == set(record["user_runs"])
    # the example's published gain first (declared on its class; IR100, so context on the smoke IR10), then one per baseline
    assert len(record["verdicts"]) == len(record["baselines"]) + 1 and "points" in record["verdicts"][1]
    assert record["verdicts"][0].startswith("Published (official code README") and "context, not checked" in \
        record["verdicts"][0]
    md = (folder / "comparison.md").read_text()
    assert "| LogitAdjustedLoss (tau=1.0)" in md and "| CE" in md
    assert (folder / "per_class_vs_count.png").is_file()
    # A second compare trains nothing.
    again = subprocess.run(out.args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "compare: trained" not in again.stdout
    # A missing baseline is named, with the command that trains it; nothing is trained.
    ce = record["baselines"]["CE"][0]
    (runs / ce / "metrics.json").unlink()
    refused = subprocess.run(out.args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and f"CE [{ce}]" in refused.stderr and "--train-baselines" in refused.stderr


def test_the_harvest_queues_the_examples_right_after_the_cpu_tiers_0_1(tmp_path):
    from ltbench.comparison import plan_comparison
    from ltbench.harvest import QUEUE, _plan

    names = [s.name for s in QUEUE]
    first = names.index("cpu tiers 0-1, seed 0") + 1
    steps = [s for s in QUEUE if s.method]
    assert [s.method for s in steps] == [LA, BS] and [QUEUE.index(s) for s in steps] == [first, first + 1]
    entries = _plan(steps[0], tmp_path / "results", ROOT / "notebooks")
    assert len(entries) == 1 and entries[0].status == "pending"
    cell, baselines, mine = plan_comparison(LA, {"tau": 1.0}, "cpu", notebooks_dir=ROOT / "notebooks")
    assert cell == ("cifar10", 100.0) and [e.spec for e in entries] == mine
    ce, ours = baselines["CE"][0].config, mine[0].config
    assert {k for k in set(ce) | set(ours) if ce.get(k) != ours.get(k)} == {"loss", "loss_params"}
    assert ours["loss"] == LA and ours["loss_params"] == {"tau": 1.0}


STEP_METHOD = (ROOT / "examples" / "logit_adjusted_step.py").read_text()  # copied to tmp files below


def test_a_training_step_method_by_reference_is_a_run_with_its_parameters(tmp_path):
    from ltbench.runs import METHODS, make_spec

    src = tmp_path / "my_step.py"
    src.write_text(STEP_METHOD)
    ref = f"{src}:LogitAdjustedStep"
    m = METHODS.get(ref)
    assert m.name == ref and m.params == {"tau": 1.0} and m.whole_network
    a, b = make_spec(ref, TrainConfig(**SYN)), make_spec(ref, TrainConfig(**SYN), tau=0.0)
    assert a.key != b.key and a.method == ref and b.params == {"tau": 0.0}
    with pytest.raises(ValueError, match=r"does not take parameter\(s\) \['taux'\]; its parameters: tau"):
        make_spec(ref, TrainConfig(**SYN), taux=1.0)
    store, opts = RunStore(tmp_path / "store"), ExecOptions(device="cpu", progress=False, compile=False)
    # tau = 0 adds nothing to the logits: the run is the plain CE run, number for number.
    plain = run(joint_spec(TrainConfig(**SYN)), store, opts)
    zero = run(b, store, opts)
    assert zero.history == plain.history and zero.last.per_class == plain.last.per_class
    shifted = run(a, store, opts)
    assert shifted.history != plain.history
    record = json.loads((store.folder(a) / "metrics.json").read_text())["execution"]["plugins"]
    assert record[ref] == plugins.source_digest(ref) is not None
    # compare takes it as well: the CE recipe trained by the method, its parameters checked up front.
    check_method(ref, {"tau": 0.5})
    with pytest.raises(ConfigError, match=r"does not take parameter\(s\) \['taux'\]"):
        check_method(ref, {"taux": 0.5})


@pytest.mark.parametrize("body, match", [
    ("x = 1", "is a int, not a ltbench.runs.Method or a ltbench.engine.Trainer subclass"),
    ("from ltbench.engine import Trainer\n\n\nclass x(Trainer):\n    def __init__(self, cfg, k, **kw):\n"
     "        super().__init__(cfg, **kw)\n", "parameter 'k' has no default"),
])
def test_a_bad_training_step_method_is_refused_naming_the_problem(tmp_path, body, match):
    from ltbench.runs import make_spec

    src = tmp_path / "bad_step.py"
    src.write_text(body + "\n")
    with pytest.raises(plugins.PluginError, match=match):
        make_spec(f"{src}:x", TrainConfig(**SYN))


ENTRY_POINT_PLUGIN = '''import torch.nn.functional as F
from ltbench.losses import LossBase, register_loss


class Doubled(LossBase):
    def compute(self, z, y, mask=None):
        return 2 * F.cross_entropy(z, y)


def register():
    register_loss("doubled_ce_ep_test")(Doubled)
'''


def _install(tmp_path: Path, monkeypatch, dist: str, source: str, entry: str) -> None:
    """A distribution ``dist`` as pip installs it (its module and its metadata folder on sys.path)
    declaring ``entry`` in the ``ltbench.plugins`` group; the process forgets the entry points it ran."""
    (tmp_path / f"{dist}.py").write_text(source)
    info = tmp_path / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ltbench.plugins]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_DONE", False)
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", [])


def test_an_entry_point_registers_names_that_runs_use_and_record(tmp_path, monkeypatch):
    """A package declaring ``[project.entry-points."ltbench.plugins"]`` registers its loss on the
    first lookup of a name the registry does not know."""
    _install(tmp_path, monkeypatch, "myplug", ENTRY_POINT_PLUGIN, "myplug = myplug:register")
    from ltbench.losses import LOSSES

    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))  # the test's registration does not leak
    monkeypatch.setattr(plugins, "_EXTERNAL", {})
    z, y = torch.tensor([[100.0, -100.0]]), torch.tensor([1])
    assert build_loss("doubled_ce_ep_test", [3, 1])(z, y).item() == pytest.approx(400.0)
    assert plugins.load_entry_points() == ["myplug"] and "doubled_ce_ep_test" in LOSSES.names()
    # the listing (python -m ltbench methods losses) names it with the module that registered it
    assert [line for line in LOSSES.table() if line.startswith("doubled_ce_ep_test")] == [
        "doubled_ce_ep_test [myplug]"]
    assert any(line.startswith("ce ") and "Softmax cross-entropy" in line for line in LOSSES.table())
    cfg = TrainConfig(**SYN, loss="doubled_ce_ep_test")
    assert plugins.digests(cfg.to_dict()) == {
        "doubled_ce_ep_test": plugins.source_digest("doubled_ce_ep_test")} and plugins.source_digest(
        "doubled_ce_ep_test") is not None
    assert plugins.digests(TrainConfig(**SYN).to_dict()) == {}  # built-in names record nothing


def test_a_broken_entry_point_names_itself(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, "brokenplug", "def register():\n    raise RuntimeError('no GPU here')\n",
             "broken = brokenplug:register")
    with pytest.raises(plugins.PluginError, match=r"entry point 'broken' = 'brokenplug:register' of brokenplug "
                                                   r"\(group 'ltbench.plugins'\): calling it failed: RuntimeError: no GPU"):
        build_loss("no_such_loss_anywhere", [3, 1])


USER_SAMPLER = '''from typing import Optional

import torch
from ltbench.samplers import ClassLevelSampler


class PowerSampler(ClassLevelSampler):
    """P_c proportional to n_c ** q."""

    name = "power"

    def __init__(self, labels, *, q: float = 0.5, **options):
        super().__init__(labels, **options)
        self.q = float(q)

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        self._resolve_epoch(epoch)
        w = self.class_counts.to(torch.float64) ** self.q
        return w / w.sum()
'''


def test_a_sampler_by_reference_is_a_sampler_like_a_built_in(tmp_path):
    from ltbench.samplers import build_sampler

    src = tmp_path / "my_sampler.py"
    src.write_text(USER_SAMPLER)
    ref = f"{src}:PowerSampler"
    labels = torch.tensor([0] * 40 + [1] * 10 + [2] * 4)
    mine, builtin = build_sampler(ref, labels, seed=3, q=0.5), build_sampler("square_root", labels, seed=3)
    assert torch.allclose(mine.class_probabilities(0), builtin.class_probabilities(0))
    assert torch.equal(torch.tensor(list(mine)), torch.tensor(list(builtin)))  # same draws from the same seed
    with pytest.raises(ValueError, match="q"):
        build_sampler(ref, labels, qq=1.0)
    a = joint_spec(TrainConfig(**SYN, sampler=ref, sampler_params={"q": 0.5}))
    b = joint_spec(TrainConfig(**SYN, sampler=ref, sampler_params={"q": 1.0}))
    assert a.key != b.key and a.config["sampler"] == ref
    assert plugins.digests(a.config)[ref] == plugins.source_digest(ref)


def test_the_published_claim_follows_the_notebooks_rule():
    from types import SimpleNamespace as NS

    from ltbench.compare import published_claim

    def res(*top1):
        return [NS(last=NS(top1=t)) for t in top1]

    cell = ("cifar10", 100.0)  # LA declares 77.89 against 71.36 there: +6.53
    line = lambda ours, ce: published_claim("LA", LA, cell, {"LA": res(*ours), "CE": res(*ce)})  # noqa: E731
    assert "a gain of +6.53 points" in line([70.0], [60.0]) and line([70.0], [60.0]).endswith("→ the claim holds.")
    assert "+2.00 (2 seeds) → the claim holds in part (positive, under half" in line([62.0, 64.0], [60.0, 62.0])
    assert line([59.0], [60.0]).endswith("-1.00 (1 seed) → the claim does not hold.")
    assert "context, not checked" in published_claim("BS", BS, cell, {"BS": res(70.0), "CE": res(60.0)})  # IR200
    assert published_claim("x", "examples/logit_adjustment.py:LogitAdjustedLoss", cell, {"x": res(1.0)}) is None


def test_an_edited_file_is_imported_again_so_what_trains_is_what_is_recorded(tmp_path):
    """In one process (a notebook kernel), an edit of the loss file is picked up by the next build,
    and the digest recorded is the source that was built."""
    from ltbench.runs import METHODS

    f = tmp_path / "edited_loss.py"
    f.write_text((ROOT / "examples" / "logit_adjustment.py").read_text())
    ref = f"{f}:LogitAdjustedLoss"
    z, y = torch.zeros(2, 3), torch.tensor([0, 2])
    before = build_loss(ref, [10, 5, 1])(z, y).item()
    first = plugins.load(ref)
    assert plugins.load(ref) is first  # unchanged file: not imported again
    f.write_text(f.read_text().replace("return per_sample.mean()", "return 3 * per_sample.mean()"))
    assert plugins.load(ref) is not first
    assert build_loss(ref, [10, 5, 1])(z, y).item() == pytest.approx(3 * before)
    assert plugins.digests({"loss": ref})[ref] == plugins.source_digest(ref)
    step = tmp_path / "edited_step.py"
    step.write_text(STEP_METHOD)
    sref = f"{step}:LogitAdjustedStep"
    m1 = METHODS.get(sref)
    step.write_text(STEP_METHOD.replace("tau: float = 1.0", "tau: float = 2.0"))
    assert METHODS.get(sref) is not m1 and METHODS.get(sref).params == {"tau": 2.0}


def test_an_optional_baseline_not_trained_yet_is_left_out_and_named(tmp_path):
    """Balanced CE has no published number: compared when it is in the store, left out (with its
    key) when not; a missing published baseline is still refused. On the committed quick runs."""
    import shutil

    from ltbench.comparison import ORDER, _baseline_run, check_baselines, plan_comparison

    cell, baselines, _ = plan_comparison(LA, {"tau": 1.0}, "quick", notebooks_dir=ROOT / "notebooks")
    assert list(baselines) == list(ORDER) and cell == ("cifar10", 100.0)
    planned = [_baseline_run(s, label) for label, specs in baselines.items() for s in specs]
    store = RunStore(tmp_path / "quick")
    (tmp_path / "quick" / "runs").mkdir(parents=True)
    for label, specs in baselines.items():
        if label != "balanced CE":
            for s in specs:
                shutil.copytree(ROOT / "results" / "quick" / "runs" / s.key, tmp_path / "quick" / "runs" / s.key)
    kept, skipped = check_baselines(planned, store, "quick")
    assert skipped == [f"balanced CE [{baselines['balanced CE'][0].key}]"]
    assert [r.label for r in kept] == [label for label in ORDER if label != "balanced CE"]
    assert check_baselines(planned, store, "quick", train_baselines=True) == (planned, [])
    shutil.rmtree(tmp_path / "quick" / "runs" / baselines["cRT"][0].key)
    with pytest.raises(ConfigError, match=r"baselines not in .*: cRT \[\w+\]; train them with `python -m ltbench "
                                          r"execute --profile quick --only 01 02 03 04`"):
        check_baselines(planned, store, "quick")


def test_the_step_example_trains_exactly_as_the_loss_example(tmp_path):
    """Logit adjustment as a Trainer subclass (examples/logit_adjusted_step.py) and as a loss
    (examples/logit_adjustment.py): the same training, curves and per-class accuracy equal."""
    from ltbench.runs import make_spec

    store, opts = RunStore(tmp_path / "store"), ExecOptions(device="cpu", progress=False, compile=False)
    as_loss = run(joint_spec(TrainConfig(**SYN, loss=LA, loss_params={"tau": 1.0})), store, opts)
    step = make_spec("examples/logit_adjusted_step.py:LogitAdjustedStep", TrainConfig(**SYN), tau=1.0)
    as_step = run(step, store, opts)
    assert step.params == {"tau": 1.0}
    assert [h["train_loss"] for h in as_step.history] == pytest.approx([h["train_loss"] for h in as_loss.history],
                                                                       rel=1e-6)
    assert as_step.last.per_class == pytest.approx(as_loss.last.per_class)
