"""Constant baselines, reference-set checks, noise baselines and the Gaussian blur."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai.functional import constant_baseline, gaussian_blur
from lightning_xai.functional._batching import NoiseStream
from lightning_xai.functional.baselines import noise_baselines_from


def test_blur_keeps_constants_and_total_mass_in_the_interior():
    flat = torch.full((2, 3, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 3.0), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 1.5)
    torch.testing.assert_close(blurred.sum(), torch.tensor(1.0))
    assert blurred[0, 0, 10, 10] == blurred.max() and blurred[0, 0, 10, 10] < 0.1
    torch.testing.assert_close(blurred, blurred.flip(-1))


def test_blur_rejects_a_non_positive_sigma():
    with pytest.raises(ValueError, match=re.escape("`sigma` must be a positive number of pixels, got 0.")):
        gaussian_blur(torch.zeros(1, 1, 4, 4), 0)


def test_constant_baselines_have_the_documented_values():
    images = torch.arange(24.0).view(2, 3, 2, 2)
    assert constant_baseline(0.5, images).item() == 0.5
    assert constant_baseline("zero", images).item() == 0.0
    torch.testing.assert_close(constant_baseline("mean", images), images.mean(dim=(2, 3), keepdim=True))
    per_channel = constant_baseline(torch.tensor([1.0, 2.0, 3.0]), images).expand_as(images)
    assert per_channel[1, 2].unique().tolist() == [3.0]
    low, high = images.amin(dim=(0, 2, 3)), images.amax(dim=(0, 2, 3))
    far = constant_baseline("max_distance", images)
    assert far[0, 0, 0, 0] == high[0] and far[1, 2, 1, 1] == low[2]


def test_noise_baselines_are_drawn_from_the_private_generator_only():
    images = torch.zeros(4, 1, 8, 8)
    state = torch.get_rng_state()
    def draw() -> torch.Tensor:
        unit = NoiseStream(torch.Generator().manual_seed(0), (1, 8, 8), "normal", torch.float32).take(4)
        return noise_baselines_from("gaussian", images, unit, low=torch.tensor(0.0), high=torch.tensor(1.0), sigma=2.0)

    first, second = draw(), draw()
    assert torch.equal(first, second) and torch.equal(state, torch.get_rng_state())
    assert 1.5 < first.std() < 2.5
