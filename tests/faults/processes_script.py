"""Fits with the monitor in several processes, run as a script by test_processes.py.

``spawn <out>``: ``strategy="ddp_spawn"`` on two CPU processes with the default methods; the main
process writes what *its* monitor object sees after ``fit`` to ``<out>/spawn.json``.
``timeout <out>``: ``strategy="ddp"`` with a 300 s process-group timeout and a clock that makes each
monitor run last 200 s; each rank writes the monitor's warnings to ``<out>/timeout-rank-<r>.json``.
``fsdp2 <out>``: ``ModelParallelStrategy`` + ``fully_shard`` on two CPU processes (gloo); each rank
writes the error the monitor raised at setup to ``<out>/fsdp2-rank-<r>.json``.

Module-level code also runs in the spawned processes (they import this file as ``__mp_main__``):
the shortcut checks are replaced there by one planted finding, so that findings exist to hand back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, Stability
from lightning_xai.demos import LitClassifier, SmallCNN
from lightning_xai.monitor import engine as engine_module
from lightning_xai.monitor.analyses import ShortcutReport
from lightning_xai.shortcuts import Finding


def plant_finding(detector, model, displays, test_images, *, epoch, step, batch_size=None):
    """One confirmed finding at the first run, none after (stands in for the real shortcut checks)."""
    if detector.findings:
        return ShortcutReport()
    finding = Finding(
        epoch=epoch, global_step=step, method="grad_cam", box=[0, 0, 4, 4], score=1.0, confirmed=True, message="planted"
    )
    detector.findings.append(finding)
    return ShortcutReport(new=[finding])


if __name__ in ("__main__", "__mp_main__"):  # the script and its spawned processes, never pytest's import of this file
    engine_module.check_shortcuts = plant_finding


class SlowClock:
    """Each reading is 200 s after the previous one: a monitor run (timed by two readings) "takes" 200 s, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 200.0
        return self.now


def data() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(192, 1, 16, 16, generator=generator), torch.randint(0, 10, (192,), generator=generator)
    return DataLoader(TensorDataset(images[:128], labels[:128]), batch_size=16), DataLoader(
        TensorDataset(images[128:], labels[128:]), batch_size=16
    )


def trainer_options(out: Path) -> dict:
    return dict(
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(out, name="", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def spawn_main(out: Path) -> None:
    pl.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(num_probes=4, stability=Stability(patience=1, threshold=-1.0))
    trainer = pl.Trainer(strategy="ddp_spawn", callbacks=[monitor], **trainer_options(out))
    trainer.fit(LitClassifier(SmallCNN(1, 10, width=4)), *data())
    report = {
        "global_step": trainer.global_step,
        "runs": [run["global_step"] for run in monitor.history],
        "files": [run["file"] for run in monitor.history],
        "findings": [finding["message"] for finding in monitor.findings],
        "settled": monitor.settled,
        "channel_left": monitor._run.channel.exists(),
    }
    (out / "spawn.json").write_text(json.dumps(report))


def timeout_main(out: Path) -> None:
    import warnings
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    from lightning_xai import GradCAM
    from lightning_xai.monitor import lifecycle

    lifecycle.time = SlowClock()  # the subprocess launcher re-runs this function on every rank
    pl.seed_everything(0, verbose=False)
    monitor = AttributionMonitor([GradCAM()], num_probes=4, shortcuts=None, stability=None)
    strategy = DDPStrategy(timeout=timedelta(seconds=300))
    trainer = pl.Trainer(strategy=strategy, callbacks=[monitor], **trainer_options(out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(LitClassifier(SmallCNN(1, 10, width=4)), *data())
    said = [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]
    (out / f"timeout-rank-{trainer.global_rank}.json").write_text(
        json.dumps({"said": said, "runs": len(monitor.history)})
    )
    close_process_group()


def close_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class ShardedClassifier(LitClassifier):
    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        fully_shard(self.net, mesh=self.device_mesh["data_parallel"])


def fsdp2_main(out: Path) -> None:
    from pytorch_lightning.strategies import ModelParallelStrategy

    pl.seed_everything(0, verbose=False)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    trainer = pl.Trainer(strategy=strategy, callbacks=[AttributionMonitor(num_probes=4)], **trainer_options(out))
    try:
        trainer.fit(ShardedClassifier(SmallCNN(1, 10, width=4)), *data())
        error = None
    except ValueError as raised:
        error = str(raised)
    report = {"rank": trainer.global_rank, "error": error, "global_step": trainer.global_step}
    (out / f"fsdp2-rank-{trainer.global_rank}.json").write_text(json.dumps(report))
    close_process_group()


def resume_main(root: Path) -> None:
    """Resumes a one-process fit's checkpoint (``root``, see tests/faults/test_history_resume.py) on two
    processes, with validation images in another order: every rank must explain the checkpoint's probes."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_xai import Occlusion
    from lightning_xai.demos import load_digits
    from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model

    images, labels = load_digits(16)
    other_validation = DataLoader(TensorDataset(images[1500:].flip(0), labels[1500:].flip(0)), batch_size=32)
    monitor = cheap_monitor(methods=[Occlusion(window=4, stride=4)], stability=Stability(patience=1, threshold=-1.0))
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=-1)
    trainer = make_trainer(
        root,
        [monitor, checkpoint],
        limit_train_batches=2,
        enable_checkpointing=True,
        max_epochs=3,
        devices=2,
        strategy="ddp",
        deterministic=False,
    )
    trainer.fit(tiny_model(), loaders((images, labels))[0], other_validation, ckpt_path=root / "ckpt" / "last.ckpt")
    report = {"fingerprint": monitor.probes.fingerprint(), "runs": [run["global_step"] for run in monitor.history]}
    (root / f"resume-rank-{trainer.global_rank}.json").write_text(json.dumps(report))
    close_process_group()


if __name__ == "__main__":
    modes = {"spawn": spawn_main, "timeout": timeout_main, "fsdp2": fsdp2_main, "resume": resume_main}
    modes[sys.argv[1]](Path(sys.argv[2]))
