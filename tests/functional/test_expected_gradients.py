"""expected_gradients: against Captum, by hand, by convergence, and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, IntegratedGradients

from lightning_xai.functional import expected_gradients
from tests.conftest import build_model


def _exact_expected_gradients(model, images, target, references):
    """Expected gradients with alpha integrated exactly: the mean over references of fine IG."""
    parts = [
        IntegratedGradients(model).attribute(
            images, baselines=r.expand_as(images).contiguous(), target=target, n_steps=64
        )
        for r in references
    ]
    return torch.stack(parts).mean(dim=0)


def test_expected_gradients_and_gradient_shap_converge_to_the_same_map(images):
    model = build_model("tiny")
    references = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    exact = _exact_expected_gradients(model, images, 3, references)
    ours = expected_gradients(
        model, images, 3, baselines=references, n_samples=3000, generator=torch.Generator().manual_seed(1)
    )
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
        _, gap = expected_gradients(
            linear_model, images, 1, baselines=baselines, n_samples=7, batch_size=3, return_delta=True
        )
        assert gap.max() < 1e-4, baselines


@pytest.mark.parametrize("baselines", ["references", "uniform", "gaussian"])
def test_expected_gradients_reproducible_and_independent_of_batch_size(baselines, images):
    # Noise is drawn in fixed blocks in sample order: 70 samples span two blocks of 64, whatever the batches.
    model = build_model("small_cnn")
    chosen = torch.randn(6, 3, 12, 10) if baselines == "references" else baselines
    runs = [
        expected_gradients(
            model, images, baselines=chosen, n_samples=70, batch_size=size, generator=torch.Generator().manual_seed(7)
        )
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
        (
            {"baselines": torch.zeros(4, 3, 5, 5)},
            ValueError,
            "`baselines` tensor must be a reference set [M, C, H, W] = [M, 3, 12, 10] with M >= 1, got shape [4, 3, 5, 5].",
        ),
        (
            {"baselines": "noise"},
            ValueError,
            "`baselines` must be a reference tensor [M, C, H, W] or one of ['uniform', 'gaussian', 'blur'], got 'noise'.",
        ),
        ({"baselines": "gaussian", "sigma": 0.0}, ValueError, "`sigma` must be a positive number or None, got 0.0."),
        (
            {"baselines": "uniform", "value_range": (1.0, 0.0)},
            ValueError,
            "`value_range` must be None or a pair (low, high) with low < high, got (1.0, 0.0).",
        ),
        ({"baselines": "uniform", "n_samples": -2}, ValueError, "`n_samples` must be an int >= 1, got -2."),
        (
            {"baselines": "uniform", "target": [1, 2, 9]},
            ValueError,
            "`target` must be class indices in [0, 4] for a model with 5 outputs, got [9].",
        ),
    ],
)
def test_expected_gradients_bad_arguments(kwargs, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        expected_gradients(build_model("tiny"), images, **kwargs)


def test_expected_gradients_without_multiplying_by_inputs_of_a_linear_model_is_its_weights(linear_model):
    images, references = torch.randn(2, 3, 2, 2), torch.randn(5, 3, 2, 2)
    ours = expected_gradients(linear_model, images, [1, 0], baselines=references, n_samples=7, multiply_by_inputs=False)
    torch.testing.assert_close(ours.flatten(1), linear_model[1].weight.detach()[[1, 0]])


def test_expected_gradients_without_multiplying_by_inputs_converges_to_captum(images):
    # One reference: E[grad f(x' + a (x - x'))] is Captum's IG with multiply_by_inputs=False, and
    # GradientShap(multiply_by_inputs=False) estimates it too; with one reference the global map is
    # exactly the local one times (x - x') for the same draws.
    model = build_model("tiny")
    reference = torch.randn(1, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    exact = IntegratedGradients(model, multiply_by_inputs=False).attribute(
        images, baselines=reference.expand_as(images).contiguous(), target=2, n_steps=64
    )
    local = expected_gradients(model, images, 2, baselines=reference, n_samples=2000, multiply_by_inputs=False)
    np.random.seed(0)
    captum = GradientShap(model, multiply_by_inputs=False).attribute(
        images, baselines=reference, target=2, n_samples=2000, stdevs=0.0
    )
    scale = exact.abs().max()
    assert (local - exact).abs().max() / scale < 0.08
    assert (captum - exact).abs().max() / scale < 0.08
    global_ = expected_gradients(model, images, 2, baselines=reference, n_samples=2000)
    torch.testing.assert_close(global_, local * (images - reference), rtol=1e-4, atol=1e-6)


def test_expected_gradients_gap_needs_multiplying_by_inputs(images):
    message = "`return_delta=True` needs `multiply_by_inputs=True`: the completeness gap is defined for attributions multiplied by (inputs - baselines), got multiply_by_inputs=False."
    with pytest.raises(ValueError, match=re.escape(message)):
        expected_gradients(
            build_model("tiny"), images, baselines="uniform", multiply_by_inputs=False, return_delta=True
        )
