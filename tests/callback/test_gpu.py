"""The monitor on a real GPU: training on CUDA stays bit-identical, every run is recorded without a failure,
the run images are drawn on the worker thread and reach TensorBoard. Skipped without a CUDA device."""

from __future__ import annotations

import threading
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_xai.demos import LitClassifier
from lightning_xai.monitor import recorder as recorder_module
from lightning_xai.monitor import tags
from tests.callback.conftest import cheap_monitor, loaders, make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = ["expected_gradients", "grad_cam", "occlusion"]


class StridedNet(nn.Module):
    """Convolutions (one strided instead of pooling) and a linear layer: each has a deterministic CUDA
    kernel, unlike the backward pass of adaptive pooling, so two fits can be compared bit for bit.

    Shapes: ``(N, 1, 16, 16)`` images to ``(N, 10)`` scores.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 8 * 8, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def _fit(root, digits, callbacks) -> tuple[nn.Module, pl.Trainer, list[str]]:
    pl.seed_everything(7, verbose=False)
    model = LitClassifier(StridedNet(), lr=1e-2)
    trainer = make_trainer(root, callbacks, accelerator="cuda", max_epochs=2)  # deterministic=True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, *loaders(digits))
    return model, trainer, [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


@pytest.fixture(scope="module")
def gpu_fits(tmp_path_factory, digits16):
    """One fit on the GPU without the monitor and one with it (the threads that drew each run's grid noted)."""
    root = tmp_path_factory.mktemp("gpu")
    without, _, _ = _fit(root / "without", digits16, [])
    drawing_threads: list[str] = []
    real = recorder_module.maps_grid

    def noted(*args, **kwargs):
        drawing_threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    recorder_module.maps_grid = noted
    try:
        monitor = cheap_monitor(display_mean=(0.0,), display_std=(1.0,))
        with_monitor, trainer, said = _fit(root / "with", digits16, [monitor])
    finally:
        recorder_module.maps_grid = real
    return {
        "without": without,
        "with": with_monitor,
        "trainer": trainer,
        "monitor": monitor,
        "said": said,
        "threads": drawing_threads,
        "log_dir": root / "with" / "version_0",
    }


def test_the_weights_trained_on_the_gpu_are_bit_identical_with_and_without_the_monitor(gpu_fits):
    assert gpu_fits["trainer"].strategy.root_device.type == "cuda"  # Lightning hands the model back on the CPU
    without, with_monitor = gpu_fits["without"].state_dict(), gpu_fits["with"].state_dict()
    assert list(without) == list(with_monitor)
    for name, weights in without.items():
        assert torch.equal(weights, with_monitor[name]), name


def test_every_run_on_the_gpu_is_recorded_without_a_failure(gpu_fits):
    monitor, trainer = gpu_fits["monitor"], gpu_fits["trainer"]
    assert trainer.state.finished and trainer.global_step == 8
    assert [run["global_step"] for run in monitor.history] == [4, 8]
    for run in monitor.history:
        assert "failures" not in run and "error" not in run, run
        assert run["methods"] == METHODS and run["file"]
    assert gpu_fits["said"] == []  # no warning from the monitor


def test_on_the_gpu_the_run_images_are_drawn_on_the_worker_thread_and_reach_tensorboard(gpu_fits):
    assert len(gpu_fits["threads"]) == 2 * len(METHODS)  # one grid per method and run
    assert threading.current_thread().name not in gpu_fits["threads"]
    events = EventAccumulator(str(gpu_fits["log_dir"]), size_guidance={"images": 0})
    events.Reload()
    for name in METHODS:
        assert len(events.Images(tags.maps_image(name))) == 2, name
