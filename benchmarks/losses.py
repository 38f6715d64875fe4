"""Forward+backward time of every loss in ``ltbench.losses`` against ``ce`` on the same logits.

    OMP_NUM_THREADS=1 python benchmarks/losses.py --device cpu --threads 1 \\
        --out results/benchmarks/losses_cpu                     # writes .csv and .md
    python benchmarks/losses.py --classes 10 100 1000 --batch 512 --device cuda --out t.csv
    python benchmarks/losses.py --baseline before.csv --out after    # adds before/speed-up columns

Counts follow docs/methods.md §1's exponential profile (n_max 5000, IR 100). One step is
``torch.autograd.grad(loss(logits, y), logits)``; stateful losses run in training mode, so their
statistics update is included. On CPU with one thread the default clock is the thread's CPU
time (``--clock``), which other processes on a shared machine disturb far less than the wall
time. For each C every loss gets ``--warmup`` steps, then ``--rounds``
rounds in which each loss in turn (a rotating order) is timed over ``--iters`` steps: the losses
are measured interleaved, under the same machine load, which matters on a shared machine. A
loss's time is the median over rounds of the mean milliseconds per step; ``ratio_to_ce`` is
that median divided by ce's. CUDA timing uses CUDA events around the measured loop only. The
CSV and Markdown outputs (with the machine: CPU model, torch version, threads, batch, date) are
written atomically (a temporary file, then a rename).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ltbench.losses import LOSSES, build_loss  # noqa: E402

FIELDS = ["device", "classes", "batch", "loss", "ms", "ratio_to_ce", "ms_min", "ms_max"]


def exp_counts(num_classes: int, n_max: int = 5000, ir: float = 100.0) -> List[int]:
    """docs/methods.md §1: ``n_i = int(n_max * (1/IR) ** (i / (C - 1)))``."""
    return [int(n_max * (1.0 / ir) ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def time_once_ms(fn: Callable[[], None], device: torch.device, iters: int, clock: str = "wall") -> float:
    """Mean milliseconds per call of ``iters`` back-to-back calls: CUDA events on CUDA, else
    ``time.perf_counter`` (``clock="wall"``) or the calling thread's CPU time (``"cpu"``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    t0 = timer()
    for _ in range(iters):
        fn()
    return (timer() - t0) * 1e3 / iters


def time_interleaved(
    steps: Dict[str, Callable[[], None]], device: torch.device, warmup: int, iters: int, rounds: int,
    clock: str = "wall",
) -> Dict[str, List[float]]:
    """Per-round mean ms of every step, the steps timed in turn (rotating order) each round."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    samples: Dict[str, List[float]] = {n: [] for n in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # no collector pauses inside a measured loop
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                samples[name].append(time_once_ms(steps[name], device, iters, clock))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def bench_device(device: torch.device, classes: Sequence[int], batch: int, names: Sequence[str],
                 args: argparse.Namespace) -> List[Dict]:
    rows = []
    for C in classes:
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(batch, C, generator=g).to(device).requires_grad_()
        y = torch.randint(0, C, (batch,), generator=g).to(device)
        counts = exp_counts(C)
        steps = {}
        for name in names:
            loss = build_loss(name, counts).to(device).train()

            def step(loss: torch.nn.Module = loss) -> None:
                torch.autograd.grad(loss(logits, y), logits)

            steps[name] = step
        clock = resolve_clock(args, device)
        samples = time_interleaved(steps, device, args.warmup, args.iters, args.rounds, clock)
        ce_ms = statistics.median(samples["ce"])
        for name in names:
            ms = statistics.median(samples[name])
            rows.append({"device": device.type, "classes": C, "batch": batch, "loss": name,
                         "ms": round(ms, 4), "ratio_to_ce": round(ms / ce_ms, 3),
                         "ms_min": round(min(samples[name]), 4), "ms_max": round(max(samples[name]), 4)})
    return rows


CLOCK_NAMES = {"cpu": "the thread's CPU time (time.thread_time)", "wall": "wall time (time.perf_counter)",
               "cuda events": "CUDA events"}


def resolve_clock(args: argparse.Namespace, device: torch.device) -> str:
    """``auto``: on CPU with one thread, the thread's CPU time (robust to other processes on a
    shared machine, and equal to the wall time on an idle one); wall time otherwise."""
    if device.type == "cuda":
        return "cuda events"
    if args.clock == "auto":
        return "cpu" if torch.get_num_threads() == 1 else "wall"
    return args.clock


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return (f"cpu: {cpu_model()} ({os.cpu_count()} logical CPUs, "
            f"{torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} thread(s)")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def read_rows(path: Path) -> List[Dict]:
    with open(path, newline="") as fh:
        return [{**r, "classes": int(r["classes"]), "ms": float(r["ms"]),
                 "ratio_to_ce": float(r["ratio_to_ce"])} for r in csv.DictReader(fh)]


def format_table(rows: List[Dict], baseline: Optional[List[Dict]] = None) -> List[str]:
    """A Markdown table: one line per loss, per C the ms and the ratio to ce (and, with a
    baseline, its ms and ratio and the speed-up)."""
    classes = list(dict.fromkeys(r["classes"] for r in rows))
    names = list(dict.fromkeys(r["loss"] for r in rows))
    cell = {(r["loss"], r["classes"]): r for r in rows}
    base = {(r["loss"], r["classes"]): r for r in (baseline or [])}
    head, align = ["loss"], ["---"]
    for C in classes:
        if baseline:
            head += [f"C={C} before ms (x ce)", f"C={C} after ms (x ce)", f"C={C} speed-up"]
            align += ["---:", "---:", "---:"]
        else:
            head += [f"C={C} ms", f"C={C} x ce"]
            align += ["---:", "---:"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for n in names:
        parts = [n]
        for C in classes:
            r = cell[n, C]
            if baseline:
                b = base.get((n, C))
                parts.append(f"{b['ms']:.3f} ({b['ratio_to_ce']:.2f}x)" if b else "n/a")
                parts.append(f"{r['ms']:.3f} ({r['ratio_to_ce']:.2f}x)")
                parts.append(f"{b['ms'] / r['ms']:.1f}x" if b else "n/a")
            else:
                parts += [f"{r['ms']:.3f}", f"{r['ratio_to_ce']:.2f}x"]
        lines.append("| " + " | ".join(parts) + " |")
    return lines


def print_table(rows: List[Dict], classes: Sequence[int]) -> None:
    names = list(dict.fromkeys(r["loss"] for r in rows))
    cell = {(r["loss"], r["classes"]): r for r in rows}
    head = f"{'loss':<16}" + "".join(f"{f'C={C}: ms (x ce)':>22}" for C in classes)
    print(head)
    print("-" * len(head))
    for n in names:
        parts = [f"{cell[n, C]['ms']:9.3f} ({cell[n, C]['ratio_to_ce']:5.2f}x)" for C in classes]
        print(f"{n:<16}" + "".join(f"{p:>22}" for p in parts))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def markdown_report(rows: List[Dict], meta: Dict[str, str], baseline: Optional[List[Dict]],
                    baseline_path: Optional[Path]) -> str:
    out = ["# Loss benchmark: forward + backward time per step, and ratio to `ce`", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    if baseline_path is not None:
        out.append(f"- before: `{baseline_path}` (same script and settings, the earlier code)")
    out.append("")
    for dev in dict.fromkeys(r["device"] for r in rows):
        dev_rows = [r for r in rows if r["device"] == dev]
        dev_base = [r for r in baseline if r["device"] == dev] if baseline else None
        out += [f"## {dev}", ""] + format_table(dev_rows, dev_base) + [""]
    return "\n".join(out)


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, plus CUDA when available")
    p.add_argument("--losses", nargs="+", default=None, help="subset of losses (ce is always timed)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU")
    p.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                   help="CPU timer: wall (perf_counter) or the thread's CPU time; auto: cpu with "
                        "one thread, else wall")
    p.add_argument("--out", type=Path, default=None,
                   help="save the rows: PATH.csv and PATH.md (a .csv/.md suffix is replaced)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="CSV of an earlier run: the Markdown gets before / after / speed-up columns")
    p.add_argument("--note", action="append", default=[], help="a line for the Markdown header (repeatable)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    names = ["ce"] + [n for n in (args.losses or LOSSES.names()) if n != "ce"]
    unknown = sorted(set(names) - set(LOSSES.names()))
    if unknown:
        p.error(f"unknown losses {unknown}; valid: {', '.join(LOSSES.names())}")
    devices = [torch.device(args.device)] if args.device != "auto" else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))

    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": "; ".join(describe(d) for d in devices),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": f"torch.get_num_threads()={torch.get_num_threads()}, "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "batch": str(args.batch),
        "timing": f"{args.warmup} warm-up steps per loss, then median over {args.rounds} interleaved "
                  f"rounds of the mean of {args.iters} steps; step = forward + "
                  "`torch.autograd.grad(loss, logits)`, stateful losses in training mode",
        "clock": ", ".join(f"{d.type}: {CLOCK_NAMES[resolve_clock(args, d)]}" for d in devices),
        "load average at start": load_average(),
    }
    print(f"torch {torch.__version__}, python {platform.python_version()}, {meta['threads']}")
    rows: List[Dict] = []
    for dev in devices:
        print(f"\n{describe(dev)} | batch {args.batch} | forward+backward, median of "
              f"{args.rounds} interleaved rounds x {args.iters} iterations")
        dev_rows = bench_device(dev, args.classes, args.batch, names, args)
        print_table(dev_rows, args.classes)
        rows += dev_rows
    meta["load average at end"] = load_average()
    for i, note in enumerate(args.note):
        meta[f"note {i + 1}" if len(args.note) > 1 else "note"] = note
    if args.out:
        stem = args.out.with_suffix("") if args.out.suffix in (".csv", ".md") else args.out
        csv_path, md_path = stem.parent / f"{stem.name}.csv", stem.parent / f"{stem.name}.md"
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
        write_atomic(csv_path, buf.getvalue())
        baseline = read_rows(args.baseline) if args.baseline else None
        write_atomic(md_path, markdown_report(rows, meta, baseline, args.baseline))
        print(f"\nsaved {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
