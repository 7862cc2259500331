"""Explicit probes: a tensor, (images, targets), (dataset, indices); the prediction is the target without labels."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def test_tensor_probes_use_the_prediction_as_target(tmp_path, digits16):
    images, _ = digits16
    monitor = cheap_monitor(probes=images[1600:1603])
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    saved = torch.load(tmp_path / "version_0" / "xai" / monitor.history[0]["file"], weights_only=True)
    assert torch.equal(saved["targets"], saved["predictions"])
    assert saved["maps"]["grad_cam"].shape == (3, 1, 16, 16)
    assert "xai_probes/accuracy" not in monitor.history[0]["metrics"]


def test_images_and_targets(tmp_path, digits16):
    images, labels = digits16
    monitor = cheap_monitor(probes=(images[:5], labels[:5]))
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    saved = torch.load(tmp_path / "version_0" / "xai" / monitor.history[0]["file"], weights_only=True)
    assert saved["targets"].tolist() == labels[:5].tolist()


def test_dataset_and_indices(tmp_path, digits16):
    images, labels = digits16
    dataset = TensorDataset(images, labels)
    monitor = cheap_monitor(probes=(dataset, [3, 30, 300]))
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    assert torch.equal(monitor.probes.images, images[[3, 30, 300]])
    assert monitor.probes.labels.tolist() == labels[[3, 30, 300]].tolist()
