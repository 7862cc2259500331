"""integrated_gradients and expected_gradients: against Captum, by hand, by convergence, and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, IntegratedGradients

from lightning_xai.functional import constant_baseline, expected_gradients, integrated_gradients
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


def _exact_expected_gradients(model, images, target, references):
    """Expected gradients with alpha integrated exactly: the mean over references of fine IG."""
    parts = [IntegratedGradients(model).attribute(images, baselines=r.expand_as(images).contiguous(), target=target, n_steps=64) for r in references]
    return torch.stack(parts).mean(dim=0)


def test_expected_gradients_and_gradient_shap_converge_to_the_same_map(images):
    model = build_model("tiny")
    references = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    exact = _exact_expected_gradients(model, images, 3, references)
    ours = expected_gradients(model, images, 3, baselines=references, n_samples=3000, generator=torch.Generator().manual_seed(1))
    np.random.seed(0)
    captum = GradientShap(model).attribute(images, baselines=references, target=3, n_samples=3000, stdevs=0.0)
    scale = exact.abs().max()
    assert (ours - exact).abs().max() / scale < 0.08
    assert (captum - exact).abs().max() / scale < 0.08
    assert (ours - captum).abs().max() / scale < 0.1


def test_expected_gradients_completeness_gap_shrinks_with_more_samples(images):
    model = build_model("resnet")
    references = torch.randn(8, 3, 12, 10, generator=torch.Generator().manual_seed(2))
    gaps = [
        expected_gradients(model, images, 0, baselines=references, n_samples=n, return_delta=True)[1].mean().item()
        for n in (2, 32, 512)
    ]
    assert gaps[0] > gaps[1] > gaps[2], gaps


def test_expected_gradients_gap_uses_the_drawn_baselines(linear_model):
    # Linear model: each draw contributes (x - x') W exactly, so the gap is zero for any draws.
    images, references = torch.randn(2, 3, 2, 2), torch.randn(5, 3, 2, 2)
    for baselines in (references, "uniform", "gaussian", "blur"):
        _, gap = expected_gradients(linear_model, images, 1, baselines=baselines, n_samples=7, batch_size=3, return_delta=True)
        assert gap.max() < 1e-4, baselines


@pytest.mark.parametrize("baselines", ["references", "uniform", "gaussian"])
def test_expected_gradients_reproducible_and_independent_of_batch_size(baselines, images):
    # Noise is drawn in fixed blocks in sample order: 70 samples span two blocks of 64, whatever the batches.
    model = build_model("small_cnn")
    chosen = torch.randn(6, 3, 12, 10) if baselines == "references" else baselines
    runs = [
        expected_gradients(model, images, baselines=chosen, n_samples=70, batch_size=size, generator=torch.Generator().manual_seed(7))
        for size in (1, 9, 64, 512)
    ]
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["uniform", "gaussian", "blur"])
def test_named_distributions_give_finite_maps_of_the_input_shape(name, images):
    attributions = expected_gradients(build_model("tiny"), images, baselines=name, n_samples=6)
    assert attributions.shape == images.shape and torch.isfinite(attributions).all() and attributions.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"baselines": torch.zeros(4, 3, 5, 5)}, ValueError, "`baselines` tensor must be a reference set [M, C, H, W] = [M, 3, 12, 10] with M >= 1, got shape [4, 3, 5, 5]."),
        ({"baselines": "noise"}, ValueError, "`baselines` must be a reference tensor [M, C, H, W] or one of ['uniform', 'gaussian', 'blur'], got 'noise'."),
        ({"baselines": "gaussian", "sigma": 0.0}, ValueError, "`sigma` must be a positive number or None, got 0.0."),
        ({"baselines": "uniform", "value_range": (1.0, 0.0)}, ValueError, "`value_range` must be None or a pair (low, high) with low < high, got (1.0, 0.0)."),
        ({"baselines": "uniform", "n_samples": -2}, ValueError, "`n_samples` must be an int >= 1, got -2."),
        ({"baselines": "uniform", "target": [1, 2, 9]}, ValueError, "`target` must be class indices in [0, 4] for a model with 5 outputs, got [9]."),
    ],
)
def test_expected_gradients_bad_arguments(kwargs, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        expected_gradients(build_model("tiny"), images, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "simpson"}, ValueError, "`method` must be one of ['gausslegendre', 'riemann_trapezoid', 'riemann_left', 'riemann_right', 'riemann_middle'], got 'simpson'."),
        ({"method": "riemann_left", "n_steps": 1}, ValueError, "`n_steps` must be >= 2 for the Riemann rules, got 1."),
        ({"baseline": torch.zeros(2, 2)}, ValueError, "`baseline` tensor must have shape [], [C], [C, H, W] or [N, C, H, W] = [], [3], [3, 12, 10] or [3, 3, 12, 10] for inputs of shape [3, 3, 12, 10], got [2, 2]."),
        ({"baseline": [0.0]}, TypeError, "`baseline` must be a number, a tensor or one of ['zero', 'mean', 'blur', 'max_distance'], got list."),
        ({"target": torch.tensor([0.5, 1.0, 2.0])}, TypeError, "`target` tensor must hold integers, got dtype torch.float32."),
    ],
)
def test_integrated_gradients_bad_arguments(kwargs, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        integrated_gradients(build_model("tiny"), images, **kwargs)
