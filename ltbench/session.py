"""The GPU session: what travels to a lent GPU machine, the checks run there, what comes back.

A GPU is lent to a session for minutes, on a bare machine (no papermill, no network, no
``../shared``); at most 8 files of 16 MiB come back. This module holds the Python side of
``tools/gpu_session.sh`` and of ``make carry``:

- :func:`make_carry` (``make carry``): builds the git-ignored ``.carry/`` on the CPU machine: the
  CIFAR-10 image-folder tree as ``cifar10.tgz``, the resume state of the profile's unfinished runs
  and the finished stage-1 / phase-I checkpoints that pending runs need (``state/<key>/``), and
  ``MANIFEST.json``; checks that the working tree plus ``.carry`` stays under 64 MiB.
- :func:`restore_carry`, :func:`snapshot`: on the GPU machine, put the carried state into the run
  store and remember what was there before the session.
- :func:`smoke_check`: every registered method (:data:`ltbench.runs.METHODS`) trained for 2 epochs
  on a small synthetic set, eager and with ``torch.compile``, asserting finite losses and no
  recompilation storm.
- :func:`pack`: the session's new results into at most 8 files under ``$OUT``: finished runs
  without checkpoints (``runs.tgz``), checkpoints of partial runs and of the runs other runs
  depend on (``weights*.tgz``), the benchmark CSV, the logs, and ``manifest.json``.
- :func:`import_packs` (``python -m ltbench import FILE...``): merges returned files into
  ``results/<profile>/``, refusing to overwrite a different finished result.

``python -m ltbench.session {carry,restore,snapshot,smoke,pack,import,tree-size}`` runs each step.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .engine import CHECKPOINT_FILE, EXECUTION_FIELDS, METRICS_FILE
from .io import atomic_write_bytes, atomic_write_json
from .runs import LOCK_FILE, SPEC_FILE, checkpoint_progress

__all__ = [
    "MIB", "LIMITS", "PackLimits", "make_carry", "restore_carry", "snapshot", "smoke_check", "pack",
    "import_packs", "ImportConflict", "ImportReport", "tree_size", "check_out_dir", "same_result",
]

MIB = 1024 * 1024
PACK_FORMAT = "ltbench-session-pack"
CARRY_FORMAT = "ltbench-carry"
PACK_MANIFEST = "MANIFEST.json"
OUT_MANIFEST = "manifest.json"
#: The session's default run selection: CIFAR-10 (the only dataset on these machines), one seed.
DEFAULT_OVERRIDES = {"datasets": ["cifar10"]}
DEFAULT_SEEDS = 1
#: metrics.json fields that say how and when a run was computed, not what it computed.
VOLATILE_METRICS = ("execution", "train_seconds", "device", "torch", "created")
#: Files of a run folder that never travel (the lock of a live trainer, temporaries).
_NEVER = (LOCK_FILE,)


@dataclass(frozen=True)
class PackLimits:
    """What may come back from a device run: files, size of each, size of all."""

    max_files: int = 8
    max_file_bytes: int = 16 * MIB
    max_total_bytes: int = 64 * MIB
    max_depth: int = 2  # folders below $OUT


LIMITS = PackLimits()
_NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")


def _say(*args: Any) -> None:
    print(*args, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fmt_mib(n: float) -> str:
    return f"{n / MIB:.2f} MiB"


def _store_dir(results: Union[str, os.PathLike], profile: str) -> Path:
    return Path(results) / profile


def _runs_dir(results: Union[str, os.PathLike], profile: str) -> Path:
    return _store_dir(results, profile) / "runs"


def _run_folders(runs_dir: Path) -> List[Path]:
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name.isalnum())


def _plan_entries(profile: str, results: Union[str, os.PathLike], seeds: Optional[int],
                  overrides: Optional[Mapping[str, Any]], notebooks: Union[str, os.PathLike] = "notebooks",
                  only: Optional[Sequence[str]] = None, with_status: bool = True) -> List[Any]:
    from .executor import plan

    return plan(profile, results, seeds, only, overrides, notebooks, with_status=with_status)


def _dependency_keys(entries: Iterable[Any]) -> Dict[str, List[str]]:
    """Key of every run some planned run depends on -> keys of those dependents."""
    out: Dict[str, List[str]] = {}
    for e in entries:
        for _, dep in e.spec.deps:
            out.setdefault(dep.key, []).append(e.key)
    return out


# --------------------------------------------------------------------------------------------
# Size of what travels


def _parse_ignore(f: Path) -> List[Tuple[re.Pattern, bool, bool]]:
    """(regex, dir_only, negated) of one ignore file (the common subset of gitignore syntax: ``*``,
    ``?``, ``**``, leading ``/``, trailing ``/``, ``!``), matched against paths relative to its folder."""
    rules = []
    for raw in f.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        if neg:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        rx, i = "", 0
        while i < len(line):
            if line.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif line.startswith("/**", i) and i + 3 == len(line):
                rx += "/.*"
                i += 3
            elif line.startswith("**", i):
                rx += ".*"
                i += 2
            elif line[i] == "*":
                rx += "[^/]*"
                i += 1
            elif line[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(line[i])
                i += 1
        rx = ("^" if anchored else "^(?:.*/)?") + rx + "$"
        rules.append((re.compile(rx), dir_only, neg))
    return rules


def _ignored(rel: str, is_dir: bool, scoped: Mapping[str, Sequence[Tuple[re.Pattern, bool, bool]]]) -> bool:
    """Whether ``rel`` (relative to the root) is ignored by the rules of its ancestors' ignore files
    (``scoped``: folder relative to the root, "" for the root -> its rules)."""
    hit = False
    for base, rules in scoped.items():
        if base and not rel.startswith(base + "/"):
            continue
        sub = rel[len(base) + 1:] if base else rel
        for rx, dir_only, neg in rules:
            if dir_only and not is_dir:
                continue
            if rx.match(sub):
                hit = not neg
    return hit


def tree_size(root: Union[str, os.PathLike] = ".") -> int:
    """Bytes of the working tree that a device run copies: every file that git does not ignore
    (``.git`` excluded), estimated from the ``.gitignore`` files and ``.git/info/exclude``
    without running git."""
    root = Path(root).resolve()
    scoped: Dict[str, List[Tuple[re.Pattern, bool, bool]]] = {"": []}
    if (root / ".git" / "info" / "exclude").is_file():
        scoped[""] += _parse_ignore(root / ".git" / "info" / "exclude")
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        if ".gitignore" in filenames:
            scoped.setdefault(rel_dir, [])
            scoped[rel_dir] = scoped[rel_dir] + _parse_ignore(Path(dirpath) / ".gitignore")
        keep = []
        for d in dirnames:
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if rel == ".git" or _ignored(rel, True, scoped):
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            rel = f"{rel_dir}/{f}" if rel_dir else f
            p = Path(dirpath) / f
            if p.is_symlink() or _ignored(rel, False, scoped):
                continue
            try:
                total += p.stat().st_size
            except OSError:
                pass
    return total


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.exists() else 0


# --------------------------------------------------------------------------------------------
# make carry


def _weights_only(src: Path, dst: Path) -> int:
    """Copy a finished checkpoint without its optimizer state (what stage 2, FSA and the notebooks
    load); returns the bytes written."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    state.pop("optimizer", None)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(dst, buf.getvalue())
    return len(buf.getvalue())


def make_carry(profile: str = "paper", results: Union[str, os.PathLike] = "results",
               carry: Union[str, os.PathLike] = ".carry", data_root: Optional[str] = None,
               seeds: Optional[int] = DEFAULT_SEEDS, overrides: Optional[Mapping[str, Any]] = None,
               repo: Union[str, os.PathLike] = ".", limit_bytes: int = 64 * MIB, force_data: bool = False,
               notebooks: Union[str, os.PathLike] = "notebooks") -> Dict[str, Any]:
    """Build ``carry/``: ``cifar10.tgz`` (rebuilt only when missing or ``force_data``), ``state/<key>/``
    (``spec.json`` and ``checkpoint.pt`` of the profile's partial runs, then of the finished runs
    that unfinished runs depend on, weights only) and ``MANIFEST.json``. Raises ValueError when
    the data is missing or the working tree plus ``carry`` would exceed ``limit_bytes``."""
    overrides = dict(DEFAULT_OVERRIDES if overrides is None else overrides)
    carry = Path(carry)
    carry.mkdir(parents=True, exist_ok=True)
    root = data_root or os.environ.get("LTBENCH_DATA") or "data"
    src = Path(root) / "cifar10"
    tgz = carry / "cifar10.tgz"
    data_info: Dict[str, Any] = {}
    old = {}
    if (carry / PACK_MANIFEST).is_file():
        try:
            old = json.loads((carry / PACK_MANIFEST).read_text())
        except ValueError:
            old = {}
    if tgz.is_file() and not force_data:
        data_info = dict(old.get("data") or {}, file=tgz.name, bytes=tgz.stat().st_size)
        _say(f"carry: {tgz} kept ({_fmt_mib(tgz.stat().st_size)}; --force-data rebuilds it)")
    else:
        if not (src / "train").is_dir() or not (src / "test").is_dir():
            raise ValueError(f"no CIFAR-10 image-folder tree at {src} (needs train/ and test/): set LTBENCH_DATA "
                             "to the folder holding cifar10/ (on this project's machines ../shared/data)")
        t0 = time.monotonic()
        tmp = carry / ".cifar10.tgz.tmp"
        subprocess.run(["tar", "czf", str(tmp), "-C", str(src.parent.resolve()), "cifar10"], check=True)
        os.replace(tmp, tgz)
        data_info = {"file": tgz.name, "bytes": tgz.stat().st_size, "source": str(src.resolve()),
                     "sha256": _sha256(tgz), "created": _now()}
        _say(f"carry: packed {src} into {tgz} ({_fmt_mib(tgz.stat().st_size)}, {time.monotonic() - t0:.0f} s)")

    # Resume state: partial runs first (most valuable first: plan order), then the finished
    # stage-1 / phase-I runs that unfinished runs need.
    state_dir = carry / "state"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir()
    entries = _plan_entries(profile, results, seeds, overrides, notebooks)
    runs_dir = _runs_dir(results, profile)
    needed_by = _dependency_keys(e for e in entries if e.status != "done")
    by_key = {e.key: e for e in entries}
    base = tree_size(repo) + sum(p.stat().st_size for p in carry.glob("*") if p.is_file() and p.name != PACK_MANIFEST)
    budget = limit_bytes - base - 64 * 1024
    carried, left, warnings = [], [], []
    candidates = [(e, "partial") for e in entries if e.status == "partial"]
    candidates += [(by_key[k], "dependency") for k in by_key if k in needed_by and by_key[k].status == "done"]
    for e, why in candidates:
        folder = runs_dir / e.key
        ckpt = folder / CHECKPOINT_FILE
        if not ckpt.is_file():
            if why == "dependency":
                warnings.append(f"finished run {e.key} ({e.spec.describe()}) has no checkpoint here: the GPU session "
                                f"will train it again before its dependents ({', '.join(needed_by[e.key][:3])}...)")
            continue
        dst = state_dir / e.key
        dst.mkdir()
        if why == "dependency":
            size = _weights_only(ckpt, dst / CHECKPOINT_FILE)
        else:
            shutil.copy2(ckpt, dst / CHECKPOINT_FILE)
            size = ckpt.stat().st_size
        spec_src = folder / SPEC_FILE
        if spec_src.is_file():
            shutil.copy2(spec_src, dst / SPEC_FILE)
        else:
            atomic_write_json(dst / SPEC_FILE, e.spec.to_dict())
        size += (dst / SPEC_FILE).stat().st_size
        if size > budget:
            shutil.rmtree(dst)
            left.append({"key": e.key, "why": why, "bytes": size, "run": e.spec.describe()})
            warnings.append(f"{why} run {e.key} ({e.spec.describe()}, {_fmt_mib(size)}) left out: over the 64 MiB budget")
            continue
        budget -= size
        ep = checkpoint_progress(dst / CHECKPOINT_FILE)
        carried.append({"key": e.key, "why": why, "tier": e.tier, "bytes": size, "run": e.spec.describe(),
                        "epoch": ep[0] if ep else None, "epochs": ep[1] if ep else None})
    from .runs import code_version

    # The device machine's copy has no .git: the runs it trains record this commit (LTBENCH_COMMIT).
    (carry / "COMMIT").write_text(str(code_version()["commit"] or "unknown") + "\n")
    manifest = {"format": CARRY_FORMAT, "schema": 1, "profile": profile, "created": _now(), "seeds": seeds,
                "overrides": overrides, "data": data_info, "state": carried, "left_out": left,
                "plan": {s: sum(e.status == s for e in entries) for s in ("done", "partial", "pending")}}
    atomic_write_json(carry / PACK_MANIFEST, manifest)
    tree = tree_size(repo)
    carry_bytes = _dir_size(carry)
    total = tree + carry_bytes
    for w in warnings:
        _say(f"carry: warning: {w}")
    _say(f"carry: {len(carried)} run folder(s) of resume state / stage-1 weights in {state_dir} "
         f"({sum(c['why'] == 'partial' for c in carried)} partial, {sum(c['why'] == 'dependency' for c in carried)} "
         f"dependencies); plan of {profile}: {manifest['plan']}")
    _say(f"carry: working tree {_fmt_mib(tree)} + {carry} {_fmt_mib(carry_bytes)} = {_fmt_mib(total)} "
         f"(limit {_fmt_mib(limit_bytes)})")
    if total >= limit_bytes:
        raise ValueError(f"working tree ({_fmt_mib(tree)}) plus {carry} ({_fmt_mib(carry_bytes)}) = {_fmt_mib(total)} "
                         f"is not under the device's {_fmt_mib(limit_bytes)}: ignore or remove large untracked files")
    manifest.update(tree_bytes=tree, carry_bytes=carry_bytes, total_bytes=total)
    return manifest


# --------------------------------------------------------------------------------------------
# On the GPU machine: restore, snapshot


def restore_carry(carry: Union[str, os.PathLike], results: Union[str, os.PathLike], profile: str) -> List[str]:
    """Copy ``carry/state/<key>/`` files into ``results/<profile>/runs/<key>/`` where the store has
    none (a carry made for another profile is left alone). Returns the restored keys."""
    carry = Path(carry)
    mf = carry / PACK_MANIFEST
    if not mf.is_file():
        _say(f"restore: no {mf}: no resume state to restore")
        return []
    manifest = json.loads(mf.read_text())
    if manifest.get("profile") != profile:
        _say(f"restore: {carry} was made for profile {manifest.get('profile')!r}, not {profile!r}: nothing restored")
        return []
    runs_dir = _runs_dir(results, profile)
    restored = []
    for src in sorted((carry / "state").glob("*")) if (carry / "state").is_dir() else []:
        if not (src.is_dir() and src.name.isalnum()):
            continue
        dst = runs_dir / src.name
        dst.mkdir(parents=True, exist_ok=True)
        copied = False
        for f in src.iterdir():
            if f.is_file() and not (dst / f.name).exists():
                shutil.copy2(f, dst / f.name)
                copied = True
        if copied:
            restored.append(src.name)
    _say(f"restore: {len(restored)} run folder(s) of resume state / weights restored into {runs_dir}")
    return restored


def _file_sig(path: Path) -> Optional[List[int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def snapshot(results: Union[str, os.PathLike], profile: str) -> Dict[str, Dict[str, Any]]:
    """What the store holds before the session: per run key, the sha256 of ``metrics.json`` and
    the size and mtime of ``checkpoint.pt``; :func:`pack` sends only what changed."""
    out = {}
    for folder in _run_folders(_runs_dir(results, profile)):
        m, c = folder / METRICS_FILE, folder / CHECKPOINT_FILE
        out[folder.name] = {"metrics": _sha256(m) if m.is_file() else None, "checkpoint": _file_sig(c)}
    return out


# --------------------------------------------------------------------------------------------
# Smoke check


#: Smoke data: synthetic, tiny, 2 epochs (every method's code path, none of its numbers).
SMOKE_OVERRIDES = {"datasets": ["synthetic"], "epochs": 2, "n_max": 20, "test_per_class": 5, "batch_size": 32,
                   "02:methods": None, "03:methods": None, "05:methods": None}
#: A smoke process still running this long after its budget is killed (its report so far is kept).
SMOKE_GRACE_S = 60.0
#: Most frames dynamo may compile for one smoke run (first compilations plus recompilations; a first
#: ResNet-32 run compiles 3 on CPU: training, evaluation, the smaller last batch).
MAX_COMPILES_PER_RUN = 8
_METHOD_ORDER = ("bbn", "ohem", "mixup", "crt", "lws", "tau_norm", "stage2_ce", "stage2_rw", "stage2_rs", "fsa")


def _variant(spec: Any) -> Tuple[Any, ...]:
    c, p = spec.config, spec.params
    if spec.method == "joint":
        return ("joint", c.get("loss"), c.get("sampler"), c.get("classifier"), c.get("drw_epoch") is not None,
                c.get("drs_epoch") is not None, c.get("model"))
    if spec.method == "ohem":
        return ("ohem", p.get("mode"))
    return (spec.method,)


def smoke_specs() -> List[Any]:
    """One spec per distinct trainer code path of the smoke profile's runs on synthetic data: the
    CE baseline, LDAM-DRW's cosine head, every other method, then every other joint variant
    (losses, samplers, DRW, DRS). Every registered method is covered."""
    from .executor import collect
    from .experiments import is_baseline
    from .runs import METHODS

    planned = [r.spec for runs in collect("smoke", overrides=SMOKE_OVERRIDES).values() for r in runs]
    seen, specs = set(), []
    for s in planned:
        for x in s.walk():
            v = _variant(x)
            if v not in seen:
                seen.add(v)
                specs.append(x)

    def rank(s: Any) -> Tuple[int, int]:
        if is_baseline(s):
            return (0, 0)
        if s.method == "joint" and s.config.get("classifier") != "linear":
            return (1, 0)
        if s.method in _METHOD_ORDER:
            return (2, _METHOD_ORDER.index(s.method))
        return (3, 0)

    specs.sort(key=rank)
    missing = sorted(set(METHODS.names()) - {s.method for s in specs})
    if missing:
        raise ValueError(f"smoke check: the smoke profile has no run of method(s) {missing}; add one to "
                         "ltbench.session.smoke_specs")
    return specs


class _DynamoWarnings:
    """Collects torch._dynamo log records that mean compilation gave up (recompile limit)."""

    def __init__(self) -> None:
        import logging

        self.records: List[str] = []
        outer = self

        class H(logging.Handler):
            def emit(self, record: Any) -> None:
                msg = record.getMessage()
                if "recompile_limit" in msg or "cache_size_limit" in msg:
                    outer.records.append(msg[:300])

        self.handler = H(level=logging.WARNING)
        self.logger = logging.getLogger("torch._dynamo")
        self.logger.addHandler(self.handler)


def _smoke_one_mode(mode: str, device: str, budget: float, specs: Sequence[Any],
                    out: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """Train ``specs`` in order (each with its dependencies) while ``budget`` seconds allow: a run
    starts only if the previous one's duration still fits (the first always starts). With ``out``,
    the report is rewritten after every run, so a process killed at its limit leaves what it did."""
    import torch

    from .runs import ExecOptions, RunStore, run

    compiled = mode in ("compile", "fast")  # both trace with dynamo: count compiled frames
    store = RunStore(tempfile.mkdtemp(prefix=f"ltbench-smoke-{mode}-"))
    opts = ExecOptions(device=device, compile=mode == "compile", fast=mode == "fast", progress=False)
    counters = None
    warn = None
    if compiled:
        from torch._dynamo.utils import counters as _c

        counters = _c
        warn = _DynamoWarnings()
    t0 = time.monotonic()
    rows: List[Dict[str, Any]] = []
    last = 0.0

    def report() -> Dict[str, Any]:
        return {"mode": mode, "device": device, "budget_s": budget, "seconds": round(time.monotonic() - t0, 1),
                "runs": rows + [{"mode": mode, "method": s.method, "run": s.describe(), "key": s.key,
                                 "status": "not run (budget)"} for s in specs[len(rows):]]}

    for spec in specs:
        row: Dict[str, Any] = {"mode": mode, "method": spec.method, "run": spec.describe(), "key": spec.key}
        if rows and time.monotonic() - t0 + last > budget:
            row["status"] = "not run (budget)"
            rows.append(row)
            continue
        frames0 = counters["frames"].get("total", 0) if counters is not None else 0
        graphs0 = counters["stats"].get("unique_graphs", 0) if counters is not None else 0
        warn0 = len(warn.records) if warn is not None else 0
        t = time.monotonic()
        try:
            result = run(spec, store, opts)
            losses = [h.get("train_loss") for h in result.history if h.get("train_loss") is not None]
            finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)
            row.update(status="ok" if finite else "FAILED: non-finite loss", losses=losses,
                       top1=result.top1_last, epochs=len(result.history))
        except Exception as exc:  # noqa: BLE001 - every method is checked, one failure does not stop the others
            row.update(status=f"FAILED: {type(exc).__name__}: {str(exc)[:400]}")
        last = time.monotonic() - t
        row["seconds"] = round(last, 2)
        if counters is not None:
            row["compiled_frames"] = counters["frames"].get("total", 0) - frames0
            row["graphs"] = counters["stats"].get("unique_graphs", 0) - graphs0
            hits = warn.records[warn0:]
            if row["status"] == "ok" and row["compiled_frames"] > MAX_COMPILES_PER_RUN:
                row["status"] = f"FAILED: recompilation storm ({row['compiled_frames']} compiled frames > {MAX_COMPILES_PER_RUN})"
            if row["status"] == "ok" and hits:
                row["status"] = f"FAILED: recompile limit hit: {hits[0]}"
        rows.append(row)
        _say(f"smoke [{mode}] {row['status']:<10.60} {row['seconds']:6.1f} s  {spec.method:<9} {spec.describe()}"
             + (f"  ({row['compiled_frames']} compiled frames)" if "compiled_frames" in row else ""))
        if out:
            atomic_write_json(out, report())
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    shutil.rmtree(store.root, ignore_errors=True)
    res = report()
    if out:
        atomic_write_json(out, res)
    return res


#: Modes of the smoke check: the eager loop, torch.compile of the model, the whole-step fast path.
SMOKE_MODES = ("eager", "compile", "fast")


def smoke_check(device: str = "auto", budget: float = 90.0, modes: Sequence[str] = ("eager", "compile"),
                out: Optional[Union[str, os.PathLike]] = None, grace: float = SMOKE_GRACE_S) -> Dict[str, Any]:
    """Train every method for 2 epochs on tiny synthetic data, in each of ``modes`` (``eager``,
    ``compile``: ``ExecOptions(compile=True)``, ``fast``: the whole-step graph of
    :mod:`ltbench.fastpath`, ``ExecOptions(fast=True)``) in parallel processes, each within ``budget``
    seconds; assert finite losses and at most :data:`MAX_COMPILES_PER_RUN` compiled frames per run.
    A process still running ``grace`` seconds after the budget is killed (a failure).

    Returns (and writes to ``out``) ``{"ok": bool, "runs": [...], ...}``; ``ok`` is False when a run
    failed, not when the budget left some unrun (they are listed as such)."""
    from .engine import resolve_device

    dev = str(resolve_device(device))
    t0 = time.monotonic()
    procs = {}
    tmp = Path(tempfile.mkdtemp(prefix="ltbench-smoke-"))
    for mode in modes:
        if mode not in SMOKE_MODES:
            raise ValueError(f"unknown smoke mode {mode!r}: one of {', '.join(SMOKE_MODES)}")
        procs[mode] = subprocess.Popen([sys.executable, "-m", "ltbench.session", "smoke-one", "--mode", mode,
                                        "--device", dev, "--budget", str(budget), "--out", str(tmp / f"{mode}.json")])
    results = []
    for mode, p in procs.items():
        killed = False
        try:
            rc = p.wait(timeout=max(1.0, budget + grace - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc, killed = "killed", True
        f = tmp / f"{mode}.json"
        res = json.loads(f.read_text()) if f.is_file() else {"mode": mode, "runs": []}
        if killed:
            running = next((r for r in res["runs"] if r.get("status") == "not run (budget)"), None)
            res["error"] = (f"still running {grace:g} s after the {budget:g} s budget"
                            + (f" (in {running['method']} {running['run']})" if running else "") + ": killed")
        elif rc != 0 or not f.is_file():
            res["error"] = f"smoke process exited {rc}" + ("" if f.is_file() else " without a report")
        results.append(res)
    shutil.rmtree(tmp, ignore_errors=True)
    rows = [r for res in results for r in res["runs"]]
    failed = [r for r in rows if str(r.get("status", "")).startswith("FAILED")] + \
        [res for res in results if res.get("error")]
    import torch

    report = {
        "ok": not failed, "device": dev, "torch": torch.__version__, "budget_s": budget, "modes": list(modes),
        "seconds": round(time.monotonic() - t0, 1),
        "methods_checked": {m: sorted({r["method"] for r in rows if r["mode"] == m and r.get("status") == "ok"})
                            for m in modes},
        "not_run": [f"{r['mode']}: {r['method']} {r['run']}" for r in rows if r.get("status") == "not run (budget)"],
        "failed": [f"{r.get('mode')}: {r.get('method', '')} {r.get('run', '')}: {r.get('status', r.get('error'))}"
                   for r in failed],
        "fast_path": ("ok" if "fast" in modes and not [r for r in failed if str(r.get("mode")) == "fast"]
                      and any(r.get("mode") == "fast" and r.get("status") == "ok" for r in rows)
                      else "not checked" if "fast" not in modes else "FAILED"),
        "results": results,
    }
    if out:
        atomic_write_json(out, report)
    _say(f"smoke check on {dev}: {'ok' if report['ok'] else 'FAILED'} in {report['seconds']} s; "
         + "; ".join(f"{m}: {len(v)} methods ok" for m, v in report["methods_checked"].items())
         + (f"; {len(report['not_run'])} runs not reached within {budget:g} s" if report["not_run"] else ""))
    for f in report["failed"]:
        _say(f"smoke check: {f}")
    _say(f"smoke check: {report['fast_path']}")
    return report


# --------------------------------------------------------------------------------------------
# Pack


def check_out_dir(out: Union[str, os.PathLike], limits: PackLimits = LIMITS) -> List[str]:
    """Problems of ``out`` against the device's limits on what comes back (empty: fine)."""
    out = Path(out)
    problems, files, total = [], 0, 0
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            problems.append(f"{rel}: not a plain file or folder")
            continue
        if any(not _NAME_OK.match(part) for part in rel.parts):
            problems.append(f"{rel}: name outside letters, digits, '.', '_', '-'")
        if p.is_file():
            files += 1
            total += p.stat().st_size
            if len(rel.parts) - 1 > limits.max_depth:
                problems.append(f"{rel}: more than {limits.max_depth} folders deep")
            if p.stat().st_size > limits.max_file_bytes:
                problems.append(f"{rel}: {_fmt_mib(p.stat().st_size)} > {_fmt_mib(limits.max_file_bytes)}")
    if files > limits.max_files:
        problems.append(f"{files} files > {limits.max_files}")
    if total > limits.max_total_bytes:
        problems.append(f"{_fmt_mib(total)} in all > {_fmt_mib(limits.max_total_bytes)}")
    return problems


def _bins(items: Sequence[Tuple[str, Path, str, int]], cap: int, max_bins: int) -> Tuple[List[List[Any]], List[Any]]:
    """First-fit of (key, path, arcname, bytes) items into at most ``max_bins`` bins of ``cap``
    bytes, keeping whole run folders together (items are grouped by key, in order)."""
    groups: Dict[str, List[Any]] = {}
    for it in items:
        groups.setdefault(it[0], []).append(it)
    bins: List[List[Any]] = []
    sizes: List[int] = []
    left = []
    for key, group in groups.items():
        size = sum(g[3] + 1024 for g in group)
        for i, s in enumerate(sizes):
            if s + size <= cap:
                bins[i].extend(group)
                sizes[i] += size
                break
        else:
            if size <= cap and len(bins) < max_bins:
                bins.append(list(group))
                sizes.append(size + 4096)
            else:
                left.append((key, size))
    return bins, left


def _write_tgz(path: Path, members: Sequence[Tuple[str, Path, str, int]], manifest: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(PACK_MANIFEST)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for _, src, arc, _ in members:
            tar.add(str(src), arcname=arc, recursive=False)
    os.replace(tmp, path)


def pack(profile: str, results: Union[str, os.PathLike], out: Union[str, os.PathLike],
         before: Optional[Mapping[str, Any]] = None, logs: Optional[Union[str, os.PathLike]] = None,
         bench: Optional[Union[str, os.PathLike]] = None, seeds: Optional[int] = DEFAULT_SEEDS,
         overrides: Optional[Mapping[str, Any]] = None, notebooks: Union[str, os.PathLike] = "notebooks",
         limits: PackLimits = LIMITS, extra: Optional[Mapping[str, Any]] = None, runs: bool = True) -> Dict[str, Any]:
    """Pack what the session changed in ``results/<profile>/runs/`` into ``out``.

    - ``runs.tgz`` (``runs-2.tgz``, ...): every run finished (or re-finished) in the session, all
      its files but ``checkpoint.pt``; the spec of every partial run.
    - ``weights.tgz`` (``weights-2.tgz``, ...): ``checkpoint.pt`` of the runs left partial (resume
      state, whole) and of the finished runs that a planned run depends on (stage 1, phase I;
      weights only); most valuable first, what does not fit is listed in the manifest.
    - ``benchmark.csv`` (``bench``), ``logs.tgz`` (the folder ``logs``), ``manifest.json``.

    ``before``: :func:`snapshot` at the start of the session (None: everything is new). ``runs``:
    False packs no run (a session that stopped before its snapshot). Every file obeys ``limits``;
    the tarballs hold ``MANIFEST.json`` naming the profile.
    """
    overrides = dict(DEFAULT_OVERRIDES if overrides is None else overrides)
    before = dict(before or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = _runs_dir(results, profile)
    stage = Path(tempfile.mkdtemp(prefix="ltbench-pack-"))
    try:
        entries = []
        try:
            if runs:
                entries = _plan_entries(profile, results, seeds, overrides, notebooks, with_status=False)
        except Exception as exc:  # noqa: BLE001 - a pack must still be made
            _say(f"pack: warning: could not plan {profile} ({exc}); dependencies unknown, tiers unknown")
        deps = _dependency_keys(entries)
        tier = {e.key: e.tier for e in entries}
        for e in entries:
            folder = runs_dir / e.key
            e.status = ("done" if (folder / METRICS_FILE).is_file() else
                        "partial" if (folder / CHECKPOINT_FILE).is_file() else "pending")
        for t in sorted({e.tier for e in entries}):
            sel = [e for e in entries if e.tier == t]
            _say(f"plan after the session (all notebooks): tier {t}: {len(sel)} runs, " + ", ".join(
                f"{sum(e.status == s for e in sel)} {s}" for s in ("done", "partial", "pending")))
        if logs and Path(logs).is_dir() and entries:
            atomic_write_json(Path(logs) / "plan_after.json", [e.to_dict() for e in entries])
        order = {e.key: i for i, e in enumerate(entries)}
        run_items: List[Tuple[str, Path, str, int]] = []
        weight_items: List[Tuple[Tuple[int, int, int], List[Tuple[str, Path, str, int]]]] = []
        runs_meta: Dict[str, Dict[str, Any]] = {}
        for folder in _run_folders(runs_dir) if runs else []:
            key = folder.name
            old = before.get(key) or {}
            m, c, s = folder / METRICS_FILE, folder / CHECKPOINT_FILE, folder / SPEC_FILE
            finished = m.is_file()
            new_result = finished and _sha256(m) != old.get("metrics")
            new_ckpt = c.is_file() and _file_sig(c) != old.get("checkpoint")
            info: Dict[str, Any] = {"status": "done" if finished else ("partial" if c.is_file() else "pending"),
                                    "tier": tier.get(key)}
            if new_result:
                for f in sorted(folder.iterdir()):
                    if f.is_file() and f.name != CHECKPOINT_FILE and f.name not in _NEVER and not f.name.endswith(".tmp") \
                            and ".invalid-" not in f.name:
                        run_items.append((key, f, f"runs/{key}/{f.name}", f.stat().st_size))
                info["result"] = True
            if new_ckpt and not finished and s.is_file():
                ep = checkpoint_progress(c)
                info.update(epoch=ep[0] if ep else None, epochs=ep[1] if ep else None)
                if not new_result:
                    run_items.append((key, s, f"runs/{key}/{SPEC_FILE}", s.stat().st_size))
                prio = (0, tier.get(key, 9), order.get(key, 1 << 30))
                weight_items.append((prio, [(key, c, f"runs/{key}/{CHECKPOINT_FILE}", c.stat().st_size),
                                            (key, s, f"runs/{key}/{SPEC_FILE}", s.stat().st_size)]))
                info["weights"] = "resume state"
            elif new_ckpt and finished and key in deps:
                dst = stage / key / CHECKPOINT_FILE
                dst.parent.mkdir(parents=True, exist_ok=True)
                size = _weights_only(c, dst)
                prio = (1, tier.get(key, 9), order.get(key, 1 << 30))
                items = [(key, dst, f"runs/{key}/{CHECKPOINT_FILE}", size)]
                if s.is_file():
                    items.append((key, s, f"runs/{key}/{SPEC_FILE}", s.stat().st_size))
                weight_items.append((prio, items))
                info["weights"] = "weights (dependency of " + ", ".join(deps[key][:4]) + ")"
            if info.get("result") or info.get("weights"):
                runs_meta[key] = info
        weight_items.sort(key=lambda x: x[0])
        flat_weights = [it for _, group in weight_items for it in group]

        # Fixed files first, then the run and weight tarballs in what is left.
        fixed: List[Tuple[str, Path]] = []
        if bench and Path(bench).is_file():
            shutil.copy2(bench, out / "benchmark.csv")
            fixed.append(("benchmark", out / "benchmark.csv"))
        slots = limits.max_files - 1 - len(fixed) - (1 if logs else 0)  # manifest.json, logs.tgz
        cap = limits.max_file_bytes - 64 * 1024
        total_cap = limits.max_total_bytes - 2 * MIB - sum(p.stat().st_size for _, p in fixed)
        run_bins, run_left = _bins(run_items, cap, max(1, slots - 1))
        files: Dict[str, Dict[str, Any]] = {}
        base_manifest = {"format": PACK_FORMAT, "schema": 1, "profile": profile, "created": _now(),
                         "host": socket.gethostname()}
        for i, b in enumerate(run_bins):
            name = "runs.tgz" if i == 0 else f"runs-{i + 1}.tgz"
            keys = sorted({k for k, *_ in b})
            _write_tgz(out / name, b, {**base_manifest, "content": "runs", "runs": {k: runs_meta.get(k, {}) for k in keys}})
            files[name] = {"content": "runs", "runs": keys}
        used = sum((out / n).stat().st_size for n in files)
        w_slots = slots - len(run_bins)
        w_bins, w_left = _bins(flat_weights, cap, max(0, w_slots))
        for i, b in enumerate(w_bins):
            size = sum(x[3] for x in b)
            if used + size > total_cap:
                w_left.extend((k, size) for k in sorted({k for k, *_ in b}))
                continue
            name = "weights.tgz" if i == 0 else f"weights-{i + 1}.tgz"
            keys = sorted({k for k, *_ in b})
            _write_tgz(out / name, b, {**base_manifest, "content": "weights",
                                       "runs": {k: runs_meta.get(k, {}) for k in keys}})
            files[name] = {"content": "weights", "runs": keys}
            used += (out / name).stat().st_size
        left_out = [{"key": k, "bytes": n, "what": "result"} for k, n in run_left] + \
            [{"key": k, "bytes": n, "what": "checkpoint"} for k, n in w_left]
        for lo in left_out:
            _say(f"pack: warning: {lo['what']} of run {lo['key']} ({_fmt_mib(lo['bytes'])}) does not fit the limits: "
                 "left on the machine")
        for name, p in fixed:
            files[p.name] = {"content": name}
        manifest = {**base_manifest, "content": "manifest", "files": files, "runs": runs_meta, "left_out": left_out,
                    **dict(extra or {})}
        if logs and Path(logs).is_dir():
            logs = Path(logs)
            # Leave room for the manifest; truncate the largest logs (keeping their ends) if needed.
            budget = min(cap, limits.max_total_bytes - used - sum(p.stat().st_size for _, p in fixed) - MIB)
            members = []
            for f in sorted(logs.rglob("*")):
                if f.is_file():
                    members.append(("logs", f, f"logs/{f.relative_to(logs).as_posix()}", f.stat().st_size))
            raw = sum(m[3] for m in members)
            if raw > budget:
                keep = max(4096, budget // max(1, len(members)))
                trimmed = []
                for k, f, arc, n in members:
                    if n > keep:
                        t = stage / "logs" / arc
                        t.parent.mkdir(parents=True, exist_ok=True)
                        with open(f, "rb") as fh:
                            fh.seek(n - keep)
                            t.write_bytes(b"[... truncated ...]\n" + fh.read())
                        trimmed.append((k, t, arc, t.stat().st_size))
                    else:
                        trimmed.append((k, f, arc, n))
                members = trimmed
            _write_tgz(out / "logs.tgz", members, {**base_manifest, "content": "logs"})
            files["logs.tgz"] = {"content": "logs"}
        for name in list(files):
            p = out / name
            files[name].update(bytes=p.stat().st_size, sha256=_sha256(p))
        atomic_write_json(out / OUT_MANIFEST, manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    problems = check_out_dir(out, limits)
    for name, f in sorted(files.items()):
        _say(f"pack: {out / name}: {_fmt_mib(f['bytes'])} ({f['content']}"
             + (f", {len(f['runs'])} runs" if "runs" in f else "") + ")")
    n_done = sum(1 for v in runs_meta.values() if v.get("result"))
    n_part = sum(1 for v in runs_meta.values() if v.get("status") == "partial")
    _say(f"pack: {n_done} finished run(s), {n_part} partial run(s) with resume state, "
         f"{sum(1 for v in runs_meta.values() if v.get('status') == 'done' and v.get('weights'))} stage-1 weight(s); "
         f"{len(files) + 1} files, {_fmt_mib(sum(f['bytes'] for f in files.values()))}")
    if problems:
        raise ValueError("the pack breaks the device's limits: " + "; ".join(problems))
    return manifest


# --------------------------------------------------------------------------------------------
# Import


class ImportConflict(ValueError):
    """A pack's finished run differs from the finished run of the same key already here."""


@dataclass
class ImportReport:
    profile: Optional[str] = None
    added: List[str] = field(default_factory=list)        # finished runs new here (or replacing a partial one)
    identical: List[str] = field(default_factory=list)    # finished here already, same result
    resume: List[str] = field(default_factory=list)       # partial runs' resume state taken
    weights: List[str] = field(default_factory=list)      # checkpoints added to finished runs
    kept: List[str] = field(default_factory=list)         # pack's state older than what is here
    skipped_files: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"import into {self.profile}: {len(self.added)} finished run(s) added, {len(self.identical)} identical "
                f"to runs already here, {len(self.resume)} partial run(s) with resume state, {len(self.weights)} "
                f"checkpoint(s) added to finished runs, {len(self.kept)} older state(s) ignored")


def _normal_metrics(m: Mapping[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in m.items() if k not in VOLATILE_METRICS}
    if isinstance(out.get("config"), dict):
        out["config"] = {k: v for k, v in out["config"].items() if k not in EXECUTION_FIELDS}
    spec = out.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("config"), dict):
        out["spec"] = dict(spec, config={k: v for k, v in spec["config"].items() if k not in EXECUTION_FIELDS})
    return out


def same_result(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two ``metrics.json`` hold the same result (ignoring when, where and how fast)."""
    return json.dumps(_normal_metrics(a), sort_keys=True) == json.dumps(_normal_metrics(b), sort_keys=True)


def _safe_member(m: tarfile.TarInfo) -> Optional[Tuple[str, str]]:
    """(key, file name) of a pack member ``runs/<key>/<name>``, or None for anything else."""
    parts = m.name.split("/")
    if len(parts) != 3 or parts[0] != "runs" or not m.isfile():
        return None
    key, name = parts[1], parts[2]
    if not key.isalnum() or not _NAME_OK.match(name) or name in (".", "..") or name in _NEVER:
        return None
    return key, name


def _read_pack(path: Path) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Tuple[Path, str]]]]:
    with tarfile.open(path, "r:*") as tar:
        try:
            mf = tar.extractfile(PACK_MANIFEST)
            manifest = json.loads(mf.read()) if mf else None
        except KeyError:
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
            raise ValueError(f"{path} is not a GPU-session pack (no {PACK_MANIFEST} of format {PACK_FORMAT})")
        members: Dict[str, Dict[str, Tuple[Path, str]]] = {}
        for m in tar.getmembers():
            if m.name == PACK_MANIFEST:
                continue
            km = _safe_member(m)
            if km is None:
                if manifest.get("content") != "logs":
                    raise ValueError(f"{path}: unexpected member {m.name!r} (a pack holds runs/<key>/<file> only)")
                continue
            members.setdefault(km[0], {})[km[1]] = (path, m.name)
    return manifest, members


def _member_bytes(ref: Tuple[Path, str]) -> bytes:
    with tarfile.open(ref[0], "r:*") as tar:
        fh = tar.extractfile(ref[1])
        assert fh is not None
        return fh.read()


def import_packs(files: Sequence[Union[str, os.PathLike]], results: Union[str, os.PathLike] = "results",
                 dry_run: bool = False) -> ImportReport:
    """Merge the run packs among ``files`` into ``results/<profile>/runs/`` (profile from the packs).

    A finished run new here is added; one finished here already is kept when the pack's result is
    the same (:func:`same_result`) and refused otherwise: its folder stays as it is, every other
    run is imported, then :class:`ImportConflict` names each refused key and both files. A partial
    run's checkpoint is taken unless the store already has this run finished or a checkpoint at a
    later epoch; a finished run's
    checkpoint (stage-1 weights) is added where the run has none. Each run folder is replaced in
    one rename (built beside it first). ``manifest.json``, ``benchmark.csv`` and ``logs.tgz`` are
    checked and reported, not imported.
    """
    from .runs import RunSpec

    report = ImportReport()
    profile = None
    merged: Dict[str, Dict[str, Tuple[Path, str]]] = {}
    manifests: List[Tuple[Path, Dict[str, Any]]] = []
    if not files:
        raise ValueError("import: no files given")
    for f in map(Path, files):
        if not f.is_file():
            raise ValueError(f"import: {f} is not a file")
        if f.name == OUT_MANIFEST or f.suffix == ".json":
            try:
                m = json.loads(f.read_text())
            except ValueError:
                raise ValueError(f"import: {f} is not JSON") from None
            if m.get("format") != PACK_FORMAT:
                raise ValueError(f"import: {f} is not a GPU-session manifest")
            manifests.append((f, m))
            continue
        if not tarfile.is_tarfile(f):
            report.skipped_files.append(f"{f} (not a pack: keep or commit it yourself)")
            continue
        manifest, members = _read_pack(f)
        p = manifest.get("profile")
        if not isinstance(p, str) or not p.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"import: {f} names no valid profile ({p!r})")
        if profile is not None and p != profile:
            raise ValueError(f"import: {f} is a pack of profile {p!r}, the others of {profile!r}: import them apart")
        profile = p
        if manifest.get("content") == "logs":
            report.skipped_files.append(f"{f} (logs: read them, nothing to import)")
            continue
        for key, names in members.items():
            for name, ref in names.items():
                if name in merged.get(key, {}):
                    if _member_bytes(merged[key][name]) != _member_bytes(ref):
                        raise ValueError(f"import: runs/{key}/{name} differs between {merged[key][name][0]} and {f}")
                    continue
                merged.setdefault(key, {})[name] = ref
    for mpath, m in manifests:
        if profile is not None and m.get("profile") != profile:
            raise ValueError(f"import: {mpath} is the manifest of profile {m.get('profile')!r}, the packs are {profile!r}")
        profile = profile or m.get("profile")
        given = {Path(x).name: Path(x) for x in files}
        for name, info in (m.get("files") or {}).items():
            if name not in given:
                _say(f"import: warning: {name} of {mpath} was not given (its runs are not imported)")
            elif info.get("sha256") and _sha256(given[name]) != info["sha256"]:
                raise ValueError(f"import: {given[name]} does not match the sha256 in {mpath}: damaged or from another pack")
        for lo in m.get("left_out") or []:
            _say(f"import: note: the session left the {lo.get('what')} of run {lo.get('key')} on the machine")
    report.profile = profile
    if profile is None or not merged:
        for s in report.skipped_files:
            _say(f"import: skipped {s}")
        _say(f"import: no runs to import{'' if profile else ' (no run pack among the files)'}")
        return report
    store = _store_dir(results, profile)
    runs_dir = store / "runs"

    # 1. Decide every run (and find every conflict) before changing anything.
    plans: Dict[str, Dict[str, Any]] = {}
    conflicts = []
    for key in sorted(merged):
        names = merged[key]
        pack_metrics = json.loads(_member_bytes(names[METRICS_FILE])) if METRICS_FILE in names else None
        if SPEC_FILE in names:
            spec_d = json.loads(_member_bytes(names[SPEC_FILE]))
            spec = RunSpec.from_dict(spec_d, validate=True)
            if spec.key != key:
                raise ValueError(f"import: {names[SPEC_FILE][0]}:{names[SPEC_FILE][1]} describes run {spec.key}, not {key}")
        if pack_metrics is not None and pack_metrics.get("key") != key:
            raise ValueError(f"import: {names[METRICS_FILE][0]}:{names[METRICS_FILE][1]} holds run "
                             f"{pack_metrics.get('key')!r}, not {key}")
        dest = runs_dir / key
        if (dest / LOCK_FILE).exists():
            raise ValueError(f"import: {dest} is being trained here ({dest / LOCK_FILE} exists); try again when it is done")
        here_m = dest / METRICS_FILE
        here_metrics = json.loads(here_m.read_text()) if here_m.is_file() else None
        action: Dict[str, Any] = {"names": names}
        if pack_metrics is not None:
            if here_metrics is not None:
                if not same_result(pack_metrics, here_metrics):
                    conflicts.append(
                        f"run {key}: the pack's result {names[METRICS_FILE][0]}:{names[METRICS_FILE][1]} (top-1 last "
                        f"{pack_metrics.get('top1_last')}) differs from the finished result {here_m} (top-1 last "
                        f"{here_metrics.get('top1_last')})")
                    continue
                action["kind"] = "identical"
                if CHECKPOINT_FILE in names and not (dest / CHECKPOINT_FILE).is_file():
                    action["add_checkpoint"] = True
            else:
                action["kind"] = "finished"
        elif CHECKPOINT_FILE in names:
            if here_metrics is not None:
                action["kind"] = "kept"  # finished here: the pack's resume state is stale
            elif (dest / CHECKPOINT_FILE).is_file():
                tmp = Path(tempfile.mkdtemp(prefix="ltbench-import-"))
                try:
                    (tmp / CHECKPOINT_FILE).write_bytes(_member_bytes(names[CHECKPOINT_FILE]))
                    theirs = checkpoint_progress(tmp / CHECKPOINT_FILE)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                mine = checkpoint_progress(dest / CHECKPOINT_FILE)
                action["kind"] = "partial" if (theirs and (mine is None or theirs[0] > mine[0])) else "kept"
            else:
                action["kind"] = "partial"
        else:
            action["kind"] = "kept"  # a spec alone: nothing to add
        plans[key] = action
    if dry_run:
        for key, a in plans.items():
            _say(f"import (dry run): {key}: {a['kind']}" + (" + checkpoint" if a.get("add_checkpoint") else ""))
        for c in conflicts:
            _say(f"import (dry run): refused: {c}")
        return report

    # 2. Apply, one run folder at a time: build it beside the store, then rename it into place.
    staging = store / f".import-{os.getpid()}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for key, a in plans.items():
            names, kind, dest = a["names"], a["kind"], runs_dir / key
            if kind == "kept":
                report.kept.append(key)
                continue
            if kind == "identical":
                report.identical.append(key)
                if a.get("add_checkpoint"):
                    atomic_write_bytes(dest / CHECKPOINT_FILE, _member_bytes(names[CHECKPOINT_FILE]))
                    report.weights.append(key)
                continue
            new = staging / key
            if new.exists():
                shutil.rmtree(new)
            new.mkdir()
            if dest.is_dir() and kind == "partial":
                for f in dest.iterdir():  # a partial run here: keep its other files, take the newer checkpoint
                    if f.is_file() and f.name not in _NEVER:
                        shutil.copy2(f, new / f.name)
            for name, ref in names.items():
                (new / name).write_bytes(_member_bytes(ref))
            aside = staging / f"{key}.old"
            if dest.exists():
                os.rename(dest, aside)
            os.rename(new, dest)
            if aside.exists():
                shutil.rmtree(aside)
            if kind == "finished":
                report.added.append(key)
                if CHECKPOINT_FILE in names:
                    report.weights.append(key)
            else:
                report.resume.append(key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for s in report.skipped_files:
        _say(f"import: skipped {s}")
    _say(report.summary() + f" -> {runs_dir}")
    if conflicts:
        raise ImportConflict(f"import refused {len(conflicts)} run(s) whose finished result here differs from the "
                             "pack's (those folders are unchanged; every other run was imported):\n  "
                             + "\n  ".join(conflicts) + "\nTo take the pack's result, move the local run folder "
                             "aside and import again.")
    return report


# --------------------------------------------------------------------------------------------
# Command line


def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    from .runner import parse_assignments

    return {**DEFAULT_OVERRIDES, **parse_assignments(items)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ltbench.session", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def sel(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="paper")
        p.add_argument("--results", default="results")
        p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
        p.add_argument("-p", "--param", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="notebook parameter overrides (default datasets=[\"cifar10\"])")
        p.add_argument("--notebooks", default="notebooks")

    c = sub.add_parser("carry", help="build .carry/ for a GPU session (make carry)")
    sel(c)
    c.add_argument("--carry", default=".carry")
    c.add_argument("--data-root", default=None, help="folder holding cifar10/ (default $LTBENCH_DATA)")
    c.add_argument("--force-data", action="store_true", help="rebuild cifar10.tgz")
    c.add_argument("--limit-mib", type=float, default=64.0)

    r = sub.add_parser("restore", help="restore .carry/state into the run store (and --snapshot it)")
    r.add_argument("--profile", default="paper")
    r.add_argument("--results", default="results")
    r.add_argument("--carry", default=".carry")
    r.add_argument("--snapshot", default=None, help="then write the store's snapshot (JSON) here")

    s = sub.add_parser("snapshot", help="record the run store before the session")
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.add_argument("--out", required=True)

    sm = sub.add_parser("smoke", help="every method for 2 epochs, eager and compiled")
    sm.add_argument("--device", default="auto")
    sm.add_argument("--budget", type=float, default=90.0)
    sm.add_argument("--modes", default="eager,compile")
    sm.add_argument("--out", default=None)
    sm.add_argument("--grace", type=float, default=SMOKE_GRACE_S, help="seconds after the budget before a kill")

    one = sub.add_parser("smoke-one", help=argparse.SUPPRESS)
    one.add_argument("--mode", required=True)
    one.add_argument("--device", required=True)
    one.add_argument("--budget", type=float, required=True)
    one.add_argument("--out", required=True)

    pk = sub.add_parser("pack", help="pack the session's results into OUT")
    sel(pk)
    pk.add_argument("--out", required=True)
    pk.add_argument("--before", default=None, help="snapshot JSON of the session's start")
    pk.add_argument("--logs", default=None)
    pk.add_argument("--bench", default=None)
    pk.add_argument("--extra", default=None, help="JSON file merged into manifest.json")
    pk.add_argument("--no-runs", action="store_true", help="pack no run (the logs and the benchmark only)")

    im = sub.add_parser("import", help="merge returned files into results/<profile>/")
    im.add_argument("files", nargs="+")
    im.add_argument("--results", default="results")
    im.add_argument("--dry-run", action="store_true")

    ts = sub.add_parser("tree-size", help="bytes of the working tree a device run copies")
    ts.add_argument("root", nargs="?", default=".")

    args = ap.parse_args(argv)
    try:
        if args.cmd == "carry":
            make_carry(args.profile, args.results, args.carry, args.data_root, args.seeds, _overrides(args.param),
                       limit_bytes=int(args.limit_mib * MIB), force_data=args.force_data, notebooks=args.notebooks)
        elif args.cmd == "restore":
            restore_carry(args.carry, args.results, args.profile)
            if args.snapshot:
                atomic_write_json(args.snapshot, snapshot(args.results, args.profile))
        elif args.cmd == "snapshot":
            atomic_write_json(args.out, snapshot(args.results, args.profile))
        elif args.cmd == "smoke":
            rep = smoke_check(args.device, args.budget, [m for m in args.modes.split(",") if m], args.out, args.grace)
            return 0 if rep["ok"] else 1
        elif args.cmd == "smoke-one":
            _smoke_one_mode(args.mode, args.device, args.budget, smoke_specs(), args.out)
        elif args.cmd == "pack":
            before = json.loads(Path(args.before).read_text()) if args.before and Path(args.before).is_file() else None
            extra = json.loads(Path(args.extra).read_text()) if args.extra and Path(args.extra).is_file() else None
            pack(args.profile, args.results, args.out, before, args.logs, args.bench, args.seeds,
                 _overrides(args.param), args.notebooks, extra=extra, runs=not args.no_runs)
        elif args.cmd == "import":
            import_packs(args.files, args.results, args.dry_run)
        elif args.cmd == "tree-size":
            n = tree_size(args.root)
            print(f"{n} bytes ({_fmt_mib(n)})")
    except ImportConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
