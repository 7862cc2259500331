"""guided_backprop, deconvnet and guided_grad_cam: against Captum, by hand, and errors."""

from __future__ import annotations

import re

import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam
from torch import nn

from lightning_xai.functional import deconvnet, guided_backprop, guided_grad_cam, input_gradients
from tests.conftest import DEVICES, MODEL_NAMES, build_model

# A conv layer each model's Grad-CAM can explain ("tiny" has an in-place ReLU, "resnet" in-place ReLUs and torch.relu calls).
LAYERS = {"tiny": "conv2", "small_cnn": "features.3", "resnet": "layer2"}
TARGETS = torch.tensor([2, 0, 4])


def assert_equal_to_reference(mine: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal to 1e-5 of the reference's largest magnitude (the maps are small: an absolute 1e-5 would say little)."""
    scale = reference.abs().max()
    assert scale > 0
    torch.testing.assert_close(mine / scale, reference / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize(
    ("ours", "captum"), [(guided_backprop, GuidedBackprop), (deconvnet, Deconvolution)], ids=["guided", "deconvnet"]
)
@pytest.mark.parametrize("device", DEVICES)
def test_modified_relu_gradients_match_captum(model_name, ours, captum, device, images):
    model = build_model(model_name)
    mine = ours(model.to(device), images.to(device), TARGETS.to(device), batch_size=2).cpu()
    reference = captum(model.cpu()).attribute(images, target=TARGETS)
    assert_equal_to_reference(mine, reference)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("interpolate", ["bilinear", "nearest"])
def test_guided_grad_cam_matches_captum(model_name, interpolate, images):
    model = build_model(model_name)
    layer = LAYERS[model_name]
    mine = guided_grad_cam(model, images, TARGETS, layer=layer, interpolate=interpolate, batch_size=2)
    reference = GuidedGradCam(model, model.get_submodule(layer)).attribute(
        images, target=TARGETS, interpolate_mode=interpolate
    )
    assert_equal_to_reference(mine, reference)


def _hand_net() -> nn.Module:
    # x = [1, -1]; hidden pre-activations [1, -1, 1] (the middle unit is off); score weights [3, 5, -1].
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), nn.ReLU(inplace=True), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[2.0, 1.0], [1.0, 2.0], [1.0, 0.0]]))
        net[3].weight.copy_(torch.tensor([[3.0, 5.0, -1.0]]))
    return net.eval()


def test_the_three_relu_rules_by_hand():
    x = torch.tensor([[[[1.0, -1.0]]]])
    # plain: units 1 and 3 pass [3, -1]; guided: only the positive, active unit 1 passes 3;
    # DeconvNet: the positive gradients 3 and 5 pass, whether the unit was on or off.
    plain, _ = input_gradients(_hand_net(), x, torch.tensor([0]))
    assert plain.flatten().tolist() == [3 * 2 - 1 * 1, 3 * 1 - 1 * 0]
    assert guided_backprop(_hand_net(), x, 0).flatten().tolist() == [6.0, 3.0]
    assert deconvnet(_hand_net(), x, 0).flatten().tolist() == [3 * 2 + 5 * 1, 3 * 1 + 5 * 2]


def test_functional_relu_keeps_its_plain_gradient():
    class FunctionalRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(2, 3, bias=False), nn.Linear(3, 1, bias=False)
            self.first.weight, self.second.weight = _hand_net()[1].weight, _hand_net()[3].weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(torch.relu(self.first(x.flatten(1))))

    x, model = torch.tensor([[[[1.0, -1.0]]]]), FunctionalRelu().eval()
    plain, _ = input_gradients(model, x, torch.tensor([0]))
    assert plain.flatten().tolist() == [5.0, 3.0]
    torch.testing.assert_close(guided_backprop(model, x, 0), plain)
    torch.testing.assert_close(deconvnet(model, x, 0), plain)


def test_maps_do_not_depend_on_the_batch_size(images):
    model = build_model("small_cnn")
    torch.testing.assert_close(
        guided_backprop(model, images, batch_size=1), guided_backprop(model, images, batch_size=64)
    )


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m, x: guided_backprop(lambda y: m(y), x),
            TypeError,
            "`model` must be a torch.nn.Module (its ReLU modules are modified), got function.",
        ),
        (
            lambda m, x: deconvnet(m, x, 7),
            ValueError,
            "`target` must be class indices in [0, 4] for a model with 5 outputs, got [7, 7, 7].",
        ),
        (
            lambda m, x: guided_grad_cam(m, x, layer="conv2", interpolate="cubic"),
            ValueError,
            "`interpolate` must be one of ['bilinear', 'nearest'], got 'cubic'.",
        ),
    ],
)
def test_bad_arguments(call, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        call(build_model("tiny"), images)
