"""What comes back from the lent GPU machine: the session's new results packed into at most 8
files under ``$OUT`` (:func:`pack`), checked against the device's limits (:func:`check_out_dir`).

Finished runs without checkpoints (``runs.tgz``), checkpoints of partial runs and of the runs
other runs depend on (``weights*.tgz``), the benchmark CSV, the logs, and ``manifest.json``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..engine import CHECKPOINT_FILE, METRICS_FILE
from ..io import atomic_write_json
from ..runs import SPEC_FILE, checkpoint_progress
from ._common import (_NAME_OK, _NEVER, DEFAULT_OVERRIDES, DEFAULT_SEEDS, MIB, OUT_MANIFEST, PACK_FORMAT,
                      PACK_MANIFEST, PathLike, _dependency_keys, _file_sig, _fmt_mib, _now, _plan_entries,
                      _run_folders, _runs_dir, _say, _sha256, _weights_only)

#: (run key, source file, name in the tarball, bytes)
Item = Tuple[str, Path, str, int]


@dataclass(frozen=True)
class PackLimits:
    """What may come back from a device run: files, size of each, size of all."""

    max_files: int = 8
    max_file_bytes: int = 16 * MIB
    max_total_bytes: int = 64 * MIB
    max_depth: int = 2  # folders below $OUT


LIMITS = PackLimits()


def check_out_dir(out: PathLike, limits: PackLimits = LIMITS) -> List[str]:
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


def _bins(items: Sequence[Item], cap: int, max_bins: int) -> Tuple[List[List[Any]], List[Any]]:
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


def _write_tgz(path: Path, members: Sequence[Item], manifest: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(PACK_MANIFEST)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for _, src, arc, _ in members:
            tar.add(str(src), arcname=arc, recursive=False)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The steps of pack


def _plan_after(profile: str, results: PathLike, runs_dir: Path, seeds: Optional[int],
                overrides: Mapping[str, Any], notebooks: PathLike, logs: Optional[PathLike],
                runs: bool) -> List[Any]:
    """The plan's entries with their status after the session (none when it cannot be planned or
    ``runs`` is False): printed per tier and written to ``logs/plan_after.json``."""
    entries = []
    try:
        if runs:
            entries = _plan_entries(profile, results, seeds, overrides, notebooks, with_status=False)
    except Exception as exc:  # noqa: BLE001 - a pack must still be made
        _say(f"pack: warning: could not plan {profile} ({exc}); dependencies unknown, tiers unknown")
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
    return entries


def _result_items(folder: Path) -> List[Item]:
    """Every file of a finished run folder that travels in ``runs.tgz`` (not its checkpoint, lock,
    temporaries or invalidated files)."""
    key = folder.name
    return [(key, f, f"runs/{key}/{f.name}", f.stat().st_size) for f in sorted(folder.iterdir())
            if f.is_file() and f.name != CHECKPOINT_FILE and f.name not in _NEVER and not f.name.endswith(".tmp")
            and ".invalid-" not in f.name]


def _folder_changes(folder: Path, old: Mapping[str, Any], deps: Mapping[str, List[str]], tier: Mapping[str, int],
                    order: Mapping[str, int], stage: Path,
                    ) -> Tuple[List[Item], Optional[Tuple[Tuple[int, int, int], List[Item]]], Dict[str, Any]]:
    """What of one run folder changed since the snapshot ``old`` travels: (items for the run
    tarballs, (priority, items) for the weight tarballs or None, the manifest's entry)."""
    key = folder.name
    m, c, s = folder / METRICS_FILE, folder / CHECKPOINT_FILE, folder / SPEC_FILE
    finished = m.is_file()
    new_result = finished and _sha256(m) != old.get("metrics")
    new_ckpt = c.is_file() and _file_sig(c) != old.get("checkpoint")
    info: Dict[str, Any] = {"status": "done" if finished else ("partial" if c.is_file() else "pending"),
                            "tier": tier.get(key)}
    run_items: List[Item] = []
    weights = None
    if new_result:
        run_items += _result_items(folder)
        info["result"] = True
    if new_ckpt and not finished and s.is_file():
        ep = checkpoint_progress(c)
        info.update(epoch=ep[0] if ep else None, epochs=ep[1] if ep else None)
        if not new_result:
            run_items.append((key, s, f"runs/{key}/{SPEC_FILE}", s.stat().st_size))
        weights = ((0, tier.get(key, 9), order.get(key, 1 << 30)),
                   [(key, c, f"runs/{key}/{CHECKPOINT_FILE}", c.stat().st_size),
                    (key, s, f"runs/{key}/{SPEC_FILE}", s.stat().st_size)])
        info["weights"] = "resume state"
    elif new_ckpt and finished and key in deps:
        dst = stage / key / CHECKPOINT_FILE
        dst.parent.mkdir(parents=True, exist_ok=True)
        size = _weights_only(c, dst)
        items = [(key, dst, f"runs/{key}/{CHECKPOINT_FILE}", size)]
        if s.is_file():
            items.append((key, s, f"runs/{key}/{SPEC_FILE}", s.stat().st_size))
        weights = ((1, tier.get(key, 9), order.get(key, 1 << 30)), items)
        info["weights"] = "weights (dependency of " + ", ".join(deps[key][:4]) + ")"
    return run_items, weights, info


def _changes(runs_dir: Path, before: Mapping[str, Any], entries: Sequence[Any], stage: Path,
             runs: bool) -> Tuple[List[Item], List[Item], Dict[str, Dict[str, Any]]]:
    """What changed in the store since ``before``: (run tarball items, weight tarball items most
    valuable first, the manifest's ``runs``)."""
    deps = _dependency_keys(entries)
    tier = {e.key: e.tier for e in entries}
    order = {e.key: i for i, e in enumerate(entries)}
    run_items: List[Item] = []
    weight_items: List[Tuple[Tuple[int, int, int], List[Item]]] = []
    runs_meta: Dict[str, Dict[str, Any]] = {}
    for folder in _run_folders(runs_dir) if runs else []:
        items, weights, info = _folder_changes(folder, before.get(folder.name) or {}, deps, tier, order, stage)
        run_items += items
        if weights is not None:
            weight_items.append(weights)
        if info.get("result") or info.get("weights"):
            runs_meta[folder.name] = info
    weight_items.sort(key=lambda x: x[0])
    return run_items, [it for _, group in weight_items for it in group], runs_meta


def _write_bins(out: Path, stem: str, bins: Sequence[Sequence[Item]], base_manifest: Mapping[str, Any],
                runs_meta: Mapping[str, Dict[str, Any]], files: Dict[str, Dict[str, Any]], used: int = 0,
                total_cap: Optional[int] = None, left: Optional[List[Any]] = None) -> int:
    """Write ``stem.tgz``, ``stem-2.tgz``, ... from ``bins`` (content ``stem``) and name them in
    ``files``; with ``total_cap``, a bin that would take the bytes used past it is not written but
    added to ``left``. Returns the bytes used."""
    for i, b in enumerate(bins):
        size = sum(x[3] for x in b)
        keys = sorted({k for k, *_ in b})
        if total_cap is not None and left is not None and used + size > total_cap:
            left.extend((k, size) for k in keys)
            continue
        name = f"{stem}.tgz" if i == 0 else f"{stem}-{i + 1}.tgz"
        _write_tgz(out / name, b, {**base_manifest, "content": stem, "runs": {k: runs_meta.get(k, {}) for k in keys}})
        files[name] = {"content": stem, "runs": keys}
        used += (out / name).stat().st_size
    return used


def _trimmed_logs(logs: Path, stage: Path, budget: int) -> List[Item]:
    """The files of ``logs`` as tarball items; when they exceed ``budget`` bytes, the largest are
    truncated (keeping their ends) into ``stage``."""
    members = [("logs", f, f"logs/{f.relative_to(logs).as_posix()}", f.stat().st_size)
               for f in sorted(logs.rglob("*")) if f.is_file()]
    if sum(m[3] for m in members) <= budget:
        return members
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
    return trimmed


def _say_packed(out: Path, files: Mapping[str, Dict[str, Any]], runs_meta: Mapping[str, Dict[str, Any]]) -> None:
    """Print each file written and a summary of the pack."""
    for name, f in sorted(files.items()):
        _say(f"pack: {out / name}: {_fmt_mib(f['bytes'])} ({f['content']}"
             + (f", {len(f['runs'])} runs" if "runs" in f else "") + ")")
    n_done = sum(1 for v in runs_meta.values() if v.get("result"))
    n_part = sum(1 for v in runs_meta.values() if v.get("status") == "partial")
    _say(f"pack: {n_done} finished run(s), {n_part} partial run(s) with resume state, "
         f"{sum(1 for v in runs_meta.values() if v.get('status') == 'done' and v.get('weights'))} stage-1 weight(s); "
         f"{len(files) + 1} files, {_fmt_mib(sum(f['bytes'] for f in files.values()))}")


def _pack_files(profile: str, out: Path, stage: Path, run_items: List[Item], flat_weights: List[Item],
                runs_meta: Dict[str, Dict[str, Any]], logs: Optional[PathLike], bench: Optional[PathLike],
                limits: PackLimits, extra: Optional[Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Write the pack's files into ``out``: fixed files first (the benchmark), then the run and
    weight tarballs in what is left, the logs, ``manifest.json``. Returns (manifest, files)."""
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
    _write_bins(out, "runs", run_bins, base_manifest, runs_meta, files)
    used = sum((out / n).stat().st_size for n in files)
    w_bins, w_left = _bins(flat_weights, cap, max(0, slots - len(run_bins)))
    used = _write_bins(out, "weights", w_bins, base_manifest, runs_meta, files, used, total_cap, w_left)
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
        # Leave room for the manifest; truncate the largest logs (keeping their ends) if needed.
        budget = min(cap, limits.max_total_bytes - used - sum(p.stat().st_size for _, p in fixed) - MIB)
        _write_tgz(out / "logs.tgz", _trimmed_logs(Path(logs), stage, budget), {**base_manifest, "content": "logs"})
        files["logs.tgz"] = {"content": "logs"}
    for name in list(files):
        p = out / name
        files[name].update(bytes=p.stat().st_size, sha256=_sha256(p))
    atomic_write_json(out / OUT_MANIFEST, manifest)
    return manifest, files


def pack(profile: str, results: PathLike, out: PathLike,
         before: Optional[Mapping[str, Any]] = None, logs: Optional[PathLike] = None,
         bench: Optional[PathLike] = None, seeds: Optional[int] = DEFAULT_SEEDS,
         overrides: Optional[Mapping[str, Any]] = None, notebooks: PathLike = "notebooks",
         limits: PackLimits = LIMITS, extra: Optional[Mapping[str, Any]] = None, runs: bool = True) -> Dict[str, Any]:
    """Pack what the session changed in ``results/<profile>/runs/`` into ``out``.

    - ``runs.tgz`` (``runs-2.tgz``, ...): every run finished (or re-finished) in the session, all
      its files but ``checkpoint.pt``; the spec of every partial run.
    - ``weights.tgz`` (``weights-2.tgz``, ...): ``checkpoint.pt`` of the runs left partial (resume
      state, whole) and of the finished runs that a planned run depends on (stage 1, phase I;
      weights only); most valuable first, what does not fit is listed in the manifest.
    - ``benchmark.csv`` (``bench``), ``logs.tgz`` (the folder ``logs``), ``manifest.json``.

    ``before``: :func:`ltbench.ops.carry.snapshot` at the start of the session (None: everything is
    new). ``runs``: False packs no run (a session that stopped before its snapshot). Every file
    obeys ``limits``; the tarballs hold ``MANIFEST.json`` naming the profile.
    """
    overrides = dict(DEFAULT_OVERRIDES if overrides is None else overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = _runs_dir(results, profile)
    stage = Path(tempfile.mkdtemp(prefix="ltbench-pack-"))
    try:
        entries = _plan_after(profile, results, runs_dir, seeds, overrides, notebooks, logs, runs)
        run_items, flat_weights, runs_meta = _changes(runs_dir, dict(before or {}), entries, stage, runs)
        manifest, files = _pack_files(profile, out, stage, run_items, flat_weights, runs_meta, logs, bench,
                                      limits, extra)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    problems = check_out_dir(out, limits)
    _say_packed(out, files, runs_meta)
    if problems:
        raise ValueError("the pack breaks the device's limits: " + "; ".join(problems))
    return manifest

