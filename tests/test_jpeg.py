"""The data-copy check (docs/methods.md §1.4): JPEG re-encoding, its PSNR, the option that asks
for it, and notebook 01's table, slope and conclusion."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch

from ltbench.config import TrainConfig
from ltbench.data import build_long_tailed, load_split
from ltbench.data.jpeg import check_quality, mse, psnr, recompress
from ltbench.experiments import long_tailed_cifar as nb01
from ltbench.runs import make_spec


def _images(n: int = 8) -> torch.Tensor:
    """Smooth photographs' stand-ins: sums of low-frequency waves, a different one per image and channel."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    imgs = [torch.stack([128 + 60 * torch.sin(xx * (0.2 + 0.05 * k) + c) + 40 * torch.cos(yy * (0.3 + 0.04 * c) + k)
                         for c in range(3)]) for k in range(n)]
    return torch.stack(imgs).clamp(0, 255).round().to(torch.uint8)


def test_psnr_and_mse_in_closed_form():
    a = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    assert mse(a, a + 1) == 1.0
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # 48.13 dB
    assert psnr(a, a + 10) == pytest.approx(20 * math.log10(255) - 20)  # MSE 100: 20 dB lower
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError, match=r"shapes differ: \(2, 3, 4, 4\) vs \(1, 3, 4, 4\)"):
        mse(a, a[:1])


def test_recompress_keeps_shape_is_deterministic_and_costs_more_at_lower_quality():
    x = _images()
    out = {q: recompress(x, q) for q in (95, 75, 50, 25, 5)}
    for y in out.values():
        assert y.dtype == torch.uint8 and y.shape == x.shape
    assert torch.equal(recompress(x, 50), out[50])
    errors = [mse(x, out[q]) for q in (95, 75, 50, 25, 5)]
    assert errors == sorted(errors) and errors[0] > 0 and errors[-1] > 20 * errors[0]  # 12 ... 669 here
    # A flat grey image is (near) a fixed point of JPEG at any quality: no texture to quantise.
    flat = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
    assert mse(flat, recompress(flat, 5)) <= 1.0
    with pytest.raises(ValueError, match=r"images must be uint8 \[N, 3, H, W\], got torch.float32"):
        recompress(x.float(), 50)


@pytest.mark.parametrize("bad", [0, 101, 50.0, True, "50", [50]])
def test_a_bad_quality_is_refused_naming_the_parameter_and_the_range(bad):
    with pytest.raises(ValueError, match=rf"invalid data_options.jpeg_quality={re.escape(repr(bad))}: must be an int in \[1, 100\]"):
        check_quality(bad)
    with pytest.raises(ValueError, match=r"invalid data_options.jpeg_quality=.*must be an int in \[1, 100\]"):
        TrainConfig(dataset="synthetic", n_max=20, imbalance_ratio=10, data_options={"jpeg_quality": bad}).validate()


def test_the_cifar_datasets_refuse_unknown_data_options_and_accept_jpeg_quality():
    with pytest.raises(ValueError, match=r"unknown data_options \['jpeg_qualty'\] for dataset='cifar10'; valid: jpeg_quality"):
        TrainConfig(dataset="cifar10", data_options={"jpeg_qualty": 50}).validate()
    TrainConfig(dataset="cifar100", data_options={"jpeg_quality": 50}).validate()
    # The option is part of the run's identity: a re-encoded run never reuses the plain run's key.
    plain = make_spec("joint", TrainConfig(dataset="cifar10").to_dict())
    assert make_spec("joint", TrainConfig(dataset="cifar10", data_options={"jpeg_quality": 50}).to_dict()).key != plain.key
    assert make_spec("joint", TrainConfig(dataset="cifar10", data_options={}).to_dict()).key == plain.key


def test_build_long_tailed_re_encodes_the_kept_images_only_after_choosing_the_subset():
    opts = dict(n_max=30, imbalance_ratio=10, n_train_per_class=40, n_test_per_class=10, val_per_class=5)
    plain = build_long_tailed("synthetic", **opts)
    coded = build_long_tailed("synthetic", jpeg_quality=25, **opts)
    assert torch.equal(coded.train_indices, plain.train_indices) and torch.equal(coded.train.targets, plain.train.targets)
    assert torch.equal(coded.val_indices, plain.val_indices)
    for split in ("train", "val", "test"):
        a, b = getattr(plain, split).images, getattr(coded, split).images
        assert torch.equal(b, recompress(a, 25)), split
    assert coded.meta["jpeg_quality"] == 25 and coded.meta["jpeg_psnr"] == pytest.approx(psnr(plain.test.images, coded.test.images))
    assert "jpeg_quality" not in plain.meta
    with pytest.raises(ValueError, match=r"invalid jpeg_quality=0: must be an int in \[1, 100\]"):
        build_long_tailed("synthetic", jpeg_quality=0, **opts)


def test_notebook_01_plans_the_check_as_tier_2_runs_with_their_own_keys():
    base = dict(datasets=["cifar10"], imbalance_ratios=[100], seeds=[0, 1], epochs=5)
    plain = nb01.runs(**base)
    runs = nb01.runs(**base, jpeg_qualities=[50, 25, 50])
    assert runs[:2] == plain
    extra = runs[2:]
    assert [(r.label, r.tier, r.spec.config["data_options"], r.spec.config["seed"]) for r in extra] == [
        ("CE, JPEG q50", 2, {"jpeg_quality": 50}, 0), ("CE, JPEG q50", 2, {"jpeg_quality": 50}, 1),
        ("CE, JPEG q25", 2, {"jpeg_quality": 25}, 0), ("CE, JPEG q25", 2, {"jpeg_quality": 25}, 1)]
    assert len({r.spec.key for r in runs}) == 6
    with pytest.raises(ValueError, match=r"invalid jpeg_qualities=0: must be an int in \[1, 100\]"):
        nb01.runs(**base, jpeg_qualities=[0])
    with pytest.raises(ValueError, match=r"invalid jpeg_qualities='50': must be a list"):
        nb01.runs(**base, jpeg_qualities="50")
    # jpeg_seeds=1: the check at the first seed only, CE at both; the seed-0 runs are the same runs (keys).
    one = nb01.runs(**base, jpeg_qualities=[50, 25], jpeg_seeds=1)
    assert one[:2] == plain
    assert [(r.label, r.spec.config["seed"]) for r in one[2:]] == [("CE, JPEG q50", 0), ("CE, JPEG q25", 0)]
    assert {r.spec.key for r in one[2:]} == {r.spec.key for r in extra if r.spec.config["seed"] == 0}
    assert nb01.runs(**base, jpeg_qualities=[50], jpeg_seeds=5) == nb01.runs(**base, jpeg_qualities=[50])
    for bad in (0, 1.0, True, "1"):
        with pytest.raises(ValueError, match=rf"invalid jpeg_seeds={bad!r}: must be None \(every seed\) or an int >= 1"):
            nb01.runs(**base, jpeg_qualities=[50], jpeg_seeds=bad)


def _frame(rows):
    cols = ["method", "dataset", "IR", "seed", "top1_last", "many", "medium"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_jpeg_table_measures_the_added_distortion_and_the_change_from_ce():
    df = _frame([("CE", "synthetic", 10, 0, 60.0, 70.0, 40.0), ("CE", "synthetic", 10, 1, 62.0, 72.0, 42.0),
                 ("CE, JPEG q25", "synthetic", 10, 0, 57.0, 66.0, 38.0),
                 ("CE, JPEG q50", "synthetic", 10, 0, 59.5, 69.0, 39.0)])
    t = nb01.jpeg_table(df, test_per_class=5)
    assert list(t["data"]) == ["as loaded", "re-encoded at q50", "re-encoded at q25"]  # highest quality first
    assert list(t["top1 last"]) == [61.0, 59.5, 57.0] and list(t["seeds"]) == [2, 1, 1]
    # CE's spread over its two seeds (60, 62: sample std sqrt(2)); none from one run.
    assert t["seed std"].iloc[0] == pytest.approx(2 ** 0.5) and t["seed std"].iloc[1:].isna().all()
    assert t["change"].tolist()[1:] == [-1.5, -4.0]
    test = load_split("synthetic", False)
    keep = torch.cat([(test.targets == c).nonzero().flatten()[:5] for c in range(10)]).sort().values
    assert t["added MSE"].iloc[2] == pytest.approx(mse(test.images[keep], recompress(test.images[keep], 25)))
    assert t["added MSE"].iloc[0] == 0 and 0 < t["added MSE"].iloc[1] < t["added MSE"].iloc[2]
    assert nb01.jpeg_table(df[df["method"] == "CE"]).empty  # no check ran: no rows


def _table(points, ds="cifar10", ir=100, std=None, seeds=1):
    rows = [{"dataset": ds, "IR": ir, "data": "as loaded" if q is None else f"re-encoded at q{q}", "quality": q,
             "PSNR vs loaded (dB)": db, "added MSE": m, "seeds": 1, "top1 last": top, "seed std": None,
             "change": None, "many": None, "medium": None} for q, db, m, top in points]
    rows[0].update({"seed std": std, "seeds": seeds})
    for r in rows[1:]:
        r["change"] = None if r["top1 last"] is None else r["top1 last"] - rows[0]["top1 last"]
    return pd.DataFrame(rows)


def test_jpeg_slope_and_findings_in_closed_form():
    # Three points on a line: -1 point per 10 levels² of MSE.
    t = _table([(None, None, 0.0, 64.0), (50, 33.0, 20.0, 62.0), (25, 30.0, 40.0, 60.0)])
    assert nb01.jpeg_slope(t) == pytest.approx(-0.1)
    (line,) = nb01.jpeg_findings(t)
    copy_mse = 255 ** 2 / 10 ** 3.05  # 30.5 dB: 57.9 levels²
    assert line.startswith("cifar10-IR100, CE on the data re-encoded once more: as loaded 64.00; "
                           "q50 (33.0 dB, MSE +20) 62.00, -2.00; q25 (30.0 dB, MSE +40) 60.00, -4.00.")
    assert "Accuracy moves -1.00 points per 10 levels² of added MSE (least squares over 3 runs)." in line
    assert f"would cost about {0.1 * copy_mse:.1f} points" in line and "linear extrapolation" in line
    assert line.endswith("against CE's gap of 6.36 points to the published 70.36 at this run's length.")
    assert "With one run of CE on the data as loaded, the seed spread that would tell a change from noise is not " \
           "measured yet." in line
    # One quality pending: the line says what ran; no slope from a single point of the check and CE.
    part = _table([(None, None, 0.0, 64.0), (50, 33.0, 20.0, None), (25, 30.0, 40.0, 60.0)])
    assert nb01.jpeg_slope(part) == pytest.approx(-0.1)
    only_ce = _table([(None, None, 0.0, 64.0), (50, 33.0, 20.0, None)])
    assert nb01.jpeg_slope(only_ce) is None and nb01.jpeg_findings(only_ce) == []
    # CE with three seeds, std 1.5: -2.00 is within twice that, -4.00 is not.
    (noisy,) = nb01.jpeg_findings(_table([(None, None, 0.0, 64.0), (50, 33.0, 20.0, 62.0), (25, 30.0, 40.0, 60.0)],
                                         std=1.5, seeds=3))
    assert ("-4.00. CE on the data as loaded spreads 1.50 points (standard deviation over 3 seeds): q50 changed top-1 "
            "by at most twice that, within the seed noise; q25 by more than twice that. Accuracy moves") in noisy
    (beyond,) = nb01.jpeg_findings(_table([(None, None, 0.0, 64.0), (25, 30.0, 40.0, 60.0)], std=0.5, seeds=3))
    assert "over 3 seeds): q25 by more than twice that." in beyond and "within the seed noise" not in beyond
    # Accuracy that does not fall: no extrapolation of a cost, the copy is not the explanation.
    (flat,) = nb01.jpeg_findings(_table([(None, None, 0.0, 64.0), (50, 33.0, 20.0, 64.3), (25, 30.0, 40.0, 64.4)]))
    assert "does not explain CE's gap" in flat and "would cost" not in flat
    # No extrapolation for a dataset whose copy this project does not describe.
    (other,) = nb01.jpeg_findings(_table([(None, None, 0.0, 50.0), (50, 33.0, 20.0, 49.0)], ds="synthetic", ir=10))
    assert "points per 10 levels²" in other and "extrapolation" not in other
