"""The method settings added for issue 16: delegation, checks, and a real Trainer run each."""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from lightning_xai import (
    DeconvNet,
    ExpectedGradients,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    Mask,
    Occlusion,
    SmoothGrad,
)
from lightning_xai import functional as F
from lightning_xai.methods import MethodContext
from tests.conftest import build_model


def _context(seed: int = 0, references: torch.Tensor | None = None) -> MethodContext:
    return MethodContext(generator=torch.Generator().manual_seed(seed), references=references)


def test_path_methods_without_multiplying_by_inputs_delegate_and_report_no_gap():
    model, images, targets = build_model("tiny"), torch.randn(2, 3, 12, 10), torch.tensor([1, 3])
    method = IntegratedGradients(n_steps=4, multiply_by_inputs=False)
    maps, gap = method.attribute_with_gap(model, images, targets, _context())
    expected = F.integrated_gradients(model, images, targets, baseline="zero", n_steps=4, multiply_by_inputs=False)
    torch.testing.assert_close(maps, expected)
    assert gap is None
    references = torch.randn(3, 3, 12, 10)
    maps, gap = ExpectedGradients(n_samples=4, multiply_by_inputs=False).attribute_with_gap(
        model, images, targets, _context(0, references)
    )
    expected = F.expected_gradients(
        model,
        images,
        targets,
        baselines=references,
        n_samples=4,
        generator=torch.Generator().manual_seed(0),
        multiply_by_inputs=False,
    )
    torch.testing.assert_close(maps, expected)
    assert gap is None


def test_multiply_by_inputs_setting_is_checked():
    with pytest.raises(TypeError, match=re.escape("`multiply_by_inputs` must be a bool, got int.")):
        IntegratedGradients(multiply_by_inputs=0)


def _fit_with(method, tmp_path, digits16) -> list[dict]:
    import pytorch_lightning as pl

    from lightning_xai import AttributionMonitor
    from tests.callback.conftest import loaders, tiny_model

    monitor = AttributionMonitor([method], num_probes=3)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        callbacks=[monitor],
    )
    trainer.fit(tiny_model(), *loaders(digits16))
    return monitor.history


def _assert_ran(history: list[dict], name: str) -> None:
    assert len(history) == 1, history
    assert history[0]["methods"] == [name], history[0]


@pytest.mark.parametrize(
    "method",
    [
        IntegratedGradients(n_steps=4, multiply_by_inputs=False),
        GuidedBackprop(),
        DeconvNet(batch_size=2),
        GuidedGradCAM(layer="net.features.3"),
        SmoothGrad(n_samples=3, kind="vargrad"),
        Mask(steps=3),
        Occlusion(window=4, stride=4, baseline="inpaint_ns"),
    ],
    ids=lambda m: m.name,
)
def test_new_methods_run_in_the_monitor(method, tmp_path, digits16):
    _assert_ran(_fit_with(method, tmp_path, digits16), method.name)


NEW = [
    GuidedBackprop(),
    DeconvNet(batch_size=4),
    GuidedGradCAM(layer="layer2", interpolate="nearest"),
    Mask(areas=(0.2,), steps=3),
]


@pytest.mark.parametrize("method", NEW, ids=lambda m: m.name)
def test_new_methods_pickle_and_are_frozen(method):
    assert pickle.loads(pickle.dumps(method)) == method
    with pytest.raises(AttributeError):
        method.batch_size = 3  # type: ignore[misc]


def test_smooth_grad_kind_delegates_to_functional():
    model, images, targets = build_model("tiny"), torch.randn(2, 3, 12, 10), torch.tensor([1, 2])
    ours = SmoothGrad(n_samples=4, kind="smoothgrad_sq").attribute(model, images, targets, _context(3))
    expected = F.smooth_grad(
        model, images, targets, n_samples=4, kind="smoothgrad_sq", generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(ours, expected)


def test_mask_returns_the_smallest_sufficient_mask():
    model, images, targets = build_model("tiny"), torch.randn(2, 3, 12, 10), torch.tensor([1, 2])
    method = Mask(areas=(0.1, 0.3), steps=4, baseline="zero")
    full = method.explain(model, images, targets, _context(2))
    expected = F.extremal_mask(
        model, images, targets, areas=(0.1, 0.3), steps=4, baseline="zero", generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(full.masks, expected.masks)
    torch.testing.assert_close(method.attribute(model, images, targets, _context(2)), expected.best)


def test_guided_methods_delegate_to_functional():
    model, images, targets = build_model("resnet"), torch.randn(2, 3, 12, 10), torch.tensor([1, 2])
    torch.testing.assert_close(
        GuidedBackprop().attribute(model, images, targets, _context()), F.guided_backprop(model, images, targets)
    )
    torch.testing.assert_close(
        DeconvNet().attribute(model, images, targets, _context()), F.deconvnet(model, images, targets)
    )
    torch.testing.assert_close(
        GuidedGradCAM(layer="layer2", interpolate="nearest").attribute(model, images, targets, _context()),
        F.guided_grad_cam(model, images, targets, layer="layer2", interpolate="nearest"),
    )


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: GuidedGradCAM(layer=3), TypeError, "`layer` must be a dotted module name (str) or None, got int."),
        (
            lambda: GuidedGradCAM(interpolate="area"),
            ValueError,
            "`interpolate` must be one of ['bilinear', 'nearest'], got 'area'.",
        ),
        (
            lambda: SmoothGrad(kind="sq"),
            ValueError,
            "`kind` must be one of ['smoothgrad', 'smoothgrad_sq', 'vargrad'], got 'sq'.",
        ),
        (lambda: Mask(areas=[0.1]), ValueError, "`areas` must be a non-empty tuple of fractions in (0, 1), got [0.1]."),
        (lambda: Mask(keep=1.5), ValueError, "`keep` must be a number in (0, 1], got 1.5."),
        (lambda: GuidedBackprop(batch_size=0), ValueError, "`batch_size` must be an int >= 1, got 0."),
    ],
)
def test_new_settings_are_checked_when_built(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_occlusion_with_inpainting_fails_at_setup_without_opencv(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)
    message = "The inpainting baselines ('inpaint', 'inpaint_ns') need OpenCV; install it with pip install \"lightning-xai[inpaint]\" (opencv-python-headless)."
    with pytest.raises(ImportError, match=re.escape(message)):
        Occlusion(baseline="inpaint").validate(build_model("tiny"), torch.randn(1, 3, 12, 10))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`baseline` must be a number, a tensor or one of ['zero', 'mean', 'blur', 'max_distance', 'inpaint', 'inpaint_ns'], got 'paint'."
        ),
    ):
        Occlusion(baseline="paint")
