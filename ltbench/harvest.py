"""The harvest: train the queue of CPU runs in the background, session after session.

Two CPU cores cannot train a 200-epoch run, let alone a profile, inside one working session, but
a session leaves them idle most of its wall time. The harvest trains :data:`QUEUE` in priority
order at low CPU priority and stops cleanly when asked, so every session adds its idle hours to
the same run store (``results/<profile>/runs/``) and commits it:

- ``tools/harvest.sh start`` (``make harvest``) checks out the current commit into its own
  worktree (``.harvest/worktrees/<commit>``) and runs ``python -m ltbench.harvest run`` from
  there, niced, in the background: edits in the working tree (and the package's function-level
  imports) never change a training that is running.
- Every run checkpoints every epoch. SIGTERM / SIGINT (``make harvest-stop``) ask it to stop at
  the end of the current epoch (:func:`ltbench.engine.request_stop`): a checkpoint, then exit. A
  second signal exits at once; the last epoch's checkpoint (written atomically) is then the
  resume point. The store can be committed at any moment.
- ``python -m ltbench.harvest stage`` puts in git's index what the next session needs beside the
  runs' small files: the checkpoint of every unfinished run (its resume state) and of every
  finished run that a queued run builds on (stage-1 / phase-I weights); it removes from the index
  the checkpoints no longer needed (they stay on disk).
- ``python -m ltbench.harvest plan`` lists the queue: each step, its runs done / partial /
  pending and the image-passes left.

A user runs the same on their own machine: ``make harvest HARVEST_SECONDS=36000`` (ten hours),
then ``make harvest-stop`` (or let the deadline stop it) and ``make reproduce PROFILE=cpu``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .engine import CHECKPOINT_FILE, METRICS_FILE, request_stop, stop_requested
from .checks import is_int, is_positive_number, require
from .comparison import plan_comparison, train_comparison
from .executor import PlanEntry, execute, plan
from .parameters import ConfigError
from .published import published
from .runs import DeadlineReached, RunStore, cost
from .io import atomic_write_json

__all__ = ["Step", "QUEUE", "queue_plan", "harvest", "needed_keys", "stage_files", "stage", "main"]

#: The three joint/BBN methods whose gains over CE calibrate the ``cpu`` profile's length.
CALIBRATION = {"methods": ["CE", "LDAM-DRW", "BBN"], "run_grid": False, "run_ablations": False}
#: The paper profile's CIFAR-10 IR100 cells, seed 0.
_PAPER_C10 = {"datasets": ["cifar10"], "imbalance_ratios": [100]}


@dataclass(frozen=True)
class Step:
    """One ``execute`` of the queue: a profile, the notebooks it covers (None: all), parameter
    overrides (``runner.parse_assignments`` form: ``key`` or ``notebook:key``), the tiers and
    the number of seeds (None: the profile's)."""

    name: str
    profile: str
    only: Optional[Tuple[str, ...]] = None
    params: Mapping[str, Any] = field(default_factory=dict)
    tiers: Optional[Tuple[int, ...]] = None
    seeds: Optional[int] = None
    #: A loss outside the package (``"file.py:Name"``) to compare with the profile's baselines
    #: (:func:`ltbench.compare.compare`) instead of executing notebooks; ``method_params`` its arguments.
    method: Optional[str] = None
    method_params: Mapping[str, Any] = field(default_factory=dict)


def _nb04(**params: Any) -> Dict[str, Any]:
    return {f"04_bbn_and_two_stage:{k}": v for k, v in params.items()}


#: The harvest's priority order (issue 22): the quick profile, the cpu profile's calibration and tiers 0-1, the paper
#: profile's 200-epoch CE with its stage-2 cells, the rest of cpu, then 200-epoch joint methods.
QUEUE: Tuple[Step, ...] = (
    # Minutes: the committed pipeline check stays current with the code (make reproduce trains nothing).
    Step("quick profile (the pipeline check make reproduce renders)", "quick"),
    # float32, as trained before the profile took bf16 (amp_cpu): the evidence for E stays what it was.
    Step("cpu calibration, 30 epochs: CE, LDAM-DRW, BBN", "cpu", ("04_bbn_and_two_stage",),
         _nb04(**CALIBRATION, epochs=30, amp_cpu=False)),
    Step("cpu calibration, 50 epochs: CE, LDAM-DRW, BBN", "cpu", ("04_bbn_and_two_stage",),
         _nb04(**CALIBRATION, epochs=50, amp_cpu=False)),
    Step("cpu tiers 0-1, seed 0", "cpu", tiers=(0, 1)),
    Step("cpu: logit adjustment against the baselines (examples/, tau 1)", "cpu",
         method="examples/logit_adjustment.py:LogitAdjustedLoss", method_params={"tau": 1.0}),
    Step("cpu: Balanced Softmax against the baselines (examples/)", "cpu",
         method="examples/balanced_softmax.py:BalancedSoftmaxLoss"),
    Step("paper CIFAR-10 IR100: CE 200 epochs, cRT, tau-norm, LWS", "paper", ("04_bbn_and_two_stage",),
         {**_nb04(**_PAPER_C10, methods=["CE", "cRT", "tau-norm", "LWS"], run_grid=False, run_ablations=False)},
         seeds=1),
    # An hour that bears on the headline gap (CE 65.17 at 200 epochs against the published 70.36): how
    # steeply accuracy falls with JPEG distortion, the copy's own (docs/methods.md §1.4).
    Step("cpu: CE on the data re-encoded at JPEG q50, q25, q90 (the data-copy check)", "cpu",
         ("01_long_tailed_cifar",)),
    Step("cpu tiers 0-1, seeds 0-2", "cpu", tiers=(0, 1), seeds=3),
    Step("cpu, everything else, seed 0", "cpu"),
    Step("paper CIFAR-10 IR100: LDAM-DRW, CE-DRW, BBN 200 epochs", "paper", ("04_bbn_and_two_stage",),
         _nb04(**_PAPER_C10, methods=["LDAM-DRW", "CE-DRW", "BBN"], run_grid=False, run_ablations=False), seeds=1),
    Step("paper CIFAR-10 IR100: the other published cells, seed 0", "paper", tiers=(0, 1),
         params={"datasets": ["cifar10"], "imbalance_ratios": [100]}, seeds=1),
)

#: Profiles whose checkpoints are committed (hours of CPU each); a quick run retrains in seconds.
CHECKPOINT_PROFILES = ("cpu", "paper")
#: Folder (under the repository root) of the harvest's worktrees, log, pid and status files.
HARVEST_DIR = ".harvest"
STATUS_FILE = "status.json"


def _plan(step: Step, results: Union[str, os.PathLike], notebooks: Union[str, os.PathLike]) -> List[Any]:
    if step.method:
        store = RunStore(Path(results) / step.profile)
        _, _, mine = plan_comparison(step.method, step.method_params, step.profile, step.seeds, notebooks)
        return [PlanEntry(s, 1, ["compare"], [step.name], store.status(s), cost(s), [], store.start_epoch(s))
                for s in mine]
    return plan(step.profile, results, step.seeds, list(step.only) if step.only else None, dict(step.params),
                notebooks)


def _compare_step(step: Step, results: Union[str, os.PathLike], notebooks: Union[str, os.PathLike],
                  left: Optional[float], compile: Union[bool, str]) -> Tuple[str, List[str], bool]:
    """(summary, failed, stopped) of a comparison step: its runs train; baselines are only loaded."""
    try:
        *_, trained = train_comparison(step.method, step.method_params, step.profile, step.seeds, results, notebooks,
                                       deadline=left, compile=compile, verbose=True)
    except DeadlineReached:
        return "compare: stopped at the deadline (resumes next time)", [], True
    except ConfigError as exc:  # e.g. a baseline not trained yet: the later steps still run
        return f"compare: not run: {exc}", [step.name], False
    return (f"compare: {len(trained)} run(s) trained; `python -m ltbench compare --method {step.method} --profile "
            f"{step.profile}` renders the comparison"), [], False


def queue_plan(results: Union[str, os.PathLike] = "results", notebooks: Union[str, os.PathLike] = "notebooks",
               queue: Sequence[Step] = QUEUE) -> List[Dict[str, Any]]:
    """Per step: its runs (in the step's tiers) done / partial / pending and image-passes left."""
    rows = []
    for i, step in enumerate(queue):
        entries = [e for e in _plan(step, results, notebooks) if step.tiers is None or e.tier in step.tiers]
        count = {s: sum(e.status == s for e in entries) for s in ("done", "partial", "pending")}
        rows.append({"step": i, "name": step.name, "profile": step.profile, "runs": len(entries), **count,
                     "left_M": round(sum(e.cost_left for e in entries) / 1e6, 3)})
    return rows


def _write_status(path: Optional[Path], **fields: Any) -> None:
    if path is not None:
        atomic_write_json(path, {"updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields})


def harvest(results: Union[str, os.PathLike] = "results", notebooks: Union[str, os.PathLike] = "notebooks",
            deadline: Optional[float] = None, queue: Sequence[Step] = QUEUE, start: int = 0,
            status_file: Optional[Union[str, os.PathLike]] = None, threads: Optional[int] = None,
            data_root: Optional[str] = None, compile: Union[bool, str] = "auto") -> Dict[str, Any]:
    """Train ``queue`` from step ``start`` in order until it is done, ``deadline`` seconds have
    passed or a stop is requested (:func:`ltbench.engine.request_stop`). A run stopped mid-way
    keeps its checkpoint and resumes at the next call. Returns what each step did."""
    require(deadline is None or is_positive_number(deadline), "deadline", deadline,
            "a positive number of seconds or None")
    require(is_int(start) and 0 <= start < max(len(queue), 1), "start", start, f"a step index in [0, {len(queue)})")
    for step in queue:  # every step's parameters are checked before anything trains
        _plan(step, results, notebooks)
    status = Path(status_file) if status_file is not None else None
    t0 = time.time()
    done: List[Dict[str, Any]] = []
    reason = "queue done"
    for i in range(start, len(queue)):
        step = queue[i]
        left = None if deadline is None else deadline - (time.time() - t0)
        if stop_requested():
            reason = "stop requested"
            break
        if left is not None and left <= 0:
            reason = "deadline"
            break
        _write_status(status, pid=os.getpid(), step=i, name=step.name, started=t0, steps=done)
        print(f"harvest: step {i} - {step.name}" + (f" ({left:.0f} s left)" if left else ""), flush=True)
        if step.method:
            summary, failed, stopped = _compare_step(step, results, notebooks, left, compile)
        else:
            report = execute(step.profile, results, tiers=list(step.tiers) if step.tiers else None, deadline=left,
                             seeds=step.seeds, only=list(step.only) if step.only else None,
                             overrides=dict(step.params), notebooks_dir=notebooks, progress=False, threads=threads,
                             data_root=data_root, compile=compile)
            summary, failed, stopped = report.summary(), report.failed, report.deadline_hit
        done.append({"step": i, "name": step.name, "summary": summary, "failed": failed})
        if stopped or stop_requested():
            reason = "stop requested" if stop_requested() else "deadline"
            break
    out = {"reason": reason, "seconds": round(time.time() - t0, 1), "steps": done}
    _write_status(status, pid=None, finished=True, **out)
    print(f"harvest: stopped ({reason}) after {out['seconds']:.0f} s", flush=True)
    return out


#: Published rows whose gain over CE calibrates the cpu profile's length (ltbench.published).
CALIBRATED = {"LDAM-DRW": "LDAM-DRW", "BBN": "BBN"}
CALIBRATION_LENGTHS = (30, 50)


def calibration(results: Union[str, os.PathLike] = "results",
                notebooks: Union[str, os.PathLike] = "notebooks") -> Dict[str, Any]:
    """The cpu profile's length from the calibration runs in the store: the shortest E of
    :data:`CALIBRATION_LENGTHS` at which LDAM-DRW's and BBN's last-epoch gains over CE are each at
    least half their published CIFAR-10 IR100 gains, else the longest. ``rows``: per length, each
    method's top-1 (None while it is not trained); ``epochs``: the choice, None while undecided."""
    ce_pub = published("CE (softmax)", "cifar10", 100)
    rows = []
    choice = None
    for step in QUEUE:
        if step.profile != "cpu" or not step.name.startswith("cpu calibration"):
            continue
        entries = _plan(step, results, notebooks)
        store = RunStore(Path(results) / step.profile)
        epochs = int(entries[0].spec.config["epochs"])
        top1: Dict[str, Optional[float]] = {}
        for e in entries:
            label = e.labels[0]
            r = store.load(e.spec) if e.status == "done" else None
            top1[label] = None if r is None else round(float(r.top1_last), 2)
        gains = {label: None if top1.get(label) is None or top1.get("CE") is None
                 else round(top1[label] - top1["CE"], 2) for label in CALIBRATED}
        ok = None if None in gains.values() else all(
            gains[label] >= (published(row, "cifar10", 100) - ce_pub) / 2 for label, row in CALIBRATED.items())
        rows.append({"epochs": epochs, "top1": top1, "gains": gains, "meets_half_published": ok})
    ordered = sorted(rows, key=lambda r: r["epochs"])
    for i, r in enumerate(ordered):
        if i == len(ordered) - 1:
            choice = r["epochs"]  # every shorter length failed: the longest is the rule's answer, whatever it shows
            break
        if r["meets_half_published"] is None:
            break  # a shorter length is undecided: nothing longer can be chosen yet
        if r["meets_half_published"]:
            choice = r["epochs"]
            break
    half = {k: round((published(v, "cifar10", 100) - ce_pub) / 2, 2) for k, v in CALIBRATED.items()}
    return {"rows": rows, "half_published_gains": half, "epochs": choice}


def needed_keys(results: Union[str, os.PathLike] = "results", notebooks: Union[str, os.PathLike] = "notebooks",
                queue: Sequence[Step] = QUEUE) -> set:
    """Keys of the runs that a queued run depends on (stage 1, phase I): their weights are kept."""
    needed: set = set()
    for step in queue:
        for e in _plan(step, results, notebooks):
            needed.update(e.deps)
    return needed


def stage_files(results: Union[str, os.PathLike], profiles: Sequence[str], needed: set) -> Tuple[List[Path], List[Path]]:
    """(checkpoints to commit, checkpoints git need not hold) of ``profiles``' run stores: an
    unfinished run's checkpoint is its resume state; a finished run's is kept where its key is in
    ``needed`` (a run builds on its weights), else it stays on disk only."""
    keep, drop = [], []
    for profile in profiles:
        for ckpt in sorted((Path(results) / profile / "runs").glob(f"*/{CHECKPOINT_FILE}")):
            run_dir = ckpt.parent
            finished = (run_dir / METRICS_FILE).exists()
            (keep if (not finished or run_dir.name in needed) else drop).append(ckpt)
    return keep, drop


def _git(args: Sequence[str], cwd: Union[str, os.PathLike]) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def stage(results: Union[str, os.PathLike] = "results", notebooks: Union[str, os.PathLike] = "notebooks",
          queue: Sequence[Step] = QUEUE, needed: Optional[set] = None) -> Dict[str, int]:
    """``git add`` the queue profiles' run stores with the checkpoints :func:`stage_files` keeps
    (forced: checkpoints are ignored elsewhere); ``git rm --cached`` the tracked ones it drops.
    ``needed``: the keys whose weights are kept (default :func:`needed_keys` of ``queue``)."""
    root = Path(results).resolve()
    profiles = [p for p in sorted({s.profile for s in queue}) if (root / p).is_dir()]
    if needed is None:
        needed = needed_keys(results, notebooks, queue)
    keep, drop = stage_files(root, [p for p in profiles if p in CHECKPOINT_PROFILES], needed)
    repo = _git(["rev-parse", "--show-toplevel"], root).strip()
    if profiles:
        _git(["add", "-A", "--", *[str(root / p) for p in profiles]], repo)
    if keep:
        _git(["add", "-f", "--", *[str(p) for p in keep]], repo)
    tracked = set(_git(["ls-files", "--full-name", "--", *[str(p) for p in drop]], repo).split()) if drop else set()
    gone = [str(p) for p in drop if os.path.relpath(p, repo) in tracked]
    if gone:
        _git(["rm", "-q", "--cached", "--", *gone], repo)
    return {"checkpoints_kept": len(keep), "checkpoints_untracked": len(gone)}


def lower_priority() -> str:
    """Nice 19 for this process and, where the kernel groups scheduling by session (autogroups,
    where nice weighs only inside a group), for its session's group too: the harvest then takes
    only the CPU that the rest of the machine leaves. Returns what it set."""
    done = []
    try:
        os.nice(19 - os.nice(0))
        done.append("nice 19")
    except OSError:
        pass
    group = Path("/proc/self/autogroup")
    try:
        if group.exists() and os.getsid(0) == os.getpid():  # alone in its session (tools/harvest.sh: setsid)
            group.write_text("19")
            done.append("autogroup nice 19")
    except OSError:
        pass
    return ", ".join(done) or "priority unchanged"


def _install_signal_handlers() -> None:
    def handler(signum: int, frame: Any) -> None:
        if stop_requested():
            raise KeyboardInterrupt(f"second signal {signum}: stopping now (the last epoch's checkpoint stays)")
        print(f"harvest: signal {signum}: stopping after the current epoch (send it again to stop now)", flush=True)
        request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ltbench.harvest", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, text in (("run", "train the queue (foreground; tools/harvest.sh runs it niced in the background)"),
                       ("plan", "the queue's steps with their runs done / partial / pending"),
                       ("stage", "git add the harvest's runs and the checkpoints the next session needs"),
                       ("calibrate", "the cpu profile's length from the calibration runs (JSON)")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--results", default="results", metavar="DIR")
        sp.add_argument("--notebooks", default="notebooks", metavar="DIR")
        if name == "run":
            sp.add_argument("--deadline", type=float, default=None, metavar="SECONDS")
            sp.add_argument("--start", type=int, default=0, metavar="STEP", help="first step of the queue (default 0)")
            sp.add_argument("--status", default=None, metavar="FILE", help="status JSON to keep up to date")
            sp.add_argument("--threads", type=int, default=None)
            sp.add_argument("--data-root", default=None)
        if name == "plan":
            sp.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.cmd == "run":
            print(f"harvest: ltbench from {Path(__file__).resolve().parent}, pid {os.getpid()}, {lower_priority()}",
                  flush=True)
            _install_signal_handlers()
            harvest(args.results, args.notebooks, args.deadline, start=args.start, status_file=args.status,
                    threads=args.threads, data_root=args.data_root)
        elif args.cmd == "plan":
            rows = queue_plan(args.results, args.notebooks)
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                for r in rows:
                    print(f"{r['step']:>2} {r['name']:<62} {r['done']:>3} done {r['partial']:>2} partial "
                          f"{r['pending']:>3} pending  {r['left_M']:7.2f} M image-passes left")
        elif args.cmd == "calibrate":
            print(json.dumps(calibration(args.results, args.notebooks), indent=1))
        else:
            print(json.dumps(stage(args.results, args.notebooks)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
