"""Multi-label: two handwritten digits side by side, and the model says which digits it sees.

Each image ``[1, 16, 32]`` holds two of scikit-learn's bundled digits (no download); its labels are
multi-hot ``[10]`` (both digits positive, one label when they are equal). The model ends in ten
sigmoid scores, trained with ``binary_cross_entropy_with_logits``. ``AttributionMonitor()`` with no
arguments recognizes the task from the scores and the multi-hot labels (``task="multilabel"``),
spreads its probes over the labels, explains each probe once per positive label (a pair ``3|7``
gives one map for "3" and one for "7"), and shows sigmoids in its grids and prediction table.
Runs on a CPU in well under a minute:

    python examples/multilabel_digits.py --root runs/multilabel_digits
    tensorboard --logdir runs/multilabel_digits        # then open the IMAGES tab
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.demos import SmallCNN, load_digits


def digit_pairs(size: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Every digit beside a random partner: images ``[1797, 1, size, 2 * size]`` and multi-hot labels ``[1797, 10]``."""
    images, labels = load_digits(size)
    partner = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    pairs = torch.cat([images, images[partner]], dim=-1)
    multi_hot = torch.zeros(len(images), 10)
    multi_hot[torch.arange(len(images)), labels] = 1
    multi_hot[torch.arange(len(images)), labels[partner]] = 1
    return pairs, multi_hot


class LitMultiLabel(pl.LightningModule):
    """A small CNN with ten sigmoid outputs, one per digit."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.net = SmallCNN(in_channels=1, num_classes=10, width=8)
        self.lr = lr

    def forward(self, images: Tensor) -> Tensor:
        """Scores ``[N, 10]`` (logits of ten independent labels)."""
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        scores = self(images)
        self.log("val_loss", nn.functional.binary_cross_entropy_with_logits(scores, labels))
        self.log("val_label_acc", ((scores > 0).float() == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(root: Path, *, epochs: int = 3, seed: int = 0) -> dict:
    """Trains with the monitor and prints what it explained; returns what a test needs."""
    pl.seed_everything(seed, verbose=False)
    images, labels = digit_pairs(seed=seed)
    train = DataLoader(TensorDataset(images[:1500], labels[:1500]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(images[1500:], labels[1500:]), batch_size=32)
    model = LitMultiLabel()
    monitor = AttributionMonitor()
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        enable_checkpointing=False,
    )
    started = time.perf_counter()
    trainer.fit(model, train, val)
    seconds = time.perf_counter() - started
    log_dir = Path(trainer.logger.log_dir)
    summary = json.loads((log_dir / "xai" / "summary.json").read_text())
    print(
        f"fit with the monitor: {seconds:.1f}s, label accuracy {float(trainer.callback_metrics['val_label_acc']):.1%}"
    )
    print(f"task: {summary['task']}; {len(monitor.probes.labels)} maps per method for the probes' positive labels")
    for run in monitor.history:
        print(
            f"  epoch {run['epoch']}: mean sigmoid of the explained labels "
            f"{run['metrics']['xai_probes/target_probability']:.0%}"
        )
    print(f"TensorBoard: tensorboard --logdir {root}  (xai/maps/<method>, table xai/predictions)")
    return {
        "seconds": seconds,
        "log_dir": log_dir,
        "summary": summary,
        "model": model,
        "monitor": monitor,
        "labels": labels,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/multilabel_digits"), help="log folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    main(arguments.root, epochs=arguments.epochs, seed=arguments.seed)
