"""Notebook 04: BBN (Zhou et al. 2020) and two-stage re-balancing (Kang et al. 2020) on CIFAR-LT.

Sections (``section`` tag of each planned run): ``main`` (the main table beside the published
numbers), ``grid`` (BBN Fig. 2: stage-1 representation x stage-2 classifier), ``tau`` (the CE runs
whose classifier the tau-norm sweep normalises; their weights are loaded), ``ablation`` (BBN
Tables 3-4: the re-balancing sampler and the adaptor) and ``branches`` (BBN runs whose branches
are compared per class).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from . import PlannedRun, check_choice, common_config, grid, planned

NOTEBOOK = "04_bbn_and_two_stage"
PAPER = "BBN (Zhou et al. 2020) / Decoupling (Kang et al. 2020)"

#: One-stage runs: label -> TrainConfig overrides (DRW / DRS epochs are filled in per profile).
STAGE1: Dict[str, Dict[str, Any]] = {
    "CE": {"loss": "ce"},
    "CE-DRW": {"loss": "ce", "drw_epoch": "defer"},
    "CE-DRS": {"loss": "ce", "drs_epoch": "defer"},
    "LDAM-DRW": {"loss": "ldam", "classifier": "cosine", "drw_epoch": "defer"},
    "RW": {"loss": "balanced_ce", "loss_params": {"power": 1.0}},  # grid representations
    "RS": {"loss": "ce", "sampler": "class_balanced"},
}
#: Two-stage runs on the CE run: label -> registered method.
STAGE2 = {"cRT": "crt", "tau-norm": "tau_norm", "LWS": "lws"}
#: Main-table label -> row of ltbench.published.
MAIN_METHODS = {"CE": "CE (softmax)", "Mixup": "Mixup (alpha 1)", "CE-DRW": "CE-DRW", "CE-DRS": "CE-DRS",
                "LDAM-DRW": "LDAM-DRW",
                "cRT": "cRT (re-implementation)", "tau-norm": "tau-norm (re-implementation)",
                "LWS": "LWS (re-implementation)", "BBN": "BBN"}
REPS = ["CE", "RW", "RS"]
#: Grid classifier label -> registered stage-2 method.
CLASSIFIERS = {"CE": "stage2_ce", "RW": "stage2_rw", "RS": "stage2_rs"}
SAMPLER_VARIANTS = {"uniform": "instance", "balanced": "class_balanced", "reversed": "reversed"}
ADAPTOR_VARIANTS = {"0.5": "constant", "parabolic increment": "parabolic_increment", "linear decay": "linear_decay",
                    "cosine decay": "cosine_decay", "parabolic decay": "parabolic_decay"}


def bbn_label(sampler: str = "reversed", adaptor: str = "parabolic_decay") -> str:
    return "BBN" if (sampler, adaptor) == ("reversed", "parabolic_decay") else f"BBN-{sampler}-{adaptor}"


def settings(epochs: int, imbalance_ratios: Sequence[float], datasets: Sequence[str], grid_imbalance_ratio: float,
             ablation_dataset: str, crt_epochs: Optional[int], lws_epochs: Optional[int]) -> Dict[str, Any]:
    """The values the notebook derives from its parameters (and prints when they differ from the papers')."""
    return {
        "grid_ir": grid_imbalance_ratio if grid_imbalance_ratio in imbalance_ratios else imbalance_ratios[0],
        "ablation_dataset": ablation_dataset if ablation_dataset in datasets else (datasets[0] if datasets else None),
        "crt_epochs": min(30, epochs) if crt_epochs is None else crt_epochs,
        "lws_epochs": min(5, epochs) if lws_epochs is None else lws_epochs,
        "defer": min(epochs - 1, round(0.8 * epochs)),  # docs/methods.md §6: DRW / DRS from epoch 160 of 200 (0-based)
    }


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         methods: Optional[Sequence[str]] = None, grid_imbalance_ratio: float = 50,
         ablation_dataset: str = "cifar10", run_grid: bool = True, run_ablations: bool = True,
         ablation_samplers: Optional[Sequence[str]] = None, ablation_adaptors: Optional[Sequence[str]] = None,
         crt_epochs: Optional[int] = None, lws_epochs: Optional[int] = None) -> List[PlannedRun]:
    """Every run of notebook 04 (see the module docstring for the sections)."""
    from ..methods import bbn_spec, joint_spec, mixup_spec, stage_two_spec

    check_choice("methods", methods, MAIN_METHODS)
    check_choice("ablation_samplers", ablation_samplers, SAMPLER_VARIANTS)
    check_choice("ablation_adaptors", ablation_adaptors, ADAPTOR_VARIANTS)
    selected = list(MAIN_METHODS) if methods is None else list(methods)
    s = settings(epochs, imbalance_ratios, datasets, grid_imbalance_ratio, ablation_dataset, crt_epochs, lws_epochs)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)

    def stage1(label: str, ds: str, ir: float, seed: int):
        overrides = {k: (s["defer"] if v == "defer" else v) for k, v in STAGE1[label].items()}
        return joint_spec(common_config(ds, ir, seed, **recipe, **overrides))

    def stage2(method: str, s1, epochs_: Optional[int]):
        return stage_two_spec(s1, method, **({} if method == "tau_norm" else {"epochs": epochs_}))

    def bbn(ds: str, ir: float, seed: int, sampler: str = "reversed", adaptor: str = "parabolic_decay"):
        return bbn_spec(common_config(ds, ir, seed, **recipe), bbn_sampler=sampler, bbn_adaptor=adaptor)

    out: List[PlannedRun] = []
    g_ir = s["grid_ir"]
    for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
        for label in selected:
            if label in STAGE1:
                spec = stage1(label, ds, ir, seed)
            elif label == "Mixup":
                spec = mixup_spec(common_config(ds, ir, seed, **recipe), alpha=1.0)
            elif label in STAGE2:
                spec = stage2(STAGE2[label], stage1("CE", ds, ir, seed),
                              s["lws_epochs"] if label == "LWS" else s["crt_epochs"])
            else:
                spec = bbn(ds, ir, seed)
            out.append(planned(spec, label, NOTEBOOK, PAPER, "BBN Table 1", MAIN_METHODS[label], section="main"))
    if run_grid:
        for ds in datasets:
            for seed in seeds:
                for rep in REPS:
                    s1 = stage1(rep, ds, g_ir, seed)
                    out.append(planned(s1, rep, NOTEBOOK, PAPER, "BBN Fig. 2", section="grid-stage1", representation=rep))
                    for clf, method in CLASSIFIERS.items():
                        out.append(planned(stage2(method, s1, s["crt_epochs"]),
                                           f"grid-{rep}-features-{clf}-classifier", NOTEBOOK, PAPER, "BBN Fig. 2",
                                           section="grid", representation=rep, classifier=clf))
    if seeds:
        for ds in datasets:
            for ir in imbalance_ratios:
                out.append(planned(stage1("CE", ds, ir, seeds[0]), "CE", NOTEBOOK, PAPER, "tau-norm sweep",
                                   MAIN_METHODS["CE"], section="tau"))
    abl_ds = s["ablation_dataset"]
    if run_ablations and abl_ds is not None:
        variants = [("sampler", name, dict(sampler=v)) for name, v in SAMPLER_VARIANTS.items()
                    if ablation_samplers is None or name in ablation_samplers]
        variants += [("adaptor", name, dict(adaptor=v)) for name, v in ADAPTOR_VARIANTS.items()
                     if ablation_adaptors is None or name in ablation_adaptors]
        for kind, name, kw in variants:
            for seed in seeds:
                out.append(planned(bbn(abl_ds, g_ir, seed, **kw), bbn_label(**kw), NOTEBOOK, PAPER, "BBN Tables 3-4",
                                   f"BBN {kind} {name}", section="ablation", ablation=kind, variant=name))
    for ds in datasets:
        for seed in seeds:
            out.append(planned(bbn(ds, g_ir, seed), "BBN", NOTEBOOK, PAPER, "BBN branches", MAIN_METHODS["BBN"],
                               section="branches"))
    return out
