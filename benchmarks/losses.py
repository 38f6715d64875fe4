"""Forward+backward time of every loss in ``ltbench.losses`` against ``ce`` on the same logits.

    OMP_NUM_THREADS=1 python benchmarks/losses.py                  # CPU (+ CUDA if available)
    python benchmarks/losses.py --classes 10 100 1000 --batch 512 --device cuda --out t.csv

Counts follow SPEC §1's exponential profile (n_max 5000, IR 100). Each measurement is the
median over ``--rounds`` rounds of the mean time of ``--iters`` iterations of
``torch.autograd.grad(loss(logits, y), logits)`` after ``--warmup`` iterations; stateful losses
run in training mode, so their statistics update is included. CUDA timing uses CUDA events
around the measured loop only.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ltbench.losses import LOSSES, build_loss  # noqa: E402


def exp_counts(num_classes: int, n_max: int = 5000, ir: float = 100.0) -> List[int]:
    """SPEC §1: ``n_i = int(n_max * (1/IR) ** (i / (C - 1)))``."""
    return [int(n_max * (1.0 / ir) ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def time_ms(fn: Callable[[], None], device: torch.device, warmup: int, iters: int, rounds: int) -> float:
    """Median over rounds of the mean milliseconds per call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) * 1e3 / iters)
    return statistics.median(samples)


def bench_device(device: torch.device, classes: List[int], batch: int, args: argparse.Namespace) -> List[Dict]:
    names = ["ce"] + [n for n in LOSSES.names() if n != "ce"]
    rows = []
    for C in classes:
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(batch, C, generator=g).to(device).requires_grad_()
        y = torch.randint(0, C, (batch,), generator=g).to(device)
        counts = exp_counts(C)
        ce_ms = None
        for name in names:
            loss = build_loss(name, counts).to(device).train()

            def step() -> None:
                torch.autograd.grad(loss(logits, y), logits)

            ms = time_ms(step, device, args.warmup, args.iters, args.rounds)
            ce_ms = ms if name == "ce" else ce_ms
            rows.append({"device": device.type, "classes": C, "batch": batch, "loss": name,
                         "ms": ms, "ratio_to_ce": ms / ce_ms})
    return rows


def print_table(rows: List[Dict], classes: List[int]) -> None:
    names = list(dict.fromkeys(r["loss"] for r in rows))
    cell = {(r["loss"], r["classes"]): r for r in rows}
    head = f"{'loss':<16}" + "".join(f"{f'C={C}: ms (x ce)':>22}" for C in classes)
    print(head)
    print("-" * len(head))
    for n in names:
        parts = [f"{cell[n, C]['ms']:9.3f} ({cell[n, C]['ratio_to_ce']:5.2f}x)" for C in classes]
        print(f"{n:<16}" + "".join(f"{p:>22}" for p in parts))


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, plus CUDA when available")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU")
    p.add_argument("--out", type=Path, default=None, help="save the rows as CSV")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    devices = [torch.device(args.device)] if args.device != "auto" else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))

    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows: List[Dict] = []
    for dev in devices:
        print(f"\n{describe(dev)} | batch {args.batch} | forward+backward, median of "
              f"{args.rounds} x {args.iters} iterations")
        dev_rows = bench_device(dev, args.classes, args.batch, args)
        print_table(dev_rows, args.classes)
        rows += dev_rows
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
