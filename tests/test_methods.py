"""Method settings objects: defaults, validation, delegation to functional, picklability."""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from lightning_xai import ExpectedGradients, GradCAM, IntegratedGradients, Occlusion, Saliency, SmoothGrad
from lightning_xai import functional as F
from lightning_xai.methods import MethodContext, default_methods
from tests.conftest import build_model

ALL = [
    Occlusion(window=4),
    GradCAM(),
    ExpectedGradients(n_samples=4),
    IntegratedGradients(n_steps=4),
    Saliency(),
    SmoothGrad(n_samples=3),
]


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
def test_methods_pickle_and_are_frozen(method):
    assert pickle.loads(pickle.dumps(method)) == method
    with pytest.raises(AttributeError):
        method.batch_size = 3  # type: ignore[misc]


def test_methods_delegate_to_functional():
    model, images, targets = build_model("resnet"), torch.randn(2, 3, 12, 10), torch.tensor([1, 2])
    context = MethodContext(generator=torch.Generator().manual_seed(0), references=torch.randn(4, 3, 12, 10))
    torch.testing.assert_close(
        Occlusion(window=4).attribute(model, images, targets, context), F.occlusion(model, images, targets, window=4)
    )
    torch.testing.assert_close(
        GradCAM(layer="layer3").attribute(model, images, targets, context),
        F.grad_cam(model, images, targets, layer="layer3"),
    )
    expected = F.expected_gradients(
        model, images, targets, baselines=context.references, n_samples=4, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(
        ExpectedGradients(n_samples=4).attribute(
            model, images, targets, MethodContext(torch.Generator().manual_seed(0), context.references)
        ),
        expected,
    )


def test_default_window_scales_with_the_image():
    assert Occlusion().window_for((16, 16)) == (2, 2)
    assert Occlusion().window_for((64, 48)) == (6, 6)  # an eighth of the shorter side up to 64 x 64
    assert Occlusion().window_for((224, 200)) == (37, 37)  # sized by monitor.sizing above: 10 placements per axis
    assert [m.name for m in default_methods()] == ["grad_cam", "occlusion", "expected_gradients"]


def test_expected_gradients_without_training_images_falls_back_to_blur():
    model, images = build_model("tiny"), torch.randn(2, 3, 12, 10)
    context = MethodContext(generator=torch.Generator().manual_seed(0))
    fallback = ExpectedGradients(n_samples=4).attribute(model, images, torch.tensor([0, 1]), context)
    torch.testing.assert_close(fallback, F.expected_gradients(model, images, [0, 1], baselines="blur", n_samples=4))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ExpectedGradients(n_samples=0), ValueError, "`n_samples` must be an int >= 1, got 0."),
        (
            lambda: ExpectedGradients(baselines="zeros"),
            ValueError,
            "`baselines` must be a number, a tensor or one of ['training', 'uniform', 'gaussian', 'blur'], got 'zeros'.",
        ),
        (lambda: IntegratedGradients(method="simpson"), ValueError, "`method` must be one of"),
        (lambda: SmoothGrad(stdev=-1), ValueError, "`stdev` must be a number >= 0, got -1."),
        (lambda: Occlusion(window=(2, 0)), ValueError, "`window` must be >= 1 in each dimension, got (2, 0)."),
    ],
)
def test_settings_are_checked_when_built(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_context_batch_size_prefers_the_method_s_own():
    context = MethodContext(torch.Generator(), batch_sizes={False: 64, True: 32})
    assert context.batch_size(7, backward=True) == 7
    assert context.batch_size(None, backward=True) == 32 and context.batch_size(None, backward=False) == 64
    assert MethodContext(torch.Generator()).batch_size(None, backward=True) is None  # the functions' heuristic then
