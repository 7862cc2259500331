"""integrated_gradients: against Captum, by hand, and errors."""

from __future__ import annotations

import re

import pytest
import torch
from captum.attr import IntegratedGradients

from lightning_xai.functional import constant_baseline, integrated_gradients
from tests.conftest import DEVICES, MODEL_NAMES, build_model

METHODS = ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("device", DEVICES)
def test_integrated_gradients_matches_captum(model_name, method, device, images):
    model = build_model(model_name)
    target = torch.tensor([2, 0, 4])
    ours, gap = integrated_gradients(
        model.to(device), images.to(device), target, n_steps=16, method=method, batch_size=10, return_delta=True
    )
    reference, delta = IntegratedGradients(model.cpu()).attribute(
        images, target=target, n_steps=16, method=method, return_convergence_delta=True
    )
    torch.testing.assert_close(ours.cpu(), reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gap.cpu(), delta.abs(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("baseline", [0.5, "zero", "max_distance", "blur", "mean", torch.tensor([0.1, 0.0, -0.1])])
def test_integrated_gradients_baselines_match_captum_given_the_same_tensor(baseline, images):
    model = build_model("resnet")
    ours = integrated_gradients(model, images, 1, baseline=baseline, n_steps=8)
    start = constant_baseline(baseline, images).expand_as(images).contiguous()
    reference = IntegratedGradients(model).attribute(images, baselines=start, target=1, n_steps=8)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_max_distance_baseline_is_the_far_end_of_the_range():
    images = torch.tensor([[[[0.1, 0.9], [0.5, 0.6]]]])
    start = constant_baseline("max_distance", images, value_range=(0.0, 1.0))
    assert start.flatten().tolist() == [1.0, 0.0, 1.0, 0.0]


def test_integrated_gradients_of_a_linear_model_is_exact(linear_model):
    # For f = W x + b, IG from x' is (x - x') * W[t] with zero completeness gap, for any rule and step count.
    images, start = torch.randn(2, 3, 2, 2), torch.full((3,), 0.25)
    weights = linear_model[1].weight.detach()
    attributions, gap = integrated_gradients(linear_model, images, [1, 0], baseline=start, n_steps=3, return_delta=True)
    expected = (images - 0.25).flatten(1) * weights[[1, 0]]
    torch.testing.assert_close(attributions.flatten(1), expected)
    assert gap.max() < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"method": "simpson"},
            ValueError,
            "`method` must be one of ['gausslegendre', 'riemann_trapezoid', 'riemann_left', 'riemann_right', 'riemann_middle'], got 'simpson'.",
        ),
        ({"method": "riemann_left", "n_steps": 1}, ValueError, "`n_steps` must be >= 2 for the Riemann rules, got 1."),
        (
            {"baseline": torch.zeros(2, 2)},
            ValueError,
            "`baseline` tensor must have shape [], [C], [C, H, W] or [N, C, H, W] = [], [3], [3, 12, 10] or [3, 3, 12, 10] for inputs of shape [3, 3, 12, 10], got [2, 2].",
        ),
        (
            {"baseline": [0.0]},
            TypeError,
            "`baseline` must be a number, a tensor or one of ['zero', 'mean', 'blur', 'max_distance'], got list.",
        ),
        (
            {"target": torch.tensor([0.5, 1.0, 2.0])},
            TypeError,
            "`target` tensor must hold integers, got dtype torch.float32.",
        ),
    ],
)
def test_integrated_gradients_bad_arguments(kwargs, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        integrated_gradients(build_model("tiny"), images, **kwargs)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_without_multiplying_by_inputs_matches_captum(model_name, method, images):
    model = build_model(model_name)
    ours = integrated_gradients(
        model, images, [2, 0, 4], baseline=0.3, n_steps=12, method=method, multiply_by_inputs=False, batch_size=7
    )
    reference = IntegratedGradients(model, multiply_by_inputs=False).attribute(
        images, baselines=0.3, target=[2, 0, 4], n_steps=12, method=method
    )
    scale = reference.abs().max()
    torch.testing.assert_close(ours / scale, reference / scale, rtol=0, atol=1e-5)


def test_integrated_gradients_without_multiplying_by_inputs_of_a_linear_model_is_its_weights(linear_model):
    images = torch.randn(2, 3, 2, 2)
    ours = integrated_gradients(linear_model, images, [1, 0], baseline="mean", n_steps=3, multiply_by_inputs=False)
    torch.testing.assert_close(ours.flatten(1), linear_model[1].weight.detach()[[1, 0]])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"multiply_by_inputs": "yes"}, TypeError, "`multiply_by_inputs` must be a bool, got str."),
        (
            {"multiply_by_inputs": False, "return_delta": True},
            ValueError,
            "`return_delta=True` needs `multiply_by_inputs=True`: the completeness gap is defined for attributions multiplied by (inputs - baselines), got multiply_by_inputs=False.",
        ),
    ],
)
def test_multiply_by_inputs_is_checked(kwargs, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        integrated_gradients(build_model("tiny"), images, **kwargs)
