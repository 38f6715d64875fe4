"""Notebook 02: focal loss (Lin et al. 2017) and balanced cross-entropy on CIFAR-LT, beside CB Table 2."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from . import PlannedRun, choose, label_runs

NOTEBOOK = "02_focal_and_balanced_ce"
PAPER = "Focal loss / class-balanced loss"
TABLE = "CB Table 2"

#: Method label -> TrainConfig overrides.
ALL_METHODS: Dict[str, Dict[str, Any]] = {
    "CE": {"loss": "ce"},
    "balanced CE (power 1)": {"loss": "balanced_ce", "loss_params": {"power": 1.0}},
    "balanced CE (power 0.5)": {"loss": "balanced_ce", "loss_params": {"power": 0.5}},
    "focal (softmax, gamma 1)": {"loss": "focal", "loss_params": {"gamma": 1.0}},
    "sigmoid CE": {"loss": "sigmoid_ce"},
    "sigmoid focal gamma 0.5": {"loss": "sigmoid_focal", "loss_params": {"gamma": 0.5}},
    "sigmoid focal gamma 1": {"loss": "sigmoid_focal", "loss_params": {"gamma": 1.0}},
    "sigmoid focal gamma 2": {"loss": "sigmoid_focal", "loss_params": {"gamma": 2.0}},
}
#: Method label -> row of ltbench.published.
PUBLISHED = {"CE": "CE (softmax)", "sigmoid CE": "sigmoid CE", "sigmoid focal gamma 0.5": "sigmoid focal gamma 0.5",
             "sigmoid focal gamma 1": "sigmoid focal gamma 1", "sigmoid focal gamma 2": "sigmoid focal gamma 2"}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         methods: Optional[Sequence[str]] = None) -> List[PlannedRun]:
    """Every method of :data:`ALL_METHODS` (or the ``methods`` subset) at every (dataset, IR, seed)."""
    chosen = choose(ALL_METHODS, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)
    return label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE, PUBLISHED)
