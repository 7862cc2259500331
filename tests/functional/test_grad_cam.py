"""grad_cam: against Captum's LayerGradCam, against hand-computed CAM, layer choice and errors."""

from __future__ import annotations

import re

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from lightning_xai.functional import find_grad_cam_layer, grad_cam
from tests.conftest import DEVICES, build_model

LAYERS = [
    ("tiny", "conv2"),
    ("tiny", "act1"),
    ("small_cnn", "features.3"),
    ("resnet", "layer4"),
    ("resnet", "layer2.0.bn2"),
]


@pytest.mark.parametrize(("model_name", "layer_name"), LAYERS)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_captum(model_name, layer_name, relu, device, images):
    model = build_model(model_name)
    target = torch.tensor([4, 0, 2])
    ours = grad_cam(model.to(device), images.to(device), target, layer=layer_name, relu=relu)
    model = model.cpu()
    layer = model.get_submodule(layer_name)
    raw = LayerGradCam(model, layer).attribute(images, target=target, relu_attributions=relu)
    reference = LayerAttribution.interpolate(raw, (12, 10), "bilinear")
    torch.testing.assert_close(ours.cpu(), reference, rtol=1e-4, atol=1e-5)
    low_res = grad_cam(model, images, target, layer=layer, relu=relu, upsample=False)
    torch.testing.assert_close(low_res, raw, rtol=1e-4, atol=1e-5)


def test_hand_computed_cam_for_global_average_pooling():
    # f = W . mean_hw(A) + b, so dScore/dA = W[t] / (h w) everywhere and Grad-CAM = sum_c W[t, c] A_c / (h w).
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    image = torch.rand(1, 1, 5, 5)
    activations = conv(image).detach()
    expected = (model[3].weight[1].detach().view(3, 1, 1) * activations[0]).sum(dim=0) / 25
    ours = grad_cam(model, image, 1, layer=conv, relu=False)
    torch.testing.assert_close(ours[0, 0], expected)


def test_default_layer_is_the_last_4d_output_larger_than_1x1(images):
    assert find_grad_cam_layer(build_model("resnet"), images) == "layer4"
    assert find_grad_cam_layer(build_model("small_cnn"), images) == "features"
    assert find_grad_cam_layer(build_model("tiny"), images) == "pool"  # 2x2 output
    model = build_model("resnet")
    torch.testing.assert_close(grad_cam(model, images), grad_cam(model, images, layer="layer4"))


def test_the_default_layer_is_searched_once_per_model_structure_and_input_size(images):
    model = build_model("small_cnn")
    forwards: list[int] = []
    model.register_forward_pre_hook(lambda _module, _inputs: forwards.append(1))
    first = grad_cam(model, images, 1)
    assert len(forwards) == 2  # the search's traced pass, then the map's pass
    torch.testing.assert_close(grad_cam(model, images, 1), first)
    assert len(forwards) == 3  # remembered: no second search
    grad_cam(model, images[..., :8, :8], 1)
    assert len(forwards) == 5  # another input size: searched again
    model.pool = nn.Sequential(nn.Conv2d(16, 16, 1), model.pool).eval()  # now a later 4-D layer: "pool.0"
    auto, explicit = grad_cam(model, images, 1, relu=False), grad_cam(model, images, 1, relu=False, layer="pool.0")
    assert auto.abs().max() > 0
    torch.testing.assert_close(auto, explicit)  # not the remembered "features"


def test_in_place_ops_after_the_layer_do_not_corrupt_the_map(images):
    # conv1 is followed by ReLU(inplace=True), which overwrites conv1's output buffer.
    model = build_model("tiny")
    ours = grad_cam(model, images, 1, layer="conv1", relu=False)
    reference = LayerAttribution.interpolate(
        LayerGradCam(model, model.conv1).attribute(images, target=1, relu_attributions=False), (12, 10), "bilinear"
    )
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_batching_gives_the_same_maps(images):
    model = build_model("resnet")
    target = [1, 2, 3]
    torch.testing.assert_close(
        grad_cam(model, images, target, batch_size=1), grad_cam(model, images, target), rtol=1e-5, atol=1e-6
    )


def test_compiled_model_uses_the_original_modules(images):
    model = build_model("small_cnn")
    compiled = torch.compile(model)
    assert find_grad_cam_layer(compiled, images) == "features"
    torch.testing.assert_close(
        grad_cam(compiled, images, layer="features.3"), grad_cam(model, images, layer="features.3")
    )


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))


def test_bad_layers_raise_clear_errors(images):
    model = build_model("tiny")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`layer` must name a submodule of the model (conv1, act1, conv2, act2, pool, fc), got 'conv9'."
        ),
    ):
        grad_cam(model, images, layer="conv9")
    message = (
        "`layer` (Linear) must produce a 4-D output [N, C, h, w], tokens [N, S, C] or a channels-last map [N, h, w, C] "
        "for Grad-CAM, got [3, 5]; choose another `layer=` or pass `reshape=` a callable that returns [N, C, h, w]."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        grad_cam(model, images, layer="fc")
    with pytest.raises(
        ValueError, match=re.escape("`layer` must be a submodule of the model, got a Conv2d that is not part of it.")
    ):
        grad_cam(model, images, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(
        ValueError, match=re.escape("`layer` (Conv2d) must run exactly once per forward pass, but it ran 2 times.")
    ):
        grad_cam(_Twice().eval(), images, layer="conv")
    with pytest.raises(
        TypeError, match=re.escape("`layer` must be an nn.Module, a dotted module name or None, got int.")
    ):
        grad_cam(model, images, layer=3)
    with pytest.raises(
        TypeError, match=re.escape("`model` must be a torch.nn.Module (Grad-CAM needs its layers), got function.")
    ):
        grad_cam(lambda x: x, images)


def test_model_without_a_4d_layer_is_rejected():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Grad-CAM needs a layer with a 4-D output [N, C, h, w] larger than 1x1, and Sequential has none"
        ),
    ):
        grad_cam(mlp, torch.rand(2, 3, 2, 2))
