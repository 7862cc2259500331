"""Where heat sits: box masses, peaks, isolation, merged spots and the hottest places, checked by hand."""

from __future__ import annotations

import torch

from lightning_xai.functional.shortcut_candidates import _mean_map_boxes
from lightning_xai.functional.shortcut_heat import (
    hot_spots,
    hottest_places,
    isolation,
    mean_pairwise_iou,
    merge_boxes,
    normalized_mass,
    peak_boxes,
)


def _spot_maps(boxes: list, size: int = 16) -> torch.Tensor:
    maps = torch.full((len(boxes), 1, size, size), 1e-3)
    for index, box in enumerate(boxes):
        maps[index, :, box[0] : box[2], box[1] : box[3]] = 1.0
    return maps


def test_peak_boxes_pick_the_size_of_the_hot_spot():
    mass = normalized_mass(_spot_maps([(0, 0, 2, 2), (4, 4, 8, 8)]))
    assert peak_boxes(mass, [2, 4]) == [(0, 0, 2, 2), (4, 4, 8, 8)]


def test_isolation_tells_a_spot_from_a_piece_of_an_object():
    spot, object_ = normalized_mass(_spot_maps([(0, 0, 2, 2)])), normalized_mass(_spot_maps([(2, 2, 14, 14)]))
    assert isolation(spot, (0, 0, 2, 2)) > 0.9 and isolation(object_, (7, 7, 9, 9)) == 0.25


def test_merged_boxes_and_their_spread():
    assert merge_boxes([(0, 0, 2, 2), (0, 0, 2, 2), (8, 8, 10, 10)]) == [((0, 0, 2, 2), [0, 1]), ((8, 8, 10, 10), [2])]
    assert mean_pairwise_iou([(0, 0, 2, 2)] * 3) == 1.0


def test_hot_spots_of_all_maps_at_once_are_each_maps_own():
    generator = torch.Generator().manual_seed(0)
    mass = torch.rand(12, 1, 32, 32, generator=generator) ** 8
    mass[3] = 0  # nothing to find
    mass[5, 0, 2:6, 2:6] += 5  # one spot holds nearly everything
    mass = normalized_mass(mass)
    for side in (4, 6, 8):
        assert hot_spots(mass, side, 3) == [_mean_map_boxes(mass[i : i + 1], [side], 3) for i in range(12)]
    assert hot_spots(mass, 4, 3)[3] == [] and hot_spots(mass, 4, 3)[5][0] == (2, 2, 6, 6)


def test_hottest_places_pick_the_place_holding_most_of_each_map():
    maps = _spot_maps([(0, 0, 4, 4), (12, 12, 16, 16), (0, 12, 4, 16)])
    places = [(0, 0, 4, 4), (0, 12, 4, 16), (12, 12, 16, 16)]
    assert hottest_places(maps, places) == [places[0], places[2], places[1]]
