"""Shortcut search and interventions on hand-made models whose reliance is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.functional import saliency
from lightning_xai.functional.shortcut import box_iou, concentrated_boxes, intervene, mass_outside, paste, random_boxes
from lightning_xai.functional.shortcut_candidates import describe_place

CORNER = (0, 0, 4, 4)


class ReadsCorner(nn.Module):
    """Predicts class round(9 * mean of the top-left 4x4 corner): a pure shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x[:, :, :4, :4].mean(dim=(1, 2, 3)) * 9
        return -((level[:, None] - torch.arange(10.0)) ** 2) * 5


class ReadsEverything(nn.Module):
    """A fixed random linear classifier over all pixels: evidence spread over the image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(256, 10)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _decoy_images(count: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 1, 16, 16, generator=generator)
    shade = (torch.arange(count) % 10).float().view(-1, 1, 1, 1) / 9
    jitter = (torch.rand(count, 1, 4, 4, generator=generator) - 0.5) * 0.06  # off the exact levels: non-zero gradients
    images[:, :, :4, :4] = shade + jitter
    return images


def test_interventions_separate_a_shortcut_from_spread_evidence():
    images = _decoy_images()
    shortcut = intervene(ReadsCorner(), images, CORNER)
    assert shortcut["flip_rate"] > 0.8 and shortcut["random_flip_rate"] == 0.0
    assert shortcut["follow_rate"] == 1.0 and shortcut["keep_rate"] == 1.0 and shortcut["drop_ratio"] > 100
    spread = intervene(ReadsEverything(), images, CORNER)
    assert spread["follow_rate"] < 0.3 and spread["keep_rate"] < 0.5


def test_heat_concentrates_where_the_model_looks():
    images = _decoy_images(12)
    maps = saliency(ReadsCorner(), images).abs().sum(dim=1, keepdim=True)
    (box, concentration), *_ = concentrated_boxes(maps, [4])
    assert box == CORNER and concentration == pytest.approx(16.0, rel=1e-4)  # all mass in 16 of 256 pixels


def test_helpers_by_hand():
    assert describe_place((28, 0, 32, 4), (32, 32)) == "bottom-left corner"
    assert describe_place((0, 14, 4, 18), (32, 32)) == "top edge"
    assert paste(torch.zeros(2, 1, 4, 4), torch.ones(1, 1, 4, 4), (1, 1, 3, 3)).sum() == 8
    boxes = random_boxes((8, 8), (0, 0, 4, 4), 50, torch.Generator().manual_seed(0))
    assert len(boxes) == 9 and all(  # top-left corners (4, 0..4) and (0..4, 4)
        box_iou(b, (0, 0, 4, 4)) == 0 for b in boxes
    )
    masks = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    masks[..., 1:3, 1:3] = True
    assert mass_outside(torch.ones(1, 1, 4, 4), masks).item() == pytest.approx(12 / 16)


def test_box_sums_equal_an_average_pool_times_the_area():
    from lightning_xai.functional.shortcut import box_sums

    values = torch.rand(3, 2, 17, 23, generator=torch.Generator().manual_seed(0))
    for height, width in ((1, 1), (4, 4), (5, 9), (17, 23)):
        expected = torch.nn.functional.avg_pool2d(values, (height, width), stride=1) * height * width
        torch.testing.assert_close(box_sums(values, height, width), expected, rtol=1e-5, atol=1e-5)
