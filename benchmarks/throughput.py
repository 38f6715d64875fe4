"""Training throughput: the ltbench engine vs a plain DataLoader + torchvision-transforms loop.

Same model (ResNet-32), batch size and data (CIFAR-10-LT IR100), in one run:
  (a) ltbench: data on the device as uint8, batched crop/flip/normalise, sampler index tensors;
  (b) the way the original repositories train: a torchvision Dataset of PIL images with
      RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize, through a DataLoader.
Prints images/s of each and the ratio, naming the device. CUDA timing uses events around the
measured steps only.

    python benchmarks/throughput.py [--steps 200] [--device auto] [--workers 2] [--out results/benchmarks/x.csv]
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import date

import torch
import torch.nn.functional as F


def _timer(device: torch.device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        return lambda: (end.record(), torch.cuda.synchronize(), start.elapsed_time(end) / 1000)[-1]
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def bench_ltbench(data, device, steps, warmup, batch_size, compile_model=False):
    from ltbench.config import TrainConfig
    from ltbench.engine import Trainer

    cfg = TrainConfig(dataset="cifar10", device=str(device), batch_size=batch_size, epochs=200, compile=compile_model)
    trainer = Trainer(cfg, data=data, progress=False)
    trainer.on_epoch_start(10)
    gen = torch.Generator(device=device).manual_seed(0)
    idx = trainer.samplers["main"].indices(0, device=device)
    batches = [b for b in idx.split(batch_size) if len(b) == batch_size]

    def step(b):
        loss = trainer.training_step(b, 0, gen)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for i in range(warmup):
        step(batches[i % len(batches)])
    stop = _timer(device)
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * batch_size / stop()


def bench_dataloader(data, device, steps, warmup, batch_size, workers):
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
                                         drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model = resnet32(10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

    def batches():
        while True:
            yield from loader

    it = batches()

    def step():
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    stop = _timer(device)
    for _ in range(steps):
        step()
    return steps * batch_size / stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--compile", action="store_true", help="also measure ltbench with torch.compile")
    ap.add_argument("--out", default=None, help="CSV file to append the results to")
    args = ap.parse_args()
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    from ltbench.data import build_long_tailed
    from ltbench.engine import device_name, resolve_device

    device = resolve_device(args.device)
    data = build_long_tailed("cifar10", 100, root=args.data_root)
    rows = [("plain DataLoader + torchvision transforms", bench_dataloader(data, device, args.steps, args.warmup,
                                                                             args.batch_size, args.workers)),
            ("ltbench engine (eager)", bench_ltbench(data, device, args.steps, args.warmup, args.batch_size))]
    if args.compile:
        rows.append(("ltbench engine (torch.compile)", bench_ltbench(data, device, args.steps, args.warmup,
                                                                    args.batch_size, compile_model=True)))
    base = rows[0][1]
    print(f"device: {device_name(device)} | torch {torch.__version__} | {date.today()} | ResNet-32, CIFAR-10-LT IR100, "
          f"batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'loop':45s} {'images/s':>10s} {'x DataLoader':>13s}")
    for name, ips in rows:
        print(f"{name:45s} {ips:10.1f} {ips / base:13.2f}")
    if args.out:
        from pathlib import Path

        from ltbench.io import atomic_write_text

        out = Path(args.out)
        old = out.read_text() if out.exists() else "date,device,torch,loop,images_per_s,ratio\n"
        new = "".join(f"{date.today()},{device_name(device)},{torch.__version__},{n},{v:.1f},{v / base:.3f}\n" for n, v in rows)
        atomic_write_text(out, old + new)


if __name__ == "__main__":
    main()
