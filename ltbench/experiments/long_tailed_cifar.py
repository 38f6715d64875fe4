"""Notebook 01: the CE baseline on CIFAR-LT (Cui et al. 2019, Table 2's softmax row)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from . import PlannedRun, label_runs

NOTEBOOK = "01_long_tailed_cifar"
PAPER = "Class-balanced loss (Cui et al. 2019)"
TABLE = "Table 2"


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1) -> List[PlannedRun]:
    """CE at every (dataset, IR, seed): the shared baseline (tier 0)."""
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)
    return label_runs({"CE": {"loss": "ce"}}, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE,
                      published_rows={"CE": "CE (softmax)"})
