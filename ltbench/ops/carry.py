"""What travels to the lent GPU machine, and what is done with it there.

- :func:`tree_size`: bytes of the working tree a device run copies (asks git which files).
- :func:`make_carry` (``make carry``): builds the git-ignored ``.carry/`` on the CPU machine.
- :func:`restore_carry`, :func:`snapshot`: on the GPU machine, put the carried state into the run
  store and remember what was there before the session.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..engine import CHECKPOINT_FILE, METRICS_FILE
from ..io import atomic_write_json
from ..runs import SPEC_FILE, checkpoint_progress, code_version
from ._common import (CARRY_FORMAT, DEFAULT_OVERRIDES, DEFAULT_SEEDS, MIB, PACK_MANIFEST, PathLike, _dependency_keys,
                      _file_sig, _fmt_mib, _now, _plan_entries, _run_folders, _runs_dir, _say, _sha256, _weights_only)

# --------------------------------------------------------------------------------------------
# Size of what travels


def _git_files(root: Path) -> List[str]:
    """Paths, relative to ``root``, of what a device run copies: the tracked files and the
    untracked files that git does not ignore (``git ls-files --cached --others --exclude-standard``),
    each once. Raises ValueError naming ``root`` when it is not a git checkout or git is missing."""
    if not root.is_dir():
        raise ValueError(f"tree size: {root} is not a folder")
    try:
        r = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=False)
    except OSError as exc:
        raise ValueError(f"tree size: cannot run git to list the files of {root} ({exc}): "
                         "git is needed to know which files travel") from None
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"tree size: {root} is not a git checkout (git ls-files: {why[0] if why else r.returncode}); "
                         "what travels is its tracked files plus the untracked files git does not ignore")
    return list(dict.fromkeys(p for p in r.stdout.decode(errors="surrogateescape").split("\0") if p))


def tree_size(root: PathLike = ".") -> int:
    """Bytes of the working tree that a device run copies: the tracked files plus the untracked
    files that git does not ignore (as ``git ls-files --cached --others --exclude-standard`` run in
    ``root`` lists them; sizes from lstat, paths gone from disk and folders such as submodules not
    counted). Raises ValueError when ``root`` is not a git checkout or git is missing."""
    root = Path(root).resolve()
    total = 0
    for rel in _git_files(root):
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:  # tracked but deleted in the working tree: does not travel
            continue
        if not stat.S_ISDIR(st.st_mode):
            total += st.st_size
    return total


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.exists() else 0


# --------------------------------------------------------------------------------------------
# make carry


def _old_manifest(carry: Path) -> Dict[str, Any]:
    """The manifest of the previous ``make carry`` ({} when there is none or it is not JSON)."""
    if (carry / PACK_MANIFEST).is_file():
        try:
            return json.loads((carry / PACK_MANIFEST).read_text())
        except ValueError:
            return {}
    return {}


def _carry_data(carry: Path, data_root: Optional[str], force_data: bool) -> Dict[str, Any]:
    """Keep ``carry/cifar10.tgz`` (unless ``force_data``) or pack the CIFAR-10 image-folder tree
    into it; returns the manifest's ``data`` entry. Raises ValueError when there is no data."""
    root = data_root or os.environ.get("LTBENCH_DATA") or "data"
    src = Path(root) / "cifar10"
    tgz = carry / "cifar10.tgz"
    old = _old_manifest(carry)
    if tgz.is_file() and not force_data:
        _say(f"carry: {tgz} kept ({_fmt_mib(tgz.stat().st_size)}; --force-data rebuilds it)")
        return dict(old.get("data") or {}, file=tgz.name, bytes=tgz.stat().st_size)
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
    return data_info


def _copy_state(e: Any, why: str, folder: Path, dst: Path) -> int:
    """Copy one run's ``checkpoint.pt`` (weights only for a dependency, whole for a partial run)
    and ``spec.json`` into ``dst``; returns the bytes written."""
    dst.mkdir()
    ckpt = folder / CHECKPOINT_FILE
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
    return size + (dst / SPEC_FILE).stat().st_size


def _carry_state(entries: Sequence[Any], runs_dir: Path, state_dir: Path,
                 budget: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], List[str]]:
    """Copy the resume state into ``state_dir``: partial runs first (most valuable first: plan
    order), then the finished stage-1 / phase-I runs that unfinished runs need, while ``budget``
    bytes allow. Returns (carried, left out, warnings)."""
    needed_by = _dependency_keys(e for e in entries if e.status != "done")
    by_key = {e.key: e for e in entries}
    carried: List[Dict[str, Any]] = []
    left: List[Dict[str, Any]] = []
    warnings: List[str] = []
    candidates = [(e, "partial") for e in entries if e.status == "partial"]
    candidates += [(by_key[k], "dependency") for k in by_key if k in needed_by and by_key[k].status == "done"]
    for e, why in candidates:
        folder = runs_dir / e.key
        if not (folder / CHECKPOINT_FILE).is_file():
            if why == "dependency":
                warnings.append(f"finished run {e.key} ({e.spec.describe()}) has no checkpoint here: the GPU session "
                                f"will train it again before its dependents ({', '.join(needed_by[e.key][:3])}...)")
            continue
        dst = state_dir / e.key
        size = _copy_state(e, why, folder, dst)
        if size > budget:
            shutil.rmtree(dst)
            left.append({"key": e.key, "why": why, "bytes": size, "run": e.spec.describe()})
            warnings.append(f"{why} run {e.key} ({e.spec.describe()}, {_fmt_mib(size)}) left out: over the 64 MiB budget")
            continue
        budget -= size
        ep = checkpoint_progress(dst / CHECKPOINT_FILE)
        carried.append({"key": e.key, "why": why, "tier": e.tier, "bytes": size, "run": e.spec.describe(),
                        "epoch": ep[0] if ep else None, "epochs": ep[1] if ep else None})
    return carried, left, warnings


def _check_carry_size(manifest: Dict[str, Any], carry: Path, repo: PathLike, state_dir: Path, profile: str,
                      warnings: Sequence[str], limit_bytes: int) -> None:
    """Report what the carry holds and add its sizes to ``manifest``; raise ValueError when the
    working tree plus ``carry`` is not under ``limit_bytes``."""
    carried = manifest["state"]
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


def make_carry(profile: str = "paper", results: PathLike = "results", carry: PathLike = ".carry",
               data_root: Optional[str] = None, seeds: Optional[int] = DEFAULT_SEEDS,
               overrides: Optional[Mapping[str, Any]] = None, repo: PathLike = ".", limit_bytes: int = 64 * MIB,
               force_data: bool = False, notebooks: PathLike = "notebooks") -> Dict[str, Any]:
    """Build ``carry/``: ``cifar10.tgz`` (rebuilt only when missing or ``force_data``), ``state/<key>/``
    (``spec.json`` and ``checkpoint.pt`` of the profile's partial runs, then of the finished runs
    that unfinished runs depend on, weights only) and ``MANIFEST.json``. Raises ValueError when
    ``repo`` is not a git checkout, the data is missing or the working tree plus ``carry`` would
    exceed ``limit_bytes``."""
    _git_files(Path(repo).resolve())  # not a git checkout: fail before packing the data
    overrides = dict(DEFAULT_OVERRIDES if overrides is None else overrides)
    carry = Path(carry)
    carry.mkdir(parents=True, exist_ok=True)
    data_info = _carry_data(carry, data_root, force_data)
    state_dir = carry / "state"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir()
    entries = _plan_entries(profile, results, seeds, overrides, notebooks)
    base = tree_size(repo) + sum(p.stat().st_size for p in carry.glob("*") if p.is_file() and p.name != PACK_MANIFEST)
    carried, left, warnings = _carry_state(entries, _runs_dir(results, profile), state_dir,
                                           limit_bytes - base - 64 * 1024)
    # The device machine's copy has no .git: the runs it trains record this commit (LTBENCH_COMMIT).
    (carry / "COMMIT").write_text(str(code_version()["commit"] or "unknown") + "\n")
    manifest = {"format": CARRY_FORMAT, "schema": 1, "profile": profile, "created": _now(), "seeds": seeds,
                "overrides": overrides, "data": data_info, "state": carried, "left_out": left,
                "plan": {s: sum(e.status == s for e in entries) for s in ("done", "partial", "pending")}}
    atomic_write_json(carry / PACK_MANIFEST, manifest)
    _check_carry_size(manifest, carry, repo, state_dir, profile, warnings, limit_bytes)
    return manifest


# --------------------------------------------------------------------------------------------
# On the GPU machine: restore, snapshot


def _restore_folder(src: Path, dst: Path) -> bool:
    """Copy the files of ``src`` that ``dst`` lacks; whether any was copied."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = False
    for f in src.iterdir():
        if f.is_file() and not (dst / f.name).exists():
            shutil.copy2(f, dst / f.name)
            copied = True
    return copied


def restore_carry(carry: PathLike, results: PathLike, profile: str) -> List[str]:
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
        if src.is_dir() and src.name.isalnum() and _restore_folder(src, runs_dir / src.name):
            restored.append(src.name)
    _say(f"restore: {len(restored)} run folder(s) of resume state / weights restored into {runs_dir}")
    return restored


def snapshot(results: PathLike, profile: str) -> Dict[str, Dict[str, Any]]:
    """What the store holds before the session: per run key, the sha256 of ``metrics.json`` and
    the size and mtime of ``checkpoint.pt``; :func:`ltbench.ops.packs.pack` sends only what changed."""
    out = {}
    for folder in _run_folders(_runs_dir(results, profile)):
        m, c = folder / METRICS_FILE, folder / CHECKPOINT_FILE
        out[folder.name] = {"metrics": _sha256(m) if m.is_file() else None, "checkpoint": _file_sig(c)}
    return out
