"""Back on the CPU machine: merge the files a GPU session returned into ``results/<profile>/``
(:func:`import_packs`, ``python -m ltbench import FILE...``), refusing to overwrite a different
finished result (:class:`ImportConflict`)."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..engine import CHECKPOINT_FILE, EXECUTION_FIELDS, METRICS_FILE
from ..io import atomic_write_bytes
from ..runs import LOCK_FILE, SPEC_FILE, RunSpec, checkpoint_progress
from ._common import (_NAME_OK, _NEVER, OUT_MANIFEST, PACK_FORMAT, PACK_MANIFEST, VOLATILE_METRICS, PathLike, _say,
                      _sha256, _store_dir)

#: A pack member: (tarball, name inside it).
Ref = Tuple[Path, str]
#: Run key -> file name -> where the pack holds it.
Merged = Dict[str, Dict[str, Ref]]


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


def _read_pack(path: Path) -> Tuple[Dict[str, Any], Merged]:
    with tarfile.open(path, "r:*") as tar:
        try:
            mf = tar.extractfile(PACK_MANIFEST)
            manifest = json.loads(mf.read()) if mf else None
        except KeyError:
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
            raise ValueError(f"{path} is not a GPU-session pack (no {PACK_MANIFEST} of format {PACK_FORMAT})")
        members: Merged = {}
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


def _member_bytes(ref: Ref) -> bytes:
    with tarfile.open(ref[0], "r:*") as tar:
        fh = tar.extractfile(ref[1])
        assert fh is not None
        return fh.read()


# --------------------------------------------------------------------------------------------
# The steps of import_packs


def _read_manifest_json(f: Path) -> Dict[str, Any]:
    """A session's ``manifest.json`` given among the files (ValueError when it is not one)."""
    try:
        m = json.loads(f.read_text())
    except ValueError:
        raise ValueError(f"import: {f} is not JSON") from None
    if m.get("format") != PACK_FORMAT:
        raise ValueError(f"import: {f} is not a GPU-session manifest")
    return m


def _merge_members(merged: Merged, members: Merged, f: Path) -> None:
    """Add a pack's members to ``merged``; the same run file in two packs must be the same bytes."""
    for key, names in members.items():
        for name, ref in names.items():
            if name in merged.get(key, {}):
                if _member_bytes(merged[key][name]) != _member_bytes(ref):
                    raise ValueError(f"import: runs/{key}/{name} differs between {merged[key][name][0]} and {f}")
                continue
            merged.setdefault(key, {})[name] = ref


def _gather(files: Sequence[Path], report: ImportReport
            ) -> Tuple[Optional[str], Merged, List[Tuple[Path, Dict[str, Any]]]]:
    """Read every given file: (the packs' profile, their run members merged, the manifests given);
    files that are no pack, and log packs, go to ``report.skipped_files``."""
    profile = None
    merged: Merged = {}
    manifests: List[Tuple[Path, Dict[str, Any]]] = []
    for f in files:
        if not f.is_file():
            raise ValueError(f"import: {f} is not a file")
        if f.name == OUT_MANIFEST or f.suffix == ".json":
            manifests.append((f, _read_manifest_json(f)))
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
        _merge_members(merged, members, f)
    return profile, merged, manifests


def _check_manifests(manifests: Sequence[Tuple[Path, Dict[str, Any]]], files: Sequence[Path],
                     profile: Optional[str]) -> Optional[str]:
    """Check the given files against each manifest's sha256 (warning about files not given, noting
    what the session left on the machine); returns the profile."""
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
    return profile


def _checked_metrics(key: str, names: Mapping[str, Ref]) -> Optional[Dict[str, Any]]:
    """The pack's ``metrics.json`` of run ``key`` (None: a partial run), after checking that its
    spec and metrics are of this key."""
    pack_metrics = json.loads(_member_bytes(names[METRICS_FILE])) if METRICS_FILE in names else None
    if SPEC_FILE in names:
        spec = RunSpec.from_dict(json.loads(_member_bytes(names[SPEC_FILE])), validate=True)
        if spec.key != key:
            raise ValueError(f"import: {names[SPEC_FILE][0]}:{names[SPEC_FILE][1]} describes run {spec.key}, not {key}")
    if pack_metrics is not None and pack_metrics.get("key") != key:
        raise ValueError(f"import: {names[METRICS_FILE][0]}:{names[METRICS_FILE][1]} holds run "
                         f"{pack_metrics.get('key')!r}, not {key}")
    return pack_metrics


def _resume_kind(names: Mapping[str, Ref], dest: Path) -> str:
    """``partial`` when the pack's checkpoint is further along than the one here (or there is none
    here), else ``kept``."""
    if not (dest / CHECKPOINT_FILE).is_file():
        return "partial"
    tmp = Path(tempfile.mkdtemp(prefix="ltbench-import-"))
    try:
        (tmp / CHECKPOINT_FILE).write_bytes(_member_bytes(names[CHECKPOINT_FILE]))
        theirs = checkpoint_progress(tmp / CHECKPOINT_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mine = checkpoint_progress(dest / CHECKPOINT_FILE)
    return "partial" if (theirs and (mine is None or theirs[0] > mine[0])) else "kept"


def _decide(key: str, names: Mapping[str, Ref], runs_dir: Path) -> Union[Dict[str, Any], str]:
    """What importing run ``key`` does (``{"kind": finished | identical | partial | kept, ...}``),
    or the text of its conflict with the finished result here."""
    pack_metrics = _checked_metrics(key, names)
    dest = runs_dir / key
    if (dest / LOCK_FILE).exists():
        raise ValueError(f"import: {dest} is being trained here ({dest / LOCK_FILE} exists); try again when it is done")
    here_m = dest / METRICS_FILE
    here_metrics = json.loads(here_m.read_text()) if here_m.is_file() else None
    action: Dict[str, Any] = {"names": names}
    if pack_metrics is not None:
        if here_metrics is not None:
            if not same_result(pack_metrics, here_metrics):
                return (f"run {key}: the pack's result {names[METRICS_FILE][0]}:{names[METRICS_FILE][1]} (top-1 last "
                        f"{pack_metrics.get('top1_last')}) differs from the finished result {here_m} (top-1 last "
                        f"{here_metrics.get('top1_last')})")
            action["kind"] = "identical"
            if CHECKPOINT_FILE in names and not (dest / CHECKPOINT_FILE).is_file():
                action["add_checkpoint"] = True
        else:
            action["kind"] = "finished"
    elif CHECKPOINT_FILE in names:
        # finished here: the pack's resume state is stale
        action["kind"] = "kept" if here_metrics is not None else _resume_kind(names, dest)
    else:
        action["kind"] = "kept"  # a spec alone: nothing to add
    return action


def _replace_folder(key: str, a: Mapping[str, Any], staging: Path, dest: Path) -> None:
    """Build run ``key``'s new folder in ``staging`` (a partial run here keeps its other files),
    then rename it into place."""
    names, kind = a["names"], a["kind"]
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


def _apply(plans: Mapping[str, Dict[str, Any]], store: Path, runs_dir: Path, report: ImportReport) -> None:
    """Apply the decided imports, one run folder at a time, recording each in ``report``."""
    staging = store / f".import-{os.getpid()}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for key, a in plans.items():
            names, kind, dest = a["names"], a["kind"], runs_dir / key
            if kind == "kept":
                report.kept.append(key)
            elif kind == "identical":
                report.identical.append(key)
                if a.get("add_checkpoint"):
                    atomic_write_bytes(dest / CHECKPOINT_FILE, _member_bytes(names[CHECKPOINT_FILE]))
                    report.weights.append(key)
            else:
                _replace_folder(key, a, staging, dest)
                if kind == "finished":
                    report.added.append(key)
                    if CHECKPOINT_FILE in names:
                        report.weights.append(key)
                else:
                    report.resume.append(key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def import_packs(files: Sequence[PathLike], results: PathLike = "results", dry_run: bool = False) -> ImportReport:
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
    report = ImportReport()
    if not files:
        raise ValueError("import: no files given")
    profile, merged, manifests = _gather(list(map(Path, files)), report)
    profile = _check_manifests(manifests, files, profile)
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
        action = _decide(key, merged[key], runs_dir)
        if isinstance(action, str):
            conflicts.append(action)
        else:
            plans[key] = action
    if dry_run:
        for key, a in plans.items():
            _say(f"import (dry run): {key}: {a['kind']}" + (" + checkpoint" if a.get("add_checkpoint") else ""))
        for c in conflicts:
            _say(f"import (dry run): refused: {c}")
        return report

    # 2. Apply, one run folder at a time: build it beside the store, then rename it into place.
    _apply(plans, store, runs_dir, report)
    for s in report.skipped_files:
        _say(f"import: skipped {s}")
    _say(report.summary() + f" -> {runs_dir}")
    if conflicts:
        raise ImportConflict(f"import refused {len(conflicts)} run(s) whose finished result here differs from the "
                             "pack's (those folders are unchanged; every other run was imported):\n  "
                             + "\n  ".join(conflicts) + "\nTo take the pack's result, move the local run folder "
                             "aside and import again.")
    return report
