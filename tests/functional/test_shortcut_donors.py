"""Whether a spot's evidence follows the donors' classes: a mark on one class, a mark on every class, and an
object that sits at the spot in a quarter of the images of every class, with fake models whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_xai.functional.shortcut_donors import MIN_CLASS_DONORS, carried_by_donors, most_win
from lightning_xai.functional.shortcut_evidence import sign_test
from lightning_xai.functional.shortcut_interventions import Bench

SIDE, CORNER = 12, (0, 0, 3, 3)


def test_most_win_takes_the_smaller_of_the_overall_and_the_corrected_class_sign_tests():
    classes = torch.tensor([0] * 6 + [1] * 6 + [2] * 8)
    wins = torch.tensor([True] * 6 + [True, False] * 3 + [False] * 8)  # class 0 all, class 1 half, class 2 none
    overall = sum(math.comb(20, k) for k in range(9, 21)) / 2**20
    assert most_win(wins, classes) == pytest.approx(min(overall, 3 * 2**-6))


def test_classes_with_too_few_donors_have_no_test_of_their_own():
    classes = torch.tensor([0] * (MIN_CLASS_DONORS - 1) + [1] * 20)
    wins = classes == 0  # every donor of the small class wins, none of the other
    assert most_win(wins, classes) == pytest.approx(sign_test(MIN_CLASS_DONORS - 1, 20))  # the overall test alone
    assert most_win(wins, classes, min_count=MIN_CLASS_DONORS - 1) == pytest.approx(2 * 2 ** -(MIN_CLASS_DONORS - 1))


def _object_images(values: list[float], count: int, seed: int, *, corners: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images of a 3x3 object whose brightness is its class's value, at a random corner (``corners``)
    or in the middle; the images' classes."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(count) % len(values)
    images = torch.rand(count, 1, SIDE, SIDE, generator=generator) * 0.05
    spots = [(0, 0), (0, SIDE - 3), (SIDE - 3, 0), (SIDE - 3, SIDE - 3)]
    for index, label in enumerate(classes.tolist()):
        top, left = spots[int(torch.randint(4, (1,), generator=generator))] if corners else (4, 4)
        images[index, 0, top : top + 3, left : left + 3] = values[label]
    return images, classes


def _brightest_object(values: list[float]):
    """Scores each class by how close the image's brightest pixel is to the class's value (the object wherever
    it is); without an object (nothing brighter than 0.2) every class is as likely."""
    centres = torch.tensor(values)

    def forward(x: torch.Tensor) -> torch.Tensor:
        brightest = x.flatten(1).amax(dim=1, keepdim=True)
        return -40 * (brightest - centres) ** 2 * torch.sigmoid(60 * (brightest - 0.2))

    return forward


def test_an_object_at_a_random_corner_is_not_carried_by_its_donors():
    # A quarter of each class's donors hold their object at the corner; a donor's corner also wins where it
    # covers the recipient's own object there (controls are drawn where the objects are, as the maps' heat is).
    values = [0.3, 0.6, 0.9]
    images, _ = _object_images(values, 192, seed=0, corners=True)
    heat = images.mean(dim=0, keepdim=True)
    bench = Bench.build(_brightest_object(values), images, seed=0, batch_size=256, fill="mean", heat=heat)
    outcome = carried_by_donors(bench, CORNER)
    assert 0 < outcome.wins < outcome.donors / 2
    assert not outcome.carried and outcome.p_value > 0.1


def test_a_mark_on_one_class_is_carried_by_that_class_s_donors():
    # Classes 0 and 1 by their object in the middle; a bright corner mark makes class 2, whatever the object.
    values = [0.3, 0.6]
    images, classes = _object_images(values, 192, seed=1, corners=False)
    marked = torch.arange(192) % 3 == 2
    images[marked, 0, :3, :3] = 1.0
    by_object = _brightest_object(values)

    def forward(x: torch.Tensor) -> torch.Tensor:
        mark = 30 * (x[:, 0, :3, :3].mean(dim=(1, 2)) - 0.5)
        return torch.cat([by_object(x[:, :, 4:7, 4:7]), mark[:, None]], dim=1)

    bench = Bench.build(forward, images, seed=0, batch_size=256, fill="mean")
    assert set(bench.predicted.tolist()) == {0, 1, 2}
    outcome = carried_by_donors(bench, CORNER)
    assert outcome.carried and outcome.p_value < 1e-6


def test_a_shade_on_every_class_is_carried_by_most_donors():
    # The corner's shade is the class, and the model reads nothing else.
    values = [0.3, 0.6, 0.9]
    images, classes = _object_images(values, 192, seed=2, corners=False)
    images[:, 0, :3, :3] = torch.tensor(values)[classes][:, None, None]
    centres = torch.tensor(values)
    bench = Bench.build(
        lambda x: -40 * (x[:, 0, :3, :3].mean(dim=(1, 2))[:, None] - centres) ** 2,
        images,
        seed=0,
        batch_size=256,
        fill="mean",
    )
    outcome = carried_by_donors(bench, CORNER)
    assert outcome.carried and outcome.p_value < 1e-6 and outcome.wins / outcome.donors > 0.9
