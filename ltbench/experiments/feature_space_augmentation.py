"""Notebook 06: feature space augmentation (Chu et al. 2020) against its phase I and cRT on the same backbone."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..fsa import check_thresholds
from . import PlannedRun, check_choice, common_config, grid, planned

NOTEBOOK = "06_feature_space_augmentation"
PAPER = "FSA (Chu et al. 2020)"
TABLE = "FSA Tables 1-2"
BACKBONE_NAME = {"resnet32": "ResNet-32", "resnet18_cifar": "ResNet-18"}
#: (method, backbone) -> row of ltbench.published: a number is shown only beside a run of the same backbone (docs/methods.md §8).
PUBLISHED = {("CE", "resnet32"): "CE (softmax)", ("cRT", "resnet32"): "cRT (re-implementation)",
             ("CE", "resnet18_cifar"): "CE, ResNet-18, 300 epochs", ("FSA", "resnet18_cifar"): "FSA, ResNet-18, 300 epochs"}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         backbones: Sequence[str] = ("resnet32",), fsa_iterations: int = 6400, fsa_batch_size: int = 128,
         fsa_lr: float = 0.001, tau_s: float = 0.8, tau_g: float = 0.2, n_f: int = 3, n_a: int = 3,
         crt_epochs: int = 30) -> List[PlannedRun]:
    """Per backbone and (dataset, IR, seed): phase I (CE), cRT on its frozen backbone, FSA phase II."""
    from ..methods import fsa_spec, joint_spec, stage_two_spec

    check_choice("backbones", backbones, BACKBONE_NAME)
    check_thresholds(tau_s, tau_g)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)
    out = []
    for backbone in backbones:
        name = BACKBONE_NAME[backbone]
        for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
            ce = joint_spec(common_config(ds, ir, seed, **recipe, loss="ce", model=backbone))
            crt = stage_two_spec(ce, "crt", epochs=crt_epochs)
            fsa = fsa_spec(ce, iterations=fsa_iterations, lr=fsa_lr, batch_size=fsa_batch_size, tau_s=tau_s,
                           tau_g=tau_g, n_f=n_f, n_a=n_a)
            for m, spec in (("CE", ce), ("cRT", crt), ("FSA", fsa)):
                out.append(planned(spec, f"{m} ({name})", NOTEBOOK, PAPER, TABLE, PUBLISHED.get((m, backbone)),
                                   stage=m, backbone=backbone))
    return out
