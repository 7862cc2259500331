"""The shared "leaves no trace" check, run on every attribution function.

Each function must leave parameter ``.grad``, every submodule's ``training`` flag, the
registered hooks, the buffers, the input tensor and the global RNG states (torch, NumPy,
Python) exactly as they were: after success, after an error, and under ``torch.no_grad()``
or ``torch.inference_mode()`` as Lightning's validation loops use them.
"""

from __future__ import annotations

import contextlib
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai import functional as F
from lightning_xai.demos import ResNetStyle

REFERENCES = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(9))


def _mask_tensors(result: F.ExtremalMasks) -> tuple[torch.Tensor, ...]:
    return result.masks, result.kept, result.deleted_kept, result.smallest_area, result.best


CALLS = {
    "occlusion": lambda m, x, **kw: F.occlusion(m, x, window=4, stride=2, batch_size=5, **kw),
    "occlusion_blur": lambda m, x, **kw: F.occlusion(m, x, window=4, baseline="blur", **kw),
    "occlusion_inpaint": lambda m, x, **kw: F.occlusion(m, x, window=4, stride=4, baseline="inpaint", **kw),
    "grad_cam": lambda m, x, **kw: F.grad_cam(m, x, **kw),
    "grad_cam_layer": lambda m, x, **kw: F.grad_cam(m, x, layer="layer2.0.conv1", batch_size=2, **kw),
    "saliency": lambda m, x, **kw: F.saliency(m, x, batch_size=2, **kw),
    "smooth_grad": lambda m, x, **kw: F.smooth_grad(m, x, n_samples=3, **kw),
    "vargrad": lambda m, x, **kw: F.smooth_grad(m, x, n_samples=3, kind="vargrad", **kw),
    "integrated_gradients": lambda m, x, **kw: F.integrated_gradients(m, x, n_steps=4, return_delta=True, **kw),
    "expected_gradients": lambda m, x, **kw: F.expected_gradients(
        m, x, baselines=REFERENCES, n_samples=3, return_delta=True, **kw
    ),
    "expected_gradients_noise": lambda m, x, **kw: F.expected_gradients(
        m, x, baselines="gaussian", n_samples=3, return_delta=True, **kw
    ),
    "guided_backprop": lambda m, x, **kw: F.guided_backprop(m, x, batch_size=2, **kw),
    "deconvnet": lambda m, x, **kw: F.deconvnet(m, x, **kw),
    "guided_grad_cam": lambda m, x, **kw: F.guided_grad_cam(m, x, layer="layer2", **kw),
    "extremal_mask": lambda m, x, **kw: _mask_tensors(F.extremal_mask(m, x, steps=3, **kw)),
    "find_grad_cam_layer": lambda m, x, **kw: F.find_grad_cam_layer(m, x),
    "measure_batch_size": lambda m, x, **kw: F.measure_batch_size(m, x, backward=True, candidates=[2, 4]),
}
GRAD_MODES = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def _model_with_state(partly_training: bool) -> nn.Module:
    """A ResNet-style model with gradients, a hook, frozen parts, and (optionally) some submodules training."""
    torch.manual_seed(0)
    model = ResNetStyle(num_classes=5, width=4, blocks_per_stage=1)
    model.fc = nn.Sequential(nn.Dropout(0.3), model.fc)
    model.eval()
    for index, parameter in enumerate(model.parameters()):
        parameter.grad = torch.full_like(parameter, float(index))
    model.stem[0].weight.requires_grad_(False)
    model.register_forward_hook(lambda *_: None)
    if partly_training:
        model.layer3.train()  # batch norm with running statistics that a forward pass would update
        model.fc.train()  # dropout that draws from the global RNG
    return model


def _snapshot(model: nn.Module, images: torch.Tensor) -> dict:
    return {
        "grads": [p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "buffers": [b.clone() for b in model.buffers()],
        "images": images.clone(),
        "images_flags": (images.requires_grad, images.grad),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
    }


def _assert_same(before: dict, after: dict) -> None:
    for key in ("grads", "buffers"):
        assert all(torch.equal(a, b) for a, b in zip(before[key], after[key])), key
    for key in ("requires_grad", "training", "hooks", "images_flags", "python_rng"):
        assert before[key] == after[key], key
    assert torch.equal(before["images"], after["images"])
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert np.array_equal(before["numpy_rng"], after["numpy_rng"])


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("grad_mode", sorted(GRAD_MODES))
@pytest.mark.parametrize("partly_training", [False, True])
def test_leaves_no_trace(name, grad_mode, partly_training):
    model = _model_with_state(partly_training)
    images = torch.randn(3, 3, 12, 10)
    before = _snapshot(model, images)
    with GRAD_MODES[grad_mode](), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CALLS[name](model, images)
    _assert_same(before, _snapshot(model, images))
    outputs = result if isinstance(result, tuple) else (result,)
    assert all(isinstance(o, (str, int)) or (torch.isfinite(o).all() and not o.requires_grad) for o in outputs)


@pytest.mark.parametrize("name", sorted(set(CALLS) - {"find_grad_cam_layer", "measure_batch_size"}))
def test_leaves_no_trace_when_it_raises(name):
    model = _model_with_state(partly_training=True)
    images = torch.randn(3, 3, 12, 10)
    before = _snapshot(model, images)
    with pytest.raises(ValueError, match="`target` must be class indices"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CALLS[name](model, images, target=17)
    _assert_same(before, _snapshot(model, images))


def test_training_mode_is_warned_about():
    model = _model_with_state(partly_training=True)
    with pytest.warns(
        UserWarning, match="ResNetStyle is in training mode: dropout and batch statistics make attribution maps random"
    ):
        F.saliency(model, torch.randn(2, 3, 12, 10))


def test_maps_computed_under_inference_mode_equal_those_with_grad():
    model = _model_with_state(partly_training=False)
    images = torch.randn(2, 3, 12, 10)
    for name in ("grad_cam", "saliency", "integrated_gradients", "guided_backprop", "deconvnet", "guided_grad_cam"):
        plain = CALLS[name](model, images)
        with torch.inference_mode():
            inference_images = images.clone()
            under_inference = CALLS[name](model, inference_images)
        plain, under_inference = (r[0] if isinstance(r, tuple) else r for r in (plain, under_inference))
        torch.testing.assert_close(under_inference, plain)
