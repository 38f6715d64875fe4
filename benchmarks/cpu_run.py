"""A whole training run on CPU, wall time included: the default execution against the previous
default, side by side in one process (issue 22, deliverable 1).

Both rows train the same run: CE, ResNet-32, the full CIFAR-10-LT IR100 (12,406 images), the full
10,000-image test set, batch 128, lr 0.1, ``base_config(epochs=E)`` (the cpu profile's recipe).

  previous   what ltbench did by default before compile="auto": eager model, a test-set
             evaluation after every epoch (TrainConfig's eval_every=1)
  default    ExecOptions() (compile="auto": torch.compile of the model on CPU) and the cpu
             profile's evaluation every 5 epochs and after the last

Each row is ``ltbench.runs.run`` from an empty run folder: data loading, compilation, training,
evaluations and checkpoints all count in its wall time; ``train_s`` is the trainer's own training
time, the rest is ``other_s``. ``--store DIR`` puts the default row's run into that run store
(``results/cpu``: it is the cpu profile's CE cell, so the measurement is not thrown away); the
previous row goes to a temporary folder. Results are printed and written to
``results/benchmarks/cpu_run_<date>.csv`` and ``.md`` with the device, torch, threads and commit.

    python benchmarks/cpu_run.py [--epochs 30] [--rows previous,default] [--store results/cpu]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS = ("previous", "default")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _portable(text: str, temporary: str = "") -> str:
    """``text`` with this checkout's and the temporary folder's absolute paths made relative /
    named, so committed results name no machine's folders."""
    if temporary:
        text = text.replace(temporary, "(temporary folder)")
    return text.replace(str(ROOT) + os.sep, "")


def measure(row: str, epochs: int, store_root: Path) -> Dict[str, Any]:
    from ltbench.experiments import base_config
    from ltbench.methods import joint_spec
    from ltbench.runs import DONE, ExecOptions, RunStore, run

    eval_every = 1 if row == "previous" else 5
    spec = joint_spec(base_config("cifar10", 100, epochs=epochs, eval_every=eval_every, device="cpu"))
    options = ExecOptions(device="cpu", compile=False if row == "previous" else "auto", progress="auto")
    store = RunStore(store_root)
    if store.status(spec) == DONE:
        raise SystemExit(f"{row}: run {spec.key} is already finished in {store_root}: nothing to time "
                         "(pass another --store)")
    ckpt = store.folder(spec) / "checkpoint.pt"
    if ckpt.exists():
        ckpt.unlink()  # a whole run from nothing: a partial checkpoint would shorten it
    t0 = time.perf_counter()
    result = run(spec, store, options)
    wall = time.perf_counter() - t0
    train = float(result.train_seconds)
    return {"row": row, "compile": options.compiled(spec), "eval_every": eval_every, "epochs": epochs,
            "wall_s": round(wall, 1), "train_s": round(train, 1), "other_s": round(wall - train, 1),
            "top1_last": round(result.top1_last, 2), "key": spec.key, "store": str(store_root)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"from {','.join(ROWS)}")
    ap.add_argument("--store", default=None, help="run store of the default row (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="CSV (default results/benchmarks/cpu_run_<date>.csv)")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or args.epochs < 1:
        ap.error(f"--rows {bad} not in {ROWS}" if bad else f"--epochs={args.epochs}: must be >= 1")
    from ltbench.runs import code_version

    header = {"device": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": date.today().isoformat(), "code": code_version(),
              "command": _portable("python benchmarks/cpu_run.py " + " ".join(map(shlex.quote, argv or sys.argv[1:])))}
    print(" | ".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    out = Path(args.out) if args.out else ROOT / "results" / "benchmarks" / f"cpu_run_{header['date']}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            store = Path(args.store) if (row == "default" and args.store) else Path(tmp) / row
            r = measure(row, args.epochs, store)
            r["store"] = _portable(str(Path(r["store"]).resolve()), str(Path(tmp).resolve()))
            results.append(r)
            print(r, flush=True)
            new = not out.exists()
            with out.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=[*header, *r])
                if new:
                    w.writeheader()
                w.writerow({**header, **r})
    base = next((r["wall_s"] for r in results if r["row"] == "previous"), None)
    lines = [f"# Whole CE run on CPU, {args.epochs} epochs, full CIFAR-10-LT IR100", "",
             "; ".join(f"{k}: {v}" for k, v in header.items()), "",
             "| row | compile | eval every | wall s | train s | other s | speed-up (wall) | top-1 last |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = f"{base / r['wall_s']:.2f}x" if base else "-"
        lines.append(f"| {r['row']} | {r['compile']} | {r['eval_every']} | {r['wall_s']} | {r['train_s']} | "
                     f"{r['other_s']} | {ratio} | {r['top1_last']} |")
    md = out.with_suffix(".md")
    with md.open("a") as f:
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
