"""Notebook 03: class-balanced loss (Cui et al. 2019), CB Table 2 on CIFAR-LT."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import PlannedRun, choose, label_runs

NOTEBOOK = "03_class_balanced_loss"
PAPER = "Class-balanced loss (Cui et al. 2019)"
TABLE = "Table 2"


def all_methods(betas: Sequence[float], focal_gammas: Sequence[float]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, str]]:
    """Method label -> TrainConfig overrides, and label -> published row, for the beta/gamma grid."""
    methods: Dict[str, Dict[str, Any]] = {"softmax": {"loss": "ce"}, "sigmoid": {"loss": "sigmoid_ce"}}
    methods.update({f"focal gamma {g:g}": {"loss": "sigmoid_focal", "loss_params": {"gamma": g}} for g in focal_gammas})
    for b in betas:
        methods[f"CB softmax beta {b:g}"] = {"loss": "cb_softmax", "loss_params": {"beta": b}}
        methods[f"CB sigmoid beta {b:g}"] = {"loss": "cb_sigmoid", "loss_params": {"beta": b}}
        for g in focal_gammas:
            methods[f"CB focal beta {b:g} gamma {g:g}"] = {"loss": "cb_focal", "loss_params": {"beta": b, "gamma": g}}
    published = {"softmax": "CE (softmax)", "sigmoid": "sigmoid CE", "CB softmax beta 0.9999": "CB softmax beta 0.9999",
                 "CB focal beta 0.9999 gamma 1": "CB focal beta 0.9999 gamma 1"}
    published.update({f"focal gamma {g:g}": f"sigmoid focal gamma {g:g}" for g in focal_gammas})
    return methods, published


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         methods: Optional[Sequence[str]] = None, betas: Sequence[float] = (0.9, 0.99, 0.999, 0.9999),
         focal_gammas: Sequence[float] = (0.5, 1.0, 2.0)) -> List[PlannedRun]:
    """Softmax / sigmoid / focal and their class-balanced versions over ``betas`` x ``focal_gammas``."""
    everything, published = all_methods(betas, focal_gammas)
    chosen = choose(everything, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)
    return label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE, published)
