"""Deletion/insertion curves and mass-centre ablation: hand-made cases with known answers, and argument checks.

Most tests use a model that looks at ONE pixel: its class-0 logit is ``4 * (channel mean of
that pixel) - 1`` and its class-1 logit is 0, so the class-0 probability is a sigmoid of the
pixel alone. Hiding that pixel gives exactly the score of the fill value there; hiding any
other pixel changes nothing.
"""

from __future__ import annotations

import random
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.functional.baselines import default_blur_sigma, gaussian_blur
from lightning_xai.functional.faithfulness import DEFAULT_FRACTIONS, ablation_curves, auc, mass_center_ablation
from tests.conftest import DEVICES, build_model

ROW, COL = 2, 5
WEIGHT, BIAS = 4.0, -1.0


class OnePixel(nn.Module):
    """Class-0 logit ``WEIGHT * mean_c x[:, c, row, col] + BIAS``, class-1 logit 0."""

    def __init__(self, row: int = ROW, col: int = COL) -> None:
        super().__init__()
        self.row, self.col = row, col
        self.read = nn.Linear(1, 1)
        with torch.no_grad():
            self.read.weight.fill_(WEIGHT)
            self.read.bias.fill_(BIAS)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.read(x[:, :, self.row, self.col].mean(dim=1, keepdim=True))
        return torch.cat([logit, torch.zeros_like(logit)], dim=1)


def _images(n: int = 4, size: int = 8, row: int = ROW, col: int = COL) -> torch.Tensor:
    """Dim images (values in [0, 0.2]) with the model's pixel bright (1.0) in every channel."""
    images = 0.2 * torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))
    images[:, :, row, col] = 1.0
    return images


def _probability(value: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(WEIGHT * value + BIAS)


def _fill_ratio(images: torch.Tensor, fill: str = "mean", row: int = ROW, col: int = COL) -> torch.Tensor:
    """Score with the pixel hidden, as a fraction of the original score, ``[N]``."""
    if fill == "mean":
        hidden = images.mean(dim=(1, 2, 3))  # the mean over channels of the channel means
    else:
        hidden = gaussian_blur(images, default_blur_sigma(images))[:, :, row, col].mean(dim=1)
    return _probability(hidden) / _probability(images[:, :, row, col].mean(dim=1))


def _map_ranking_the_pixel(images: torch.Tensor, position: str, row: int = ROW, col: int = COL) -> torch.Tensor:
    """Maps with the model's pixel ranked first (``"first"``) or last (``"last"``); 2 channels."""
    noise = torch.rand(images.shape[0], 2, *images.shape[-2:], generator=torch.Generator().manual_seed(4))
    maps = 0.1 + 0.3 * noise if position == "first" else 0.5 + 0.5 * noise
    maps[:, :, row, col] = 1.0 if position == "first" else 0.0
    return maps


def _expected_curves(ratio: torch.Tensor, steps_at: int, n_fractions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion curves that switch between 1 and ``ratio`` from fraction index ``steps_at``."""
    after = torch.arange(n_fractions) >= steps_at
    deletion = torch.where(after, ratio.view(-1, 1), torch.ones(1))
    insertion = torch.where(after, torch.ones(1), ratio.view(-1, 1))
    return deletion, insertion


@pytest.mark.parametrize("fill", ["mean", "blur"])
def test_map_ranking_the_pixel_first_gives_the_best_curves(fill):
    images = _images()
    result = ablation_curves(OnePixel(), images, _map_ranking_the_pixel(images, "first"), fill=fill)
    deletion, insertion = _expected_curves(_fill_ratio(images, fill), 1, len(DEFAULT_FRACTIONS))
    torch.testing.assert_close(result["fractions"], torch.tensor(DEFAULT_FRACTIONS))
    torch.testing.assert_close(result["deletion"], deletion)
    torch.testing.assert_close(result["insertion"], insertion)
    # Trapezoids by hand: the first interval (0 to 0.01) goes from 1 to the ratio, the rest is flat.
    ratio = _fill_ratio(images, fill)
    torch.testing.assert_close(result["deletion_auc"], 0.01 * (1 + ratio) / 2 + 0.99 * ratio)
    torch.testing.assert_close(result["insertion_auc"], 0.01 * (1 + ratio) / 2 + 0.99)


def test_map_ranking_the_pixel_last_gives_the_worst_curves():
    images = _images()
    result = ablation_curves(OnePixel(), images, _map_ranking_the_pixel(images, "last"))
    ratio = _fill_ratio(images)
    deletion, insertion = _expected_curves(ratio, len(DEFAULT_FRACTIONS) - 1, len(DEFAULT_FRACTIONS))
    torch.testing.assert_close(result["deletion"], deletion)
    torch.testing.assert_close(result["insertion"], insertion)
    torch.testing.assert_close(result["deletion_auc"], 0.3 * (1 + ratio) / 2 + 0.7)  # last interval 0.7 to 1
    torch.testing.assert_close(result["insertion_auc"], 0.3 * (1 + ratio) / 2 + 0.7 * ratio)


def test_random_control_lies_between_the_best_and_the_worst_map():
    images = _images(n=24)
    best = ablation_curves(OnePixel(), images, _map_ranking_the_pixel(images, "first"))
    worst = ablation_curves(OnePixel(), images, _map_ranking_the_pixel(images, "last"))
    torch.testing.assert_close(
        best["deletion_random_auc"], worst["deletion_random_auc"]
    )  # same generator, same ranking
    random_deletion, random_insertion = best["deletion_random_auc"].mean(), best["insertion_random_auc"].mean()
    assert best["deletion_auc"].mean() + 0.1 < random_deletion < worst["deletion_auc"].mean() - 0.1
    assert worst["insertion_auc"].mean() + 0.1 < random_insertion < best["insertion_auc"].mean() - 0.1
    # Each random curve is a step from 1 to the fill ratio (deletion) somewhere along the fractions.
    ratio = _fill_ratio(images).view(-1, 1)
    on_a_level = torch.isclose(best["deletion_random"], ratio) | torch.isclose(best["deletion_random"], torch.ones(1))
    assert bool(on_a_level.all())
    assert bool((best["deletion_random"].diff(dim=1) <= 1e-6).all())


def test_without_random_control_the_random_curves_are_absent():
    images = _images(n=2)
    result = ablation_curves(OnePixel(), images, _map_ranking_the_pixel(images, "first"), random_control=False)
    assert sorted(result) == ["deletion", "deletion_auc", "fractions", "insertion", "insertion_auc"]


@pytest.mark.parametrize(("pixel", "steps_at"), [((0, 0), 1), ((0, 4), 1), ((0, 5), 2), ((9, 9), 2)])
def test_ties_go_in_raster_order_and_fractions_round_to_pixel_counts(pixel, steps_at):
    # A constant map ranks pixels top-left first. On 10 x 10 pixels, fraction 0.05 hides the first
    # round(5.0) = 5 pixels (indices 0-4), fraction 1 all of them.
    images = _images(n=2, size=10, row=pixel[0], col=pixel[1])
    model = OnePixel(*pixel)
    result = ablation_curves(model, images, torch.zeros(2, 1, 10, 10), fractions=[0.0, 0.05, 1.0], random_control=False)
    deletion, insertion = _expected_curves(_fill_ratio(images, row=pixel[0], col=pixel[1]), steps_at, 3)
    torch.testing.assert_close(result["deletion"], deletion)
    torch.testing.assert_close(result["insertion"], insertion)


def test_smallest_positive_fraction_hides_at_least_one_pixel():
    images = _images(n=1, row=0, col=0)
    result = ablation_curves(
        OnePixel(0, 0), images, torch.zeros(1, 1, 8, 8), fractions=[0.0, 0.001], random_control=False
    )
    torch.testing.assert_close(result["deletion"][:, 1], _fill_ratio(images, row=0, col=0))


def test_logit_scores_are_fractions_of_the_original_logit():
    images = _images()
    result = ablation_curves(
        OnePixel(), images, _map_ranking_the_pixel(images, "first"), score="logit", random_control=False
    )
    hidden = WEIGHT * images.mean(dim=(1, 2, 3)) + BIAS
    original = WEIGHT * 1.0 + BIAS
    torch.testing.assert_close(result["deletion"][:, 0], torch.ones(4))
    torch.testing.assert_close(result["deletion"][:, 1], hidden / original)


def test_curves_start_at_one_and_do_not_depend_on_batch_size(images):
    model = build_model("small_cnn")
    maps = torch.rand(3, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    fractions = [0.0, 0.1, 0.5, 1.0]
    results = [
        ablation_curves(model, images, maps, [0, 1, 2], fractions=fractions, batch_size=size) for size in (1, 7, 10_000)
    ]
    torch.testing.assert_close(results[0]["deletion"][:, 0], torch.ones(3))
    torch.testing.assert_close(results[0]["insertion"][:, -1], torch.ones(3))
    for other in results[1:]:
        for name, values in results[0].items():
            torch.testing.assert_close(other[name], values, rtol=1e-5, atol=1e-6, msg=name)


def test_all_images_go_through_one_forward_pass_when_the_batch_allows():
    calls: list[int] = []
    model = OnePixel()

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return model(x)

    images = _images(n=3)
    ablation_curves(forward, images, images, fractions=[0.0, 0.5, 1.0], batch_size=1000)
    assert calls == [3, 3 * 2 * 2 * 3]  # the original images, then (probe, ranking, curve, fraction)
    calls.clear()
    ablation_curves(forward, images, images, fractions=[0.0, 0.5, 1.0], batch_size=10)
    assert calls == [3, 10, 10, 10, 6]


def test_low_resolution_maps_are_upsampled_bilinearly(images):
    model = build_model("tiny")
    coarse = torch.rand(3, 1, 3, 5, generator=torch.Generator().manual_seed(6))
    fine = F.interpolate(coarse, size=(12, 10), mode="bilinear", align_corners=False)
    for name, values in ablation_curves(model, images, coarse).items():
        torch.testing.assert_close(values, ablation_curves(model, images, fine)[name], msg=name)


def test_channels_are_combined_by_absolute_sum():
    images = _images(n=2)
    maps = _map_ranking_the_pixel(images, "first")
    signed = torch.stack([-maps[:, 0], 2 * maps[:, 0]], dim=1)  # |sum| = |maps[:, 0]|: same ranking

    def deletion(attributions: torch.Tensor) -> torch.Tensor:
        return ablation_curves(OnePixel(), images, attributions)["deletion"]

    torch.testing.assert_close(deletion(-maps), deletion(maps))
    torch.testing.assert_close(deletion(signed), deletion(maps[:, :1]))


def test_target_picks_the_class_whose_score_is_followed(images):
    model = build_model("tiny")
    maps = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(7))
    top = model(images).argmax(dim=1)
    by_default, by_name = (ablation_curves(model, images, maps, t)["deletion"] for t in (None, top.tolist()))
    torch.testing.assert_close(by_default, by_name)
    chosen = ablation_curves(model, images, maps, 4, fractions=[0.0, 1.0], random_control=False)
    fill = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    with torch.no_grad():
        expected = model(fill).softmax(dim=1)[:, 4] / model(images).softmax(dim=1)[:, 4]
    torch.testing.assert_close(chosen["deletion"][:, 1], expected)


def test_auc_is_the_trapezoid_area_over_the_span():
    curves = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])
    torch.testing.assert_close(auc([0.0, 0.5, 1.0], curves), torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(auc(torch.tensor([0.0, 0.25]), curves[:, :2]), torch.tensor([0.75, 0.2]))


def test_mass_centre_box_on_the_pixel_drops_the_score_and_random_boxes_barely():
    images = _images()
    maps = torch.zeros(4, 1, 8, 8)
    maps[:, :, ROW, COL] = 1.0
    result = mass_center_ablation(OnePixel(), images, maps, n_random=16)
    full_drop = 1 - _fill_ratio(images)
    torch.testing.assert_close(result["drop"], full_drop)
    assert result["box"].tolist() == [[ROW, COL, ROW + 2, COL + 2]] * 4
    # A random 2 x 2 box hides the pixel or not: random_drop is (boxes hiding it / 16) * full drop.
    hits = result["random_drop"] * 16 / full_drop
    torch.testing.assert_close(hits, hits.round(), rtol=0, atol=1e-4)
    assert bool((result["random_drop"] < 0.3 * result["drop"]).all())


@pytest.mark.parametrize(
    ("points", "box_fraction", "box"),
    [
        ([(2, 5)], 0.375, [1, 4, 4, 7]),  # 3 x 3 box centred on the pixel
        ([(7, 7)], 0.25, [6, 6, 8, 8]),  # clamped inside at the bottom right
        ([(0, 0)], 0.25, [0, 0, 2, 2]),  # and at the top left
        ([(1, 1), (1, 5)], 0.25, [1, 3, 3, 5]),  # centre of mass between two peaks, not at either
        ([], 0.25, [3, 3, 5, 5]),  # an all-zero map: the image centre
        ([(2, 5)], 1.0, [0, 0, 8, 8]),
    ],
)
def test_mass_centre_box_placement(points, box_fraction, box):
    maps = torch.zeros(1, 3, 8, 8)
    for row, col in points:
        maps[0, 1, row, col] = -1.0  # the sign does not matter: |sum over channels|
    result = mass_center_ablation(OnePixel(), _images(n=1), maps, box_fraction=box_fraction)
    assert result["box"].tolist() == [box]
    assert result["box"].dtype == torch.int64


def test_mass_centre_of_a_low_resolution_map_is_taken_after_upsampling():
    coarse = torch.zeros(1, 1, 4, 4)
    coarse[0, 0, 1, 2] = 1.0  # upsampled to 8 x 8: a bump centred at (2.5, 4.5)
    result = mass_center_ablation(OnePixel(), _images(n=1), coarse)
    assert result["box"].tolist() == [[2, 4, 4, 6]]


def test_mass_centre_ablation_does_not_depend_on_batch_size(images):
    model = build_model("small_cnn")
    maps = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(8))
    results = [mass_center_ablation(model, images, maps, target=1, batch_size=size) for size in (1, 5, 1000)]
    for other in results[1:]:
        for name, values in results[0].items():
            torch.testing.assert_close(other[name], values, rtol=1e-5, atol=1e-6, msg=name)


def test_private_generator_gives_reproducible_random_controls():
    images = _images(n=3)
    maps = _map_ranking_the_pixel(images, "first")
    default = ablation_curves(OnePixel(), images, maps)
    seeded = ablation_curves(OnePixel(), images, maps, generator=torch.Generator().manual_seed(0))
    other = ablation_curves(OnePixel(), images, maps, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(default["deletion_random"], seeded["deletion_random"])
    assert not torch.equal(default["deletion_random"], other["deletion_random"])
    boxes = [mass_center_ablation(OnePixel(), images, maps, generator=torch.Generator().manual_seed(s)) for s in (0, 0)]
    torch.testing.assert_close(boxes[0]["random_drop"], boxes[1]["random_drop"])


def test_global_rng_model_and_inputs_are_left_untouched():
    model = build_model("small_cnn")
    model.classifier.train()  # dropout that would draw from the global RNG
    model.classifier[1].p = 0.5
    images = torch.rand(2, 3, 8, 8)
    maps = torch.rand(2, 1, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), images.clone(), maps.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ablation_curves(model, images, maps)
        mass_center_ablation(model, images, maps)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])
    assert before[2] == random.getstate()
    assert torch.equal(before[3], images) and torch.equal(before[4], maps)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_inputs_device(device, images):
    model = build_model("tiny")
    maps = torch.rand(3, 1, 6, 5, generator=torch.Generator().manual_seed(10))
    generator = torch.Generator(device=device).manual_seed(0)
    curves = ablation_curves(model.to(device), images.to(device), maps.to(device), generator=generator)
    generator = torch.Generator(device=device).manual_seed(0)
    boxes = mass_center_ablation(model, images.to(device), maps.to(device), generator=generator)
    assert all(values.device.type == device for values in (*curves.values(), *boxes.values()))
    reference = ablation_curves(model.cpu(), images, maps)
    for name in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
        torch.testing.assert_close(curves[name].cpu(), reference[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_works_under_no_grad_and_inference_mode(mode, images):
    model = build_model("tiny")
    maps = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(9))
    plain = {**ablation_curves(model, images, maps), **mass_center_ablation(model, images, maps)}
    with mode():
        images, maps = images.clone(), maps.clone()
        inside = {**ablation_curves(model, images, maps), **mass_center_ablation(model, images, maps)}
    for name, values in plain.items():
        torch.testing.assert_close(inside[name], values, msg=name)
        assert not inside[name].requires_grad


FRACTIONS_MESSAGE = "`fractions` must be a strictly increasing sequence of at least 2 numbers in [0, 1], got {}."
CURVE_ERRORS = [
    ({"fractions": [0.5, 0.2]}, ValueError, FRACTIONS_MESSAGE.format("[0.5, 0.2]")),
    ({"fractions": [0.0, 0.0, 1.0]}, ValueError, FRACTIONS_MESSAGE.format("[0.0, 0.0, 1.0]")),
    ({"fractions": [0.0, 1.5]}, ValueError, FRACTIONS_MESSAGE.format("[0.0, 1.5]")),
    ({"fractions": [0.3]}, ValueError, FRACTIONS_MESSAGE.format("[0.3]")),
    ({"fractions": "0.1"}, TypeError, FRACTIONS_MESSAGE.format("'0.1'")),
    ({"fractions": torch.zeros(2, 2)}, ValueError, FRACTIONS_MESSAGE.format("[[0.0, 0.0], [0.0, 0.0]]")),
    ({"fill": "zero"}, ValueError, "`fill` must be one of ['mean', 'blur', 'inpaint'], got 'zero'."),
    ({"score": "prob"}, ValueError, "`score` must be one of ['probability', 'logit'], got 'prob'."),
    ({"random_control": 1}, TypeError, "`random_control` must be a bool, got 1 (int)."),
    ({"generator": 0}, TypeError, "`generator` must be a torch.Generator or None, got int."),
    ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1, got 0."),
    ({"target": 5}, ValueError, "`target` must be class indices in [0, 1] for a model with 2 outputs, got [5, 5]."),
    ({"target": [0]}, ValueError, "`target` must hold one class per image (2), got 1."),
]
BOX_ERRORS = [
    ({"box_fraction": 0}, ValueError, "`box_fraction` must be a number in (0, 1], got 0."),
    ({"box_fraction": 1.5}, ValueError, "`box_fraction` must be a number in (0, 1], got 1.5."),
    ({"n_random": 0}, ValueError, "`n_random` must be an int >= 1, got 0."),
    ({"fill": "zero"}, ValueError, "`fill` must be one of ['mean', 'blur', 'inpaint'], got 'zero'."),
    ({"score": "logits"}, ValueError, "`score` must be one of ['probability', 'logit'], got 'logits'."),
]
MAP_ERRORS = [
    (torch.rand(3, 1, 8, 8), ValueError, "`attributions` must hold one map per image (2), got shape [3, 1, 8, 8]."),
    (
        torch.rand(2, 8, 8),
        ValueError,
        "`attributions` must have 4 dimensions [N, C, H, W], got 3 dimensions with shape [2, 8, 8].",
    ),
    (torch.full((2, 1, 8, 8), float("nan")), ValueError, "`attributions` must be finite, got NaN or inf values."),
    ([[0.0]], TypeError, "`attributions` must be a torch.Tensor of shape [N, C, H, W], got list."),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CURVE_ERRORS)
def test_ablation_curves_argument_errors(kwargs, error, message):
    images = _images(n=2)
    with pytest.raises(error, match=re.escape(message)):
        ablation_curves(OnePixel(), images, images, **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "message"), BOX_ERRORS)
def test_mass_centre_ablation_argument_errors(kwargs, error, message):
    images = _images(n=2)
    with pytest.raises(error, match=re.escape(message)):
        mass_center_ablation(OnePixel(), images, images, **kwargs)


@pytest.mark.parametrize(("maps", "error", "message"), MAP_ERRORS)
@pytest.mark.parametrize("function", [ablation_curves, mass_center_ablation])
def test_attribution_errors(function, maps, error, message):
    with pytest.raises(error, match=re.escape(message)):
        function(OnePixel(), _images(n=2), maps)


def test_a_score_that_is_not_positive_cannot_be_a_reference():
    images = _images(n=2)
    images[1] = 0.0  # class-0 logit -1, so the top class is 1 with logit 0
    message = (
        "`score='logit'` expresses scores as a fraction of the score on the unaltered image, which must be "
        "positive; got [0.0] for images [1]."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        ablation_curves(OnePixel(), images, images, score="logit")
    with pytest.raises(ValueError, match=re.escape(message)):
        mass_center_ablation(OnePixel(), images, images, score="logit")


def test_auc_argument_errors():
    message = "`curves` must have one value per fraction (3) along its last dimension, got shape [2, 4]."
    with pytest.raises(ValueError, match=re.escape(message)):
        auc([0.0, 0.5, 1.0], torch.zeros(2, 4))
    with pytest.raises(TypeError, match=re.escape("`curves` must be a torch.Tensor [..., K], got list.")):
        auc([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match=re.escape(FRACTIONS_MESSAGE.format("[1.0, 0.0]"))):
        auc([1.0, 0.0], torch.zeros(2))


def test_inpainting_fills_the_removed_pixels_from_the_rest_of_the_image():
    pytest.importorskip("cv2")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    images = torch.full((2, 1, 8, 8), 0.7)  # a flat image: inpainting restores it exactly, so nothing changes
    curves = ablation_curves(net, images, torch.rand(2, 1, 8, 8), fractions=[0.0, 0.5, 1.0 - 1 / 64], fill="inpaint")
    torch.testing.assert_close(curves["deletion"], torch.ones(2, 3), atol=2e-3, rtol=0)
    box = mass_center_ablation(net, images, torch.rand(2, 1, 8, 8), fill="inpaint", n_random=2)
    torch.testing.assert_close(box["drop"], torch.zeros(2), atol=2e-3, rtol=0)


def test_inpainting_without_opencv_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    with pytest.raises(ImportError, match=re.escape('pip install "lightning-xai[inpaint]"')):
        ablation_curves(net, torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), fill="inpaint")
