"""Stability tracking in the monitor: curves, agreement, filmstrips, the settled signal."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import GradCAM, Occlusion, Saliency
from lightning_xai.demos import LitClassifier, SmallCNN
from lightning_xai.monitor import tags
from lightning_xai.stability import Stability
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


class _Frozen(LitClassifier):
    """lr = 0 and batch-norm momentum 0: nothing changes, so the maps never change."""

    def __init__(self, net) -> None:
        super().__init__(net)
        for module in self.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _Reshuffled(LitClassifier):
    """Re-initialises its weights after every epoch: the maps never settle."""

    def on_train_epoch_end(self) -> None:
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.5)


def _events(root):
    events = EventAccumulator(str(root / "version_0"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_stability_curves_agreement_and_filmstrips_are_logged(tmp_path, digits16):
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4)], stability=Stability(filmstrip_length=2))
    make_trainer(tmp_path, [monitor], max_epochs=3).fit(tiny_model(), *loaders(digits16))
    events = _events(tmp_path)
    scalars = set(events.Tags()["scalars"])
    for metric in ("spearman", "topk_iou", "ssim", "cosine"):
        for name in ("grad_cam", "occlusion"):
            for kind in ("mean", "worst"):
                assert tags.stability(name, f"{metric}_{kind}") in scalars
    assert [s.step for s in events.Scalars(tags.stability("grad_cam", "spearman_mean"))] == [
        7,
        11,
    ]  # from the second run on
    assert tags.agreement("grad_cam", "occlusion", "spearman_mean") in scalars
    strips = [tag for tag in events.Tags()["images"] if tag.startswith("xai/filmstrip/")]
    assert sorted(strips) == [tags.filmstrip_image("grad_cam"), tags.filmstrip_image("occlusion")]  # one per method
    shapes = [(e.height, e.width) for e in events.Images(tags.filmstrip_image("occlusion"))]
    assert shapes == [
        (14 + 4 * 50, 50 + 2),
        (14 + 4 * 50, 2 * 50 + 2),
        (14 + 4 * 50, 2 * 50 + 2),
    ]  # grows to filmstrip_length runs, then slides (96-px tiles as 48-px thumbnails)
    assert tags.stability("occlusion", "spearman_mean") in monitor.history[1]["metrics"]


def test_unchanging_maps_settle_after_patience_runs(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()], stability=Stability(threshold=0.99, patience=2))
    model = _Frozen(SmallCNN(1, 10, width=4))
    make_trainer(tmp_path, [monitor], max_epochs=4).fit(model, *loaders(digits16))
    assert monitor.settled == {"saliency": {"epoch": 2, "global_step": 12}}
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    assert summary["settled"] == {"saliency": {"epoch": 2, "global_step": 12}}
    values = _events(tmp_path).Scalars(tags.settled("saliency"))
    assert [(v.step, v.value) for v in values] == [(3, 0.0), (7, 0.0), (11, 1.0), (15, 1.0)]


def test_maps_that_keep_changing_are_reported_at_the_end(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()], stability=Stability(threshold=0.9, patience=2))
    model = _Reshuffled(SmallCNN(1, 10, width=4))
    with pytest.warns(
        UserWarning, match=r"AttributionMonitor: the saliency maps had not settled by the end of training"
    ):
        make_trainer(tmp_path, [monitor], max_epochs=3).fit(model, *loaders(digits16))
    assert monitor.settled == {"saliency": None}
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    assert summary["settled"] == {"saliency": None}
    spearman = [s.value for s in _events(tmp_path).Scalars(tags.stability("saliency", "spearman_mean"))]
    assert len(spearman) == 2 and max(spearman) < 0.9


def test_stability_can_be_switched_off(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()], stability=None)
    make_trainer(tmp_path, [monitor], max_epochs=2).fit(tiny_model(), *loaders(digits16))
    assert not any(tag.startswith("xai_stability") for tag in _events(tmp_path).Tags()["scalars"])
    assert monitor.settled == {}
