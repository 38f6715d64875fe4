"""Notebook 05: the Equalization losses (Sigmoid-EQL, Softmax-EQL, EFL) on CIFAR-LT, beside their baselines.

Sections (``section`` tag): ``main`` (each equalisation loss and the loss it modifies) and
``statistics`` (the baselines again, as the stateful loss with its equalisation switched off, so they
record the per-class gradient statistics the notebook's gradient-ratio figure compares; tag
``baseline`` names the baseline they stand for).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from . import PlannedRun, choose, label_runs

NOTEBOOK = "05_equalization_losses"
PAPER = "Equalization losses (EQLv2 / EFL)"
TABLE = "new CIFAR-LT measurements"

ALL_METHODS: Dict[str, Dict[str, Any]] = {
    "sigmoid CE": {"loss": "sigmoid_ce"},
    "Sigmoid-EQL": {"loss": "sigmoid_eql"},
    "CE": {"loss": "ce"},
    "Softmax-EQL": {"loss": "softmax_eql"},
    "Softmax-EQL v2": {"loss": "softmax_eql_v2"},
    # EFL before its first step (docs/methods.md#411-equalized-focal-loss): the baseline differs from EFL only
    # by equalisation.
    "sigmoid focal gamma 2 alpha 0.25": {"loss": "sigmoid_focal", "loss_params": {"gamma": 2.0, "alpha": 0.25}},
    "EFL": {"loss": "efl"},
}
#: The loss each equalisation loss modifies.
BASELINE_OF = {"Sigmoid-EQL": "sigmoid CE", "Softmax-EQL": "CE", "Softmax-EQL v2": "CE",
               "EFL": "sigmoid focal gamma 2 alpha 0.25"}
#: Each baseline as the stateful loss with its equalisation switched off: the same loss and gradient
#: (checked to the bit on random logits), plus the statistics G+ / G- per class.
#: sigmoid_eql with alpha 0 and mu -1e4 has q = r = 1 (W = 1); softmax_eql with tau 0 adds 0 to the
#: logits; efl with s_f 0 has gamma_j = gamma_b = 2 and weight 1.
TRACKED: Dict[str, Dict[str, Any]] = {
    "sigmoid CE": {"loss": "sigmoid_eql", "loss_params": {"alpha": 0.0, "mu": -1e4}},
    "CE": {"loss": "softmax_eql", "loss_params": {"tau": 0.0}},
    "sigmoid focal gamma 2 alpha 0.25": {"loss": "efl", "loss_params": {"s_f": 0.0}},
}


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1,
         methods: Optional[Sequence[str]] = None, track_baselines: bool = True) -> List[PlannedRun]:
    """Each equalisation loss beside the loss it modifies (no published CIFAR-LT numbers exist), and, with
    ``track_baselines``, the baselines of the chosen equalisation losses with gradient statistics."""
    chosen = choose(ALL_METHODS, methods)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every)
    out = label_runs(chosen, datasets, imbalance_ratios, seeds, recipe, NOTEBOOK, PAPER, TABLE,
                     {"CE": "CE (softmax)", "sigmoid CE": "sigmoid CE"}, section="main")
    if track_baselines:
        for base in dict.fromkeys(BASELINE_OF[m] for m in chosen if m in BASELINE_OF):
            out += label_runs({f"{base} (gradient statistics)": TRACKED[base]}, datasets, imbalance_ratios, seeds,
                              recipe, NOTEBOOK, PAPER, "gradient statistics", section="statistics", baseline=base)
    return out
