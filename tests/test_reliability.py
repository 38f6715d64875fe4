"""Issue 18 (reliability): bad config values caught at the boundary with the field, the value
and the expected type; non-finite numbers refused; IR against n_max before any work; the default
checkpoint interval; file modes of atomic writes under the umask."""
from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import pytest

from ltbench import io as ltio
from ltbench.config import TrainConfig

# A valid base that reads no data (synthetic), so each case differs in one field only.
SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=60, data_options={"n_train_per_class": 60},
           epochs=4, warmup_epochs=1, device="cpu")


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**SYN, **kw})


def test_base_and_default_configs_are_valid():
    _cfg().validate()
    TrainConfig().validate()


# ----------------------------------------------------------------------------- point 5: types

TYPE_CASES = [
    # field, bad value, words of the expected type in the message
    ("compile", "false", "a bool"),
    ("nesterov", "no", "None or a bool"),
    ("drop_last", "False", "a bool"),
    ("amp", "no", "a bool"),
    ("channels_last", "no", "a bool"),
    ("compile", 0, "a bool"),
    ("seed", "0", "an int"),
    ("seed", 1.5, "an int"),
    ("seed", True, "an int"),
    ("data_seed", 0.0, "an int"),
    ("epochs", 2.0, "an int"),
    ("batch_size", "32", "an int"),
    ("warmup_epochs", None, "an int"),
    ("eval_every", True, "an int"),
    ("checkpoint_every", 1.0, "an int"),
    ("n_max", "100", "None or an int"),
    ("n_max", True, "None or an int"),
    ("test_per_class", 5.0, "None or an int"),
    ("drw_epoch", 1.0, "None or an int"),
    ("drs_epoch", "1", "None or an int"),
    ("loss", ["ce"], "a str"),
    ("sampler", None, "a str"),
    ("schedule", 1, "a str"),
    ("model", None, "a str"),
    ("classifier", ["linear"], "a str"),
    ("dataset", ("synthetic",), "a str"),
    ("lt_profile", None, "a str"),
    ("device", None, "a str"),
    ("loss_params", "gamma=2", "a dict"),
    ("sampler_params", [("k", 4)], "a dict"),
    ("data_options", None, "a dict"),
    ("data_root", 123, "None or a str"),
    ("lr", "0.1", "a finite number"),
    ("momentum", True, "a finite number"),
    ("weight_decay", None, "a finite number"),
    ("drw_beta", "0.9999", "a finite number"),
    ("imbalance_ratio", "100", "a finite number >= 1"),
    ("imbalance_ratio", False, "a finite number >= 1"),
]


@pytest.mark.parametrize("field,value,expected", TYPE_CASES, ids=[f"{f}={v!r}" for f, v, _ in TYPE_CASES])
def test_every_field_is_type_checked(field, value, expected):
    """Before: string booleans were truthy (compile="false" compiled), seed="0" / 1.5 trained as
    other runs, and loss=['ce'], loss_params="gamma=2", device=None, data_root=123 raised bare
    TypeError / AttributeError. After: ValueError naming the field, the value and the type."""
    with pytest.raises(ValueError) as info:
        _cfg(**{field: value}).validate()
    msg = str(info.value)
    assert msg.startswith(f"invalid {field}={value!r}: must be {expected}"), msg
    assert f"(got {type(value).__name__})" in msg, msg


def test_dict_fields_need_str_keys():
    with pytest.raises(ValueError, match=r"invalid loss_params=\{2: 'gamma'\}: must be a dict with str keys"):
        _cfg(loss_params={2: "gamma"}).validate()


@pytest.mark.parametrize("field,value", [("compile", True), ("nesterov", False), ("nesterov", None),
                                         ("drop_last", True), ("amp", False), ("channels_last", False),
                                         ("seed", 12345), ("seed", -1), ("lr", 1), ("weight_decay", 0),
                                         ("imbalance_ratio", 10), ("data_root", "some/dir"),
                                         ("loss_params", {"gamma": 2}), ("drw_beta", 0)])
def test_well_typed_values_still_pass(field, value):
    kw = {field: value}
    if field == "loss_params":
        kw["loss"] = "focal"
    _cfg(**kw).validate()


def test_subclass_configs_are_type_checked_too():
    from ltbench.bbn import BBNConfig

    with pytest.raises(ValueError, match=r"invalid compile='false': must be a bool"):
        BBNConfig(**{**SYN, "compile": "false"}).validate()


def test_from_dict_needs_a_dict():
    with pytest.raises(ValueError, match=r"invalid config \['ce'\]: must be a dict of TrainConfig fields"):
        TrainConfig.from_dict(["ce"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- point 4: non-finite numbers

NONFINITE = [("lr", math.inf), ("lr", math.nan), ("weight_decay", math.inf), ("weight_decay", math.nan),
             ("momentum", math.nan), ("drw_beta", math.nan), ("imbalance_ratio", math.nan), ("lr", -math.inf)]


@pytest.mark.parametrize("field,value", NONFINITE, ids=[f"{f}={v}" for f, v in NONFINITE])
def test_non_finite_numbers_are_refused(field, value):
    """Before: lr=inf and weight_decay=inf passed validation and failed after an epoch with
    'confidences must lie in [0, 1], found values in [nan, nan]'. After: refused up front."""
    with pytest.raises(ValueError, match=rf"invalid {field}={re.escape(repr(value))}: must be a finite number"):
        _cfg(**{field: value}).validate()


def test_infinite_imbalance_ratio_is_reported_in_ir_and_n_max():
    with pytest.raises(ValueError, match=r"invalid imbalance_ratio=inf for n_max=60: IR inf with n_max 60 "
                                         r"leaves class 1 with 0 images .*must be finite"):
        _cfg(imbalance_ratio=math.inf).validate()
    # a dataset whose class count is only known from its files: still refused, as not finite
    with pytest.raises(ValueError, match=r"invalid imbalance_ratio=inf: must be a finite number >= 1"):
        _cfg(dataset="imagefolder", imbalance_ratio=math.inf, n_max=None).validate()


# ----------------------------------------------------------------------------- point 7: IR vs n_max

@pytest.mark.parametrize("kw,first", [
    (dict(dataset="cifar10", imbalance_ratio=1000, n_max=100, data_options={}), 7),
    (dict(dataset="cifar10", imbalance_ratio=1000, n_max=100, lt_profile="step", data_options={}), 5),
    (dict(dataset="cifar100", imbalance_ratio=1000, n_max=None, data_options={}), 90),  # CIFAR-100's n_max 500
    (dict(imbalance_ratio=100, n_max=60), 9),
])
def test_ir_beyond_n_max_is_refused_by_validate(kw, first):
    """Before: a class count of 0 surfaced, after the data was read, as 'class_counts[7]=0'.
    After: TrainConfig.validate says it in terms of IR and n_max and what would work."""
    cfg = _cfg(**kw)
    n_max = kw["n_max"] or 500
    with pytest.raises(ValueError, match=rf"IR {kw['imbalance_ratio']} with n_max {n_max} leaves class {first} "
                                         r"with 0 images .*; use n_max >= \d+ or IR <= [0-9.]+"):
        cfg.validate()


# ----------------------------------------------------------------------------- point 6: checkpoint interval

def test_default_checkpoint_interval_is_every_epoch():
    """Before: checkpoint_every defaulted to 10, so an interrupted short run restarted from epoch
    0. After: every epoch by default (the engine reads cfg.checkpoint_every)."""
    assert TrainConfig().checkpoint_every == 1
    cfg = TrainConfig(epochs=3, warmup_epochs=1).validate()
    assert [e for e in range(cfg.epochs) if (e + 1) % cfg.checkpoint_every == 0] == [0, 1, 2]


# ----------------------------------------------------------------------------- point 8: file modes

WRITERS = {
    "text": lambda p: ltio.atomic_write_text(p, "a,b\n1,2\n"),
    "bytes": lambda p: ltio.atomic_write_bytes(p, b"\x00\x01"),
    "json": lambda p: ltio.atomic_write_json(p, {"top1_last": 1.0, "nan": math.nan}),
    "torch": lambda p: ltio.atomic_torch_save(p, {"x": 1}),
}


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_atomic_writes_respect_umask_022(tmp_path, umask, writer):
    """Before: every atomic write left mode 0600 (mkstemp): metrics.json, summary.csv and
    results/README.md were unreadable to lab-mates. After: 0o666 & ~umask, 0644 under 022."""
    umask(0o022)
    path = WRITERS[writer](tmp_path / "sub" / f"out.{writer}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    WRITERS[writer](path)  # overwriting an existing file: same mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("mask,mode", [(0o002, 0o664), (0o077, 0o600), (0o027, 0o640)])
def test_atomic_writes_follow_other_umasks(tmp_path, umask, mask, mode):
    umask(mask)
    assert ltio.current_umask() == mask and ltio.new_file_mode() == mode
    path = ltio.atomic_write_text(tmp_path / "summary.csv", "x\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert ltio.current_umask() == mask  # reading it did not change it


def test_atomic_write_failure_leaves_nothing_behind(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "metrics.json"
    ltio.atomic_write_text(target, "old\n")
    with pytest.raises(TypeError):
        ltio.atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["metrics.json"]
