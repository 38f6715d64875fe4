"""SPEC §2 ResNet-32 and the classifier heads."""
from __future__ import annotations

import pytest
import torch

from ltbench.models import CosineClassifier, LWSClassifier, TauNormClassifier, build_model, resnet32


def test_resnet32_parameter_count_and_shapes():
    m = resnet32(10)
    n = sum(p.numel() for p in m.parameters())
    assert n == 464_154  # ~0.46 M (SPEC §2); option-A shortcuts have no parameters
    assert resnet32(100).fc.out_features == 100
    x = torch.randn(2, 3, 32, 32)
    f = m.forward_features(x)
    assert f.shape == (2, 64, 8, 8)
    assert torch.allclose(m.forward_head(f), m(x))
    assert len(m.layers) == 3 and all(len(s) == 5 for s in m.layers)


def test_resnet18_cifar_and_timm():
    m = build_model("resnet18_cifar", 10)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    t = build_model("timm/resnet18", 7)
    assert t(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_cosine_head_logits_bounded():
    m = build_model("resnet32", 10, classifier="cosine")
    assert isinstance(m.fc, CosineClassifier) and m.fc.bias is None
    z = m(torch.randn(4, 3, 32, 32))
    assert z.abs().max() <= 1 + 1e-5


def test_tau_norm_and_lws():
    lin = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    assert torch.allclose(TauNormClassifier(lin, 0.0)(x), x @ lin.weight.T)
    w1 = TauNormClassifier(lin, 1.0).weight
    assert torch.allclose(w1.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="tau"):
        TauNormClassifier(lin, -1)
    lws = LWSClassifier(lin)
    assert torch.allclose(lws(x), lin(x))
    assert [n for n, p in lws.named_parameters()] == ["scales"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="resnet33", num_classes=10), "resnet32"),
    (dict(name="resnet32", num_classes=0), "num_classes"),
    (dict(name="resnet32", num_classes=10, classifier="mlp"), "classifier"),
])
def test_bad_model_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)
