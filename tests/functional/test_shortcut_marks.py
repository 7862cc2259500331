"""carried_share: whether what sits at a fixed box recurs in the images of the classes said to carry a mark there."""

from __future__ import annotations

import torch

from lightning_xai.functional.shortcut_marks import MARK_RECURS, carried_share


def _noise(count: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(count, 3, 12, 12, generator=torch.Generator().manual_seed(seed)) * 0.3
    return images, torch.arange(count) % 5


def test_a_tag_that_one_class_carries_recurs_in_it_and_nowhere_else():
    images, classes = _noise()
    images[classes == 2, :, 0:3, 9:12] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)  # a yellow tag
    assert carried_share(images, classes, (0, 9, 3, 12), [2]) == 1.0
    assert carried_share(images, classes, (6, 6, 9, 9), [2]) <= MARK_RECURS  # noise elsewhere recurs nowhere


def test_a_tag_two_classes_share_is_carried_by_both_together():
    images, classes = _noise()
    images[(classes == 0) | (classes == 1), :, 0:3, 0:3] = 1.0
    assert carried_share(images, classes, (0, 0, 3, 3), [0, 1]) == 1.0
    assert (
        carried_share(images, classes, (0, 0, 3, 3), [2]) <= MARK_RECURS
    )  # not class 2's: its images hold noise there


def test_a_bright_point_at_varying_places_in_the_box_is_no_mark():
    """Telling to a model that reads the box's brightest pixel, but not the same content from image to image (a
    stroke of objects that sit at varying places): each such image is closer to images without it."""
    images, classes = _noise()
    generator = torch.Generator().manual_seed(1)
    for index in (classes == 3).nonzero().flatten().tolist():
        row, column = torch.randint(0, 4, (2,), generator=generator).tolist()
        images[index, :, 4 + row, 4 + column] = 1.0
    assert carried_share(images, classes, (4, 4, 8, 8), [3]) <= MARK_RECURS
    tagged, _ = _noise()
    tagged[classes == 3, :, 5, 6] = 1.0  # the same point in every one of them: a tag
    assert carried_share(tagged, classes, (4, 4, 8, 8), [3]) > MARK_RECURS


def test_nothing_to_compare_is_no_mark():
    images, classes = _noise(count=12)  # two or three images per class: no third copy besides the image
    assert carried_share(images, classes, (0, 0, 3, 3), [0]) == 0.0
    one_class = torch.zeros(20, dtype=torch.long)
    assert carried_share(torch.rand(20, 1, 6, 6), one_class, (0, 0, 3, 3), [0]) == 0.0  # no other class
