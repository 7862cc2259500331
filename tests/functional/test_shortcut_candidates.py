"""Candidate regions from maps: box sizes, compactness, merging and the plan across methods."""

from __future__ import annotations

import torch

from lightning_xai.functional.shortcut_candidates import (
    SPOT_ISOLATION,
    Candidate,
    describe_places,
    plan_candidates,
    spot_at_border,
)
from lightning_xai.functional.shortcut_heat import isolation, normalized_mass
from tests.functional.test_shortcut_heat import _spot_maps


def test_plan_merges_methods_and_proposes_each_kind():
    fixed = _spot_maps([(0, 0, 2, 2)] * 8)
    corners = [(0, 0, 2, 2), (0, 14, 2, 16), (14, 0, 16, 2), (14, 14, 16, 16)] * 2
    moving = _spot_maps(corners)
    found, peaks = plan_candidates(
        {"a": fixed, "b": fixed.clone(), "c": moving},
        (16, 16),
        [2, 4],
        min_concentration=2.0,
        min_isolation=0.4,
        max_places=6,
    )
    region = found[("region", (0, 0, 2, 2), ())]
    assert region.methods == ["a", "b"] and peaks["a"] == peaks["b"] > 10
    assert region.isolation > 0.9 and spot_at_border(region, (16, 16))  # a lone spot in the corner
    (walker,) = [c for c in found.values() if c.kind == "moving_region"]
    assert walker.methods == ["c"] and walker.probe_boxes == corners and len(walker.places) == 4
    spread = torch.ones(8, 1, 16, 16)
    nothing, _ = plan_candidates(
        {"a": spread}, (16, 16), [2, 4], min_concentration=2.0, min_isolation=0.4, max_places=6
    )
    assert nothing == {}


def test_a_spot_where_the_other_classes_look_too_is_no_class_mark():
    maps = torch.full((8, 1, 16, 16), 0.01)
    maps[:, :, 4:12, 4:12] = 1.0  # every probe looks at its centred object
    maps[:4, :, 6:10, 6:10] = 4.0  # probes of class 0 most at its middle: a piece of their object
    maps[4:, :, 0:4, 12:16] = 2.0  # probes of class 1 also at a corner the others ignore: a mark
    classes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    settings = dict(min_concentration=2.0, min_isolation=0.3, max_places=4)
    marks = lambda found: sorted(c.box for c in found.values() if c.kind == "class_mark")
    blind, _ = plan_candidates({"m": maps}, (16, 16), [4], **settings)
    seeing, _ = plan_candidates({"m": maps}, (16, 16), [4], classes=classes, **settings)
    assert (6, 6, 10, 10) in marks(blind) and (0, 12, 4, 16) in marks(blind)
    assert marks(seeing) == [(0, 12, 4, 16)]
    maps[:4, :, 0:4, 12:16] = 2.0  # class 0 reads a compact spot at that corner too (a swatch every class has)
    shared, _ = plan_candidates({"m": maps}, (16, 16), [4], classes=classes, **settings)
    assert (0, 12, 4, 16) in marks(shared)  # still tested: where the others look is a spot, not their object


def test_moving_spots_of_several_methods_make_one_test_at_the_smallest_side():
    corners = [(0, 0, 2, 2), (0, 14, 2, 16), (14, 0, 16, 2), (14, 14, 16, 16)] * 2
    coarse = [(0, 0, 4, 4), (0, 12, 4, 16), (12, 0, 16, 4), (12, 12, 16, 16)] * 2  # a blurrier method's spots
    settings = dict(min_concentration=2.0, min_isolation=0.4, max_places=6)
    for order in (("fine", "coarse"), ("coarse", "fine")):
        maps = {"fine": _spot_maps(corners), "coarse": _spot_maps(coarse)}
        found, _ = plan_candidates({name: maps[name] for name in order}, (16, 16), [2, 4], **settings)
        (walker,) = [c for c in found.values() if c.kind == "moving_region"]
        assert sorted(walker.methods) == ["coarse", "fine"] and walker.box[2] - walker.box[0] == 2
        assert sorted(walker.places) == sorted(set(corners)) and walker.probe_boxes == corners


def test_a_spot_at_the_border_stands_apart_from_the_heat_and_near_an_edge():
    assert SPOT_ISOLATION == 0.5
    centred_object = normalized_mass(_spot_maps([(4, 4, 28, 28)], size=32))
    piece = Candidate("region", (12, 12, 20, 20), isolation=isolation(centred_object, (12, 12, 20, 20)))
    assert piece.isolation == 0.25 and not spot_at_border(piece, (32, 32))  # the middle of an object
    edge_of_object = Candidate("region", (4, 4, 8, 8), isolation=isolation(centred_object, (4, 4, 8, 8)))
    assert edge_of_object.isolation < SPOT_ISOLATION and not spot_at_border(edge_of_object, (32, 32))
    lone = normalized_mass(_spot_maps([(1, 1, 7, 7)], size=32)) + normalized_mass(
        _spot_maps([(12, 12, 20, 20)], size=32)
    )
    corner = Candidate("region", (1, 1, 7, 7), isolation=isolation(lone, (1, 1, 7, 7)))
    assert corner.isolation > 0.9 and spot_at_border(corner, (32, 32))
    inside = Candidate("region", (5, 5, 11, 11), isolation=1.0)  # 5 pixels from the edge: more than 32 / 8
    assert not spot_at_border(inside, (32, 32)) and spot_at_border(inside, (64, 64))  # an eighth of 64 is 8
    assert not spot_at_border(Candidate("class_mark", (1, 1, 7, 7), isolation=1.0), (32, 32))


def test_places_at_the_corners_are_described_as_corners():
    assert describe_places([(0, 0, 4, 4), (12, 0, 16, 4)], (16, 16)) == "corners"
