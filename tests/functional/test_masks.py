"""extremal_mask: a model whose answer is known, the area constraint, the summary, and errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lightning_xai.functional import extremal_mask

BOX = (slice(4, 8), slice(9, 13))  # a 4 x 4 box inside a 16 x 16 image


class BoxReadout(nn.Module):
    """Class 0 scores the mean of a fixed box, class 1 is constant: only the box matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, :, BOX[0], BOX[1]].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _images() -> torch.Tensor:
    return 0.5 + 0.5 * torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def box_result():
    return extremal_mask(BoxReadout().eval(), _images(), 0, areas=(0.05, 0.1, 0.2), steps=100, baseline="zero")


def test_the_mask_finds_the_region_the_model_reads(box_result):
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[BOX] = True
    for mask in box_result.best[:, 0]:
        top = torch.zeros(256, dtype=torch.bool)
        top[mask.flatten().topk(int(box.sum())).indices] = True
        iou = (top.view(16, 16) & box).sum() / (top.view(16, 16) | box).sum()
        assert iou > 0.5, iou
        assert mask[box].mean() > 0.8 and mask[~box].mean() < 0.2


def test_larger_areas_keep_more_and_the_complement_destroys_the_score(box_result):
    assert box_result.masks.shape == (2, 3, 16, 16) and box_result.best.shape == (2, 1, 16, 16)
    assert (box_result.kept[:, 1:] >= box_result.kept[:, :-1] - 0.02).all()
    assert (box_result.deleted_kept[:, -1] < 0.2).all()
    for row, (kept, smallest) in enumerate(zip(box_result.kept, box_result.smallest_area)):
        sufficient = [a for a, k in zip(box_result.areas, kept) if k >= 0.9]
        assert bool(box_result.sufficient[row]) == bool(sufficient)
        assert smallest.item() == pytest.approx(sufficient[0] if sufficient else box_result.areas[-1])


def test_each_mask_has_about_its_area(box_result):
    for index, area in enumerate(box_result.areas):
        covered = (box_result.masks[:, index] > 0.5).float().mean(dim=(1, 2))
        assert (covered - area).abs().max() < 0.06, (area, covered)


def test_the_masks_are_reproducible_and_depend_on_the_generator_only():
    model, images = BoxReadout().eval(), _images()
    runs = [
        extremal_mask(model, images, 0, areas=(0.1,), steps=5, generator=torch.Generator().manual_seed(seed))
        for seed in (1, 1, 2)
    ]
    assert torch.equal(runs[0].masks, runs[1].masks) and not torch.equal(runs[0].masks, runs[2].masks)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"areas": (0.1, 1.5)}, ValueError, "`areas` must be a non-empty list of fractions in (0, 1), got (0.1, 1.5)."),
        ({"areas": ()}, ValueError, "`areas` must be a non-empty list of fractions in (0, 1), got ()."),
        ({"steps": 0}, ValueError, "`steps` must be an int >= 1, got 0."),
        ({"keep": 0.0}, ValueError, "`keep` must be a number in (0, 1], got 0.0."),
        ({"learning_rate": -1}, ValueError, "`learning_rate` must be a positive number, got -1."),
        ({"grid_step": 0}, ValueError, "`grid_step` must be an int >= 1, got 0."),
        ({"generator": 5}, TypeError, "`generator` must be a torch.Generator or None, got int."),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        extremal_mask(BoxReadout().eval(), _images(), 0, **kwargs)
