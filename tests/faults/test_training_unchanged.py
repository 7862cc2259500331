"""Training is the same with and without the monitor, whatever ``forward`` does to modes and random state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lightning_xai import AttributionMonitor, ExpectedGradients, Faithfulness, GradCAM, Occlusion, SanityCheck
from lightning_xai.demos import LitClassifier, SmallCNN
from tests.callback.conftest import loaders, make_trainer


class _ForcesTrainMode(LitClassifier):
    """``self.train()`` inside forward: batch norm updates its statistics on every call, dropout draws."""

    def forward(self, images):
        self.train()
        return self.net(images)


class _McDropout(LitClassifier):
    """Monte-Carlo dropout: draws from the global RNG in every forward, train or eval."""

    def forward(self, images):
        return F.dropout(self.net(images), 0.5, training=True)


class _FlipsToEval(LitClassifier):
    """Puts its batch norm in eval mode inside forward and back to train only in training_step."""

    def forward(self, images):
        self.net.eval()
        return self.net(images)

    def training_step(self, batch, batch_idx):
        self.net.train()
        return super().training_step(batch, batch_idx)


MODELS = {"forces_train_mode": _ForcesTrainMode, "mc_dropout": _McDropout, "flips_batch_norm_to_eval": _FlipsToEval}


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _train(root, digits, model_class, monitor):
    pl.seed_everything(7, verbose=False)
    model = model_class(SmallCNN(in_channels=1, num_classes=10, width=4, dropout=0.3), lr=1e-2)
    trainer = make_trainer(root, [monitor] if monitor else [], max_epochs=2, limit_train_batches=3)
    trainer.fit(model, *loaders(digits, shuffle=True))
    return model, _rng_states()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_buffers_and_global_rng_are_identical(tmp_path, digits16, name):
    without, rng_without = _train(tmp_path / "without", digits16, MODELS[name], None)
    extra = {"faithfulness": Faithfulness(), "sanity": SanityCheck()} if name == "mc_dropout" else {}
    monitor = AttributionMonitor(
        [GradCAM(), Occlusion(window=4, stride=4), ExpectedGradients(n_samples=4, reference_count=8)],
        num_probes=4,
        **extra,
    )
    with_monitor, rng_with = _train(tmp_path / "with", digits16, MODELS[name], monitor)
    assert len(monitor.history) == 2 and all("failures" not in run and "error" not in run for run in monitor.history)
    for (key, a), (_, b) in zip(without.state_dict().items(), with_monitor.state_dict().items()):
        assert torch.equal(a, b), key  # parameters and batch-norm buffers
    assert torch.equal(rng_without[0], rng_with[0])
    assert np.array_equal(rng_without[1], rng_with[1]) and rng_without[2] == rng_with[2]
    assert [m.training for m in without.modules()] == [m.training for m in with_monitor.modules()]
