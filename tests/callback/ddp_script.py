"""Trains with the monitor under DDP on two CPU processes (gloo); run by test_ddp.py.

Lightning's DDP launcher re-runs this script for rank 1, so it must be a standalone file.
Each rank writes what it saw to ``<out>/rank-<r>.json``.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, ExpectedGradients, GradCAM, Occlusion
from lightning_xai.demos import LitClassifier, SmallCNN
from lightning_xai.shortcuts import Shortcuts


def close_process_group() -> None:
    """Both ranks leave together and tear gloo down before the interpreter exits.

    Lightning leaves the process group open after fit; a rank whose peer has already exited can
    then abort at shutdown ("terminate called without an active exception", seen once in CI).
    """
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def decoy_main(out: Path) -> None:
    """Decoy digits with stop_on_shortcut: rank 0 finds the shortcut, every rank must stop together."""
    pl.seed_everything(0, verbose=False)
    example = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "decoy_digits.py"))
    images, labels, _ = example["make_data"](0, clean=False, kind="shade", corner="top_left")
    train = DataLoader(TensorDataset(images[:1500], labels[:1500]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(images[1500:], labels[1500:]), batch_size=64)
    # No budget for the checks: this test is about stopping every rank together, not about when a cheap method's
    # allowance lets the swatch's test finish (with expected gradients alone the clear-wins test of this partly
    # read swatch was cut until epoch 8 on one machine, at epoch 3 without the budget, p = 7e-18).
    monitor = AttributionMonitor(
        [ExpectedGradients(n_samples=16)], stop_on_shortcut=True, stability=None, shortcuts=Shortcuts(max_cost=None)
    )
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=10,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[monitor],
    )
    trainer.fit(LitClassifier(in_channels=1, width=16, pooled_size=4), train, val)
    report = {
        "rank": trainer.global_rank,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "findings": len(monitor.findings),
    }
    (out / f"decoy-rank-{trainer.global_rank}.json").write_text(json.dumps(report))
    close_process_group()


def main(out: Path) -> None:
    pl.seed_everything(0, verbose=False)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(256, 1, 16, 16, generator=generator), torch.randint(0, 10, (256,), generator=generator)
    train = DataLoader(TensorDataset(images[:192], labels[:192]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(images[192:], labels[192:]), batch_size=16)
    monitor = AttributionMonitor(
        [GradCAM(), Occlusion(window=4, stride=4), ExpectedGradients(n_samples=4, reference_count=8)], num_probes=4
    )
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=2,
        logger=TensorBoardLogger(out, name="", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[monitor],
    )
    trainer.fit(LitClassifier(SmallCNN(1, 10, width=4)), train, val)
    report = {
        "rank": trainer.global_rank,
        "runs": [run["global_step"] for run in monitor.history],
        "has_session": monitor._run.recorder is not None,
        "probe_labels": monitor.probes.labels.tolist(),
        "global_step": trainer.global_step,
    }
    (out / f"rank-{trainer.global_rank}.json").write_text(json.dumps(report))
    close_process_group()


if __name__ == "__main__":
    (decoy_main if sys.argv[2:] == ["decoy"] else main)(Path(sys.argv[1]))
