"""What the AttributionMonitor adds to a fit: wall time with vs without it, and where its time goes.

Run from the repository root::

    python benchmarks/bench_monitor.py              # about three minutes on a 2-core CPU
    python benchmarks/bench_monitor.py --quick      # a smoke run (fewer epochs, smaller epochs)
    python benchmarks/bench_monitor.py --ranks 1 2  # one run's wall time in 1 and 2 CPU processes (ddp, gloo)
    python benchmarks/bench_monitor.py --quick --device cuda   # the fits train on the GPU

How to read the table
---------------------
One row per setting. Each fit trains the small CNN of the examples from the same seed on
scikit-learn's digits (32 x 32, 1500 training images, batch 64, 297 validation images),
once without the monitor and once with it; the two fits of a row run back to back.

* ``digits``: the data of ``examples/monitor_digits.py`` (``x8``, 20 epochs: epochs of about 3 s,
  where the monitor at its defaults should add at most 10%); ``decoy``: the shifted digits with the
  class-coded corner swatch of ``examples/decoy_digits.py`` (``b32``: trained at batch 32 as the
  example is; the other rows at 64); ``x20``: the same training images
  repeated 20 times per epoch (30,000 images), an epoch of a more usual length.
* ``monitor``: ``default`` is ``AttributionMonitor()`` (Grad-CAM, occlusion, expected
  gradients on 16 probes; stability tracking and shortcut detection on); ``cap 10%`` adds
  ``max_overhead=0.1``.
* ``without s`` / ``with s``: ``trainer.fit`` wall time; ``added`` = with / without - 1, the
  figure the speed issue targets (at most 10%).
* ``runs`` (``skipped`` by the cap), ``per run s``: the monitor's own wall time per run
  (``monitor.cost``), split into ``maps`` (the attribution methods), ``shortcuts`` (candidate
  search and interventions on 64 validation images) and ``rest`` (stability scores,
  TensorBoard images and scalars, the on-disk history).
* ``10% at s``: the epoch length (training and validation, without the monitor) at which a run
  per epoch would add 10%: ten times ``per run s``.

A monitor run costs about the same whatever the epoch's length, so its share shrinks as epochs
grow: compare ``digits`` with ``digits x20``.

``--ranks 1 2`` prints another table instead: the same 4-epoch ``digits`` fit with
``AttributionMonitor(schedule="every_run")`` (every method every run) in 1 process and in 2 (``ddp``,
gloo), each process with ``cores / ranks`` threads (``--threads`` to choose), so both use the same
cores. ``per run s`` is the median wall time of the monitor's hook on rank 0 over the runs after
the first (which also tunes batch sizes): maps (gathering included), analyses, recording and the
stop request's sync; ``maps`` is sharded over the ranks, ``shortcuts`` and ``rest`` (stability,
recording; rank 0 only under DDP) are not.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.demos import LitClassifier, load_digits

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    """One row: the data, how often the training set repeats per epoch, epochs and the monitor."""

    data: str
    repeat: int
    epochs: int
    max_overhead: float | None
    batch_size: int = 64

    @property
    def label(self) -> str:
        """``digits x20``, ``decoy``, ``decoy b32``..."""
        return (
            self.data
            + (f" x{self.repeat}" if self.repeat > 1 else "")
            + (f" b{self.batch_size}" if self.batch_size != 64 else "")
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line: ``--quick`` for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, x4 instead of x20: a smoke run")
    parser.add_argument("--ranks", type=int, nargs="+", help="one run's wall time with this many CPU processes each")
    parser.add_argument("--threads", type=int, help="threads per process with --ranks (default: cores / ranks)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the fits train (default: cpu)")
    parser.add_argument("--ranks-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_for(quick: bool) -> list[Setting]:
    """The rows of the table."""
    epochs, repeat = (2, 4) if quick else (6, 20)
    return [
        Setting("digits", 1, epochs, None),
        Setting("digits", 1, epochs, 0.1),
        Setting("decoy", 1, max(2, epochs - 2), None),
        Setting("decoy", 1, max(2, epochs - 2), None, batch_size=32),  # examples/decoy_digits.py trains at batch 32
        Setting("digits", repeat, 2, None),
        Setting("digits", repeat, 2, 0.1),
        *([] if quick else [Setting("digits", 8, 20, None)]),  # issue 15's target: 20 epochs of about 3 s
    ]


def datasets(name: str) -> tuple[Dataset, Dataset]:
    """Training and validation sets of the example named ``name``."""
    if name == "digits":
        images, labels = load_digits(32)
    else:
        example = runpy.run_path(str(ROOT / "examples" / "decoy_digits.py"))
        images, labels, _ = example["make_data"](0, clean=False, kind="shade", corner="top_left")
    return TensorDataset(images[:1500], labels[:1500]), TensorDataset(images[1500:], labels[1500:])


def fit_seconds(setting: Setting, monitor: AttributionMonitor | None, root: Path, device: str = "cpu") -> float:
    """Trains from seed 0 on ``device`` (``cpu`` or ``cuda``) and returns ``trainer.fit``'s wall time."""
    pl.seed_everything(0, verbose=False)
    train, val = datasets(setting.data)
    train = ConcatDataset([train] * setting.repeat)
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_epochs=setting.epochs,
        default_root_dir=root,
        callbacks=[monitor] if monitor else [],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    model = LitClassifier(in_channels=1, width=16, pooled_size=4)
    started = time.perf_counter()
    trainer.fit(model, DataLoader(train, batch_size=setting.batch_size, shuffle=True), DataLoader(val, batch_size=64))
    return time.perf_counter() - started


def phase_seconds(monitor: AttributionMonitor) -> dict[str, float]:
    """Mean seconds per run: maps, shortcut checks, and the rest of the run."""
    runs = monitor.history
    maps = statistics.fmean(run["metrics"].get("xai_cost/seconds_maps", 0.0) for run in runs)
    shortcuts = statistics.fmean(run["metrics"].get("xai_cost/seconds_shortcuts", 0.0) for run in runs)
    per_run = monitor.cost["seconds"] / monitor.cost["runs"]
    return {"per_run": per_run, "maps": maps, "shortcuts": shortcuts, "rest": per_run - maps - shortcuts}


def row(setting: Setting, folder: Path, progress: Callable[[str], None], device: str = "cpu") -> list[str]:
    """Fits without and with the monitor on ``device``; the table cells."""
    progress(f"{setting.label}, {setting.epochs} epochs, max_overhead={setting.max_overhead}: without the monitor ...")
    without = fit_seconds(setting, None, folder / "without", device)
    progress("  ... and with it")
    monitor = AttributionMonitor(display_mean=(0.0,), display_std=(1.0,), max_overhead=setting.max_overhead)
    with_monitor = fit_seconds(setting, monitor, folder / "with", device)
    phases = phase_seconds(monitor)
    cost = monitor.cost
    return [
        setting.label,
        str(setting.epochs),
        "default" if setting.max_overhead is None else f"cap {setting.max_overhead:.0%}",
        f"{without:.1f}",
        f"{with_monitor:.1f}",
        f"{with_monitor / without - 1:+.0%}",
        f"{cost['runs']:.0f}",
        f"{cost['skipped']:.0f}",
        *(f"{phases[key]:.2f}" for key in ("per_run", "maps", "shortcuts", "rest")),
        f"{10 * phases['per_run']:.1f}",
    ]


def print_table(rows: list[list[str]]) -> None:
    """Prints the rows under a header, columns aligned."""
    header = [
        "data",
        "epochs",
        "monitor",
        "without s",
        "with s",
        "added",
        "runs",
        "skipped",
        "per run s",
        "maps",
        "shortcuts",
        "rest",
        "10% at s",
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for cells in [header, *rows]:
        print(
            "  ".join(
                cell.rjust(width) if index > 2 else cell.ljust(width)
                for index, (cell, width) in enumerate(zip(cells, widths))
            )
        )


class HookClock(pl.Callback):
    """Times the monitor's ``on_validation_epoch_end`` (the run) from the callbacks on either side of it."""

    def __init__(self, runs: list[float], *, stop: bool) -> None:
        self.runs, self.stop = runs, stop

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.stop:
            self.runs[-1] = time.perf_counter() - self.runs[-1]
        else:
            self.runs.append(time.perf_counter())


def ranks_worker(ranks: int, out: Path) -> None:
    """One fit in ``ranks`` processes (Lightning's ``ddp`` launcher runs this again for each other rank);
    rank 0 writes each run's wall time and phases to ``out``."""
    pl.seed_everything(0, verbose=False)
    train, val = datasets("digits")
    monitor = AttributionMonitor(display_mean=(0.0,), display_std=(1.0,), schedule="every_run")
    runs: list[float] = []
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=ranks,
        strategy="ddp" if ranks > 1 else "auto",
        max_epochs=4,
        default_root_dir=out.parent,
        callbacks=[HookClock(runs, stop=False), monitor, HookClock(runs, stop=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=10,
    )
    model = LitClassifier(in_channels=1, width=16, pooled_size=4)
    trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=64))
    if trainer.is_global_zero:
        metrics = [run["metrics"] for run in monitor.history]
        phases = {key: [m.get(f"xai_cost/seconds_{key}", 0.0) for m in metrics] for key in ("maps", "shortcuts")}
        out.write_text(json.dumps({"runs": runs, **phases}))


def ranks_table(ranks: list[int], threads: int | None, progress: Callable[[str], None]) -> None:
    """Runs :func:`ranks_worker` with each number of processes (in a subprocess) and prints a row for each."""
    rows = []
    for count in ranks:
        per_process = threads or max(1, (os.cpu_count() or 1) // count)
        progress(f"{count} process(es), {per_process} thread(s) each ...")
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "ranks.json"
            environment = {**os.environ, "OMP_NUM_THREADS": str(per_process), "PYTHONPATH": str(ROOT)}
            command = [sys.executable, str(Path(__file__).resolve()), "--ranks-worker", str(count), "--out", str(out)]
            subprocess.run(command, check=True, env=environment, cwd=folder, capture_output=True)
            seen = json.loads(out.read_text())
        seen["rest"] = [run - maps - cut for run, maps, cut in zip(seen["runs"], seen["maps"], seen["shortcuts"])]
        median = {key: statistics.median(values[1:] or values) for key, values in seen.items()}
        cells = [median["runs"], median["maps"], median["shortcuts"], median["rest"]]
        rows.append([str(count), str(per_process), str(len(seen["runs"])), *(f"{value:.2f}" for value in cells)])
    header = ["ranks", "threads each", "runs", "per run s", "maps", "shortcuts", "rest"]
    for cells in [header, *rows]:
        print("  ".join(cell.rjust(len(title)) for cell, title in zip(cells, header)))
    print(
        f"\ndevice cpu, {os.cpu_count()} cores, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} after."
    )


def main(argv: list[str] | None = None) -> None:
    """Runs every row and prints the table, with the machine's load before and after."""
    arguments = parse_args(argv)
    progress = lambda message: print(message, file=sys.stderr, flush=True)
    if arguments.ranks_worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        ranks_worker(arguments.ranks_worker, arguments.out)
        return
    if arguments.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available.")
    if arguments.device == "cuda" and arguments.ranks:
        raise SystemExit("--ranks runs CPU processes (gloo); leave out --device cuda.")
    if arguments.ranks:
        ranks_table(arguments.ranks, arguments.threads, progress)
        return
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        progress("warming up (one untimed fit with the monitor)")
        fit_seconds(Setting("digits", 1, 1, None), AttributionMonitor(), Path(folder) / "warm-up", arguments.device)
        for index, setting in enumerate(settings_for(arguments.quick)):
            rows.append(row(setting, Path(folder) / str(index), progress, arguments.device))
    print_table(rows)
    device = torch.cuda.get_device_name() if arguments.device == "cuda" else "cpu"
    print(
        f"\ndevice {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (timings under load are not trustworthy)."
    )


if __name__ == "__main__":
    main()
