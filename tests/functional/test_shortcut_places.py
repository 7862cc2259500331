"""A moving mark among a few places, tested at all of them at once, on models whose reliance is known."""

from __future__ import annotations

import torch
from torch import nn

from lightning_xai.functional.shortcut_evidence import Votes
from lightning_xai.functional.shortcut_gradients import gradient_heat
from lightning_xai.functional.shortcut_moving import hottest_inside, moving_votes, rivals, spots_of
from lightning_xai.functional.shortcut_places import (
    carrier_class,
    completed_places,
    most_carried,
    one_place_carries,
    place_set_votes,
)
from tests.functional.test_shortcut_moving import (
    BAND,
    CLASSES,
    CORNERS,
    SIDE,
    ReadsCentredObject,
    ReadsObjectAndCornerMark,
    ReadsObjectAnywhere,
    _objects_at_the_border,
    _objects_with_corner_marks,
    _with_heat,
)


def test_a_mark_read_beside_the_object_is_confirmed_at_all_its_places_at_once():
    images, boxes = _objects_with_corner_marks()
    bench = _with_heat(ReadsObjectAndCornerMark().eval(), images)
    votes, classes = place_set_votes(bench, CORNERS, alpha=1e-4)
    assert votes.decided and votes.p_value <= 1e-4 and votes.wins > 3 * votes.losses
    assert classes == [carrier_class(bench, CORNERS)] and 0 <= classes[0] < CLASSES
    heat = gradient_heat(bench)
    single = moving_votes(bench, boxes, rivals(bench, boxes, heat), spots_of(heat, boxes, BAND), alpha=1e-4)
    assert single.decided and single.wins >= 4 * max(1, single.losses)  # and image by image (until stop 27: missed)


def test_places_at_once_stay_silent_on_objects():
    images, boxes = _objects_with_corner_marks(marked=False)
    bench = _with_heat(ReadsCentredObject().eval(), images)
    votes, _ = place_set_votes(bench, CORNERS, alpha=1e-4)  # the corners hold noise: no clear win
    assert not votes.decided and votes.wins <= votes.losses

    objects, pieces = _objects_at_the_border(128)
    bench = _with_heat(ReadsObjectAnywhere().eval(), objects)
    places = sorted(set(pieces))[:4]  # pieces of objects touching the border, where some images have them
    votes, _ = place_set_votes(bench, places, alpha=1e-4)
    assert not votes.decided and votes.p_value > 0.01


def test_a_mark_at_one_place_is_not_tested_at_all_places():
    images, _ = _objects_with_corner_marks(marked=False)
    labels = torch.arange(images.shape[0]) % CLASSES
    fixed = images.clone()
    for image, label in zip(fixed, labels.tolist()):  # the same mark, always in the top-left corner
        image[:, 1:5, 1:5] = 0.4 + 0.6 * label / (CLASSES - 1)
    bench = _with_heat(ReadsObjectAndCornerMark().eval(), fixed)
    carrier = carrier_class(bench, CORNERS)
    assert one_place_carries(bench, carrier, CORNERS)  # the other corners only dilute it
    assert place_set_votes(bench, CORNERS, alpha=1e-4) == (Votes(), [])
    moving, _ = _objects_with_corner_marks()
    bench = _with_heat(ReadsObjectAndCornerMark().eval(), moving)
    assert not one_place_carries(bench, carrier_class(bench, CORNERS), CORNERS)


def test_each_image_is_located_among_the_places_its_class_carries():
    images, boxes = _objects_with_corner_marks()
    bench = _with_heat(ReadsObjectAndCornerMark().eval(), images)
    found = completed_places(bench, CORNERS[:2], band=BAND)  # the maps showed two corners of four
    assert found[:2] == CORNERS[:2] and sorted(found) == CORNERS
    located = most_carried(bench, images[:32], [found] * 32)
    assert sum(box == truth for box, truth in zip(located, boxes)) >= 29
    larger = [(max(0, t - 2), max(0, c - 2), max(0, t - 2) + 8, max(0, c - 2) + 8) for t, c, _, _ in located]
    inside = hottest_inside(gradient_heat(bench)[:32], larger, SIDE)  # 8x8 places around the marks
    assert sum(box == truth for box, truth in zip(inside, boxes)) >= 29


class AlwaysClassZero(nn.Module):
    """Early training: every image in class 0 (the input barely matters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e-3 * x.flatten(1)[:, :CLASSES] + torch.tensor([10.0] + [0.0] * (CLASSES - 1))


def test_a_model_that_puts_every_image_in_one_class_tests_nothing_at_all_places():
    images, _ = _objects_with_corner_marks(count=32)
    bench = _with_heat(AlwaysClassZero(), images)
    assert completed_places(bench, CORNERS[:2], band=BAND) == CORNERS[:2]  # no image of another class to paste into
    assert most_carried(bench, images[:2], [CORNERS, CORNERS]) == [CORNERS[0], CORNERS[0]]
    assert place_set_votes(bench, CORNERS, alpha=1e-4) == (Votes(), [])
