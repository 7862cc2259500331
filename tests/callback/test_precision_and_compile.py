"""bf16 precision and torch.compile: maps are computed, finite, and stored in float32."""

from __future__ import annotations

import pytest
import torch

from lightning_xai import ExpectedGradients, GradCAM, IntegratedGradients, Occlusion
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def _maps(tmp_path, monitor):
    return torch.load(tmp_path / "version_0" / "xai" / monitor.history[-1]["file"], weights_only=True)["maps"]


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precision(tmp_path, digits16, precision):
    # relu=False: an almost untrained model may have no positive Grad-CAM evidence at all
    monitor = cheap_monitor(
        methods=[GradCAM(relu=False), Occlusion(window=4, stride=4), ExpectedGradients(n_samples=4, reference_count=8)]
    )
    make_trainer(tmp_path, [monitor], max_epochs=1, precision=precision).fit(tiny_model(), *loaders(digits16))
    maps = _maps(tmp_path, monitor)
    assert sorted(maps) == ["expected_gradients", "grad_cam", "occlusion"]
    for name, value in maps.items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all() and value.abs().sum() > 0, name


def test_bf16_mixed_maps_equal_float32_maps(tmp_path, digits16):
    # Autocast covers only the *_step calls; the monitor computes at the weights' own precision (float32 here).
    maps = []
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        model = tiny_model()
        monitor = cheap_monitor(methods=[GradCAM(), IntegratedGradients(n_steps=4)])
        trainer = make_trainer(tmp_path / precision, [monitor], precision=precision)
        trainer.validate(model, loaders(digits16)[1])
        maps.append(_maps(tmp_path / precision, monitor))
    for name in maps[0]:
        torch.testing.assert_close(maps[0][name], maps[1][name])


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compiled_network(tmp_path, digits16, backend):
    # Hooks registered after compilation never fire inside a compiled graph; the monitor runs
    # the compiled code eagerly, so Grad-CAM sees the layer and matches the uncompiled maps.
    model = tiny_model()
    plain_monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4)])
    make_trainer(tmp_path / "plain", [plain_monitor]).validate(model, loaders(digits16)[1])
    model.net = torch.compile(model.net, backend=backend)
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4)])
    trainer = make_trainer(tmp_path / "compiled", [monitor], max_epochs=1, limit_train_batches=2)
    trainer.validate(model, loaders(digits16)[1])
    for name, expected in _maps(tmp_path / "plain", plain_monitor).items():
        torch.testing.assert_close(_maps(tmp_path / "compiled", monitor)[name], expected, rtol=1e-4, atol=1e-5)
    trainer.fit(model, *loaders(digits16))
    assert _maps(tmp_path / "compiled", monitor)["grad_cam"].abs().sum() > 0
