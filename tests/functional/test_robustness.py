"""input_invariance and fragility: known answers (Kindermans et al., Ghorbani et al.), no trace, errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lightning_xai import functional as F
from lightning_xai.functional.robustness import fragility, input_invariance, shift_compensated_copy
from tests.conftest import MODEL_NAMES, build_model

TARGETS = torch.tensor([0, 1, 2])
SALIENCY = lambda m, x, t: F.saliency(m, x, t)
GRADIENT_X_INPUT = lambda m, x, t: F.saliency(m, x, t, absolute=False) * x


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("shift", [-1.0, torch.tensor([0.5, -0.2, 2.0])])
def test_the_shifted_copy_gives_the_same_outputs_and_leaves_the_model_alone(model_name, shift, images):
    # "tiny" starts with a zero-padded conv with bias, "resnet" with a zero-padded conv without bias.
    model = build_model(model_name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    copied = shift_compensated_copy(model, images, shift)
    shifted = images + (shift.view(1, -1, 1, 1) if isinstance(shift, torch.Tensor) else shift)
    with torch.no_grad():
        torch.testing.assert_close(copied(shifted), model(images), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in copied.modules())  # an eval-mode model gives an eval-mode copy


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_every_padding_mode_is_compensated(padding_mode):
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=2, padding_mode=padding_mode, groups=2), nn.Flatten(), nn.LazyLinear(3)
    ).eval()
    x = torch.randn(2, 2, 6, 5)
    net(x)
    with torch.no_grad():
        torch.testing.assert_close(
            shift_compensated_copy(net, x, torch.tensor([1.5, -3.0]))(x + torch.tensor([1.5, -3.0]).view(1, 2, 1, 1)),
            net(x),
            rtol=1e-5,
            atol=1e-5,
        )


def test_gradients_are_input_invariant_and_gradient_times_input_is_not(linear_model):
    # f = W x + b: the gradient W does not see the shift, gradient x input = W * x moves with it.
    images = torch.rand(3, 3, 2, 2)
    plain = input_invariance(linear_model, images, torch.tensor([0, 1, 0]), SALIENCY, shift=-1.0)
    assert plain.invariant and not plain.changed.any() and torch.allclose(plain.rank_correlation, torch.ones(3))
    assert plain.output_difference < 1e-5
    times_input = input_invariance(linear_model, images, torch.tensor([0, 1, 0]), GRADIENT_X_INPUT, shift=-1.0)
    assert not times_input.invariant and times_input.changed.all()
    # the change W * (x - 1) - W * x = -W, relative to max |W * x|
    weights = linear_model[1].weight.detach()[[0, 1, 0]]
    expected = (weights * 1.0).abs().amax(dim=1) / (weights * images.flatten(1)).abs().amax(dim=1)
    torch.testing.assert_close(times_input.max_difference, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_on_conv_nets_saliency_and_grad_cam_are_invariant_integrated_gradients_from_zero_is_not(model_name, images):
    model = build_model(model_name)
    assert input_invariance(model, images, TARGETS, SALIENCY).invariant
    assert input_invariance(model, images, TARGETS, lambda m, x, t: F.grad_cam(m, x, t)).invariant
    assert not input_invariance(
        model, images, TARGETS, lambda m, x, t: F.integrated_gradients(m, x, t, n_steps=8)
    ).invariant


def test_a_model_that_transforms_its_input_first_is_refused(images):
    class Normalizing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_model("tiny")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x * 2)

    message = "`model`'s first layer (net.conv1: Conv2d) must receive the input images unchanged (up to a flatten) for its bias to absorb the shift; it receives something computed from them."
    with pytest.raises(ValueError, match=re.escape(message)):
        input_invariance(Normalizing().eval(), images, TARGETS, SALIENCY)


def test_fragility_of_a_linear_model_s_gradient_is_nil_and_gradient_times_input_moves(linear_model):
    images = torch.rand(4, 3, 2, 2) + 0.5
    targets = torch.tensor([0, 1, 0, 1])
    robust = fragility(linear_model, images, targets, SALIENCY, epsilon=0.2, steps=5)
    assert robust.prediction_kept.all() and torch.equal(robust.top_k_overlap, torch.ones(4))
    assert torch.allclose(robust.rank_correlation, torch.ones(4))
    tiny = fragility(linear_model, images, targets, GRADIENT_X_INPUT, epsilon=1e-6, steps=5, k=0.25)
    moved = fragility(linear_model, images, targets, GRADIENT_X_INPUT, epsilon=0.4, steps=20, k=0.25)
    assert torch.equal(tiny.top_k_overlap, torch.ones(4))
    assert moved.top_k_overlap.mean() < 1 and moved.rank_correlation.mean() < tiny.rank_correlation.mean()
    assert ((moved.perturbed - images).abs().amax(dim=(1, 2, 3)) <= 0.4 + 1e-6).all()


def test_fragility_keeps_the_prediction_and_clips_to_the_value_range(images):
    model = build_model("small_cnn")
    result = fragility(
        model,
        images,
        TARGETS,
        SALIENCY,
        epsilon=0.05,
        steps=3,
        value_range=(-1.0, 1.0),
        generator=torch.Generator().manual_seed(3),
    )
    with torch.no_grad():
        same = model(result.perturbed).argmax(dim=1) == model(images).argmax(dim=1)
    assert same[result.prediction_kept].all()
    changed = ~torch.isclose(result.perturbed, images)
    assert (result.perturbed[changed].abs() <= 1.0).all()


def test_robustness_checks_leave_no_trace(images):
    model = build_model("resnet")
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    before = (
        [p.grad.clone() for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        torch.get_rng_state(),
    )
    with torch.inference_mode():
        input_invariance(model, images, TARGETS, SALIENCY)
        fragility(model, images, TARGETS, SALIENCY, epsilon=0.1, steps=2)
    assert all(torch.equal(a, p.grad) for a, p in zip(before[0], model.parameters()))
    assert all(torch.equal(before[1][k], v) for k, v in model.state_dict().items())
    assert torch.equal(before[2], torch.get_rng_state())
    assert all(len(m._forward_pre_hooks) == 0 and len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m, x: input_invariance(m, x, TARGETS, SALIENCY, shift=torch.ones(2)),
            ValueError,
            "`shift` must be a number or a tensor of one value per channel [3], got [2].",
        ),
        (
            lambda m, x: input_invariance(m, x, TARGETS, SALIENCY, tolerance=0),
            ValueError,
            "`tolerance` must be a positive number, got 0.",
        ),
        (
            lambda m, x: fragility(m, x, TARGETS, SALIENCY, epsilon=0),
            ValueError,
            "`epsilon` must be a positive number, got 0.",
        ),
        (
            lambda m, x: fragility(m, x, TARGETS, SALIENCY, epsilon=0.1, steps=0),
            ValueError,
            "`steps` must be an int >= 1, got 0.",
        ),
        (
            lambda m, x: fragility(m, x, TARGETS, SALIENCY, epsilon=0.1, generator=1),
            TypeError,
            "`generator` must be a torch.Generator or None, got int.",
        ),
    ],
)
def test_bad_arguments(call, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        call(build_model("tiny"), images)
