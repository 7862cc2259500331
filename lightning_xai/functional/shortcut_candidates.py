"""Candidate shortcut regions from attribution maps: the places to test, of each kind, across methods.

Where each map's heat sits and how compact it is: :mod:`lightning_xai.functional.shortcut_heat`.

A candidate is only a question to test (see :mod:`lightning_xai.functional.shortcut_evidence`);
nothing here decides a finding. Maps are ``[N, 1, H, W]``, made non-negative and scaled to total
mass 1 each. Boxes are ``(top, left, bottom, right)``, bottom and right exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional.shortcut import Box, box_iou
from lightning_xai.functional.shortcut_heat import (
    box_concentration,
    box_mass,
    edge_distance,
    hot_spots,
    isolation,
    merge_boxes,
    normalized_mass,
    peak_boxes,
)

__all__ = [
    "SPOT_ISOLATION",
    "Candidate",
    "describe_place",
    "describe_places",
    "moving_candidate",
    "others_look_there",
    "plan_candidates",
    "random_place",
    "spot_at_border",
]

SPOT_ISOLATION = 0.5  # a spot apart from the rest of the heat: at least half the heat around it lies in it


def random_place(size: tuple[int, int], box: Box, generator: torch.Generator) -> Box:
    """A box of ``box``'s size at a random place that does not overlap it (``box`` itself if none fits)."""
    height, width = box[2] - box[0], box[3] - box[1]
    for _ in range(64):
        top = int(torch.randint(0, size[0] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, size[1] - width + 1, (1,), generator=generator))
        candidate = (top, left, top + height, left + width)
        if box_iou(candidate, box) == 0:
            return candidate
    return box


@dataclass
class Candidate:
    """A question for the interventions: ``kind``, the box (or places) and the methods that proposed it.

    ``probe_boxes``: for moving regions, each probe's own box (same side for all); ``probe_read``: once
    one is confirmed, whether the model reads each probe's box (filling it lowers the probe's predicted
    class's probability by at least ``Shortcuts.min_effect``); ``band``: how far
    from the edges a moving region's spots lie (0 for the other kinds); ``isolation``: for fixed
    regions, the largest share of the heat around the box that lies in it, over the proposing methods'
    mean maps (see :func:`~lightning_xai.functional.shortcut_heat.isolation`; for class marks, the proposing probes' mean map).
    """

    kind: str
    box: Box
    methods: list[str] = field(default_factory=list)
    concentration: float = 0.0
    places: list[Box] = field(default_factory=list)
    probe_boxes: list[Box] = field(default_factory=list)
    probe_read: list[bool] = field(default_factory=list)
    band: int = 0
    isolation: float = 0.0

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two candidates the same test."""
        return (self.kind, self.box, tuple(self.places))


def describe_place(box: Box, size: tuple[int, int]) -> str:
    """Where a box lies, in words: ``"top-left corner"``, ``"bottom edge"``, ``"centre"``...

    Example:
        >>> describe_place((1, 1, 5, 5), (32, 32)), describe_place((14, 14, 18, 18), (32, 32))
        ('top-left corner', 'centre')
    """
    rows = ("top", "middle", "bottom")[min(2, int(3 * (box[0] + box[2]) / 2 / size[0]))]
    cols = ("left", "centre", "right")[min(2, int(3 * (box[1] + box[3]) / 2 / size[1]))]
    if rows == "middle" and cols == "centre":
        return "centre"
    if rows == "middle":
        return f"{cols} edge"
    if cols == "centre":
        return f"{rows} edge"
    return f"{rows}-{cols} corner"


def describe_places(boxes: Sequence[Box], size: tuple[int, int]) -> str:
    """Where boxes that move around lie: ``"corners"``, ``"along the border"`` or ``"anywhere"``.

    Example:
        >>> (describe_places([(0, 0, 4, 4), (28, 28, 32, 32)], (32, 32)),
        ...  describe_places([(0, 0, 4, 4), (0, 14, 4, 18)], (32, 32)))
        ('corners', 'along the border')
    """
    places = [describe_place(box, size) for box in boxes]
    if all(place.endswith("corner") for place in places):
        return "corners"
    if all(place != "centre" for place in places):
        return "along the border"
    return "anywhere"


def _mean_map_boxes(mean: Tensor, sides: Sequence[int], count: int) -> list[Box]:
    """Up to ``count`` non-overlapping hot boxes of one map ``[1, 1, H, W]`` (sides chosen as in ``peak_boxes``)."""
    remaining, boxes = mean.clone(), []
    for _ in range(count):
        if float(remaining.sum()) <= 1e-9:
            break
        box = peak_boxes(remaining, sides)[0]
        boxes.append(box)
        remaining[..., box[0] : box[2], box[1] : box[3]] = 0
    return boxes


def plan_candidates(
    displays: dict[str, Tensor],
    size: tuple[int, int],
    sides: Sequence[int],
    *,
    min_concentration: float,
    min_isolation: float,
    max_places: int,
    suspects: Sequence[Box] = (),
    classes: Tensor | None = None,
) -> tuple[dict[tuple[Any, ...], Candidate], dict[str, float]]:
    """Every method's candidates, merged across methods (each is tested once), and each method's peak concentration.

    Args:
        displays: method name to maps ``[P, 1, H, W]`` of the same probes.
        size: image size ``(H, W)``; sides: box sides in pixels.
        min_concentration: fixed regions need this many times their area share of the mean heat.
        min_isolation: a box must hold this share of the heat around it (see :func:`~lightning_xai.functional.shortcut_heat.isolation`).
        max_places: most class-mark places per method.
        suspects: boxes always tested as fixed regions.
        classes: the probes' predicted classes ``[P]``: a spot of some probes is not a class-mark candidate
            where the probes of the other classes look too (see :func:`others_look_there`).

    Example:
        >>> maps = torch.zeros(6, 1, 16, 16); maps[:, :, :2, :2] = 1.0
        >>> found, peaks = plan_candidates({"m": maps}, (16, 16), [2, 4], min_concentration=2, min_isolation=0.5,
        ...                                max_places=4)
        >>> sorted({c.kind for c in found.values()}), peaks
        (['class_mark', 'region'], {'m': 64.0})
    """
    found: dict[tuple[Any, ...], Candidate] = {}

    def add(candidate: Candidate, method: str) -> None:
        kept = found.setdefault(_same_test(found, candidate), candidate)
        kept.methods.append(method) if method not in kept.methods else None
        kept.concentration = max(kept.concentration, candidate.concentration)
        kept.isolation = max(kept.isolation, candidate.isolation)
        if kept is not candidate and kept.kind == "moving_region":
            _join_moving(kept, candidate)

    peaks: dict[str, float] = {}
    area = size[0] * size[1]
    for name, maps in displays.items():
        mass = normalized_mass(maps)
        mean = mass.mean(dim=0, keepdim=True)
        peaks[name] = float(box_mass(mean, min(sides))[1][0]) * area / min(sides) ** 2
        for box in _mean_map_boxes(mean, sides, 2):
            concentration, apart = box_concentration(mean, box), isolation(mean, box)
            if concentration >= min_concentration and apart >= min_isolation:
                add(Candidate("region", box, concentration=concentration, isolation=apart), name)
        own = peak_boxes(mass, sides)
        compact = [i for i, box in enumerate(own) if isolation(mass[i : i + 1], box) >= min_isolation]
        groups = sorted(merge_boxes([own[i] for i in compact]), key=lambda group: -len(group[1]))[:max_places]
        for box, members in groups:
            proposing = [compact[m] for m in members]
            if classes is None or not others_look_there(
                mass, classes, proposing, box, min_concentration, min_isolation
            ):
                apart = isolation(mass[proposing].mean(dim=0, keepdim=True), box)
                add(Candidate("class_mark", box, isolation=apart), name)
        moving = moving_candidate(mass, sides, min_isolation, max_places)
        if moving is not None:
            add(moving, name)
        for box in suspects:
            add(Candidate("region", box), name)
    return found, peaks


def others_look_there(
    mass: Tensor,
    classes: Tensor,
    proposing: Sequence[int],
    box: Box,
    min_concentration: float,
    min_isolation: float,
) -> bool:
    """Whether ``box`` lies in a larger hot area of the other classes' probes: the probes of classes other
    than the ``proposing`` probes' hold at least ``min_concentration`` times its area share of their heat
    ``mass`` ``[P, 1, H, W]`` in it, on average, and the box holds less than ``min_isolation`` of that heat
    around it (see :func:`~lightning_xai.functional.shortcut_heat.isolation`).

    A mark that one class carries sits where the other classes' evidence does not, or where they read a
    compact spot of their own (a swatch every class carries); a piece of a larger area where every class
    looks is where the objects are (centred objects: the middle of a ring, which turns a disc into a ring
    when pasted, is a piece of the object, not a mark).

    Example:
        >>> mass = torch.zeros(4, 1, 8, 8); mass[:, :, 2:6, 2:6] = 1 / 16  # every probe looks at the middle
        >>> others_look_there(mass, torch.tensor([0, 1, 2, 3]), [0], (3, 3, 5, 5), 2.0, 0.4)
        True
        >>> others_look_there(mass, torch.tensor([0, 1, 2, 3]), [0], (0, 0, 2, 2), 2.0, 0.4)
        False
    """
    own = {int(classes[i]) for i in proposing}
    others = [i for i in range(classes.shape[0]) if int(classes[i]) not in own]
    if not others:
        return False
    mean = mass[others].mean(dim=0, keepdim=True)
    concentration = box_concentration(mean / max(float(mean.sum()), 1e-12), box)
    return concentration >= min_concentration and isolation(mean, box) < min_isolation


def _same_test(found: dict[tuple[Any, ...], Candidate], candidate: Candidate) -> tuple[Any, ...]:
    """The key of an already planned candidate that asks the same question, else the candidate's own:
    class marks whose boxes overlap (IoU >= 0.5), moving regions (one test, see :func:`_join_moving`)."""
    for key, other in found.items():
        if other.kind == candidate.kind == "moving_region":
            return key
        if other.kind == candidate.kind == "class_mark" and box_iou(other.box, candidate.box) >= 0.5:
            return key
    return candidate.key


def _join_moving(kept: Candidate, other: Candidate) -> None:
    """One moving-region test per run: places of the same side are joined; a smaller side replaces a
    larger one (methods with coarser maps see the same mark as a larger spot; the test completes the
    places it is given, see :func:`~lightning_xai.functional.shortcut_places.completed_places`)."""
    side, other_side = kept.box[2] - kept.box[0], other.box[2] - other.box[0]
    if other_side < side:
        kept.box, kept.places, kept.probe_boxes = other.box, list(other.places), list(other.probe_boxes)
    elif other_side == side:
        kept.places += [p for p in other.places if all(box_iou(p, q) < 0.5 for q in kept.places)]
    kept.band = max(kept.band, other.band)


def moving_candidate(mass: Tensor, sides: Sequence[int], min_isolation: float, max_places: int) -> Candidate | None:
    """A moving region of the smallest of ``sides`` at which the maps' ``mass`` ``[N, 1, H, W]`` (each
    of total 1) line up compact spots at a few places in the border band (see :func:`_moving_candidate`)."""
    for side in sorted(sides):
        moving = _moving_candidate(mass, side, min_isolation, max_places)
        if moving is not None:
            return moving
    return None


def _moving_candidate(mass: Tensor, side: int, min_isolation: float, max_places: int) -> Candidate | None:
    """Compact hot spots of one small side in the border band, at varying places in several maps (of the
    probes, or of the test images' gradient x input).

    Each map offers its 3 hottest isolated spots; spots within a quarter of the image side of an edge
    count. At least 4 maps must have one, at no fewer than 2 places (not one fixed place). The band is
    as wide as the spots reach from the edge; places are the spots' places, those hot in most maps
    first. A spot that moves anywhere in the image cannot be told from an object at random places by
    these interventions, so only the border band is searched.
    """
    strict = max(min_isolation, 0.6)  # a spot that moves must stand alone: not a piece of a hot object
    size = (mass.shape[-2], mass.shape[-1])
    spots = [
        [
            box
            for box in boxes
            if isolation(mass[i : i + 1], box) >= strict and edge_distance(box, size) <= min(size) // 4
        ]
        for i, boxes in enumerate(hot_spots(mass, side, 3))
    ]
    flat = [(probe, box) for probe, boxes in enumerate(spots) for box in boxes]
    groups = [(box, {flat[i][0] for i in members}) for box, members in merge_boxes([box for _, box in flat])]
    groups = sorted(groups, key=lambda g: -len(g[1]))[:max_places]
    places = [box for box, _ in groups]
    if len(places) < 2 or sum(bool(boxes) for boxes in spots) < 4:
        return None
    probe_boxes = []
    for probe, boxes in enumerate(spots):
        near = [place for place in places for box in boxes if box_iou(place, box) >= 0.5]
        probe_boxes.append(near[0] if near else (boxes[0] if boxes else box_mass(mass[probe : probe + 1], side)[0][0]))
    band = max(edge_distance(box, size) for _, box in flat)
    return Candidate("moving_region", places[0], places=places, probe_boxes=probe_boxes, band=band)


def spot_at_border(candidate: Candidate, size: tuple[int, int]) -> bool:
    """Whether a fixed region is a spot apart from the rest of the heat at the image border: at most an
    eighth of the image side from an edge, holding at least ``SPOT_ISOLATION`` of the heat around it
    on some proposing method's mean map. Such a place may be tested for partial reliance (see
    :func:`~lightning_xai.functional.shortcut_interventions.region_votes`): a piece of a centred object
    lies in the middle of its heat and away from the border.

    Example:
        >>> corner = Candidate("region", (1, 1, 7, 7), isolation=0.55)
        >>> centre = Candidate("region", (12, 12, 20, 20), isolation=0.55)
        >>> spot_at_border(corner, (32, 32)), spot_at_border(centre, (32, 32))
        (True, False)
        >>> spot_at_border(Candidate("region", (1, 1, 7, 7), isolation=0.45), (32, 32))  # part of a larger hot area
        False
    """
    top, left, bottom, right = candidate.box
    gap = min(top, left, size[0] - bottom, size[1] - right)
    return candidate.kind == "region" and gap <= min(size) // 8 and candidate.isolation >= SPOT_ISOLATION
