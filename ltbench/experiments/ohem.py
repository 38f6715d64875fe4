"""Notebook 07: online hard example mining (Shrivastava et al. 2016) on CIFAR-LT, beside CE."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..ohem import MODES, check_keep_ratio
from . import PlannedRun, check_choice, common_config, grid, planned

NOTEBOOK = "07_ohem"
PAPER = "OHEM (Shrivastava et al. 2016)"
TABLE = "new CIFAR-LT measurements"
FORM_LABEL = {"two_pass": "two-pass", "masked": "masked (single pass)"}


def runs(datasets: Sequence[str] = ("cifar10",), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         keep_ratios: Sequence[float] = (0.25, 0.5, 0.7), forms: Sequence[str] = ("two_pass", "masked")) -> List[PlannedRun]:
    """CE and OHEM (each form x keep ratio) at every (dataset, IR, seed)."""
    from ..methods import joint_spec, ohem_spec

    for r in keep_ratios:
        check_keep_ratio(r)
    check_choice("forms", forms, MODES)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)
    out = []
    for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
        cfg = common_config(ds, ir, seed, **recipe, loss="ce")
        out.append(planned(joint_spec(cfg), "CE", NOTEBOOK, PAPER, TABLE, "CE (softmax)"))
    for form in forms:
        for r in keep_ratios:
            for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
                cfg = common_config(ds, ir, seed, **recipe, loss="ce")
                out.append(planned(ohem_spec(cfg, r, form), f"OHEM {FORM_LABEL[form]} {r:g}", NOTEBOOK, PAPER, TABLE,
                                   form=form, keep_ratio=r))
    return out
