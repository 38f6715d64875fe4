"""Training throughput, side by side in one process on one device: the way the original repositories
train against the ltbench engine and its fast paths.

Same model (ResNet-32), batch size and data (CIFAR-10-LT IR100, 12,406 images) in every row:

  dataloader         a torchvision Dataset of PIL images, RandomCrop(32, 4) + RandomHorizontalFlip +
                     ToTensor + Normalize, through a DataLoader (--workers processes, 8 by default)
  dataloader_bf16    the same with bf16 autocast and channels_last (a fair baseline on a GPU)
  eager              ltbench's engine: data on the device, batched augmentation, eager step
  compiled           the same with torch.compile of the model (ExecOptions(compile=True))
  eager_cl, compiled_cl  the same two in channels_last memory format, which the engine uses on
                     CUDA only (measured here to decide it on CPU)
  eager_bf16, compiled_bf16, compiled_bf16_cl  CPU only: the same with bf16 autocast on the CPU
                     (TrainConfig.amp_cpu, the cpu and paper profiles' setting), the last in channels_last
  static             the fast path's padded static shapes, eager step (ExecOptions(fast="static"))
  graph              the fast path: forward+loss+backward+SGD as one compiled graph, CUDA graphs on
                     CUDA (ExecOptions(fast="graph"), execute --fast)
  pack<K>            K runs packed into one network (grouped convolutions), one compiled step
                     (execute --pack K --fast); K from --packs
  procs<K>           K worker processes, each training its own run with the eager engine (execute
                     --workers K); K from --procs

Each row reports steps/s, images/s (a pack step or K processes count K runs' images), its ratio to
the dataloader row, the seconds of one 200-epoch CIFAR-10-LT IR100 run at that rate (amortised
over the K runs of a pack or of K processes), and compile/capture seconds separately (the first
steps of a graph, not in the rate). On CUDA the measured steps are timed with CUDA events. Rows
run in the order of ``ROWS`` (the most telling first) and each is appended to the CSV as soon as
it is measured, so a time limit loses only the rows not yet run.
``--quick``: few steps, one pack size and one process count; on a CPU it also leaves out the rows
that need inductor's C++ compilation (compiled, graph, packs: minutes on 2 cores; packs are then
measured with the static eager step). The command line, device, torch version and date are
printed and written with the results, by default to
``results/benchmarks/throughput_<device>_torch<version>_<date>.csv`` (rows appended) and a
``.md`` table beside it.

    python benchmarks/throughput.py [--quick] [--steps 200] [--warmup 10] [--device auto] [--workers 8]
        [--rows dataloader,eager,graph,...] [--packs 4,8,16] [--procs 4] [--out FILE.csv]
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, List, Optional

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: In the order they run (the most telling first, for a session with a time limit).
ROWS = ("dataloader", "dataloader_bf16", "eager", "graph", "packs", "procs", "compiled", "static", "eager_cl",
        "compiled_cl", "eager_bf16", "compiled_bf16", "compiled_bf16_cl")
EPOCHS = 200
#: The epoch every row times its steps in: past the warm-up, before the first lr step.
EPOCH = 10


@dataclass
class Row:
    name: str
    runs: int = 1  # runs trained per step (a pack) or side by side (processes)
    steps: int = 0
    seconds: float = float("nan")
    compile_seconds: float = 0.0
    note: str = ""
    batch: int = 128

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def images_per_s(self) -> float:
        return self.steps_per_s * self.batch * self.runs


def _timer(device: torch.device) -> Callable[[], float]:
    """Start timing; the returned function stops and gives seconds (CUDA events on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        return lambda: (end.record(), torch.cuda.synchronize(device), start.elapsed_time(end) / 1000)[-1]
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(name: str, step: Callable[[], None], device: torch.device, steps: int, warmup: int, runs: int = 1,
             batch: int = 128, compile_steps: int = 0) -> Row:
    """``compile_steps`` first calls timed as compile/capture, ``warmup`` more untimed, then ``steps``."""
    t0 = time.perf_counter()
    for _ in range(compile_steps):
        step()
    _sync(device)
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    stop = _timer(device)
    for _ in range(steps):
        step()
    return Row(name, runs, steps, stop(), compile_s, batch=batch)


# --------------------------------------------------------------------------------------------
# Rows


def _cfg(device: torch.device, batch_size: int, **kw: Any):
    from ltbench.config import TrainConfig

    return TrainConfig(dataset="cifar10", imbalance_ratio=100, device=str(device), batch_size=batch_size, epochs=EPOCHS,
                       **kw)


def _full_batches(trainer, batch_size: int) -> List[torch.Tensor]:
    idx = trainer.samplers["main"].indices(0, device=trainer.device)
    return [b for b in idx.split(batch_size) if len(b) == batch_size]


def bench_dataloader(data, device, steps, warmup, batch_size, workers, bf16=False) -> Row:
    from PIL import Image
    from torchvision import transforms

    from ltbench.data import CIFAR_MEAN, CIFAR_STD
    from ltbench.models import resnet32

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    images = data.train.images.permute(0, 2, 3, 1).numpy()
    targets = data.train.targets.tolist()

    class PILSet(torch.utils.data.Dataset):
        def __len__(self):
            return len(targets)

        def __getitem__(self, i):
            return tf(Image.fromarray(images[i])), targets[i]

    loader = torch.utils.data.DataLoader(PILSet(), batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    model = resnet32(10).to(device)
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def batches():
        while True:
            yield from loader

    it = batches()

    def step():
        x, y = next(it)
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with amp:
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    row = _measure("dataloader_bf16" if bf16 else "dataloader", step, device, steps, warmup, batch=batch_size)
    row.note = f"{workers} workers" + (", bf16 autocast, channels_last" if bf16 else ", float32")
    return row


def bench_engine(data, device, steps, warmup, batch_size, compile_model=False, channels_last=False,
                 amp_cpu=False) -> Row:
    from ltbench.engine import Trainer

    trainer = Trainer(_cfg(device, batch_size, compile=compile_model, amp_cpu=amp_cpu), data=data, progress=False)
    if channels_last and not trainer.channels_last:
        # The engine uses channels_last on CUDA only; this row measures it where it is off (CPU).
        trainer.channels_last = True
        trainer.model = trainer.model.to(memory_format=torch.channels_last)
        trainer.train_set = trainer.build_dataset("train")
        trainer.forward = trainer.wrap_model(trainer.model)
    trainer.model.train()
    trainer.on_epoch_start(EPOCH)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = itertools.cycle(_full_batches(trainer, batch_size))

    def step():
        loss = trainer.training_step(next(batches), 0, gen)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    name = ("compiled" if compile_model else "eager") + ("_bf16" if amp_cpu else "") + ("_cl" if channels_last else "")
    row = _measure(name, step, device, steps, warmup, batch=batch_size,
                   compile_steps=3 if compile_model else 0)
    row.note = f"amp={'bf16' if trainer.amp_dtype else 'off'}, channels_last={trainer.channels_last}"
    return row


def _fast_step(fp, batches, gens) -> Callable[[], None]:
    """The fast path's own step (:meth:`ltbench.fastpath.FastPath.step`) on the batches in turn."""
    fp._pin()
    cycle = itertools.cycle(batches)

    def step():
        fp.step(next(cycle), EPOCH, gens)

    return step


def bench_fast(data, device, steps, warmup, batch_size, mode) -> Row:
    from ltbench import fastpath
    from ltbench.engine import Trainer

    trainer = Trainer(_cfg(device, batch_size), data=data, progress=False)
    fp = fastpath.attach(trainer, mode, strict=True)
    trainer.model.train()
    trainer.on_epoch_start(EPOCH)
    gen = torch.Generator(device=device).manual_seed(0)
    step = _fast_step(fp, _full_batches(trainer, batch_size), gen)
    row = _measure(mode, step, device, steps, warmup, batch=batch_size, compile_steps=3 if mode == "graph" else 0)
    row.note = f"{fp.compile_kwargs or 'eager step'}"
    return row


def bench_pack(data, device, steps, warmup, batch_size, k, mode) -> Row:
    from ltbench import fastpath
    from ltbench.engine import Trainer

    trainers = [Trainer(_cfg(device, batch_size, seed=i), data=data, progress=False) for i in range(k)]
    pack = fastpath.PackedRuns(trainers)
    fp = fastpath.FastPath(pack, mode)
    pack.momentum_in()
    for t in trainers:
        t.model.train()
        t.on_epoch_start(EPOCH)
    for g in pack.optimizer.param_groups:
        g["lr"] = trainers[0].optimizer.param_groups[0]["lr"]
    pack.backbone.train()
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(k)]
    batches = list(zip(*[_full_batches(t, batch_size) for t in trainers]))
    step = _fast_step(fp, batches, gens)
    row = _measure(f"pack{k}", step, device, steps, warmup, runs=k, batch=batch_size,
                   compile_steps=3 if mode == "graph" else 0)
    row.note = f"{k} runs, {mode} step"
    return row


def _proc_worker(rank, args, ready, go, out) -> None:  # pragma: no cover - runs in a child process
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args["k"]))
    from ltbench.data import build_long_tailed

    device = torch.device(args["device"])
    data = build_long_tailed("cifar10", 100, root=args["data_root"])
    from ltbench.engine import Trainer

    trainer = Trainer(_cfg(device, args["batch_size"], seed=rank), data=data, progress=False)
    trainer.model.train()
    trainer.on_epoch_start(EPOCH)
    gen = torch.Generator(device=device).manual_seed(rank)
    batches = itertools.cycle(_full_batches(trainer, args["batch_size"]))

    def step():
        loss = trainer.training_step(next(batches), 0, gen)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for _ in range(args["warmup"]):
        step()
    _sync(device)
    ready.put(rank)
    go.wait()
    t0 = time.perf_counter()
    for _ in range(args["steps"]):
        step()
    _sync(device)
    out.put(time.perf_counter() - t0)


def bench_procs(device, steps, warmup, batch_size, k, data_root) -> Row:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    args = {"device": str(device), "batch_size": batch_size, "warmup": warmup, "steps": steps, "k": k,
            "data_root": data_root}
    procs = [ctx.Process(target=_proc_worker, args=(r, args, ready, go, out)) for r in range(k)]
    for p in procs:
        p.start()
    for _ in range(k):
        ready.get(timeout=1800)
    t0 = time.perf_counter()
    go.set()
    times = [out.get(timeout=3600) for _ in range(k)]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    row = Row(f"procs{k}", k, steps, wall, batch=batch_size)
    row.note = f"{k} processes, eager engine; slowest {max(times):.2f} s"
    return row


# --------------------------------------------------------------------------------------------
# Output


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:60]


def _table(rows: List[Row], base: Optional[float], steps_per_run: int) -> List[List[str]]:
    out = []
    for r in rows:
        per_run = steps_per_run / r.steps_per_s / r.runs if r.steps and math.isfinite(r.steps_per_s) else float("nan")
        out.append([r.name, str(r.runs), str(r.batch), str(r.steps), f"{r.steps_per_s:.2f}", f"{r.images_per_s:.1f}",
                    f"{r.images_per_s / base:.2f}" if base and math.isfinite(r.images_per_s) else "",
                    f"{per_run:.1f}", f"{r.compile_seconds:.1f}", r.note])
    return out


HEADER = ["row", "runs", "batch", "steps", "steps_per_s", "images_per_s", "x_dataloader", "s_per_200ep_run",
          "compile_s", "note"]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row (default 200, 5 with --quick)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, 2 with --quick)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (default 8)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--compile", action="store_true", help="(kept for old command lines: the compiled row is in by default)")
    ap.add_argument("--quick", action="store_true", help="a few steps, one pack size, one process count; on CPU no "
                    "inductor rows")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, from {','.join(ROWS)}")
    ap.add_argument("--packs", default=None, help="pack sizes K (default 4,8,16; 2 with --quick)")
    ap.add_argument("--procs", default=None, help="worker-process counts (default 4; 2 with --quick)")
    ap.add_argument("--out", default=None, help="CSV to append to (default results/benchmarks/throughput_<device>_"
                    "torch<version>_<date>.csv)")
    args = ap.parse_args(argv)
    steps = args.steps if args.steps is not None else (5 if args.quick else 200)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    if steps < 1 or args.batch_size < 1 or warmup < 0:
        ap.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows_wanted) - set(ROWS))
    if unknown:
        ap.error(f"unknown rows {unknown}; valid: {', '.join(ROWS)}")
    packs = [int(k) for k in (args.packs or ("2" if args.quick else "4,8,16")).split(",")]
    procs = [int(k) for k in (args.procs or ("2" if args.quick else "4")).split(",")]

    from ltbench.data import build_long_tailed
    from ltbench.engine import device_name, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    no_inductor = args.quick and not cuda
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    dev_name = device_name(device)
    head = f"{command}\ndevice: {dev_name} | torch {torch.__version__} | {date.today()} | ResNet-32, CIFAR-10-LT IR100, " \
           f"batch {args.batch_size}, {steps} timed steps after {warmup} warm-up"
    print(head, flush=True)
    data = build_long_tailed("cifar10", 100, root=args.data_root)
    steps_per_run = EPOCHS * math.ceil(len(data.train.targets) / args.batch_size)

    jobs: List[tuple] = []
    for name in rows_wanted:
        if name == "dataloader":
            jobs.append((name, lambda: bench_dataloader(data, device, steps, warmup, args.batch_size, args.workers)))
        elif name == "dataloader_bf16":
            if no_inductor:
                continue  # bf16 convolutions on a CPU without AMX: minutes, and not the comparison that matters
            jobs.append((name, lambda: bench_dataloader(data, device, steps, warmup, args.batch_size, args.workers,
                                                        bf16=True)))
        elif name == "eager":
            jobs.append((name, lambda: bench_engine(data, device, steps, warmup, args.batch_size)))
        elif name == "compiled" and not no_inductor:
            jobs.append((name, lambda: bench_engine(data, device, steps, warmup, args.batch_size, compile_model=True)))
        elif name == "eager_cl":
            jobs.append((name, lambda: bench_engine(data, device, steps, warmup, args.batch_size, channels_last=True)))
        elif name == "compiled_cl" and not no_inductor:
            jobs.append((name, lambda: bench_engine(data, device, steps, warmup, args.batch_size, compile_model=True,
                                                    channels_last=True)))
        elif name in ("eager_bf16", "compiled_bf16", "compiled_bf16_cl") and not cuda:
            if name != "eager_bf16" and no_inductor:
                continue
            jobs.append((name, lambda name=name: bench_engine(data, device, steps, warmup, args.batch_size,
                                                              compile_model=name != "eager_bf16",
                                                              channels_last=name.endswith("_cl"), amp_cpu=True)))
        elif name == "static":
            jobs.append((name, lambda: bench_fast(data, device, steps, warmup, args.batch_size, "static")))
        elif name == "graph" and not no_inductor:
            jobs.append((name, lambda: bench_fast(data, device, steps, warmup, args.batch_size, "graph")))
        elif name == "packs":
            for k in packs:
                mode = "static" if no_inductor else "graph"
                jobs.append((f"pack{k}", lambda k=k, mode=mode: bench_pack(data, device, steps, warmup,
                                                                          args.batch_size, k, mode)))
        elif name == "procs":
            for k in procs:
                jobs.append((f"procs{k}", lambda k=k: bench_procs(device, steps, warmup, args.batch_size, k,
                                                                  args.data_root)))
    from ltbench.io import atomic_write_text

    out = Path(args.out) if args.out else ROOT / "results" / "benchmarks" / \
        f"throughput_{_slug(dev_name if cuda else 'cpu-' + str(os.cpu_count()) + 'core')}_torch{_slug(torch.__version__)}_{date.today()}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = ["date", "device", "torch", "command", *HEADER]

    def q(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if ("," in v or '"' in v) else v

    rows: List[Row] = []
    base = None
    for name, job in jobs:
        t0 = time.perf_counter()
        try:
            row = job()
        except Exception as exc:  # noqa: BLE001 - one failing row must not lose the others
            traceback.print_exc()
            row = Row(name, note=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", batch=args.batch_size)
        rows.append(row)
        print(f"  {name}: {row.images_per_s:.1f} images/s ({time.perf_counter() - t0:.0f} s with setup) {row.note}",
              flush=True)
        if base is None and row.name == "dataloader" and math.isfinite(row.images_per_s):
            base = row.images_per_s
        # Each row is appended as soon as it is measured: a session's time limit loses only the rest.
        old = out.read_text() if out.exists() else ",".join(cols) + "\n"
        line = [str(date.today()), dev_name, torch.__version__, command, *_table([row], base, steps_per_run)[0]]
        atomic_write_text(out, old + ",".join(q(v) for v in line) + "\n")
        if cuda:
            torch.cuda.empty_cache()
    table = _table(rows, base, steps_per_run)
    if cuda:
        from torch._dynamo.utils import counters

        skips = dict(counters.get("inductor", {}))
        skips = {k: v for k, v in skips.items() if "cudagraph" in k}
        if skips:
            print(f"inductor cudagraph counters: {skips}")
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(HEADER)]
    print(" ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    for r in table:
        print(" ".join(c.ljust(w) for c, w in zip(r, widths)))

    md = out.with_suffix(".md")
    md_old = md.read_text() if md.exists() else ""
    md_new = f"\n```\n{head}\n```\n\n| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER) + "\n" + \
        "".join("| " + " | ".join(r) + " |\n" for r in table)
    atomic_write_text(md, md_old + md_new)
    print(f"written: {out} and {md.name}")
    return 0 if all(not r.note.startswith("FAILED") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
