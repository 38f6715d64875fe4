"""The loss zoo (docs/methods.md §4).

``build_loss(name, class_counts, **hparams)`` returns an ``nn.Module`` whose
``forward(logits [N, C], targets [N]) -> scalar``. Names: ce, balanced_ce, focal, sigmoid_ce,
sigmoid_focal, cb_softmax, cb_sigmoid, cb_focal, ldam, sigmoid_eql, softmax_eql,
softmax_eql_v2, efl. Every loss class has ``uses_sigmoid`` and ``stateful`` class attributes.
Add a loss with ``@register_loss("my_loss")`` on a class taking ``(class_counts, **hparams)``.
"""
from ._base import LossBase, StatefulLoss, masked_mean, supports_mask, weighted_cross_entropy
from ._registry import LOSSES, build_loss, check_loss, register_loss
from .class_balanced import ClassBalancedFocalLoss, ClassBalancedSigmoidLoss, ClassBalancedSoftmaxLoss
from .efl import EqualizedFocalLoss
from .eql import SigmoidEQLLoss, SoftmaxEQLLoss, SoftmaxEQLv2Loss
from .ldam import LDAMLoss, ldam_margins
from .sigmoid import SigmoidCrossEntropyLoss, SigmoidFocalLoss
from .softmax import BalancedCrossEntropyLoss, CrossEntropyLoss, SoftmaxFocalLoss
from .weights import class_balanced_weights, effective_number, inverse_frequency_weights, mean_sample_weight

__all__ = [
    "LOSSES",
    "build_loss",
    "register_loss",
    "check_loss",
    "LossBase",
    "StatefulLoss",
    "supports_mask",
    "masked_mean",
    "weighted_cross_entropy",
    "CrossEntropyLoss",
    "BalancedCrossEntropyLoss",
    "SoftmaxFocalLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLoss",
    "ClassBalancedSoftmaxLoss",
    "ClassBalancedSigmoidLoss",
    "ClassBalancedFocalLoss",
    "LDAMLoss",
    "SigmoidEQLLoss",
    "SoftmaxEQLLoss",
    "SoftmaxEQLv2Loss",
    "EqualizedFocalLoss",
    "class_balanced_weights",
    "inverse_frequency_weights",
    "effective_number",
    "mean_sample_weight",
    "ldam_margins",
]
