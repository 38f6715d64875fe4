"""Execution profiles: which parameter values each notebook runs with, in one visible place.

``PROFILES[profile][notebook_stem]`` holds papermill parameter overrides for that notebook; the
``"*"`` entry of a profile applies to every notebook first, the notebook's own entry second, and
command-line / API overrides last (see :func:`resolve_overrides`). A parameter that no layer sets
keeps the default written in the notebook's ``parameters`` cell. The runner always sets
``profile``, ``out_dir`` and ``store_dir`` itself, and ``seeds`` when ``--seeds N`` is given.

Every key must be a parameter of the notebook's ``parameters`` cell: the runner checks this (and
obviously wrong types) with ``papermill.inspect_notebook`` before executing anything.

Profiles:

* ``quick``: the notebooks' own defaults (each ``parameters`` cell holds exactly these values, a
  test checks it) and the default of ``make reproduce``: CPU-feasible, the whole collection in at
  most 30 minutes on 2 cores, a few minutes per notebook run top to bottom. 8 epochs on a tenth of
  CIFAR-10-LT IR100 (n_max 500), so accuracies are far below the published ones (mostly head
  classes are learnt); the report says so. It shows the pipeline end to end on real data; the
  numbers to compare with papers come from ``paper``.
* ``paper``: the papers' recipe (docs/methods.md §2: 200 epochs, batch 128, full CIFAR-LT, IR
  100/50/10 on CIFAR-10 and CIFAR-100, 3 seeds). Needs a GPU.
* ``cpu``: the papers' data (full CIFAR-10-LT IR100, the full test set, ResNet-32, batch 128,
  lr 0.1) with the recipe compressed to :data:`CPU_EPOCHS` epochs: what two CPU cores can train,
  session after session, through the harvest (``make harvest``, :mod:`ltbench.harvest`).
* ``smoke``: seconds per notebook on CPU, on a tiny subset; only proves the pipeline runs (tests,
  CI). Its numbers mean nothing.

A notebook executed with only ``profile`` changed (``papermill nb.ipynb out.ipynb -p profile
paper``) swaps its defaults for that profile's values itself (:func:`apply_profile`); the runner
sets every value explicitly and passes ``fill_from_profile=False``. So every key a profile sets
for a notebook is also listed, with the notebook's default, under ``quick`` (a test checks it).

Parameters used below (the notebook author finalises values and may add keys):

* ``epochs``: training epochs of the main runs.
* ``imbalance_ratios``: list of IRs (n_max / n_min).
* ``datasets``: list of ``"cifar10"`` / ``"cifar100"``.
* ``n_max``: size of the largest class (docs/methods.md §1: 5000 / 500); ``None`` = the paper's value.
  Smaller values shrink every class with the same IR profile.
* ``test_per_class``: balanced test images per class; ``None`` = the full test set.
* ``batch_size``: SGD batch size.
* ``eval_every``: test-set evaluation every k epochs (and after the last); 1 in ``paper`` for the best-epoch number.
* ``methods``: subset of the notebook's methods; ``None`` / absent = all of them.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, MutableMapping, Optional

#: Parameters every notebook's ``parameters`` cell has (the notebook contract).
COMMON_PARAMETERS = ("profile", "fill_from_profile", "out_dir", "store_dir", "data_root", "device", "seeds")

#: The notebooks of the project, by file stem (``notebooks/<stem>.ipynb``).
NOTEBOOKS = (
    "01_long_tailed_cifar",
    "02_focal_and_balanced_ce",
    "03_class_balanced_loss",
    "04_bbn_and_two_stage",
    "05_equalization_losses",
    "06_feature_space_augmentation",
    "07_ohem",
    "08_your_method",
)
#: The notebook that compares your method with the baselines (ltbench.compare): a comparison, not a paper.
COMPARISON_NOTEBOOK = "08_your_method"

DEFAULT_PROFILE = "quick"

# Shared building blocks, so a profile's intent reads at a glance. Notebook entries copy and
# adjust them; keep per-notebook differences explicit below.
_SMOKE = {
    "epochs": 1,
    "imbalance_ratios": [10],
    "datasets": ["cifar10"],
    "n_max": 50,  # IR10 -> 50 ... 5 images per class, 181 in all
    "test_per_class": 10,
    "batch_size": 32,
    "eval_every": 1,
}
_QUICK = {
    "epochs": 8,
    "imbalance_ratios": [100],
    "datasets": ["cifar10"],
    "n_max": 500,  # IR100 -> 500 ... 5 images per class, 1236 in all
    "test_per_class": 100,
    # Batch 64 doubles the SGD steps of the short schedule; base_config scales the lr to 0.05.
    "batch_size": 64,
    "eval_every": 4,  # test-set evaluation after epochs 4 and 8 only: on 2 cores it costs a tenth of training
    "amp_cpu": False,  # float32: the committed quick runs' numerics (and keys)
}
#: E, the ``cpu`` profile's length: the calibration (CE, LDAM-DRW, BBN at 30 and 50 epochs, the
#: harvest's first steps) picks the shortest E at which LDAM-DRW's and BBN's gains over CE are each
#: at least half the published ones, else 50. At 30 epochs BBN fell 3.65 points below CE (published:
#: +9.46; half is +4.73), so the rule's answer is 50 (`python -m ltbench.harvest calibrate`, README).
CPU_EPOCHS = 50
#: cRT and the grid's classifiers: a third of E (a third of E, as the authors' cRT config's
#: length is a fraction of its stage 1's).
CPU_STAGE2_EPOCHS = round(CPU_EPOCHS / 3)
#: FSA phase II scaled with phase I: the paper's 6,400 iterations after 200 epochs.
CPU_FSA_ITERATIONS = 6400 * CPU_EPOCHS // 200
#: The qualities of the cpu profile's data-copy check, in training order: two steps below the copy's own 75 (MSE +88
#: and +146 on the test set), then 90 (+4, about a rounding's worth: the noise floor of the check).
CPU_JPEG_QUALITIES = (50, 25, 90)
_CPU = {
    "epochs": CPU_EPOCHS,
    "imbalance_ratios": [100],
    "datasets": ["cifar10"],
    "n_max": None,  # the papers' full CIFAR-10-LT IR100: 12,406 training images
    "test_per_class": None,  # the full 10,000-image test set
    "batch_size": 128,
    # A full test pass costs about a fifth of a compiled training epoch on 2 cores: every 5 epochs
    # (and after the last) keeps the curve readable for a tenth of the time; the headline is last-epoch.
    "eval_every": 5,
    # bf16 autocast on the CPU, as on the GPU: 1.6x a float32 step on this project's AVX512-BF16 CPU
    # (results/benchmarks/throughput_cpu-2core_torch2.14.1-cu130_2026-12-07.md: 594.6 against 367.6 images/s
    # compiled). The 30- and 50-epoch calibration runs were float32
    # (ltbench.harvest pins them there); the bf16 CE, LDAM-DRW and BBN repeat them as a check.
    "amp_cpu": True,
}
_PAPER = {
    "epochs": 200,
    "imbalance_ratios": [100, 50, 10],
    "datasets": ["cifar10", "cifar100"],
    "n_max": None,  # docs/methods.md §1: 5000 (CIFAR-10) / 500 (CIFAR-100)
    "test_per_class": None,  # the full 10,000-image test set
    "batch_size": 128,
    "eval_every": 1,  # every epoch, for the best-epoch number the papers report
    "amp_cpu": True,  # bf16 on every device: a paper run is the same run on a GPU and on the harvest's CPU
}


def _with(base: Mapping[str, Any], **changes: Any) -> Dict[str, Any]:
    out = copy.deepcopy(dict(base))
    out.update(changes)
    return out


PROFILES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "smoke": {
        "*": {"device": "cpu", "seeds": [0]},
        "01_long_tailed_cifar": _with(_SMOKE, jpeg_qualities=[50]),
        "02_focal_and_balanced_ce": _with(_SMOKE, methods=["CE", "sigmoid focal gamma 1"]),
        "03_class_balanced_loss": _with(_SMOKE, methods=["softmax", "CB focal beta 0.9999 gamma 1"]),
        "04_bbn_and_two_stage": _with(_SMOKE, crt_epochs=None, lws_epochs=None, ablation_samplers=None,
                                      ablation_adaptors=None),
        "05_equalization_losses": _with(_SMOKE, methods=["Sigmoid-EQL", "Softmax-EQL", "EFL"]),
        # FSA phase II and cRT shortened to a few steps.
        "06_feature_space_augmentation": _with(_SMOKE, fsa_iterations=4, fsa_batch_size=32, crt_epochs=1),
        "07_ohem": _with(_SMOKE, keep_ratios=[0.25, 0.5, 0.7]),
        # Your method against the profile's own baselines, read from its run store (ltbench.compare).
        "08_your_method": {"store_dir": "../results/smoke"},
    },
    "quick": {
        "*": {"device": "auto", "seeds": [0]},
        # Every notebook uses the same subset and schedule, so the CE / sigmoid CE / focal runs they
        # share are trained once per batch in the profile's run store (ltbench.runs).
        "01_long_tailed_cifar": _with(_QUICK, jpeg_qualities=[]),  # the data-copy check costs 3 runs: cpu only
        "02_focal_and_balanced_ce": _with(_QUICK, methods=["CE", "balanced CE (power 1)", "focal (softmax, gamma 1)",
                                                           "sigmoid CE", "sigmoid focal gamma 1"]),
        "03_class_balanced_loss": _with(_QUICK, methods=["softmax", "CB softmax beta 0.9999", "sigmoid",
                                                         "CB sigmoid beta 0.9999", "focal gamma 1",
                                                         "CB focal beta 0.9999 gamma 1"], diagnostics=True),
        # The grid and the ablations run at IR100 here (the papers' IR50 would cost its own CE run),
        # with stage 2 and the ablations cut to what 2 cores afford; the notebook prints the change.
        "04_bbn_and_two_stage": _with(_QUICK, crt_epochs=4, lws_epochs=2, ablation_samplers=["uniform", "reversed"],
                                      ablation_adaptors=["0.5", "parabolic decay"]),
        "05_equalization_losses": _with(_QUICK, methods=["sigmoid CE", "Sigmoid-EQL", "CE", "Softmax-EQL",
                                                         "sigmoid focal gamma 2 alpha 0.25", "EFL"]),
        # FSA phase II and cRT scaled down with phase I (paper: 6,400 iterations, 30 cRT epochs after 200 epochs).
        "06_feature_space_augmentation": _with(_QUICK, backbones=["resnet32"], fsa_iterations=100, fsa_batch_size=128,
                                               crt_epochs=4),
        "07_ohem": _with(_QUICK, keep_ratios=[0.25, 0.5]),
        "08_your_method": {"store_dir": "../results/quick"},
    },
    "cpu": {
        # The papers' data and recipe shape, compressed to CPU_EPOCHS (warm-up, lr steps, DRW/DRS at
        # 80 %, BBN's adaptor scale with the length): one seed first, then 3 for tiers 0-1 (harvest).
        "*": {"device": "auto", "seeds": [0]},
        # The data-copy check (docs/methods.md §1.4): CE on the images re-encoded once more, 3 runs of tier 2.
        # One run per quality, read against CE's spread over the profile's seeds (--seeds 3).
        "01_long_tailed_cifar": _with(_CPU, jpeg_qualities=list(CPU_JPEG_QUALITIES), jpeg_seeds=1),
        "02_focal_and_balanced_ce": _with(_CPU, methods=None),
        # CB Table 2's beta = 0.9999 column (its best for IR100) beside the plain losses; the other betas are
        # 12 more runs (4.5 M image-passes) of tier 2, left to `-p 03_class_balanced_loss:methods=None`.
        "03_class_balanced_loss": _with(_CPU, methods=["softmax", "sigmoid", "focal gamma 0.5", "focal gamma 1",
                                                       "focal gamma 2", "CB softmax beta 0.9999", "CB sigmoid beta 0.9999",
                                                       "CB focal beta 0.9999 gamma 0.5", "CB focal beta 0.9999 gamma 1",
                                                       "CB focal beta 0.9999 gamma 2"]),
        # Stage 2 a third of E (cRT, the grid's classifiers) and LWS 5 epochs, as in the paper.
        "04_bbn_and_two_stage": _with(_CPU, crt_epochs=CPU_STAGE2_EPOCHS, lws_epochs=5, ablation_samplers=None,
                                      ablation_adaptors=None),
        "05_equalization_losses": _with(_CPU, methods=None),
        "06_feature_space_augmentation": _with(_CPU, backbones=["resnet32"], fsa_iterations=CPU_FSA_ITERATIONS,
                                               fsa_batch_size=128, crt_epochs=CPU_STAGE2_EPOCHS),
        "07_ohem": _with(_CPU, keep_ratios=[0.25, 0.5, 0.7]),
        "08_your_method": {"store_dir": "../results/cpu"},
    },
    "paper": {
        "*": {"device": "auto", "seeds": [0, 1, 2]},
        # methods / ablations / stage-2 epochs None: every method and the recipe's own stage-2 length.
        "01_long_tailed_cifar": _with(_PAPER),
        "02_focal_and_balanced_ce": _with(_PAPER, methods=None),
        # The normalisation diagnostic explains a claim the cpu budget misses; at 200 epochs it is 3 more
        # runs per seed, left to `-p 03_class_balanced_loss:diagnostics=True`.
        "03_class_balanced_loss": _with(_PAPER, methods=None, diagnostics=False),
        "04_bbn_and_two_stage": _with(_PAPER, crt_epochs=None, lws_epochs=None, ablation_samplers=None,
                                      ablation_adaptors=None),
        "05_equalization_losses": _with(_PAPER, methods=None),
        # ResNet-18 too: the FSA paper's CIFAR table is compared only with a matching backbone (docs/methods.md §8).
        "06_feature_space_augmentation": _with(_PAPER, backbones=["resnet32", "resnet18_cifar"], fsa_iterations=6400,
                                               crt_epochs=30),
        "07_ohem": _with(_PAPER, keep_ratios=[0.25, 0.5, 0.7]),
        "08_your_method": {"store_dir": "../results/paper"},
    },
}


def profile_names() -> list[str]:
    """The valid profile names."""
    return list(PROFILES)


def check_profile(profile: str) -> None:
    """Raise ``ValueError`` naming every valid profile if ``profile`` is unknown."""
    if profile not in PROFILES:
        raise ValueError(
            f"unknown profile: profile={profile!r}; valid profiles: {', '.join(PROFILES)}"
        )


def resolve_overrides(
    profile: str, notebook_stem: str, extra: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """Parameter overrides for one notebook: ``"*"``, then the notebook's entry, then ``extra``.

    Returns a fresh dict (safe to mutate). A notebook without an entry gets only the ``"*"``
    layer and ``extra``; its own defaults apply for everything else.
    """
    check_profile(profile)
    layers = PROFILES[profile]
    out: Dict[str, Any] = {}
    out.update(copy.deepcopy(layers.get("*", {})))
    out.update(copy.deepcopy(layers.get(notebook_stem, {})))
    if extra:
        out.update(copy.deepcopy(dict(extra)))
    return out


def apply_profile(notebook: str, namespace: MutableMapping[str, Any]) -> Dict[str, Any]:
    """Swap a notebook's defaults for the values of ``namespace["profile"]``, in place.

    A notebook's ``parameters`` cell holds the ``quick`` profile's values; this lets
    ``papermill nb.ipynb out.ipynb -p profile paper`` run the paper's recipe with one parameter.
    A parameter still at its quick default takes the profile's value; one that differs from it was
    set by the caller and is kept (so pass the quick value itself only together with
    ``fill_from_profile=False``). Does nothing when ``namespace["fill_from_profile"]`` is false (the
    runner resolves profiles itself). Prints what it changed and returns it.
    """
    fill = namespace.get("fill_from_profile", True)
    if not isinstance(fill, bool):
        raise TypeError(f"fill_from_profile={fill!r} ({type(fill).__name__}): expected True or False")
    if not fill:
        return {}
    profile = namespace.get("profile")
    check_profile(profile)
    defaults = resolve_overrides("quick", notebook)
    wanted = resolve_overrides(profile, notebook)
    changed: Dict[str, Any] = {}
    kept = []
    for name, value in wanted.items():
        if name not in namespace:
            raise KeyError(f"profile {profile!r} sets {name!r}, which is not a parameter of notebook {notebook}")
        current = namespace[name]
        if current == value:
            continue
        if name in defaults and current == defaults[name]:
            namespace[name] = copy.deepcopy(value)
            changed[name] = value
        else:
            kept.append(f"{name}={current!r}")
    if changed or kept:
        parts = [f"profile {profile!r}: " + (", ".join(f"{k}={v!r}" for k, v in changed.items()) or "nothing changed")]
        if kept:
            parts.append("kept as given: " + ", ".join(kept))
        print("; ".join(parts))
    return changed
