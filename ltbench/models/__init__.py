"""Model factory: CIFAR ResNets by name and any timm model for larger images (docs/methods.md §2, §8)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import Registry
from .heads import CosineClassifier, LWSClassifier, TauNormClassifier
from .resnet_cifar import BasicBlock, CifarResNet, resnet18_cifar, resnet32

MODELS: Registry[nn.Module] = Registry("model", "model")
MODELS.register("resnet32")(resnet32)
MODELS.register("resnet18_cifar")(resnet18_cifar)

CLASSIFIERS = ("linear", "cosine")


def _timm_model(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    import timm

    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        raise ValueError(
            f"unknown model: model={name!r}; valid: {', '.join(MODELS.names())} or a timm model name "
            "prefixed 'timm/' (see timm.list_models())"
        )
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)


def build_model(
    name: str, num_classes: int, classifier: str = "linear", pretrained: bool = False,
    cosine_scale: float = 30.0, head_bias_init: str = "zero",
) -> nn.Module:
    """Build ``name`` ('resnet32', 'resnet18_cifar' or 'timm/<timm name>') with a ``classifier`` head.

    The returned model has ``forward_features``, ``forward_head`` and a swappable classifier
    (``model.fc`` for the CIFAR ResNets, timm's ``get_classifier()`` otherwise). ``cosine_scale``
    is recorded on a cosine head as ``logit_scale`` (the scale its loss applies, LDAM's ``s``;
    see :func:`logit_scale`); a linear head ignores it. ``head_bias_init``: ``"zero"`` (the CIFAR
    ResNets' own init) or ``"uniform"`` (PyTorch's nn.Linear default, U(+-1/sqrt(fan_in)), as
    LDAM-DRW's ResNet-32 leaves it; drawn from the global RNG after the weights).
    """
    if head_bias_init not in ("uniform", "zero"):
        raise ValueError(f"invalid head_bias_init={head_bias_init!r}: must be 'uniform' or 'zero'")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier: classifier={classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    if name.startswith("timm/"):
        model = _timm_model(name[len("timm/"):], num_classes, pretrained)
        if classifier == "cosine":
            head = model.get_classifier()
            model.reset_classifier(0)
            cos = CosineClassifier(model.num_features, num_classes, scale=cosine_scale)
            # timm's reset_classifier(0) leaves Identity; reattach under the same attribute name
            _set_submodule(model, model.default_cfg.get("classifier", "fc"), cos)
            del head
        return model
    model = MODELS.build(name, num_classes)
    if classifier == "cosine":
        model.fc = CosineClassifier(model.num_features, num_classes, scale=cosine_scale)
    else:
        init_head_bias(model.fc, head_bias_init)
    return model


def init_head_bias(head: nn.Module, head_bias_init: str) -> None:
    """Set a linear head's bias as ``TrainConfig.head_bias_init`` says: ``"uniform"`` draws PyTorch's
    nn.Linear default U(+-1/sqrt(fan_in)) from the global RNG; ``"zero"`` zeroes it. Heads without
    a bias are left alone."""
    if head_bias_init not in ("uniform", "zero"):
        raise ValueError(f"invalid head_bias_init={head_bias_init!r}: must be 'uniform' or 'zero'")
    bias = getattr(head, "bias", None)
    if not isinstance(head, nn.Linear) or bias is None:
        return
    with torch.no_grad():
        if head_bias_init == "uniform":
            bound = 1.0 / math.sqrt(head.in_features)
            bias.uniform_(-bound, bound)
        else:
            bias.zero_()


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """``model.<path> = module`` for a dotted path such as timm's ``"head.fc"`` (NFNet, ConvNeXt)."""
    *parents, last = path.split(".")
    parent = model
    for name in parents:
        parent = getattr(parent, name)
    setattr(parent, last, module)


def get_classifier(model: nn.Module) -> nn.Module:
    """The classifier module of a model built by :func:`build_model`."""
    if hasattr(model, "fc"):
        return model.fc
    return model.get_classifier()


def logit_scale(model: nn.Module) -> float:
    """The factor between ``model(x)`` and the logits its loss sees (docs/methods.md §3 calibration, §4 ldam).

    A cosine head (:class:`CosineClassifier`) outputs cosines that LDAM multiplies by ``s``:
    returns its ``logit_scale`` (``cosine_scale`` of :func:`build_model`, 30 by default). Any other
    head is used as is: 1.0. ECE comparable with linear-head runs is ``ece(logit_scale(model) * model(x))``.
    """
    head = get_classifier(model)
    return float(getattr(head, "logit_scale", 1.0)) if isinstance(head, CosineClassifier) else 1.0


def set_classifier(model: nn.Module, head: nn.Module) -> None:
    """Replace the classifier module of ``model``."""
    if isinstance(model, CifarResNet) or hasattr(model, "fc"):
        model.fc = head
    else:
        _set_submodule(model, model.default_cfg.get("classifier", "fc"), head)


__all__ = [
    "MODELS", "build_model", "init_head_bias", "get_classifier", "set_classifier", "logit_scale", "resnet32", "resnet18_cifar",
    "CifarResNet", "BasicBlock", "CosineClassifier", "TauNormClassifier", "LWSClassifier",
]
