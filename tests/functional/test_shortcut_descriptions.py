"""What a place does and who carries it: whether the other classes' images need a place too, on models whose
reliance is known."""

from __future__ import annotations

import torch

from lightning_xai.functional.shortcut_descriptions import fill_drops, others_need
from lightning_xai.functional.shortcut_interventions import Bench


class _ReadsCornerLevel(torch.nn.Module):
    """Class 0 for a bright top-left corner, class 1 for a dark one (a shade each class bears its own way);
    a grey corner leaves the two even."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x[:, 0, 0:2, 0:2].mean(dim=(1, 2)) - 0.5
        return torch.stack([20 * level, -20 * level], dim=1)


def _two_shades(count: int = 96) -> torch.Tensor:
    images = torch.full((count, 1, 8, 8), 0.5)
    images[::2, :, 0:2, 0:2], images[1::2, :, 0:2, 0:2] = 1.0, 0.0
    return images


def test_a_place_the_other_class_needs_too_is_not_one_class_s_mark():
    bench = Bench.build(_ReadsCornerLevel(), _two_shades(), seed=0, batch_size=96, fill="mean")
    assert others_need(bench, (0, 0, 2, 2), [0], alpha=0.01)  # class 1's dark corner decides class 1 too
    assert not others_need(bench, (0, 0, 2, 2), [0, 1], alpha=0.01)  # no image of another class is left


def test_a_mark_only_its_class_bears_is_not_needed_by_the_others():
    images = _two_shades()
    images[1::2, :, 0:2, 0:2] = 0.5  # class 1 bears no mark: its corner is background
    images[1::2, :, 4:8, 4:8] = 0.0  # and its object says class 1
    model = lambda x: (
        _ReadsCornerLevel()(x) + torch.stack([torch.zeros(len(x)), 10 * (0.5 - x[:, 0, 4:8, 4:8].mean(dim=(1, 2)))], 1)
    )
    bench = Bench.build(model, images, seed=0, batch_size=96, fill="mean")
    assert bool((bench.predicted[1::2] == 1).all()) and not others_need(bench, (0, 0, 2, 2), [0], alpha=0.01)
    assert (
        float(fill_drops(bench, [(0, 0, 2, 2)] * 2, torch.tensor([0, 2])).min()) > bench.margin
    )  # class 0 needs its own
