"""saliency and smooth_grad: against Captum, against hand-computed gradients, and errors."""

from __future__ import annotations

import re

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency

from lightning_xai.functional import input_gradients, saliency, smooth_grad
from tests.conftest import DEVICES, MODEL_NAMES, build_model


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_saliency_matches_captum(model_name, absolute, device, images):
    model = build_model(model_name)
    ours = saliency(model.to(device), images.to(device), [1, 2, 0], absolute=absolute, batch_size=2)
    reference = Saliency(model.cpu()).attribute(images.clone().requires_grad_(), target=[1, 2, 0], abs=absolute)
    torch.testing.assert_close(ours.cpu(), reference, rtol=1e-5, atol=1e-6)


def test_saliency_of_a_linear_model_is_its_weights(linear_model):
    weights = linear_model[1].weight.detach()
    images = torch.randn(2, 3, 2, 2)
    ours = saliency(linear_model, images, [0, 1], absolute=False)
    torch.testing.assert_close(ours.flatten(1), weights[[0, 1]])


def test_input_gradients_of_a_model_that_ignores_its_input_are_zero():
    constant = torch.nn.Linear(1, 2)
    grads, _ = input_gradients(
        lambda x: constant(torch.ones(x.shape[0], 1)), torch.rand(2, 1, 3, 3), torch.tensor([0, 1])
    )
    assert torch.equal(grads, torch.zeros(2, 1, 3, 3))


@pytest.mark.parametrize("absolute", [True, False])
def test_smooth_grad_converges_to_captum_noise_tunnel(absolute, images):
    # Both estimate E[|grad f(x + noise)|]; with 2000 draws each they agree to Monte Carlo error.
    model = build_model("tiny")
    ours = smooth_grad(model, images, 1, n_samples=2000, stdev=0.5, stdev_mode="absolute", absolute=absolute)
    torch.manual_seed(0)
    reference = NoiseTunnel(Saliency(model)).attribute(
        images, target=1, nt_type="smoothgrad", nt_samples=2000, nt_samples_batch_size=500, stdevs=0.5, abs=absolute
    )
    error = (ours - reference).abs().max() / reference.abs().max()
    assert error < 0.05, f"relative difference {error:.3f}"


def test_smooth_grad_of_a_linear_model_is_exact(linear_model):
    images = torch.randn(2, 3, 2, 2)
    ours = smooth_grad(linear_model, images, 0, n_samples=5, stdev=1.0, absolute=False)
    torch.testing.assert_close(ours.flatten(1), linear_model[1].weight.detach()[[0, 0]])


def test_smooth_grad_noise_scales_with_the_image_range():
    # A quadratic score x^2 has gradient 2x; with noise the mean |2(x+e)| grows with the noise level.
    def square(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(x**2).sum(dim=(1, 2, 3))[:, None], torch.zeros(x.shape[0], 1)], dim=1)

    small = torch.zeros(1, 1, 4, 4)
    small[..., 0, 0] = 0.1
    big = small * 100
    ratio = (
        smooth_grad(square, big, 0, n_samples=200, stdev=0.5).mean()
        / smooth_grad(square, small, 0, n_samples=200, stdev=0.5).mean()
    )
    assert 50 < ratio < 200


def test_smooth_grad_does_not_depend_on_the_batch_size(images):
    model = build_model("tiny")
    runs = [
        smooth_grad(model, images, 1, n_samples=70, batch_size=size, generator=torch.Generator().manual_seed(3))
        for size in (1, 9, 64, 512)
    ]
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-5, atol=1e-6)


def test_smooth_grad_is_reproducible_with_a_generator(images):
    model = build_model("tiny")
    first = smooth_grad(model, images, n_samples=8, generator=torch.Generator().manual_seed(3))
    second = smooth_grad(model, images, n_samples=8, generator=torch.Generator().manual_seed(3))
    other = smooth_grad(model, images, n_samples=8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and not torch.equal(first, other)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("absolute", [True, False])
def test_noise_tunnel_kinds_equal_captum_given_the_same_noise(model_name, kind, absolute):
    # Captum draws its noise as torch.normal(0, stdev) from the global RNG, sample-major per image;
    # ours comes from the generator in blocks of 64 samples in the same order. With the same seed
    # and 2 x 32 = 64 samples both see the same noise, so the maps agree up to float summation order.
    model, images = build_model(model_name), torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    ours = smooth_grad(
        model,
        images,
        [1, 3],
        n_samples=32,
        stdev=0.4,
        stdev_mode="absolute",
        absolute=absolute,
        kind=kind,
        generator=torch.Generator().manual_seed(5),
        batch_size=13,
    )
    torch.manual_seed(5)
    reference = NoiseTunnel(Saliency(model)).attribute(
        images, target=torch.tensor([1, 3]), nt_type=kind, nt_samples=32, stdevs=0.4, abs=absolute
    )
    assert reference.abs().max() > 0
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_noise_tunnel_kinds_by_hand_on_a_quadratic_score():
    # f(x) = sum x^2: g = 2 (x + e), e ~ N(0, s^2): E[g] = 2x, E[g^2] = 4x^2 + 4s^2, Var[g] = 4s^2.
    def square(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(x**2).sum(dim=(1, 2, 3))[:, None], torch.zeros(x.shape[0], 1)], dim=1)

    x, s = torch.tensor([[[[0.5, -1.0, 2.0]]]]), 0.3
    run = {
        kind: smooth_grad(square, x, 0, n_samples=20000, stdev=s, stdev_mode="absolute", absolute=False, kind=kind)
        for kind in ("smoothgrad", "smoothgrad_sq", "vargrad")
    }
    torch.testing.assert_close(run["smoothgrad"], 2 * x, atol=0.02, rtol=0)
    torch.testing.assert_close(run["smoothgrad_sq"], 4 * x**2 + 4 * s**2, atol=0.08, rtol=0.02)
    torch.testing.assert_close(run["vargrad"], torch.full_like(x, 4 * s**2), atol=0.02, rtol=0.03)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kind": "var"}, ValueError, "`kind` must be one of ['smoothgrad', 'smoothgrad_sq', 'vargrad'], got 'var'."),
        ({"n_samples": 0}, ValueError, "`n_samples` must be an int >= 1, got 0."),
        ({"stdev": -1.0}, ValueError, "`stdev` must be a number >= 0, got -1.0."),
        ({"stdev_mode": "relative"}, ValueError, "`stdev_mode` must be one of ['range', 'absolute'], got 'relative'."),
        ({"generator": 3}, TypeError, "`generator` must be a torch.Generator or None, got int."),
    ],
)
def test_smooth_grad_bad_arguments(kwargs, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        smooth_grad(build_model("tiny"), images, **kwargs)


def test_integer_images_are_rejected():
    with pytest.raises(TypeError, match=re.escape("`inputs` must be a floating-point tensor, got dtype torch.uint8.")):
        saliency(build_model("tiny"), torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
