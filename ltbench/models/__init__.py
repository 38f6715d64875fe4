"""Model factory: CIFAR ResNets by name and any timm model for larger images (SPEC §2, §8)."""
from __future__ import annotations

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
    name: str, num_classes: int, classifier: str = "linear", pretrained: bool = False
) -> nn.Module:
    """Build ``name`` ('resnet32', 'resnet18_cifar' or 'timm/<timm name>') with a ``classifier`` head.

    The returned model has ``forward_features``, ``forward_head`` and a swappable classifier
    (``model.fc`` for the CIFAR ResNets, timm's ``get_classifier()`` otherwise).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier: classifier={classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    if name.startswith("timm/"):
        model = _timm_model(name[len("timm/"):], num_classes, pretrained)
        if classifier == "cosine":
            head = model.get_classifier()
            model.reset_classifier(0)
            cos = CosineClassifier(model.num_features, num_classes)
            # timm's reset_classifier(0) leaves Identity; reattach under the same attribute name
            _set_submodule(model, model.default_cfg.get("classifier", "fc"), cos)
            del head
        return model
    model = MODELS.build(name, num_classes)
    if classifier == "cosine":
        model.fc = CosineClassifier(model.num_features, num_classes)
    return model


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


def set_classifier(model: nn.Module, head: nn.Module) -> None:
    """Replace the classifier module of ``model``."""
    if isinstance(model, CifarResNet) or hasattr(model, "fc"):
        model.fc = head
    else:
        _set_submodule(model, model.default_cfg.get("classifier", "fc"), head)


__all__ = [
    "MODELS", "build_model", "get_classifier", "set_classifier", "resnet32", "resnet18_cifar",
    "CifarResNet", "BasicBlock", "CosineClassifier", "TauNormClassifier", "LWSClassifier",
]
