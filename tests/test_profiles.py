"""Notebook defaults are the quick profile's values, and one parameter (``profile``) switches a
notebook run by hand (Jupyter, plain papermill) to another profile's values."""
from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, real_cifar10_root
from ltbench import profiles
from ltbench.experiments import notebook_parameters

NOTEBOOKS = ROOT / "notebooks"


@pytest.mark.parametrize("stem", profiles.NOTEBOOKS)
def test_notebook_defaults_are_the_quick_profile(stem):
    params = notebook_parameters(NOTEBOOKS / f"{stem}.ipynb")
    assert params["profile"] == "quick" and params["fill_from_profile"] is True
    assert set(profiles.COMMON_PARAMETERS) <= set(params)
    quick = profiles.resolve_overrides("quick", stem)
    assert {k: params[k] for k in quick} == quick
    # apply_profile can only tell a default from a given value for keys listed under quick
    for name in ("smoke", "paper"):
        assert set(profiles.resolve_overrides(name, stem)) <= set(quick), (name, stem)


def _namespace(stem: str, **given) -> dict:
    ns = notebook_parameters(NOTEBOOKS / f"{stem}.ipynb")
    ns.update(given)
    return ns


def test_apply_profile_paper_replaces_every_default(capsys):
    ns = _namespace("06_feature_space_augmentation", profile="paper")
    changed = profiles.apply_profile("06_feature_space_augmentation", ns)
    paper = profiles.resolve_overrides("paper", "06_feature_space_augmentation")
    assert {k: ns[k] for k in paper} == paper
    assert changed["epochs"] == 200 and changed["fsa_iterations"] == 6400 and changed["n_max"] is None
    assert changed["backbones"] == ["resnet32", "resnet18_cifar"] and ns["seeds"] == [0, 1, 2]
    assert "fsa_batch_size" not in changed  # 128 in both
    assert "profile 'paper': " in capsys.readouterr().out


def test_apply_profile_keeps_values_given_by_the_caller(capsys):
    ns = _namespace("01_long_tailed_cifar", profile="paper", epochs=30, datasets=["cifar10"])
    profiles.apply_profile("01_long_tailed_cifar", ns)
    assert ns["epochs"] == 30 and ns["batch_size"] == 128 and ns["imbalance_ratios"] == [100, 50, 10]
    # cifar10 is also quick's default, so it counts as not given: the paper's two datasets
    assert ns["datasets"] == ["cifar10", "cifar100"]
    assert "kept as given: epochs=30" in capsys.readouterr().out


def test_apply_profile_is_a_no_op_for_quick_and_for_the_runner(capsys):
    ns = _namespace("02_focal_and_balanced_ce")
    before = dict(ns)
    assert profiles.apply_profile("02_focal_and_balanced_ce", ns) == {} and ns == before
    ns = _namespace("02_focal_and_balanced_ce", profile="paper", fill_from_profile=False)
    before = dict(ns)
    assert profiles.apply_profile("02_focal_and_balanced_ce", ns) == {} and ns == before
    assert capsys.readouterr().out == ""


def test_apply_profile_names_an_unknown_profile():
    with pytest.raises(ValueError, match=r"profile='paperr'.*smoke, quick, cpu, paper"):
        profiles.apply_profile("01_long_tailed_cifar", _namespace("01_long_tailed_cifar", profile="paperr"))


def test_apply_profile_refuses_a_non_boolean_switch():
    ns = _namespace("01_long_tailed_cifar", profile="paper", fill_from_profile="no")
    with pytest.raises(TypeError, match=r"fill_from_profile='no' \(str\): expected True or False"):
        profiles.apply_profile("01_long_tailed_cifar", ns)
    assert ns["epochs"] == 8


def test_runner_tells_the_notebook_not_to_refill(tmp_path):
    from ltbench.runner import plan_runs

    plans = plan_runs("paper", ["01"], None, tmp_path / "results", NOTEBOOKS, {"epochs": 8})
    assert plans[0].parameters["fill_from_profile"] is False and plans[0].parameters["epochs"] == 8


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_every_profile_passes_the_runner_checks_on_every_notebook(profile, tmp_path):
    """A profile's value may be None where the notebook's default is a list (paper: every method)."""
    from ltbench.runner import plan_runs

    plans = plan_runs(profile, None, None, tmp_path / "results", NOTEBOOKS, None)
    assert sorted(p.stem for p in plans) == sorted(profiles.NOTEBOOKS)


@pytest.mark.slow
def test_papermill_with_only_the_profile_runs_that_profile(tmp_path):
    """``papermill 01.ipynb out.ipynb -p profile smoke`` trains the smoke profile's runs, not the defaults'."""
    import papermill as pm

    params = {"profile": "smoke", "out_dir": str(tmp_path / "out"), "store_dir": str(tmp_path / "store")}
    if not real_cifar10_root():
        params["datasets"] = ["synthetic"]  # given, so kept
    pm.execute_notebook(str(NOTEBOOKS / "01_long_tailed_cifar.ipynb"), str(tmp_path / "executed.ipynb"),
                        parameters=params, kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS),
                        log_output=False)
    specs = [json.loads(p.read_text()) for p in (tmp_path / "store" / "runs").glob("*/spec.json")]
    assert specs
    smoke = profiles.resolve_overrides("smoke", "01_long_tailed_cifar")
    text = json.dumps(specs)
    assert f'"epochs": {smoke["epochs"]}' in text and '"epochs": 8' not in text
    assert f'"n_max": {smoke["n_max"]}' in text
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    outputs = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                      for c in executed["cells"] for o in c.get("outputs", []))
    assert "profile 'smoke': " in outputs
    assert os.path.isdir(tmp_path / "out")
