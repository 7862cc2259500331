"""What one monitor run costs for a ResNet-18 at 3x64x64, 3x224x224 and 3x512x512: before and after sizing.

Run from the repository root::

    python benchmarks/bench_sizes.py            # about ten minutes on a 2-core CPU
    python benchmarks/bench_sizes.py --quick    # 3x64x64 and 3x160x160 only: a smoke run
    python benchmarks/bench_sizes.py --device cuda   # the model trains and is explained on the GPU

How to read the tables
----------------------
Each row is one ``trainer.fit`` of one epoch (one training batch of 8 random images, 128 random
validation images, no sanity check) with ``AttributionMonitor`` at its defaults, so one monitor
run; the ResNet-18 (BasicBlock [2, 2, 2, 2], 64-512 channels, written below: torchvision is not
used) is untrained, which changes nothing about the cost.

* ``before``: the defaults as they were before :mod:`lightning_xai.monitor.sizing`, passed
  explicitly (16 probes, ``Occlusion(window=side // 8)``, ``ExpectedGradients(n_samples=32)``)
  and maps stored at full size. At 512 x 512 that run takes about ten minutes, so it explains
  ``--before-probes-512`` probes (2) and the ``maps`` column also gives the 16-probe figure
  scaled from it (marked ``est.``); the maps cost in proportion to the probes.
* ``after``: ``AttributionMonitor()``: the defaults sized to the image (up to 64 x 64 they are the
  same settings, so the ``before`` run stands for both).
* ``maps`` (per method), ``shortcuts`` (the shortcut checks), ``recording`` (TensorBoard images
  and scalars, the on-disk history) and ``run``: seconds of the run (``summary.json``'s
  ``xai_cost/seconds_*`` and ``monitor.cost``); ``other``: the rest of the run (the first run's
  checks of the methods, stability scores, display images), which the first-run line leaves out.
* ``load avg``: the machine's one-minute load average at the start and the end of the row (the
  CPU is shared: a load above 2 on 2 cores slows every figure of the row alike).
* ``MB``: what the run wrote: TensorBoard events, the run's maps file (``runs/step-*.pt``); the
  probes file (``probes.pt``, written once per fit) is listed apart.

The second table is issue 15's target 6(a): the images the model saw during the run, counted by
a hook on the model (``fwd``: without gradients; ``f+b``: with gradients, each followed by a
backward pass), times the model's raw batched time per image at that size (best of a few batch
sizes); ``ratio`` = the run's wall time / that sum (target <= 1.3). ``maps ratio`` does the same
for the maps alone, with the passes :func:`~lightning_xai.monitor.sizing.choose_sizing` counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, ExpectedGradients, GradCAM, Occlusion
from lightning_xai.monitor import sizing, stability_tracker
from lightning_xai.monitor.settings import check_methods


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU()
        changes = stride != 1 or inputs != outputs
        self.shortcut = (
            nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
            if changes
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 as torchvision builds it (BasicBlock [2, 2, 2, 2], 64-512 channels)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    inputs = 64
    for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs, 1)]
        inputs = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


class Classifier(pl.LightningModule):
    """The ResNet-18 trained with cross-entropy and SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.net = resnet18()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self(images), labels)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self(images), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class PassCounter(pl.Callback):
    """Counts the images through the model during the monitor's run (enabled around it)."""

    def __init__(self) -> None:
        self.forward = 0
        self.with_grad = 0
        self.on = False

    def hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.on:
            count = int(args[0].shape[0])
            if torch.is_grad_enabled():
                self.with_grad += count
            else:
                self.forward += count


class _Switch(pl.Callback):
    def __init__(self, counter: PassCounter, on: bool) -> None:
        self.counter, self.turn_on = counter, on

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.counter.on = self.turn_on


def loaders(side: int) -> tuple[DataLoader, DataLoader]:
    """8 training and 128 validation images of ``3 x side x side`` (random, seeded), 10 classes."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(136, 3, side, side, generator=generator)
    labels = torch.arange(136) % 10
    train = TensorDataset(images[:8], labels[:8])
    val = TensorDataset(images[8:], labels[8:])
    return DataLoader(train, batch_size=8), DataLoader(val, batch_size=32)


def before_settings(side: int, probes: int) -> dict[str, Any]:
    """The defaults before sizing, explicitly."""
    return {
        "methods": [GradCAM(), Occlusion(window=max(2, math.ceil(side / 8))), ExpectedGradients(n_samples=32)],
        "num_probes": probes,
    }


def _unchanged(maps: Tensor, **_: Any) -> Tensor:
    return maps


@contextmanager
def full_size_storage() -> Iterator[None]:
    """Maps stored (and compared) at full size, as before sizing."""
    saved = sizing.downsample_map
    sizing.downsample_map = _unchanged  # type: ignore[assignment]
    stability_tracker.downsample_map = _unchanged  # type: ignore[assignment]
    try:
        yield
    finally:
        sizing.downsample_map = saved  # type: ignore[assignment]
        stability_tracker.downsample_map = saved  # type: ignore[assignment]


def batch_sizes(side: int, device: torch.device) -> tuple[int, ...]:
    """The batch sizes :func:`raw_seconds` tries: larger on a GPU, which needs them to fill itself."""
    if device.type == "cuda":
        return (16, 64, 256) if side <= 256 else (4, 16, 64)
    return (1, 4, 16, 64) if side <= 128 else (1, 4, 16) if side <= 256 else (1, 4)


def raw_seconds(model: nn.Module, side: int, device: torch.device) -> tuple[float, float]:
    """Seconds per image of a batched forward and forward+backward pass (the best of a few batch sizes)."""
    model = model.to(device).eval()
    best_forward, best_backward = math.inf, math.inf

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    for batch in batch_sizes(side, device):
        x = torch.rand(batch, 3, side, side, device=device)
        for _ in range(3):  # the first pass of a size on a GPU also picks its kernels
            with torch.no_grad():
                started = clock()
                model(x)
                best_forward = min(best_forward, (clock() - started) / batch)
            x.requires_grad_(True)
            started = clock()
            torch.autograd.grad(model(x)[:, 0].sum(), x)
            best_backward = min(best_backward, (clock() - started) / batch)
            x = x.detach()
    return best_forward, best_backward


def megabytes(paths: Iterator[Path]) -> float:
    return sum(path.stat().st_size for path in paths if path.is_file()) / 1e6


def one_run(side: int, before: bool, probes: int, device: torch.device) -> dict[str, Any]:
    """One fit with one monitor run; its phases, bytes written and passes."""
    torch.manual_seed(0)
    model, counter = Classifier(), PassCounter()
    handle = model.net.register_forward_pre_hook(counter.hook)
    monitor = AttributionMonitor(**(before_settings(side, probes) if before else {}))
    load = os.getloadavg()[0]
    # the raw rates just before and after the fit, under the same load
    raw_before = raw_seconds(resnet18(), side, device)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_epochs=1,
            limit_train_batches=1,
            num_sanity_val_steps=0,
            accelerator=device.type,
            devices=1,
            logger=TensorBoardLogger(root, name="", version=0),
            callbacks=[_Switch(counter, True), monitor, _Switch(counter, False)],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        with full_size_storage() if before else _nothing():
            trainer.fit(model, *loaders(side))
        folder = Path(root) / "version_0"
        summary = json.loads((folder / "xai" / "summary.json").read_text())
        written = {
            "events": megabytes(folder.glob("events.out.tfevents.*")),
            "maps": megabytes((folder / "xai" / "runs").glob("*.pt")),
            "probes": megabytes(iter([folder / "xai" / "probes.pt"])),
        }
    handle.remove()
    raw_after = raw_seconds(resnet18(), side, device)
    metrics = summary["runs"][0]["metrics"]
    methods = {key: metrics.get(f"xai_cost/seconds_{key}", 0.0) for key in summary["runs"][0]["methods"]}
    phases = {name: metrics.get(f"xai_cost/seconds_{name}", 0.0) for name in ("maps", "shortcuts", "recording")}
    keyed = check_methods(monitor.methods)
    counted = sizing.choose_sizing((3, side, side), keyed, num_probes=len(monitor.probes.images))  # type: ignore[union-attr]
    return {
        "side": side,
        "when": "before" if before else "after",
        "probes": len(monitor.probes.images),  # type: ignore[union-attr]
        "methods": methods,
        "phases": phases,
        "run": monitor.cost["seconds"],
        "written": written,
        "passes": (counter.forward, counter.with_grad),
        "maps_passes": counted.total,
        "raw": (min(raw_before[0], raw_after[0]), min(raw_before[1], raw_after[1])),
        "load": (load, os.getloadavg()[0]),
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def print_tables(rows: list[dict[str, Any]]) -> None:
    """The two tables, in Markdown."""
    print(
        "| image | defaults | probes | maps s (per method) | shortcuts s | recording s | other s | run s | events MB "
        "| maps MB | probes.pt MB | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        per = ", ".join(f"{key} {seconds:.1f}" for key, seconds in row["methods"].items())
        maps = f"{row['phases']['maps']:.1f} ({per})"
        if row["when"] == "before" and row["probes"] < 16:
            maps += f"; est. 16 probes: {row['phases']['maps'] * 16 / row['probes']:.0f}"
        p, w = row["phases"], row["written"]
        other = row["run"] - p["maps"] - p["shortcuts"] - p["recording"]
        print(
            f"| 3x{row['side']}x{row['side']} | {row['when']} | {row['probes']} | {maps} | {p['shortcuts']:.1f} | "
            f"{p['recording']:.2f} | {other:.2f} | {row['run']:.1f} | {w['events']:.2f} | {w['maps']:.2f} | "
            f"{w['probes']:.2f} | {row['load'][0]:.1f}-{row['load'][1]:.1f} |"
        )
    print()
    print(
        "| image | defaults | raw fwd ms/img | raw f+b ms/img | fwd imgs | f+b imgs | passes s | run s | ratio | maps passes s | maps ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        forward, backward = row["raw"]
        nf, nb = row["passes"]
        expected = nf * forward + nb * backward
        counted: sizing.PassCount = row["maps_passes"]
        maps_expected = counted.forward * forward + counted.forward_backward * backward
        print(
            f"| 3x{row['side']}x{row['side']} | {row['when']} | {forward * 1e3:.1f} | {backward * 1e3:.1f} | {nf} | "
            f"{nb} | {expected:.1f} | {row['run']:.1f} | {row['run'] / expected:.2f} | {maps_expected:.1f} | "
            f"{row['phases']['maps'] / maps_expected:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3x64x64 and 3x160x160 only")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="image sides (default 64 224 512)")
    parser.add_argument("--before-probes-512", type=int, default=2, help="probes of the 'before' run at 512")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the model trains (default: cpu)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available.")
    device = torch.device(args.device)
    sides = args.sizes or ([64, 160] if args.quick else [64, 224, 512])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[dict[str, Any]] = []
    for side in sides:
        before_probes = args.before_probes_512 if side >= 512 else 16
        for before in (True, False):
            if not before and sizing.work_scale((side, side)) == 1.0:  # the same settings: one run stands for both
                rows.append({**rows[-1], "when": "after (= before)"})
                continue
            started = time.perf_counter()
            rows.append(one_run(side, before, before_probes, device))
            print(
                f"# 3x{side}x{side} {'before' if before else 'after'}: fit {time.perf_counter() - started:.0f}s",
                flush=True,
            )
    print()
    print_tables(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\ndevice {name}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
