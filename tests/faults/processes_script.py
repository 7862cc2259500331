"""Fits with the monitor in several processes, run as a script by test_processes.py.

``spawn <out>``: ``strategy="ddp_spawn"`` on two CPU processes with the default methods; the main
process writes what *its* monitor object sees after ``fit`` to ``<out>/spawn.json``.
``timeout <out>``: ``strategy="ddp"`` with a 300 s process-group timeout and a clock that makes each
monitor run last 200 s; each rank writes the monitor's warnings to ``<out>/timeout-rank-<r>.json``.
``fsdp2 <out>``: ``ModelParallelStrategy`` + ``fully_shard`` on two CPU processes (gloo), a 60 s
process-group timeout, the default methods, real shortcut checks (plus one planted finding) and
``stop_on_shortcut``: each rank writes what its monitor and trainer saw to ``<out>/fsdp2-rank-<r>.json``.
``one_rank_fails <out>``: ``strategy="ddp"`` (a 60 s process-group timeout) with a model whose forward fails on rank 1
in the monitor's gradient passes from the second run on; each rank writes what it saw to
``<out>/one-rank-fails-rank-<r>.json``.
``maps <out> <one|ddp|fsdp2|cuda|fsdp_cuda>``: ``trainer.validate`` of one seeded model on 5 given probes, in one
process or in two (DDP, or FSDP2 through ``ModelParallelStrategy``), or on one GPU (plain, or Lightning's
``FSDPStrategy``); rank 0 saves the recorded maps to ``<out>/maps-<strategy>.pt``.

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

REAL_CHECKS = {"on": False}  # fsdp2 mode: the real checks run first (their passes are collective), then the plant
real_check_shortcuts = engine_module.check_shortcuts


def plant_finding(detector, model, displays, test_images, *, epoch, step, **options):
    """One confirmed finding at the first run, none after (stands in for the real shortcut checks)."""
    if REAL_CHECKS["on"]:
        real_check_shortcuts(detector, model, displays, test_images, epoch=epoch, step=step, **options)
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


class _FailsOnRankOne(LitClassifier):
    """Its forward raises on global rank 1 in the monitor's gradient passes (eval mode, gradients on) after the first
    step: a failure one rank alone sees (an out-of-memory error on one GPU)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.global_rank == 1 and not self.training and torch.is_grad_enabled() and self.trainer.global_step > 0:
            raise RuntimeError("out of memory on rank 1")
        return super().forward(images)


def one_rank_fails_main(out: Path) -> None:
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    pl.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(num_probes=4, shortcuts=None)
    options = {**trainer_options(out), "max_epochs": 3}
    trainer = pl.Trainer(strategy=DDPStrategy(timeout=timedelta(seconds=60)), callbacks=[monitor], **options)
    trainer.fit(_FailsOnRankOne(SmallCNN(1, 10, width=4)), *data())
    report = {"global_step": trainer.global_step, "runs": [run.get("error", "") for run in monitor.history]}
    (out / f"one-rank-fails-rank-{trainer.global_rank}.json").write_text(json.dumps(report))
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
    from datetime import timedelta

    from pytorch_lightning.strategies import ModelParallelStrategy

    REAL_CHECKS["on"] = True
    pl.seed_everything(0, verbose=False)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=60))
    monitor = AttributionMonitor(num_probes=5, stop_on_shortcut=True, schedule="every_run")
    options = {**trainer_options(out), "max_epochs": 3, "num_sanity_val_steps": 1}  # the methods checked on every rank
    trainer = pl.Trainer(strategy=strategy, callbacks=[monitor], **options)
    trainer.fit(ShardedClassifier(SmallCNN(1, 10, width=4)), *data())
    report = {
        "rank": trainer.global_rank,
        "global_step": trainer.global_step,
        "should_stop": trainer.should_stop,
        "runs": [run["global_step"] for run in monitor.history],
        "failures": [run.get("failures", {}) for run in monitor.history],
        "findings": [finding["message"] for finding in monitor.findings],
    }
    (out / f"fsdp2-rank-{trainer.global_rank}.json").write_text(json.dumps(report))
    close_process_group()


def maps_main(out: Path, kind: str) -> None:
    """One validation run of a seeded model on given probes; rank 0 saves the maps it recorded."""
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy

    from lightning_xai import ExpectedGradients, GradCAM, Occlusion
    from lightning_xai.history import load_run, read_summary

    pl.seed_everything(0, verbose=False)
    probes = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    methods = [GradCAM(), Occlusion(window=4, stride=4), ExpectedGradients(n_samples=8, baselines="blur")]
    monitor = AttributionMonitor(methods, probes=probes, shortcuts=None, stability=None, faithfulness=None)
    strategies = {
        "one": ("auto", 1),
        "ddp": (DDPStrategy(timeout=timedelta(seconds=60)), 2),
        "fsdp2": (
            ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=60)),
            2,
        ),
    }
    options = trainer_options(out)
    if kind in ("cuda", "fsdp_cuda"):  # one GPU: plain, and Lightning's FSDPStrategy (NCCL, one rank)
        from pytorch_lightning.strategies import FSDPStrategy

        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # as the CPU computes
        strategies = {"cuda": ("auto", 1), "fsdp_cuda": (FSDPStrategy(timeout=timedelta(seconds=60)), 1)}
        options["accelerator"] = "cuda"
    strategy, devices = strategies[kind]
    options["devices"] = devices
    trainer = pl.Trainer(strategy=strategy, callbacks=[monitor], **options)
    model = ShardedClassifier(SmallCNN(1, 10, width=4)) if kind == "fsdp2" else LitClassifier(SmallCNN(1, 10, width=4))
    trainer.validate(model, data()[1], verbose=False)
    if trainer.is_global_zero:
        folder = out / "version_0" / "xai"
        runs = read_summary(folder)["runs"]
        torch.save({"maps": load_run(folder, runs[0])["maps"], "runs": len(runs)}, out / f"maps-{kind}.pt")
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
    modes = {
        "spawn": spawn_main,
        "timeout": timeout_main,
        "fsdp2": fsdp2_main,
        "resume": resume_main,
        "one_rank_fails": one_rank_fails_main,
    }
    if sys.argv[1] == "maps":
        maps_main(Path(sys.argv[2]), sys.argv[3])
    else:
        modes[sys.argv[1]](Path(sys.argv[2]))
