"""docs/methods.md §2 ResNet-32 and the classifier heads."""
from __future__ import annotations

import pytest
import torch

from ltbench.models import (CosineClassifier, LWSClassifier, TauNormClassifier, build_model, get_classifier,
                            logit_scale, resnet32)


def test_resnet32_parameter_count_and_shapes():
    m = resnet32(10)
    n = sum(p.numel() for p in m.parameters())
    assert n == 464_154  # ~0.46 M (docs/methods.md §2); option-A shortcuts have no parameters
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


@pytest.mark.parametrize("name,dim", [("resnet32", 64), ("resnet18_cifar", 512)])
def test_cosine_head_initial_class_vectors_have_unit_norm(name, dim):
    """LDAM-DRW's NormedLinear: uniform(-1, 1), then each class vector renormalised to norm 1
    (before the fix the rows started at norm ~ sqrt(dim / 3), 4.6 for ResNet-32)."""
    torch.manual_seed(0)
    w = build_model(name, 100, classifier="cosine").fc.weight.detach()
    assert w.shape == (100, dim)
    torch.testing.assert_close(w.norm(dim=1), torch.ones(100), rtol=0, atol=1e-6)
    # Still a uniform(-1, 1) draw up to the per-row scale: kurtosis m4 / m2^2 of a uniform is 1.8
    # (a normal's is 3), and no entry exceeds 1 / (row norm of the draw) ~ sqrt(3 / dim).
    z = (w - w.mean()).flatten()
    assert float((z ** 4).mean() / (z ** 2).mean() ** 2) == pytest.approx(1.8, abs=0.15)
    assert float(w.abs().max()) < 3 / dim ** 0.5


def test_cosine_head_logit_scale():
    m = build_model("resnet32", 10, classifier="cosine")
    assert m.fc.logit_scale == 30.0 and logit_scale(m) == 30.0  # LDAM's s
    assert logit_scale(build_model("resnet32", 10, classifier="cosine", cosine_scale=16)) == 16.0
    assert logit_scale(build_model("resnet32", 10)) == 1.0  # linear head: the logits the loss sees
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():  # forward stays unscaled (the LDAM loss multiplies by s)
        assert m(x).abs().max() <= 1 + 1e-5
    assert "logit_scale=30" in repr(get_classifier(m))
    with pytest.raises(ValueError, match=r"scale must be a finite number > 0.*scale=0"):
        CosineClassifier(4, 2, scale=0)


def test_timm_cosine_head():
    pytest.importorskip("timm")
    m = build_model("timm/resnet18", 7, classifier="cosine", cosine_scale=20.0)
    head = get_classifier(m)
    assert isinstance(head, CosineClassifier) and logit_scale(m) == 20.0
    torch.testing.assert_close(head.weight.detach().norm(dim=1), torch.ones(7), rtol=0, atol=1e-6)


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
