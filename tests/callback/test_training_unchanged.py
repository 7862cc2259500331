"""The monitor must not disturb training: bit-identical weights with and without it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightning_xai import AttributionMonitor, ExpectedGradients, GradCAM, Occlusion, SmoothGrad
from tests.callback.conftest import loaders, make_trainer, tiny_model


def _train(root, digits, callbacks):
    pl.seed_everything(123, verbose=False)
    model = tiny_model(dropout=0.3)
    train, val = loaders(digits, shuffle=True)
    trainer = make_trainer(
        root, callbacks, max_epochs=2, limit_train_batches=7, accumulate_grad_batches=2, val_check_interval=3
    )
    trainer.fit(model, train, val)
    return model, trainer


def test_weights_are_bit_identical_with_and_without_the_monitor(tmp_path, digits16):
    # Validation runs after batches 3 and 6, inside open gradient-accumulation windows, with
    # dropout and shuffling drawing from the global RNGs.
    without, _ = _train(tmp_path / "without", digits16, [])
    monitor = AttributionMonitor(
        [GradCAM(), Occlusion(window=4), ExpectedGradients(n_samples=4, reference_count=8), SmoothGrad(n_samples=3)],
        num_probes=4,
    )
    with_monitor, trainer = _train(tmp_path / "with", digits16, [monitor])
    assert len(monitor.history) == 4  # two validation runs per epoch, two epochs
    assert [run["global_step"] for run in monitor.history] == sorted({run["global_step"] for run in monitor.history})
    for (name, a), (_, b) in zip(without.state_dict().items(), with_monitor.state_dict().items()):
        assert torch.equal(a, b), name
