"""The smoke check on the lent GPU machine: every registered method (:data:`ltbench.runs.METHODS`)
trained for 2 epochs on a small synthetic set, eager and with ``torch.compile`` (or the whole-step
fast path), asserting finite losses and no recompilation storm."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..engine import resolve_device
from ..executor import collect
from ..experiments import is_baseline
from ..io import atomic_write_json
from ..runs import METHODS, ExecOptions, RunStore, run
from ._common import _say

#: Smoke data: synthetic, tiny, 2 epochs (every method's code path, none of its numbers).
SMOKE_OVERRIDES = {"datasets": ["synthetic"], "epochs": 2, "n_max": 20, "test_per_class": 5, "batch_size": 32,
                   "02:methods": None, "03:methods": None, "05:methods": None}
#: A smoke process still running this long after its budget is killed (its report so far is kept).
SMOKE_GRACE_S = 60.0
#: Most frames dynamo may compile for one smoke run (first compilations plus recompilations; a first
#: ResNet-32 run compiles 3 on CPU: training, evaluation, the smaller last batch).
MAX_COMPILES_PER_RUN = 8
#: Modes of the smoke check: the eager loop, torch.compile of the model, the whole-step fast path.
SMOKE_MODES = ("eager", "compile", "fast")
_METHOD_ORDER = ("bbn", "ohem", "mixup", "crt", "lws", "tau_norm", "stage2_ce", "stage2_rw", "stage2_rs", "fsa")


def _variant(spec: Any) -> Tuple[Any, ...]:
    c, p = spec.config, spec.params
    if spec.method == "joint":
        return ("joint", c.get("loss"), c.get("sampler"), c.get("classifier"), c.get("drw_epoch") is not None,
                c.get("drs_epoch") is not None, c.get("model"))
    if spec.method == "ohem":
        return ("ohem", p.get("mode"))
    return (spec.method,)


def _rank(s: Any) -> Tuple[int, int]:
    """Order of the smoke runs: the CE baseline, cosine-head joint runs, the other methods, the rest."""
    if is_baseline(s):
        return (0, 0)
    if s.method == "joint" and s.config.get("classifier") != "linear":
        return (1, 0)
    if s.method in _METHOD_ORDER:
        return (2, _METHOD_ORDER.index(s.method))
    return (3, 0)


def smoke_specs() -> List[Any]:
    """One spec per distinct trainer code path of the smoke profile's runs on synthetic data: the
    CE baseline, LDAM-DRW's cosine head, every other method, then every other joint variant
    (losses, samplers, DRW, DRS). Every registered method is covered."""
    planned = [r.spec for runs in collect("smoke", overrides=SMOKE_OVERRIDES).values() for r in runs]
    seen, specs = set(), []
    for s in planned:
        for x in s.walk():
            v = _variant(x)
            if v not in seen:
                seen.add(v)
                specs.append(x)
    specs.sort(key=_rank)
    missing = sorted(set(METHODS.names()) - {s.method for s in specs})
    if missing:
        raise ValueError(f"smoke check: the smoke profile has no run of method(s) {missing}; add one to "
                         "ltbench.ops.smoke.smoke_specs")
    return specs


class _DynamoWarnings:
    """Collects torch._dynamo log records that mean compilation gave up (recompile limit)."""

    def __init__(self) -> None:
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


class _CompileWatch:
    """Counts what dynamo compiled during one smoke run (compiled modes only) and fails the run on a
    recompilation storm or a hit recompile limit."""

    def __init__(self) -> None:
        # torch._dynamo is imported only by the compiled modes: the eager check must not pay for it.
        from torch._dynamo.utils import counters

        self.counters = counters
        self.warn = _DynamoWarnings()
        self.start()

    def start(self) -> None:
        self.frames0 = self.counters["frames"].get("total", 0)
        self.graphs0 = self.counters["stats"].get("unique_graphs", 0)
        self.warn0 = len(self.warn.records)

    def finish(self, row: Dict[str, Any]) -> None:
        row["compiled_frames"] = self.counters["frames"].get("total", 0) - self.frames0
        row["graphs"] = self.counters["stats"].get("unique_graphs", 0) - self.graphs0
        hits = self.warn.records[self.warn0:]
        if row["status"] == "ok" and row["compiled_frames"] > MAX_COMPILES_PER_RUN:
            row["status"] = f"FAILED: recompilation storm ({row['compiled_frames']} compiled frames > {MAX_COMPILES_PER_RUN})"
        if row["status"] == "ok" and hits:
            row["status"] = f"FAILED: recompile limit hit: {hits[0]}"


def _smoke_train(spec: Any, store: RunStore, opts: ExecOptions, row: Dict[str, Any]) -> None:
    """Train one smoke run and record in ``row`` its status (finite losses), losses, top-1, epochs."""
    try:
        result = run(spec, store, opts)
        losses = [h.get("train_loss") for h in result.history if h.get("train_loss") is not None]
        finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)
        row.update(status="ok" if finite else "FAILED: non-finite loss", losses=losses,
                   top1=result.top1_last, epochs=len(result.history))
    except Exception as exc:  # noqa: BLE001 - every method is checked, one failure does not stop the others
        row.update(status=f"FAILED: {type(exc).__name__}: {str(exc)[:400]}")


def _smoke_one_mode(mode: str, device: str, budget: float, specs: Sequence[Any],
                    out: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """Train ``specs`` in order (each with its dependencies) while ``budget`` seconds allow: a run
    starts only if the previous one's duration still fits (the first always starts). With ``out``,
    the report is rewritten after every run, so a process killed at its limit leaves what it did."""
    compiled = mode in ("compile", "fast")  # both trace with dynamo: count compiled frames
    store = RunStore(tempfile.mkdtemp(prefix=f"ltbench-smoke-{mode}-"))
    opts = ExecOptions(device=device, compile=mode == "compile", fast=mode == "fast", progress=False)
    watch = _CompileWatch() if compiled else None
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
        if watch is not None:
            watch.start()
        t = time.monotonic()
        _smoke_train(spec, store, opts, row)
        last = time.monotonic() - t
        row["seconds"] = round(last, 2)
        if watch is not None:
            watch.finish(row)
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


def _wait_smoke(procs: Dict[str, subprocess.Popen], tmp: Path, budget: float, grace: float,
                t0: float) -> List[Dict[str, Any]]:
    """Wait for each mode's process (killing one still running ``grace`` seconds after the budget)
    and read its report, noting a kill or a failed exit in its ``error``."""
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
    return results


def _smoke_report(results: List[Dict[str, Any]], dev: str, budget: float, modes: Sequence[str],
                  t0: float) -> Dict[str, Any]:
    """The smoke check's report from the reports of its modes."""
    rows = [r for res in results for r in res["runs"]]
    failed = [r for r in rows if str(r.get("status", "")).startswith("FAILED")] + \
        [res for res in results if res.get("error")]
    return {
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


def smoke_check(device: str = "auto", budget: float = 90.0, modes: Sequence[str] = ("eager", "compile"),
                out: Optional[Union[str, os.PathLike]] = None, grace: float = SMOKE_GRACE_S) -> Dict[str, Any]:
    """Train every method for 2 epochs on tiny synthetic data, in each of ``modes`` (``eager``,
    ``compile``: ``ExecOptions(compile=True)``, ``fast``: the whole-step graph of
    :mod:`ltbench.fastpath`, ``ExecOptions(fast=True)``) in parallel processes, each within ``budget``
    seconds; assert finite losses and at most :data:`MAX_COMPILES_PER_RUN` compiled frames per run.
    A process still running ``grace`` seconds after the budget is killed (a failure).

    Returns (and writes to ``out``) ``{"ok": bool, "runs": [...], ...}``; ``ok`` is False when a run
    failed, not when the budget left some unrun (they are listed as such)."""
    dev = str(resolve_device(device))
    t0 = time.monotonic()
    procs = {}
    tmp = Path(tempfile.mkdtemp(prefix="ltbench-smoke-"))
    for mode in modes:
        if mode not in SMOKE_MODES:
            raise ValueError(f"unknown smoke mode {mode!r}: one of {', '.join(SMOKE_MODES)}")
        procs[mode] = subprocess.Popen([sys.executable, "-m", "ltbench.ops", "smoke-one", "--mode", mode,
                                        "--device", dev, "--budget", str(budget), "--out", str(tmp / f"{mode}.json")])
    results = _wait_smoke(procs, tmp, budget, grace, t0)
    shutil.rmtree(tmp, ignore_errors=True)
    report = _smoke_report(results, dev, budget, modes, t0)
    if out:
        atomic_write_json(out, report)
    _say(f"smoke check on {dev}: {'ok' if report['ok'] else 'FAILED'} in {report['seconds']} s; "
         + "; ".join(f"{m}: {len(v)} methods ok" for m, v in report["methods_checked"].items())
         + (f"; {len(report['not_run'])} runs not reached within {budget:g} s" if report["not_run"] else ""))
    for f in report["failed"]:
        _say(f"smoke check: {f}")
    _say(f"smoke check: {report['fast_path']}")
    return report
