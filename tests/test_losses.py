"""Tests of the loss zoo against docs/methods.md §4 (closed forms, references, state, errors)."""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltbench.losses import (
    LOSSES,
    build_loss,
    class_balanced_weights,
    effective_number,
    inverse_frequency_weights,
    ldam_margins,
    register_loss,
)

torch.set_num_threads(1)

ALL = LOSSES.names()
SIGMOID = {"sigmoid_ce", "sigmoid_focal", "cb_sigmoid", "cb_focal", "sigmoid_eql", "efl"}
STATEFUL = {"sigmoid_eql", "softmax_eql", "softmax_eql_v2", "efl"}
COUNTS = [500, 120, 30, 8, 2]
LN2 = math.log(2.0)


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def y_(x):
    return torch.tensor(x, dtype=torch.long)


# ----------------------------------------------------------------------------- registry / flags


def test_names_and_flags():
    assert set(ALL) >= {
        "ce", "balanced_ce", "focal", "sigmoid_ce", "sigmoid_focal", "cb_softmax", "cb_sigmoid",
        "cb_focal", "ldam", "sigmoid_eql", "softmax_eql", "softmax_eql_v2", "efl",
    }
    for name in ALL:
        loss = build_loss(name, COUNTS)
        assert isinstance(loss, torch.nn.Module)
        assert type(loss).uses_sigmoid is (name in SIGMOID), name
        assert type(loss).stateful is (name in STATEFUL), name


def test_defaults():
    assert build_loss("focal", COUNTS).gamma == 1.0
    sf = build_loss("sigmoid_focal", COUNTS)
    assert (sf.gamma, sf.alpha) == (2.0, -1.0)
    for name in ("cb_softmax", "cb_sigmoid", "cb_focal"):
        assert build_loss(name, COUNTS).beta == 0.9999
    assert build_loss("cb_focal", COUNTS).gamma == 1.0
    assert build_loss("balanced_ce", COUNTS).power == 1.0
    ldam = build_loss("ldam", COUNTS)
    assert (ldam.max_m, ldam.s) == (0.5, 30.0)
    eql = build_loss("sigmoid_eql", COUNTS)
    assert (eql.gamma, eql.mu, eql.alpha) == (12.0, 0.8, 4.0)
    assert torch.equal(eql.ratio, torch.full((5,), 100.0))
    efl = build_loss("efl", COUNTS)
    assert (efl.gamma_b, efl.s_f, efl.alpha) == (2.0, 8.0, 0.25)
    assert torch.equal(efl.g, torch.ones(5))
    assert build_loss("softmax_eql", COUNTS).tau == build_loss("softmax_eql_v2", COUNTS).tau == 1.0


def test_register_custom_loss():
    name = "_test_custom_double_ce"
    try:

        @register_loss(name)
        class DoubleCE(torch.nn.Module):
            def __init__(self, class_counts, factor=2.0):
                super().__init__()
                self.factor = factor

            def forward(self, logits, targets):
                return self.factor * F.cross_entropy(logits, targets)

        assert name in LOSSES.names()
        loss = build_loss(name, [3, 2, 1], factor=3.0)
        z, y = torch.randn(4, 3), y_([0, 1, 2, 0])
        assert torch.allclose(loss(z, y), 3 * F.cross_entropy(z, y))
        assert loss.uses_sigmoid is False and loss.stateful is False  # defaulted by build_loss
        with pytest.raises(ValueError, match="factr"):
            build_loss(name, [3, 2, 1], factr=3.0)
        with pytest.raises(ValueError, match="already registered"):
            register_loss(name)(DoubleCE)
    finally:
        LOSSES._items.pop(name, None)


# ----------------------------------------------------------------------------- weight helpers


def test_class_balanced_weights():
    # counts [1, 2], beta 0.5: (1-b)/(1-b^n) = [1, 2/3] -> sum 2: [1.2, 0.8]
    assert torch.allclose(class_balanced_weights([1, 2], 0.5), t([1.2, 0.8]), rtol=1e-6)
    assert torch.equal(class_balanced_weights([5000, 50, 1], 0.0), torch.ones(3))
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    b = 0.9999
    raw = np.array([(1 - b) / (1 - b**n) for n in counts])
    ref = raw / raw.sum() * len(counts)
    w = class_balanced_weights(counts, b)
    assert w.dtype == torch.float32 and torch.allclose(w.double(), torch.from_numpy(ref), rtol=1e-6)
    assert math.isclose(float(w.sum()), 10.0, rel_tol=1e-6)
    huge = class_balanced_weights([1e300, 1e30, 1e12, 1], 0.9999999)
    assert torch.isfinite(huge).all() and math.isclose(float(huge.sum()), 4.0, rel_tol=1e-6)
    assert torch.allclose(effective_number([1, 2], 0.5).float(), t([1.0, 1.5]))


def test_mean_sample_weight_is_the_loss_scale_of_a_loss_divided_by_n():
    from ltbench.losses import mean_sample_weight

    # Equal counts or all-ones weights: an average batch carries weight 1.
    assert mean_sample_weight([7, 7, 7], class_balanced_weights([7, 7, 7], 0.9999)) == pytest.approx(1.0)
    assert mean_sample_weight([5000, 50], torch.ones(2)) == pytest.approx(1.0)
    # Inverse frequency (sum C): w_j = C / (n_j sum_k 1/n_k), so the mean is C^2 / (N sum_k 1/n_k).
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    closed = len(counts) ** 2 / (sum(counts) * sum(1 / n for n in counts))
    assert mean_sample_weight(counts, inverse_frequency_weights(counts)) == pytest.approx(closed, rel=1e-6)
    # CB weights at beta 0.9999 on CIFAR-10-LT IR100 lie between inverse frequency and no weights.
    cb = mean_sample_weight(counts, class_balanced_weights(counts, 0.9999))
    assert closed < cb < 1 and cb == pytest.approx(0.17099516, rel=1e-6)
    # It is what dividing by N scales: the weighted loss over a batch drawn at the class frequencies.
    y = torch.repeat_interleave(torch.arange(10), torch.tensor(counts))
    z = torch.randn(len(y), 10, generator=torch.Generator().manual_seed(0))
    w = class_balanced_weights(counts, 0.9999)
    per = torch.nn.functional.cross_entropy(z, y, reduction="none")
    by_n = build_loss("cb_softmax", counts, beta=0.9999)(z, y)
    by_sum = torch.nn.functional.cross_entropy(z, y, weight=w)
    assert float(by_n / by_sum) == pytest.approx(cb, rel=1e-5)
    assert float((w[y] * per).sum() / len(y)) == pytest.approx(float(by_n), rel=1e-5)
    with pytest.raises(ValueError, match="weights must have one value per class"):
        mean_sample_weight([1, 2, 3], torch.ones(2))


def test_inverse_frequency_weights():
    assert torch.allclose(inverse_frequency_weights([3, 1]), t([0.5, 1.5]))
    assert torch.allclose(inverse_frequency_weights([4, 1], power=0.5), t([2 / 3, 4 / 3]))
    w = inverse_frequency_weights([1e300, 1e-300, 1.0])
    assert torch.isfinite(w).all() and math.isclose(float(w.sum()), 3.0, rel_tol=1e-6)


def test_ldam_margins():
    assert torch.allclose(ldam_margins([16, 1]), t([0.25, 0.5]))
    assert float(ldam_margins(COUNTS).max()) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- closed forms


def test_ce_and_balanced_ce_closed_form():
    ce = build_loss("ce", [1, 1])
    assert ce(t([[0.0, 0.0]]), y_([1])).item() == pytest.approx(LN2, rel=1e-6)
    # mmdetection-style extremes: -log p = 0 when right by 200, 200 when wrong by 200
    assert ce(t([[100.0, -100.0], [-100.0, 100.0]]), y_([0, 0])).item() == pytest.approx(100.0)
    bce = build_loss("balanced_ce", [3, 1])  # w = [0.5, 1.5]
    z = torch.zeros(3, 2)
    assert bce(z, y_([0, 1, 1])).item() == pytest.approx((0.5 + 1.5 + 1.5) * LN2 / 3, rel=1e-6)
    assert bce(t([[-100.0, 100.0]]), y_([0])).item() == pytest.approx(0.5 * 200.0)
    z, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert torch.allclose(build_loss("ce", COUNTS)(z, y), F.cross_entropy(z, y))


def test_softmax_focal_closed_form():
    f1 = build_loss("focal", [1, 1])  # gamma 1
    assert f1(t([[0.0, 0.0]]), y_([0])).item() == pytest.approx(0.5 * LN2, rel=1e-6)
    assert f1(t([[100.0, -100.0]]), y_([1])).item() == pytest.approx(200.0)
    assert f1(t([[100.0, -100.0]]), y_([0])).item() == 0.0
    f2 = build_loss("focal", [1, 1, 1], gamma=2.0)
    z, y = torch.randn(7, 3), torch.randint(0, 3, (7,))
    p = z.softmax(1)[torch.arange(7), y]
    assert torch.allclose(f2(z, y), ((1 - p) ** 2 * -p.log()).mean(), rtol=1e-5)
    f0 = build_loss("focal", [1, 1, 1], gamma=0.0)
    assert torch.allclose(f0(z, y), F.cross_entropy(z, y))


def test_sigmoid_closed_form():
    sce = build_loss("sigmoid_ce", [1, 1, 1])
    assert sce(torch.zeros(2, 3), y_([0, 2])).item() == pytest.approx(3 * LN2, rel=1e-6)
    # right by 100 on every column: exp(-100) each (log1p of it), wrong by 100: 100 each
    assert sce(t([[100.0, -100.0, -100.0]]), y_([0])).item() == pytest.approx(3 * math.exp(-100), rel=1e-5)
    assert sce(t([[-100.0, 100.0, 100.0]]), y_([0])).item() == pytest.approx(300.0)
    sf = build_loss("sigmoid_focal", [1, 1], gamma=2.0, alpha=0.25)
    # z = 0: (1 - p_t)^2 = 1/4 on both columns; a_t 0.25 (pos) + 0.75 (neg)
    assert sf(torch.zeros(1, 2), y_([0])).item() == pytest.approx(0.25 * LN2, rel=1e-6)
    # wrong by 100 on both columns: 0.25 * 100 + 0.75 * 100
    assert sf(t([[100.0, -100.0]]), y_([1])).item() == pytest.approx(100.0)
    # right by 100: a_t * exp(-100)^2 * exp(-100) per column, i.e. (0.25 + 0.75) * exp(-300)
    assert sf(t([[-100.0, 100.0]]), y_([1])).item() == pytest.approx(0.0, abs=1e-40)


@pytest.mark.parametrize("alpha,gamma", [(-1, 2.0), (0.25, 2.0), (0.5, 0.5), (0.75, 1.0), (0.25, 0.0), (1.0, 3.0)])
def test_sigmoid_focal_matches_torchvision(alpha, gamma):
    from torchvision.ops import sigmoid_focal_loss

    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(32, 7, generator=g) * 3, torch.randint(0, 7, (32,), generator=g)
    ours = build_loss("sigmoid_focal", [1] * 7, gamma=gamma, alpha=alpha)(z, y)
    ref = sigmoid_focal_loss(z, F.one_hot(y, 7).float(), alpha=alpha, gamma=gamma, reduction="sum") / 32
    assert torch.allclose(ours, ref, rtol=1e-5)
    if alpha == -1 and gamma == 0.0:
        assert torch.allclose(ours, build_loss("sigmoid_ce", [1] * 7)(z, y))


def test_cb_family():
    counts = [1000, 100, 10]
    w = class_balanced_weights(counts, 0.999)
    z, y = torch.randn(12, 3), y_([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0])
    cb = build_loss("cb_softmax", counts, beta=0.999)(z, y)
    spec = (w[y] * F.cross_entropy(z, y, reduction="none")).sum() / 12
    torch_weighted = F.cross_entropy(z, y, weight=w)
    assert torch.allclose(cb, spec, rtol=1e-6)
    assert not torch.allclose(cb, torch_weighted, rtol=1e-3)  # the SPEC's point: divide by N
    Y = F.one_hot(y, 3).float()
    bce = F.binary_cross_entropy_with_logits(z, Y, reduction="none")
    cbs = build_loss("cb_sigmoid", counts, beta=0.999)(z, y)
    assert torch.allclose(cbs, (w[y, None] * bce).sum() / 12, rtol=1e-6)
    s = torch.sigmoid(z)
    one_minus_pt = torch.where(Y.bool(), 1 - s, s)
    cbf = build_loss("cb_focal", counts, beta=0.999, gamma=2.0)(z, y)
    assert torch.allclose(cbf, (w[y, None] * one_minus_pt**2 * bce).sum() / 12, rtol=1e-5)
    # beta = 0: all weights 1 -> plain losses; extremes in closed form
    assert torch.allclose(build_loss("cb_softmax", counts, beta=0.0)(z, y), F.cross_entropy(z, y))
    cb0 = build_loss("cb_sigmoid", [1, 1], beta=0.0)
    assert cb0(t([[100.0, -100.0]]), y_([1])).item() == pytest.approx(200.0)


def test_ldam_closed_form_and_drw():
    ldam = build_loss("ldam", [16, 1])  # margins [0.25, 0.5], s 30
    # logits 30 * ([0, 0] - [0, 0.5]) = [0, -15]
    assert ldam(torch.zeros(1, 2), y_([1])).item() == pytest.approx(15 + math.log1p(math.exp(-15)), rel=1e-6)
    assert ldam(torch.zeros(1, 2), y_([0])).item() == pytest.approx(7.5 + math.log1p(math.exp(-7.5)), rel=1e-6)
    z, y = torch.randn(9, 2), torch.randint(0, 2, (9,))
    m = t([0.25, 0.5])
    ref = F.cross_entropy(30 * (z - m[y, None] * F.one_hot(y, 2)), y)
    assert torch.allclose(ldam(z, y), ref, rtol=1e-6)
    w = t([0.3, 1.7])
    ldam.set_class_weight(w)
    assert torch.allclose(ldam(z, y), F.cross_entropy(30 * (z - m[y, None] * F.one_hot(y, 2)), y, weight=w), rtol=1e-6)


def test_ce_class_weight_drw_and_state_dict():
    ce = build_loss("ce", COUNTS)
    z, y = torch.randn(10, 5), torch.randint(0, 5, (10,))
    w = class_balanced_weights(COUNTS, 0.9999)
    assert "class_weight" not in ce.state_dict()
    ce.set_class_weight(w)
    assert torch.allclose(ce(z, y), F.cross_entropy(z, y, weight=w))
    sd = ce.state_dict()
    assert torch.equal(sd["class_weight"], w)
    fresh = build_loss("ce", COUNTS)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(z, y), ce(z, y))
    ce.load_state_dict(build_loss("ce", COUNTS).state_dict())  # a checkpoint without weights
    assert ce.class_weight is None and torch.equal(ce(z, y), F.cross_entropy(z, y))
    assert torch.allclose(build_loss("ce", COUNTS, weight=w)(z, y), F.cross_entropy(z, y, weight=w))
    ce.set_class_weight(w)
    ce.set_class_weight(None)
    assert torch.equal(ce(z, y), F.cross_entropy(z, y))


def test_stateful_start_values():
    """Before any step: EQL weights ~1, Softmax-EQL = CE, EFL = focal(gamma_b, alpha)."""
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(build_loss("sigmoid_eql", COUNTS)(z, y), build_loss("sigmoid_ce", COUNTS)(z, y))
    for name in ("softmax_eql", "softmax_eql_v2"):
        assert torch.allclose(build_loss(name, COUNTS)(z, y), F.cross_entropy(z, y), rtol=1e-6)
    ref = build_loss("sigmoid_focal", COUNTS, gamma=2.0, alpha=0.25)(z, y)
    assert torch.allclose(build_loss("efl", COUNTS)(z, y), ref, rtol=1e-6)


def test_softmax_eql_literal_form():
    """``p_y = G_y^tau e^{z_y} / sum_k G_k^tau e^{z_k}`` with ``G = clamp(G_pos, 1e-4)``."""
    loss = build_loss("softmax_eql", [1, 1, 1], tau=0.7)
    loss.pos_grad.copy_(t([2.0, 0.5, 0.0]))
    z, y = torch.randn(6, 3), y_([0, 1, 2, 2, 1, 0])
    G = t([2.0, 0.5, 1e-4]) ** 0.7
    p = G * z.exp() / (G * z.exp()).sum(1, keepdim=True)
    assert torch.allclose(loss(z, y), -p[torch.arange(6), y].log().mean(), rtol=1e-5)


# ----------------------------------------------------------------------------- extreme logits
# mmdetection-style closed forms at +-100: a right entry costs ~exp(-100) (0 to the tolerance
# used), a wrong one costs its margin (log-sum-exp -> max), a tie costs log of a simple ratio.


def test_cb_softmax_extreme_logits():
    loss = build_loss("cb_softmax", [1, 2], beta=0.5)  # w = [1.2, 0.8] (see above)
    z, y = t([[100.0, -100.0], [100.0, -100.0], [100.0, 100.0]]), y_([0, 1, 1])
    # CE = [0, 200, log 2]; divided by N = 3, not by sum w[y_i] = 2.8
    assert loss(z, y).item() == pytest.approx((1.2 * 0 + 0.8 * 200 + 0.8 * LN2) / 3, rel=1e-6)
    assert F.cross_entropy(z, y, weight=t([1.2, 0.8])).item() == pytest.approx((0.8 * 200 + 0.8 * LN2) / 2.8, rel=1e-6)


def test_ldam_extreme_logits():
    loss = build_loss("ldam", [16, 1])  # margins [0.25, 0.5], s = 30
    z, y = t([[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0]]), y_([1, 1, 0])
    # 30 * (z - m_y Y): [3000, -3015] -> CE 6015; [-3000, 2985] -> 0; [2992.5, 3000] -> 7.5 + log1p(e^-7.5)
    ces = [6015.0, 0.0, 7.5 + math.log1p(math.exp(-7.5))]
    assert loss(z, y).item() == pytest.approx(sum(ces) / 3, rel=1e-6)
    loss.set_class_weight(t([0.3, 1.7]))  # DRW: PyTorch's weighted mean
    w = [1.7, 1.7, 0.3]
    assert loss(z, y).item() == pytest.approx(sum(a * b for a, b in zip(w, ces)) / sum(w), rel=1e-6)


def test_softmax_eql_extreme_logits():
    loss = build_loss("softmax_eql", [1, 1, 1])
    loss.pos_grad.copy_(t([4.0, 1.0, 0.0]))  # G = clamp(G_pos, 1e-4) = [4, 1, 1e-4]
    z = t([[100.0, -100.0, -100.0], [-100.0, 100.0, -100.0], [100.0, 100.0, -100.0], [100.0, -100.0, 100.0]])
    y = y_([1, 0, 0, 2])
    # z' = z + log(G_j / G_y): wrong by 200 shifted by log(G_j / G_y); ties give log(1 + G_j / G_y)
    expected = [200 + math.log(4), 200 - math.log(4), math.log(1.25), math.log(1 + 4 / 1e-4)]
    zz = z.clone().requires_grad_()
    out = loss(zz, y)
    assert out.item() == pytest.approx(sum(expected) / 4, rel=1e-6)
    out.backward()
    # statistics: |dL/dz| = |p - Y| / N with p = [1,0,0], [0,1,0], [.8,.2,0], [r,0,1-r], r = 4e4/40001
    r = 4e4 / 40001
    pos = [4.0 + (1 + 0.2) / 4, 1.0 + 1 / 4, 0.0 + r / 4]
    neg = [(1 + r) / 4, (1 + 0.2) / 4, 0.0]
    torch.testing.assert_close(loss.pos_grad, t(pos), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(loss.neg_grad, t(neg), rtol=1e-6, atol=1e-7)


def test_softmax_eql_v2_extreme_logits():
    loss = build_loss("softmax_eql_v2", [1, 1, 1])
    loss.pos_grad.copy_(t([3.0, 1.0, 0.0]))
    a = [v / (4 + 1e-4) + 1e-9 for v in (3.0, 1.0, 0.0)]  # pi ** tau + 1e-9, tau = 1
    z = t([[100.0, 100.0, -100.0], [-100.0, 100.0, -100.0], [100.0, -100.0, 100.0], [-100.0, 100.0, 100.0]])
    y = y_([0, 1, 2, 0])
    # CE(z + log a): ties -> log(sum of tied a / a_y); wrong by 200 -> 200 + that log
    expected = [
        math.log((a[0] + a[1]) / a[0]),  # ~ log(4/3)
        0.0,
        math.log((a[0] + a[2]) / a[2]),  # ~ log(0.75e9): the 1e-9 floor of a class with G_pos = 0
        200 + math.log((a[1] + a[2]) / a[0]),  # ~ 200 + log(1/3)
    ]
    assert loss(z, y).item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_sigmoid_eql_extreme_logits():
    loss = build_loss("sigmoid_eql", [1, 1, 1])
    # ratio 100 -> q = 1, r = 1; ratio = mu -> q = f(mu) = 1/2, r = 1 + 4 * (1 - 1/2) = 3
    loss.ratio.copy_(t([100.0, 0.8, 0.8]))
    z = t([[100.0, -100.0, -100.0], [100.0, -100.0, 100.0], [-100.0, 0.0, 100.0]])
    y = y_([0, 1, 2])
    # row 0 all right; row 1 all wrong by 100: q_0 * 100 + r_1 * 100 + q_2 * 100 = 450;
    # row 2: only the negative at 0, q_1 * log 2
    zz = z.clone().requires_grad_()
    out = loss(zz, y)
    assert out.item() == pytest.approx((450 + 0.5 * LN2) / 3, rel=1e-6)
    out.backward()
    # G W (not divided by N): wrong entries G = 1, right ones ~exp(-100), the 0 entry G = 1/2
    torch.testing.assert_close(loss.pos_grad, t([0.0, 3.0, 0.0]), rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(loss.neg_grad, t([1.0, 0.25, 0.5]), rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(loss.ratio, t([0.0, 12.0, 0.0]), rtol=1e-6, atol=1e-30)


def test_efl_extreme_logits():
    loss = build_loss("efl", [1, 1, 1])  # gamma_b 2, s_f 8, alpha 0.25
    loss.g.copy_(t([1.0, 0.5, 0.0]))  # gamma_j = [2, 6, 10], weighting factor gamma_j / 2 = [1, 3, 5]
    z = t([[100.0, -100.0, 100.0], [-100.0, 0.0, -100.0], [-100.0, -100.0, 100.0]])
    y = y_([1, 0, 2])
    # wrong by 100: (1 - p_t) ** gamma = 1, -log p_t = 100 -> a_t * w_j * 100;
    # row 0: .75*1*100 + .25*3*100 + .75*5*100 = 525; row 1: .25*1*100 + .75*3*(1/2)**6*log 2
    zz = z.clone().requires_grad_()
    out = loss(zz, y)
    assert out.item() == pytest.approx((525 + 25 + 0.75 * 3 * LN2 / 64) / 3, rel=1e-6)
    out.backward()
    # true gradient (1/N included): wrong entries a_t * w_j / N; the 0 entry
    # a_t * w_j * (1/2)**6 * (6 * 1/2 * log 2 + 1/2) / N; right entries ~0
    mid = 0.75 * 3 * (3 * LN2 + 0.5) / 64 / 3
    torch.testing.assert_close(loss.pos_grad, t([0.25 / 3, 0.75 / 3, 0.0]), rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(loss.neg_grad, t([0.75 / 3, mid, 0.75 * 5 / 3]), rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(loss.g, t([1 / 3, 1.0, 0.0]), rtol=1e-6, atol=1e-30)  # clamped to [0, 1]


# ----------------------------------------------------------------------------- hand-computed steps
# Independent float64 NumPy references straight from docs/methods.md §4's update rules; the model is the
# logits themselves (a parameter) updated by plain SGD, so the gradient is computed by hand too.


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _ref_sigmoid_eql(z, y, state, gamma=12.0, mu=0.8, alpha=4.0):
    N, C = z.shape
    Y = np.eye(C)[y]
    q = 1.0 / (1.0 + np.exp(-gamma * (state["ratio"] - mu)))
    r = 1.0 + alpha * (1.0 - q)
    W = r * Y + q * (1 - Y)
    s = _sig(z)
    bce = -(Y * np.log(s) + (1 - Y) * np.log(1 - s))
    loss = (W * bce).sum() / N
    grad = W * (s - Y) / N
    G = np.abs(Y * (s - 1) + (1 - Y) * s)
    pos = state["pos_grad"] + (G * Y * W).sum(0)
    neg = state["neg_grad"] + (G * (1 - Y) * W).sum(0)
    return loss, grad, {"pos_grad": pos, "neg_grad": neg, "ratio": pos / (neg + 1e-10)}


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ref_softmax_eql(z, y, state, tau=1.0):
    N, C = z.shape
    Y = np.eye(C)[y]
    G = np.maximum(state["pos_grad"], 1e-4)
    zp = z + tau * (np.log(G)[None, :] - np.log(G[y])[:, None])
    p = _softmax(zp)
    loss = -np.log(p[np.arange(N), y]).mean()
    grad = (p - Y) / N
    pos = state["pos_grad"] + (np.abs(grad) * Y).sum(0)
    neg = state["neg_grad"] + (np.abs(grad) * (1 - Y)).sum(0)
    return loss, grad, {"pos_grad": pos, "neg_grad": neg}


def _ref_efl(z, y, state, gamma_b=2.0, s_f=8.0, alpha=0.25):
    N, C = z.shape
    Y = np.eye(C)[y]
    gam = gamma_b + s_f * (1 - state["g"])
    sign = 2 * Y - 1
    pt = _sig(sign * z)
    at = alpha * Y + (1 - alpha) * (1 - Y)
    wgt = at * gam / gamma_b
    loss = (wgt * (1 - pt) ** gam * -np.log(pt)).sum() / N
    # d/dz_t [(1-p)^g (-log p)] = -(1-p)^g [g p (-log p) + (1 - p)],  dz_t/dz = sign
    grad = wgt * sign * -((1 - pt) ** gam) * (gam * pt * -np.log(pt) + (1 - pt)) / N
    pos = state["pos_grad"] + (np.abs(grad) * Y).sum(0)
    neg = state["neg_grad"] + (np.abs(grad) * (1 - Y)).sum(0)
    return loss, grad, {"pos_grad": pos, "neg_grad": neg, "g": np.clip(pos / (neg + 1e-10), 0, 1)}


def _ref_softmax_eql_v2(z, y, state, tau=1.0):
    # docs/methods.md §4 softmax_eql_v2: pi = G_pos / (sum G_pos + 1e-4), z' = z + log(pi**tau + 1e-9) on
    # every column (a class never seen as a positive gets log 1e-9, not softmax_eql's clamp).
    N, C = z.shape
    Y = np.eye(C)[y]
    pi = state["pos_grad"] / (state["pos_grad"].sum() + 1e-4)
    zp = z + np.log(pi**tau + 1e-9)[None, :]
    p = _softmax(zp)
    loss = -np.log(p[np.arange(N), y]).mean()
    grad = (p - Y) / N  # the adjustment is a constant: dL/dz = dL/dz'
    pos = state["pos_grad"] + (np.abs(grad) * Y).sum(0)
    neg = state["neg_grad"] + (np.abs(grad) * (1 - Y)).sum(0)
    return loss, grad, {"pos_grad": pos, "neg_grad": neg, "pi": pos / (pos.sum() + 1e-4)}


_REFS = {
    "sigmoid_eql": (_ref_sigmoid_eql, {"ratio": 100.0}),
    "softmax_eql": (_ref_softmax_eql, {}),
    "softmax_eql_v2": (_ref_softmax_eql_v2, {}),
    "efl": (_ref_efl, {"g": 1.0}),
}


@pytest.mark.parametrize("name", sorted(_REFS))
def test_two_steps_match_hand_computation(name):
    C, N, lr = 4, 6, 2.0
    rng = np.random.default_rng(1)
    z0 = rng.normal(size=(N, C))
    ys = [np.array([0, 0, 1, 2, 0, 1]), np.array([3, 0, 1, 0, 2, 3])]  # class 3 absent at step 1
    ref_fn, extra = _REFS[name]
    state = {"pos_grad": np.zeros(C), "neg_grad": np.zeros(C), **{k: np.full(C, v) for k, v in extra.items()}}
    z, ref_losses = z0.copy(), []
    for y in ys:
        loss, grad, state = ref_fn(z, y, state)
        ref_losses.append(loss)
        z = z - lr * grad

    crit = build_loss(name, [40, 30, 20, 10])
    param = torch.nn.Parameter(torch.tensor(z0, dtype=torch.float32))
    opt = torch.optim.SGD([param], lr=lr)
    losses = []
    for y in ys:
        opt.zero_grad()
        out = crit(param, torch.from_numpy(y))
        out.backward()
        opt.step()
        losses.append(out.item())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    stats = crit.statistics()
    for key, val in state.items():
        np.testing.assert_allclose(stats[key].numpy(), val, rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(param.detach().numpy(), z, rtol=1e-5, atol=1e-6)
    # and the next step's loss from the restored statistics matches too
    next_loss, _, _ = ref_fn(z, ys[0], state)
    assert crit(param, torch.from_numpy(ys[0])).item() == pytest.approx(next_loss, rel=1e-5)


def test_softmax_eql_equals_v2_in_training():
    torch.manual_seed(0)
    C = 6
    model = torch.nn.Linear(8, C)
    models = {n: copy.deepcopy(model) for n in ("softmax_eql", "softmax_eql_v2")}
    crits = {n: build_loss(n, [60, 40, 20, 10, 5, 2]) for n in models}
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for n, m in models.items()}
    for step in range(6):
        x = torch.randn(32, 8)
        y = torch.cat([torch.arange(C), torch.randint(0, C, (26,))])  # every class each step
        losses = {}
        for n in models:
            opts[n].zero_grad()
            losses[n] = crits[n](models[n](x), y)
            losses[n].backward()
            opts[n].step()
        assert losses["softmax_eql"].item() == pytest.approx(losses["softmax_eql_v2"].item(), rel=1e-5)
        if step > 0:
            assert losses["softmax_eql"].item() != pytest.approx(F.cross_entropy(models["softmax_eql"](x), y).item(), rel=1e-3)
    a, b = crits["softmax_eql"].statistics(), crits["softmax_eql_v2"].statistics()
    assert torch.allclose(a["pos_grad"], b["pos_grad"], rtol=1e-4)
    assert torch.allclose(a["neg_grad"], b["neg_grad"], rtol=1e-4)


# ----------------------------------------------------------------------------- gradients / numerics


def _prime(loss):
    """Give a stateful loss non-trivial statistics (so the weights are not all 1)."""
    if loss.stateful:
        loss.pos_grad.copy_(t([0.9, 0.5, 0.2]))
        loss.neg_grad.copy_(t([1.0, 1.5, 3.0]))
        loss._refresh()


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_float64(name):
    counts = [50, 10, 2]
    loss = build_loss(name, counts)
    _prime(loss)
    loss.eval()  # gradcheck calls backward repeatedly; keep the statistics fixed
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = y_([0, 1, 2, 2, 0])
    if name == "ldam":
        z = (z.detach() / 10).requires_grad_()  # cosine-classifier scale, s = 30
    assert loss(z, y).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,))


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_tap_does_not_change_gradient(name):
    loss = build_loss(name, [50, 10, 2])
    _prime(loss)
    z, y = torch.randn(5, 3, requires_grad=True), y_([0, 1, 2, 2, 0])
    loss.eval()
    (g_eval,) = torch.autograd.grad(loss(z, y), z)
    loss.train()
    (g_train,) = torch.autograd.grad(loss(z, y), z)  # also updates the statistics, once
    assert torch.equal(g_eval, g_train)


@pytest.mark.parametrize("name", ALL)
def test_finite_at_extremes_absent_classes_and_bf16(name):
    C = 6
    counts = [1000, 300, 90, 27, 8, 2]
    loss = build_loss(name, counts)
    g = torch.Generator().manual_seed(0)
    for scale in (1e4, -1e4):
        for y in (y_([0, 0, 1, 0]), y_([5, 5, 5, 5])):  # most classes absent from the batch
            for _ in range(2):  # second pass uses the statistics of the first
                z = (torch.sign(torch.randn(4, C, generator=g)) * scale).requires_grad_()
                z.data[0] = scale  # ties
                out = loss(z, y)
                out.backward()
                assert torch.isfinite(out), (name, scale)
                assert torch.isfinite(z.grad).all(), (name, scale)
                for k, v in loss.statistics().items():
                    assert torch.isfinite(v).all(), (name, k)
    lin = torch.nn.Linear(16, C)
    x, y = torch.randn(32, 16), torch.randint(0, C, (32,))
    ref = build_loss(name, counts)
    ref.load_state_dict(loss.state_dict())  # same statistics, for a float32 forward below
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(x)
        assert logits.dtype == torch.bfloat16
        out = loss(logits, y)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(lin.weight.grad).all()
    with torch.no_grad():
        assert torch.allclose(out, ref(logits.detach().float(), y), rtol=1e-6)


# ----------------------------------------------------------------------------- state handling


def _step(loss, z, y):
    z = z.clone().requires_grad_()
    out = loss(z, y)
    out.backward()
    return out.detach()


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_eval_and_no_grad_leave_statistics_unchanged(name):
    loss = build_loss(name, COUNTS)
    z, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    _step(loss, z, y)
    before = copy.deepcopy(loss.state_dict())
    with torch.no_grad():
        loss(z, y)
    loss.eval()
    _step(loss, z, y)  # backward through an eval-mode forward
    loss.train()
    loss(z, y)  # logits not requiring grad
    for k, v in loss.state_dict().items():
        assert torch.equal(v, before[k]), k
    _step(loss, z, y)
    assert not torch.equal(loss.pos_grad, before["pos_grad"])


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    loss = build_loss(name, COUNTS)
    batches = [(torch.randn(16, 5) * 2, torch.randint(0, 5, (16,))) for _ in range(3)]
    for z, y in batches[:2]:
        _step(loss, z, y)
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    restored = build_loss(name, COUNTS)
    restored.load_state_dict(torch.load(buf))
    expected_keys = {"pos_grad", "neg_grad"} | ({"ratio"} if name == "sigmoid_eql" else set()) | (
        {"g"} if name == "efl" else set()
    )
    assert set(restored.state_dict()) == expected_keys
    for k, v in loss.statistics().items():
        assert torch.equal(restored.statistics()[k], v), k
    z, y = batches[2]
    assert torch.equal(_step(restored, z, y), _step(loss, z, y))
    for k, v in loss.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k


def test_statistics_are_clones():
    loss = build_loss("efl", COUNTS)
    stats = loss.statistics()
    stats["pos_grad"].add_(1.0)
    stats["g"].zero_()
    assert torch.equal(loss.pos_grad, torch.zeros(5)) and torch.equal(loss.g, torch.ones(5))


def _ddp_worker(rank, world, init_file, name, zs, ys, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loss = build_loss(name, COUNTS)
        _step(loss, zs[rank], ys[rank])
        if rank == 0:
            torch.save(loss.state_dict(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["efl"])
def test_ddp_all_reduce(tmp_path, name):
    """Two gloo processes: each rank's statistics equal the single-process sum over both shards
    (the loss is a per-rank mean, so the gradients are those of each shard's own loss)."""
    import torch.multiprocessing as mp

    zs = [torch.randn(8, 5), torch.randn(8, 5)]
    ys = [torch.randint(0, 5, (8,)), torch.randint(0, 5, (8,))]
    out = str(tmp_path / "state.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), name, zs, ys, out), nprocs=2, join=True)
    ddp_state = torch.load(out)
    pos = neg = 0
    for z, y in zip(zs, ys):
        part = build_loss(name, COUNTS)
        _step(part, z, y)
        pos, neg = pos + part.pos_grad, neg + part.neg_grad
    assert torch.allclose(ddp_state["pos_grad"], pos) and torch.allclose(ddp_state["neg_grad"], neg)
    assert torch.allclose(ddp_state["g"], torch.clamp(pos / (neg + 1e-10), 0, 1))


def _prime5(loss):
    """Non-trivial statistics for a 5-class stateful loss (weights not all 1)."""
    if loss.stateful:
        loss.pos_grad.copy_(torch.linspace(2.0, 0.05, 5))
        loss.neg_grad.copy_(torch.linspace(1.0, 9.0, 5))
        loss._refresh()


@pytest.mark.parametrize("primed", [False, True], ids=["start", "primed"])
@pytest.mark.parametrize("name", ALL)
def test_empty_batch_gives_connected_zero(name, primed):
    """N = 0 (an empty shard or last batch): loss exactly 0, not 0/0 = NaN, still connected to
    the graph (every parameter gets a zero gradient), and the statistics stay bit-identical
    (EFL's no longer turn NaN, EQL's ratio stays at its start value 100 instead of 0/1e-10)."""
    torch.manual_seed(0)
    loss = build_loss(name, COUNTS)
    if primed:
        _prime5(loss)
    before = copy.deepcopy(loss.state_dict())
    lin = torch.nn.Linear(4, 5)
    out = loss(lin(torch.randn(0, 4)), torch.zeros(0, dtype=torch.long))
    assert out.shape == () and out.dtype == torch.float32 and out.requires_grad
    assert out.item() == 0.0
    out.backward()
    for p in lin.parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name
    z = torch.zeros(0, 5, dtype=torch.float64, requires_grad=True)
    out64 = loss(z, torch.zeros(0, dtype=torch.long))
    assert out64.dtype == torch.float64 and out64.item() == 0.0
    out64.backward()
    assert z.grad is not None and z.grad.shape == (0, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(torch.randn(0, 4))
        assert loss(logits, torch.zeros(0, dtype=torch.long)).item() == 0.0
    with torch.no_grad():
        assert loss(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)).item() == 0.0
    after = loss.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), (name, k)  # bit-identical, NaN-free
        assert torch.isfinite(after[k]).all(), (name, k)
    if hasattr(loss, "set_class_weight"):  # DRW: PyTorch's weighted mean would be 0/0 too
        loss.set_class_weight(class_balanced_weights(COUNTS, 0.9999))
        assert loss(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)).item() == 0.0


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_empty_batch_is_a_no_op_for_training(name):
    """Steps with an empty batch in between give exactly the losses and statistics of the same
    steps without it."""
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(12, 5, generator=g) * 2, torch.randint(0, 5, (12,), generator=g)) for _ in range(2)]
    empty = (torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    a, b = build_loss(name, COUNTS), build_loss(name, COUNTS)
    la = [_step(a, *batches[0]), _step(a, *batches[1])]
    lb = [_step(b, *batches[0]), _step(b, *empty), _step(b, *batches[1])]
    assert lb[1].item() == 0.0
    assert torch.equal(la[0], lb[0]) and torch.equal(la[1], lb[2])
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


def test_fused_empty_batch_skips_statistics():
    calls = []
    z = torch.zeros(0, 4, requires_grad=True)
    out = _fused.sigmoid_family_loss(z, torch.zeros(0, dtype=torch.long), gamma=torch.full((4,), 3.0),
                                     neg_weight=torch.ones(4), pos_weight=torch.ones(0),
                                     on_stats=lambda *a: calls.append(a))
    out.backward()
    assert out.item() == 0.0 and calls == [] and z.grad.shape == (0, 4)


# ----------------------------------------------------------------------------- errors


def test_construction_errors():
    with pytest.raises(ValueError, match=r"unknown loss: name='nope'.*cb_focal.*softmax_eql_v2"):
        build_loss("nope", COUNTS)
    with pytest.raises(ValueError, match="class_counts"):
        build_loss("ce", [])
    with pytest.raises(ValueError, match=r"class_counts\[1\]=0"):
        build_loss("ce", [5, 0, 3])
    with pytest.raises(ValueError, match=r"class_counts\[2\]=-3"):
        build_loss("ce", torch.tensor([5, 1, -3]))
    with pytest.raises(ValueError, match="1-D"):
        build_loss("ce", [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="at least 2"):
        build_loss("ce", [7])
    for beta in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"beta must be .*\[0.0, 1.0\).*beta="):
            build_loss("cb_focal", COUNTS, beta=beta)
    with pytest.raises(ValueError, match=r"beta"):
        class_balanced_weights(COUNTS, 1.0)
    for name in ("focal", "sigmoid_focal", "cb_focal", "sigmoid_eql"):
        with pytest.raises(ValueError, match=r"gamma must be in \[0.0, inf\].*gamma=-1"):
            build_loss(name, COUNTS, gamma=-1)
    for alpha in (1.5, -0.5, -2):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\] or -1.*alpha="):
            build_loss("sigmoid_focal", COUNTS, alpha=alpha)
        with pytest.raises(ValueError, match="alpha"):
            build_loss("efl", COUNTS, alpha=alpha)
    with pytest.raises(ValueError, match="power"):
        build_loss("balanced_ce", COUNTS, power=-1)
    with pytest.raises(ValueError, match="max_m"):
        build_loss("ldam", COUNTS, max_m=0)
    with pytest.raises(ValueError, match=r"\bs must"):
        build_loss("ldam", COUNTS, s=-30)
    with pytest.raises(ValueError, match="gamma_b"):
        build_loss("efl", COUNTS, gamma_b=0)
    with pytest.raises(ValueError, match="tau"):
        build_loss("softmax_eql", COUNTS, tau=-1)
    with pytest.raises(ValueError, match=r"unknown hyper-parameter.*'gama'.*valid: gamma"):
        build_loss("focal", COUNTS, gama=2)
    with pytest.raises(ValueError, match=r"weight must have shape \[5\]"):
        build_loss("ce", COUNTS, weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="weight must be finite"):
        build_loss("ldam", COUNTS).set_class_weight(torch.tensor([1.0, -1, 1, 1, 1]))


@pytest.mark.parametrize("name", ALL)
def test_forward_errors(name):
    loss = build_loss(name, COUNTS)
    with pytest.raises(ValueError, match=r"logits have 4 classes.*class_counts has 5"):
        loss(torch.randn(3, 4), y_([0, 1, 2]))
    for bad in ([0, 5, 1], [-1, 0, 1]):
        with pytest.raises(ValueError, match=r"targets must be in \[0, 4\]"):
            loss(torch.randn(3, 5), y_(bad))
    with pytest.raises(ValueError, match="integer"):
        loss(torch.randn(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="N=3"):
        loss(torch.randn(3, 5), y_([0, 1]))
    with pytest.raises(ValueError, match="2-D"):
        loss(torch.randn(3), y_([0, 1, 2]))
    if loss.stateful:
        assert torch.equal(loss.pos_grad, torch.zeros(5))


# ----------------------------------------------------------------------------- fused sigmoid family
# The sigmoid-family losses run through one fused autograd function (ltbench/losses/_fused.py).
# These compare it with docs/methods.md §4's formulas written out literally (one-hot Y, autograd).

from ltbench.losses import _fused  # noqa: E402

FAMILY = [
    ("sigmoid_ce", {}),
    ("sigmoid_focal", {}),
    ("sigmoid_focal", {"gamma": 2.0, "alpha": 0.25}),
    ("sigmoid_focal", {"gamma": 0.5, "alpha": 0.75}),
    ("sigmoid_focal", {"gamma": 3.0, "alpha": 1.0}),
    ("sigmoid_focal", {"gamma": 0.0, "alpha": 0.0}),
    ("cb_sigmoid", {"beta": 0.999}),
    ("cb_focal", {"beta": 0.999}),
    ("cb_focal", {"beta": 0.99, "gamma": 2.0}),
    ("cb_focal", {"gamma": 0.3}),
    ("sigmoid_eql", {}),
    ("efl", {}),
    ("efl", {"alpha": -1, "gamma_b": 1.5, "s_f": 4.0}),
]
FAMILY_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items()) or 'default'}" for n, h in FAMILY]
FAMILY_COUNTS = [400, 250, 120, 60, 30, 12, 5, 2]


def _spec_sigmoid_family(loss, z, y):
    """docs/methods.md §4 literally, for ``loss``'s hyper-parameters and current state (float64)."""
    N, C = z.shape
    Y = F.one_hot(y, C).to(z.dtype)
    zt = torch.where(Y.bool(), z, -z)  # p_t = sigmoid(z_t)
    # BCE(z, Y) = -log p_t; autograd through logsigmoid keeps tiny gradients (-sigmoid(-z) of a
    # positive) accurate, where BCE-with-logits' sigmoid(z) - 1 rounds them to 0 for z > 37.
    nll = -F.logsigmoid(zt)
    log_1m_pt = F.logsigmoid(-zt)
    name = type(loss).__name__
    if name == "SigmoidCrossEntropyLoss":
        per = nll
    elif name == "SigmoidFocalLoss":
        per = torch.exp(loss.gamma * log_1m_pt) * nll
        if loss.alpha >= 0:
            per = (loss.alpha * Y + (1 - loss.alpha) * (1 - Y)) * per
    elif name in ("ClassBalancedSigmoidLoss", "ClassBalancedFocalLoss"):
        w = class_balanced_weights(loss.class_counts, loss.beta).to(z.dtype)
        gamma = getattr(loss, "gamma", 0.0)
        per = w[y, None] * torch.exp(gamma * log_1m_pt) * nll
    elif name == "SigmoidEQLLoss":  # weights from the float32 statistics, as the loss does
        q = torch.sigmoid(loss.gamma * (loss.ratio - loss.mu))
        r, q = (1 + loss.alpha * (1 - q)).to(z.dtype), q.to(z.dtype)
        per = (r * Y + q * (1 - Y)) * nll
    elif name == "EqualizedFocalLoss":
        gam = (loss.gamma_b + loss.s_f * (1 - loss.g)).to(z.dtype)
        per = (gam / loss.gamma_b) * torch.exp(gam * log_1m_pt) * nll
        if loss.alpha >= 0:
            per = (loss.alpha * Y + (1 - loss.alpha) * (1 - Y)) * per
    else:  # pragma: no cover
        raise AssertionError(name)
    return per.sum() / N


def _family_inputs(C, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([
        torch.randn(24, C, generator=g, dtype=torch.float64),
        torch.randn(24, C, generator=g, dtype=torch.float64) * 8,
        torch.randn(24, C, generator=g, dtype=torch.float64) * 100,
        torch.full((2, C), 100.0, dtype=torch.float64),
        torch.full((2, C), -100.0, dtype=torch.float64),
        torch.zeros(1, C, dtype=torch.float64),
    ])
    y = torch.randint(0, C, (z.shape[0],), generator=g)
    return z.to(dtype), y


def _build_primed(name, hp):
    loss = build_loss(name, FAMILY_COUNTS, **hp)
    if loss.stateful:  # non-trivial statistics, so that the weights are not all 1
        C = len(FAMILY_COUNTS)
        loss.pos_grad.copy_(torch.linspace(2.0, 0.05, C))
        loss.neg_grad.copy_(torch.linspace(1.0, 9.0, C))
        loss._refresh()
    return loss.eval()  # eval: the comparison leaves the statistics unchanged


@pytest.mark.parametrize("name,hp", FAMILY, ids=FAMILY_IDS)
def test_fused_matches_spec_formula_float64(name, hp):
    """Values and gradients equal SPEC's straightforward formula to float64 rounding, logits up
    to +-100 included (tiny losses of well-classified entries are kept, not rounded to 0)."""
    loss = _build_primed(name, hp)
    z, y = _family_inputs(len(FAMILY_COUNTS), torch.float64)
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours, ref = loss(za, y), _spec_sigmoid_family(loss, zb, y)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0.0)
    if name == "sigmoid_ce":
        Y = F.one_hot(y, z.shape[1]).double()
        bce = F.binary_cross_entropy_with_logits(z, Y, reduction="sum") / z.shape[0]
        torch.testing.assert_close(ours.detach(), bce, rtol=1e-12, atol=0.0)
    (g,), (g_ref,) = torch.autograd.grad(ours, za), torch.autograd.grad(ref, zb)
    # entrywise relative accuracy, down to gradients of 1e-40 and below
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-280)
    # a well-classified row: a loss of order exp(-100), computed, not flushed to 0
    zc = torch.full((1, len(FAMILY_COUNTS)), -100.0, dtype=torch.float64)
    zc[0, 3] = 100.0
    yc = y_([3])
    torch.testing.assert_close(loss(zc, yc), _spec_sigmoid_family(loss, zc, yc), rtol=1e-12, atol=0.0)
    assert 0 < loss(zc, yc).item() < 1e-40


@pytest.mark.parametrize("name,hp", FAMILY, ids=FAMILY_IDS)
def test_fused_float32_close_to_float64(name, hp):
    """The float32 path (CPU: log1p-free formulation) agrees with the float64 SPEC formula to
    float32 accuracy, entry by entry, for logits up to +-100."""
    loss = _build_primed(name, hp)
    z64, y = _family_inputs(len(FAMILY_COUNTS), torch.float64, seed=1)
    z32 = z64.float().requires_grad_()
    z64 = z32.detach().double().requires_grad_()
    ours, ref = loss(z32, y), _spec_sigmoid_family(loss, z64, y)
    assert ours.dtype == torch.float32
    assert math.isclose(ours.item(), ref.item(), rel_tol=2e-6)
    (g,), (g_ref,) = torch.autograd.grad(ours, z32), torch.autograd.grad(ref, z64)
    err = (g.double() - g_ref).abs()
    assert bool((err <= 2e-6 * g_ref.abs() + 1e-7 * g_ref.abs().max()).all()), float(err.max())


def test_logsigmoid_abs_accuracy():
    """``log sigmoid(|x|)`` without ``log1p``: a few ulp everywhere (float32 and float64)."""
    x = torch.cat([torch.linspace(-120, 120, 200_001), torch.randn(20_000) * 1e-3,
                   t([0.0, 1e-30, -1e-30, 1e4, -1e4, 87.0, 89.0, -103.0])])
    ref = -torch.log1p(torch.exp(-x.double().abs()))
    out = _fused.logsigmoid_abs(x)
    assert out.dtype == torch.float32 and bool((out <= 0).all())
    ulp = torch.finfo(torch.float32).eps * ref.abs()
    assert bool(((out.double() - ref).abs() <= 4 * ulp + 1e-38).all())  # flushed below normal range
    out64 = _fused.logsigmoid_abs(x.double())
    assert bool(((out64 - ref).abs() <= 8 * torch.finfo(torch.float64).eps * ref.abs()).all())


@pytest.mark.parametrize("name,hp", FAMILY, ids=FAMILY_IDS)
def test_fused_generic_path_matches_cpu_path(monkeypatch, name, hp):
    """The accelerator formulation (fused logsigmoid, dense class sums), run here on CPU, gives
    the CPU formulation's values, gradients and statistics."""
    z, y = _family_inputs(len(FAMILY_COUNTS), torch.float32, seed=2)
    results = []
    for on_cpu in (True, False):
        monkeypatch.setattr(_fused, "_on_cpu", lambda x, v=on_cpu: v)
        loss = _build_primed(name, hp).train()
        zz = z.clone().requires_grad_()
        out = loss(zz, y)
        (g,) = torch.autograd.grad(out, zz)
        results.append((out, g, loss.statistics()))
    (a, ga, sa), (b, gb, sb) = results
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7 * float(ga.abs().max()))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("name,hp", FAMILY, ids=FAMILY_IDS)
def test_fused_upstream_gradient_and_retain_graph(name, hp):
    """Any upstream gradient (the loss scaled, used twice as in BBN's mixing), and a second
    backward pass through the same graph gives the same gradient (the saved one is not
    modified)."""
    loss = _build_primed(name, hp)
    z, y = _family_inputs(len(FAMILY_COUNTS), torch.float64, seed=3)
    y2 = torch.roll(y, 1)
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours = 0.3 * loss(za, y) - 2.0 * loss(za, y2)
    ref = 0.3 * _spec_sigmoid_family(loss, zb, y) - 2.0 * _spec_sigmoid_family(loss, zb, y2)
    (g1,) = torch.autograd.grad(ours, za, retain_graph=True)
    (g2,) = torch.autograd.grad(ours, za)
    (g_ref,) = torch.autograd.grad(ref, zb)
    assert torch.equal(g1, g2)
    torch.testing.assert_close(g1, g_ref, rtol=1e-10, atol=1e-280)
    out = loss(za, y)
    (g1,) = torch.autograd.grad(out, za, retain_graph=True)  # upstream 1: the tensor handed over
    expected = g1.clone()
    g1.zero_()  # the caller owns it: changing it must not change the next backward pass
    (g2,) = torch.autograd.grad(out, za, retain_graph=True)
    (g3,) = torch.autograd.grad(out, za, grad_outputs=torch.tensor(2.0, dtype=za.dtype))
    assert torch.equal(g2, expected) and torch.equal(g3, 2 * expected)


def test_fused_statistics_under_scaled_upstream_gradient():
    """EFL's statistics are the true gradient (they scale with the upstream gradient); EQL's are
    SPEC's per-entry |dBCE/dz| W, independent of it (both match SPEC's formulas)."""
    C = len(FAMILY_COUNTS)
    z, y = _family_inputs(C, torch.float64, seed=4)
    for name in ("efl", "sigmoid_eql"):
        stats = []
        for scale in (1.0, 3.0):
            loss = _build_primed(name, {}).train()
            before = loss.statistics()
            zz = z.float().requires_grad_()
            (scale * loss(zz, y)).backward()
            stats.append({k: loss.statistics()[k] - before[k] for k in ("pos_grad", "neg_grad")})
        factor = 3.0 if name == "efl" else 1.0
        for k in ("pos_grad", "neg_grad"):
            torch.testing.assert_close(stats[1][k], factor * stats[0][k], rtol=1e-5, atol=1e-6)
    # EQL against SPEC's formula: G = |Y (s - 1) + (1 - Y) s|, pos += sum_i G Y W, ...
    loss = _build_primed("sigmoid_eql", {}).train()
    q = torch.sigmoid(loss.gamma * (loss.ratio.double() - loss.mu))
    r = 1 + loss.alpha * (1 - q)
    before = {k: v.double() for k, v in loss.statistics().items()}
    zz = z.float().requires_grad_()
    loss(zz, y).backward()
    Y = F.one_hot(y, C).double()
    s = torch.sigmoid(zz.detach().double())
    W = r * Y + q * (1 - Y)
    G = (Y * (s - 1) + (1 - Y) * s).abs()
    after = loss.statistics()
    for key, mask in (("pos_grad", Y), ("neg_grad", 1 - Y)):
        added = after[key].double() - before[key]
        torch.testing.assert_close(added, (G * mask * W).sum(0), rtol=1e-5, atol=1e-5, msg=key)


def test_fused_non_contiguous_logits_and_no_grad():
    z, y = _family_inputs(len(FAMILY_COUNTS), torch.float32, seed=5)
    zt = z.t().contiguous().t()  # same values, column-major
    for name, hp in FAMILY:
        loss = _build_primed(name, hp)
        a, b = z.clone().requires_grad_(), zt.clone().requires_grad_()
        la, lb = loss(a, y), loss(b, y)
        torch.testing.assert_close(la, lb, rtol=1e-6, atol=0.0)
        (ga,), (gb,) = torch.autograd.grad(la, a), torch.autograd.grad(lb, b)
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-12)
        with torch.no_grad():
            assert torch.equal(loss(z, y), la.detach())  # the same value without the gradient work


def test_fused_scratch_buffers_never_escape():
    """CPU temporaries are per-thread scratch buffers reused across calls: no result may alias
    them (two graphs alive at once, shapes changing, the pool released in between)."""
    za, ya = _family_inputs(len(FAMILY_COUNTS), torch.float32, seed=6)
    zb, yb = za.flip(0) * 0.5, ya.flip(0)
    for name, hp in FAMILY:
        loss = _build_primed(name, hp)
        ref = []
        for z, y in ((za, ya), (zb, yb)):
            zz = z.clone().requires_grad_()
            out = loss(zz, y)
            ref.append((out.detach().clone(), torch.autograd.grad(out, zz)[0].clone()))
        a, b = za.clone().requires_grad_(), zb.clone().requires_grad_()
        out_a = loss(a, ya)
        out_b = loss(b, yb)  # both graphs alive, as in BBN's mixed loss
        _fused.release_scratch()
        loss(za[:7], ya[:7])  # another shape in between
        (g_a,) = torch.autograd.grad(out_a, a)
        lsa = _fused.logsigmoid_abs(za)
        (g_b,) = torch.autograd.grad(out_b, b)
        loss(zb, yb)  # reuses the scratch buffers once more
        assert torch.equal(out_a, ref[0][0]) and torch.equal(g_a, ref[0][1]), name
        assert torch.equal(out_b, ref[1][0]) and torch.equal(g_b, ref[1][1]), name
        assert torch.equal(lsa, _fused.logsigmoid_abs(za))


# ----------------------------------------------------------------------------- issue 18: non-finite steps


def _poisoned(kind):
    """A batch whose logits hold NaN / inf: everywhere, or one row (as a diverging model gives)."""
    g = torch.Generator().manual_seed(11)
    z, y = torch.randn(12, 5, generator=g) * 2, torch.randint(0, 5, (12,), generator=g)
    if kind == "nan_all":
        z = torch.full_like(z, float("nan"))
    elif kind == "nan_row":
        z[3] = float("nan")
    elif kind == "inf_mixed":
        z[0, 0], z[1, 2] = float("inf"), -float("inf")
        z[2] = float("nan")
    return z, y


@pytest.mark.parametrize("kind", ["nan_all", "nan_row", "inf_mixed"])
@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_non_finite_batch_does_not_poison_statistics(name, kind):
    """Before: one NaN batch turned Sigmoid-EQL / Softmax-EQL / EFL statistics NaN for good, so
    every later loss was NaN (and checkpointed). After: a step with a non-finite gradient is left
    out of the statistics whole: they stay bit-identical to a run without that batch, and the
    next losses are those of that run."""
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(12, 5, generator=g) * 2, torch.randint(0, 5, (12,), generator=g)) for _ in range(2)]
    a, b = build_loss(name, COUNTS), build_loss(name, COUNTS)
    la = [_step(a, *batches[0]), _step(a, *batches[1])]
    lb = [_step(b, *batches[0])]
    before = copy.deepcopy(b.state_dict())
    _step(b, *_poisoned(kind))  # its own loss may well be NaN: that is the engine's to report
    for k, v in b.state_dict().items():
        assert torch.isfinite(v).all(), (k, v)
        assert torch.equal(v, before[k]), k
    for k, v in b.statistics().items():
        assert torch.isfinite(v).all(), k
    lb.append(_step(b, *batches[1]))
    assert torch.equal(la[0], lb[0]) and torch.equal(la[1], lb[1])
    assert math.isfinite(lb[1].item())
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_non_finite_step_skipped_under_autocast_and_float64(name):
    loss = build_loss(name, COUNTS)
    z, y = _poisoned("nan_row")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _step(loss, z, y)
    _step(loss, z.double(), y)
    assert torch.equal(loss.pos_grad, torch.zeros(5)) and torch.equal(loss.neg_grad, torch.zeros(5))
