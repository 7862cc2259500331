"""occlusion: against Captum, against hand-computed values, and its argument checks."""

from __future__ import annotations

import re

import pytest
import torch
from captum.attr import Occlusion

from lightning_xai.functional import occlusion
from lightning_xai.functional.baselines import constant_baseline
from lightning_xai.functional.occlusion import window_counts
from tests.conftest import DEVICES, MODEL_NAMES, build_model

CASES = [
    ((3, 3), (1, 1), 0.0),
    ((4, 4), (2, 2), 0.5),
    ((5, 3), (3, 2), -1.0),  # windows that do not tile the image evenly
    ((12, 10), (1, 1), 0.0),  # one window covering everything
    ((1, 1), (1, 1), 0.0),
]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize(("window", "stride", "baseline"), CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_captum(model_name, window, stride, baseline, device, images):
    model = build_model(model_name)
    target = torch.tensor([0, 3, 1])
    ours = occlusion(
        model.to(device), images.to(device), target, window=window, stride=stride, baseline=baseline, batch_size=7
    )
    reference = Occlusion(model.cpu()).attribute(
        images, target=target, sliding_window_shapes=(3, *window), strides=(3, *stride), baselines=baseline
    )
    assert ours.shape == (3, 1, 12, 10)
    torch.testing.assert_close(ours.cpu(), reference[:, :1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur", "max_distance", torch.tensor([0.1, -0.2, 0.3])])
def test_named_and_tensor_baselines_match_captum_given_the_same_tensor(baseline, images):
    model = build_model("tiny")
    ours = occlusion(model, images, 2, window=4, stride=2, baseline=baseline)
    fill = constant_baseline(baseline, images).expand_as(images).contiguous()
    reference = Occlusion(model).attribute(
        images, target=2, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=fill
    )
    torch.testing.assert_close(ours, reference[:, :1], rtol=1e-5, atol=1e-5)


def test_default_target_is_the_top_class(images):
    model = build_model("tiny")
    top = model(images).argmax(dim=1)
    torch.testing.assert_close(occlusion(model, images, window=4), occlusion(model, images, top, window=4))


def test_result_does_not_depend_on_batch_size(images):
    model = build_model("resnet")
    maps = [occlusion(model, images, 1, window=3, stride=2, batch_size=size) for size in (1, 5, 1000)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[0], maps[2], rtol=1e-5, atol=1e-6)


def test_hand_computed_on_a_linear_model(linear_model):
    # f(x) = W x + b: hiding pixel p (all channels) with baseline 0 drops the score by sum_c W[t, c, p] x[c, p];
    # with 2x2 windows and stride 2 each pixel is covered once, so its value is the drop of its window.
    image = torch.arange(12.0).view(1, 3, 2, 2) / 10
    weights = linear_model[1].weight.detach().view(2, 3, 2, 2)
    per_pixel = occlusion(linear_model, image, 1, window=1, stride=1)
    torch.testing.assert_close(per_pixel[0, 0], (weights[1] * image[0]).sum(dim=0))
    whole = occlusion(linear_model, image, 1, window=2, stride=2)
    torch.testing.assert_close(whole[0, 0], (weights[1] * image[0]).sum().expand(2, 2))


def test_overlapping_windows_average_their_drops(linear_model):
    # 1 x 2 windows with stride 1 on a 2-pixel-wide image: 1 placement per row... use 1x1 height, width 2 → 2x1 placements.
    image = torch.ones(1, 3, 2, 2)
    weights = linear_model[1].weight.detach().view(2, 3, 2, 2)[0].sum(dim=0)  # drop per pixel, target 0
    maps = occlusion(linear_model, image, 0, window=(2, 1), stride=(1, 1))
    torch.testing.assert_close(maps[0, 0], weights.sum(dim=0, keepdim=True).expand(2, 2))


def test_window_counts_follow_captum():
    assert window_counts((10, 10), (4, 4), (4, 4)) == (3, 3)  # ceil(6 / 4) + 1, last window clipped
    assert window_counts((8, 8), (8, 8), (1, 1)) == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"window": 13}, ValueError, "`window` must fit in the image (12x10), got 13x13."),
        ({"window": 0}, ValueError, "`window` must be >= 1 in each dimension, got 0."),
        ({"window": 2.5}, TypeError, "`window` must be an int or a pair of ints (height, width), got 2.5."),
        ({"window": 4, "stride": 0}, ValueError, "`stride` must be >= 1 in each dimension, got 0."),
        (
            {"window": 2, "stride": 3},
            ValueError,
            "`stride` must be at most the window along each axis it does not fill, or pixels are never occluded; "
            "got stride 3 > window 2 in height.",
        ),
        ({"window": 2, "batch_size": 0}, ValueError, "`batch_size` must be an int >= 1, got 0."),
        (
            {"window": 2, "baseline": "black"},
            ValueError,
            "`baseline` must be a number, a tensor or one of ['zero', 'mean', 'blur', 'max_distance'], got 'black'.",
        ),
        (
            {"window": 2, "target": 5},
            ValueError,
            "`target` must be class indices in [0, 4] for a model with 5 outputs, got [5, 5, 5].",
        ),
        ({"window": 2, "target": [0, 1]}, ValueError, "`target` must hold one class per image (3), got 2."),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message, images):
    model = build_model("tiny")
    kwargs = {"target": None, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        occlusion(model, images, **kwargs)


def test_wrong_ndim_is_rejected():
    with pytest.raises(
        ValueError,
        match=re.escape("`inputs` must have 4 dimensions [N, C, H, W], got 3 dimensions with shape [3, 12, 10]."),
    ):
        occlusion(build_model("tiny"), torch.zeros(3, 12, 10), window=2)


def test_model_output_must_be_class_scores(images):
    def not_scores(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))[:, :, None]

    with pytest.raises(
        ValueError,
        match=re.escape(
            "the model must return class scores of shape [N, K] = [3, K] for 3 images, got shape [3, 3, 1]."
        ),
    ):
        occlusion(not_scores, images, window=2)


def test_non_finite_scores_are_reported(images):
    def explodes_when_occluded(x: torch.Tensor) -> torch.Tensor:
        scores = x.flatten(1)[:, :2]
        return torch.where(x.flatten(1)[:, :1] == 0, torch.nan, scores)

    with pytest.raises(
        ValueError, match=re.escape("`forward_fn` returned non-finite scores (NaN or inf) for some occluded images.")
    ):
        occlusion(explodes_when_occluded, images, 0, window=2)
    with pytest.raises(
        ValueError, match=re.escape("the model returned non-finite scores (NaN or inf) for the given inputs.")
    ):
        occlusion(lambda x: torch.full((x.shape[0], 2), torch.inf), images, window=2)


@pytest.mark.parametrize(("baseline", "method"), [("inpaint", "telea"), ("inpaint_ns", "ns")])
def test_inpaint_baselines_fill_each_window_by_inpainting(baseline, method, images):
    # The reference loops over the windows by hand: inpaint the window, score, spread the drop.
    pytest.importorskip("cv2")
    from lightning_xai.functional.baselines import inpaint

    model, image = build_model("small_cnn"), images[:1]
    ours = occlusion(model, image, 3, window=(6, 5), stride=(6, 5), baseline=baseline, batch_size=3)
    expected = torch.zeros(1, 1, 12, 10)
    with torch.no_grad():
        base = model(image)[0, 3]
        for top in (0, 6):
            for left in (0, 5):
                hole = torch.zeros(1, 1, 12, 10, dtype=torch.bool)
                hole[..., top : top + 6, left : left + 5] = True
                occluded = inpaint(image, hole, method=method)
                assert not torch.equal(occluded, image)
                expected[..., top : top + 6, left : left + 5] = base - model(occluded)[0, 3]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_inpaint_of_a_constant_image_changes_nothing():
    # Inpainting a flat image restores it, so no window changes the score (a zero fill would).
    pytest.importorskip("cv2")
    model, flat = build_model("tiny"), torch.full((1, 3, 12, 10), 0.7)
    assert occlusion(model, flat, 1, window=4, baseline="inpaint").abs().max() < 1e-5
    assert occlusion(model, flat, 1, window=4, baseline=0.0).abs().max() > 1e-3


def test_inpaint_without_opencv_names_the_extra_before_any_model_call(monkeypatch, images):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)
    calls = []
    message = "The inpainting baselines ('inpaint', 'inpaint_ns') need OpenCV; install it with pip install \"lightning-xai[inpaint]\" (opencv-python-headless)."
    with pytest.raises(ImportError, match=re.escape(message)):
        occlusion(lambda x: calls.append(x) or torch.zeros(x.shape[0], 2), images, 0, window=4, baseline="inpaint")
    assert not calls
