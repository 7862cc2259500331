"""Fixtures for callback tests: tiny digits, a tiny classifier and a quiet Trainer factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, ExpectedGradients, GradCAM, Occlusion
from lightning_xai.demos import LitClassifier, SmallCNN


def loaders(
    digits: tuple[torch.Tensor, torch.Tensor], *, batch_size: int = 32, shuffle: bool = True
) -> tuple[DataLoader, DataLoader]:
    images, labels = digits
    train = DataLoader(TensorDataset(images[:1500], labels[:1500]), batch_size=batch_size, shuffle=shuffle)
    val = DataLoader(TensorDataset(images[1500:], labels[1500:]), batch_size=batch_size)
    return train, val


def tiny_model(dropout: float = 0.0) -> LitClassifier:
    return LitClassifier(SmallCNN(in_channels=1, num_classes=10, width=4, dropout=dropout), lr=1e-2)


def cheap_monitor(**kwargs: Any) -> AttributionMonitor:
    methods = kwargs.pop(
        "methods", [GradCAM(), Occlusion(window=4, stride=4), ExpectedGradients(n_samples=4, reference_count=8)]
    )
    return AttributionMonitor(methods, **{"num_probes": 4, **kwargs})


def make_trainer(root: Path, callbacks: list, **kwargs: Any) -> pl.Trainer:
    options = dict(
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=2,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(root, name="", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
        deterministic=True,
    )
    options.update(kwargs)
    return pl.Trainer(default_root_dir=root, callbacks=callbacks, **options)
