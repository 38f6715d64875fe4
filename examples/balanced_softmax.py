"""Balanced Softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
NeurIPS 2020), the loss alone, written outside the ltbench package (docs/your_method.md):

    L(z, y) = CE(z + log(n), y),   n = the training count of each class

``python -m ltbench compare --method examples/balanced_softmax.py:BalancedSoftmaxLoss --profile cpu``.
"""
import torch
import torch.nn.functional as F

from ltbench.losses import LossBase


class BalancedSoftmaxLoss(LossBase):
    """Cross-entropy on the logits shifted by the log training counts."""

    #: The authors' numbers, read in their code's README (jiawei-ren/BalancedMetaSoftmax-Classification,
    #: "Experiment Results", end-to-end training, with their own softmax run). The README gives
    #: CIFAR-10-LT at imbalance 200 only, so at IR100 this is context, not a number to match.
    PUBLISHED = {"source": "official code README, ResNet-32, end to end", "dataset": "cifar10",
                 "imbalance_ratio": 200, "top1": 79.8, "baseline_top1": 74.0}

    def __init__(self, class_counts):
        super().__init__(class_counts)
        self.register_buffer("log_counts", torch.log(self.class_counts), persistent=False)

    def compute(self, z, y, mask=None):
        per_sample = F.cross_entropy(z + self.log_counts.to(z.dtype), y, reduction="none")
        if mask is None:
            return per_sample.mean()
        return (per_sample * mask).sum() / mask.sum()
