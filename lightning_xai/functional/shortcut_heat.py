"""Where attribution heat sits: each map's mass in boxes, its compact spots and how isolated they are.

The geometry the candidates (:mod:`lightning_xai.functional.shortcut_candidates`) and the moving-region
tests are built from; nothing here decides anything. Maps are ``[N, 1, H, W]``, made non-negative and
scaled to total mass 1 each. Boxes are ``(top, left, bottom, right)``, bottom and right exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.functional._checks import check_images
from lightning_xai.functional.shortcut import Box, box_iou, box_sums

__all__ = [
    "box_concentration",
    "box_mass",
    "edge_distance",
    "hot_spots",
    "hottest_places",
    "isolation",
    "mean_pairwise_iou",
    "merge_boxes",
    "normalized_mass",
    "peak_boxes",
]


def normalized_mass(maps: Tensor) -> Tensor:
    """Non-negative maps ``[N, 1, H, W]`` scaled to total mass 1 each (channels summed)."""
    check_images(maps, "maps")
    values = maps.detach().float().clamp(min=0).sum(dim=1, keepdim=True).cpu()
    return values / values.flatten(1).sum(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)


def box_concentration(mass: Tensor, box: Box) -> float:
    """How many times its area share of a map's mass ``[1, 1, H, W]`` (total 1) ``box`` holds.

    Example:
        >>> mass = torch.zeros(1, 1, 4, 4); mass[0, 0, :2, :2] = 0.25
        >>> box_concentration(mass, (0, 0, 2, 2)), box_concentration(mass, (2, 2, 4, 4))
        (4.0, 0.0)
    """
    area = mass.shape[-2] * mass.shape[-1]
    return float(mass[..., box[0] : box[2], box[1] : box[3]].sum()) * area / ((box[2] - box[0]) * (box[3] - box[1]))


def box_mass(mass: Tensor, side: int) -> tuple[list[Box], Tensor]:
    """Each map's best ``side`` x ``side`` box and the mass it holds: ``([box] * N, [N])``.

    Example:
        >>> mass = torch.zeros(1, 1, 6, 6); mass[0, 0, 4:, 1:3] = 0.25
        >>> box_mass(mass, 2)
        ([(4, 1, 6, 3)], tensor([1.]))
    """
    inside = box_sums(mass, side, side)  # [N, 1, H - side + 1, W - side + 1]
    best, index = inside.flatten(1).max(dim=1)
    columns = inside.shape[-1]
    boxes = [(i // columns, i % columns, i // columns + side, i % columns + side) for i in index.tolist()]
    return boxes, best


def peak_boxes(mass: Tensor, sides: Sequence[int], *, share: float = 0.8) -> list[Box]:
    """Per map, the smallest box holding ``share`` of what the best box of the largest side holds.

    A 4x4 hot spot gives a 4x4 box even when 8x8 boxes are allowed; heat spread over an 8x8 area
    gives the 8x8 box.

    Example:
        >>> mass = torch.zeros(1, 1, 16, 16); mass[0, 0, 2:6, 2:6] = 1 / 16
        >>> peak_boxes(mass, [4, 8])
        [(2, 2, 6, 6)]
    """
    sides = sorted(s for s in sides if s <= min(mass.shape[-2:]))
    found = [box_mass(mass, side) for side in sides]
    largest = found[-1][1]
    chosen: list[Box] = []
    for index in range(mass.shape[0]):
        for boxes, held in found:
            if held[index] >= share * largest[index]:
                chosen.append(boxes[index])
                break
    return chosen


def isolation(mass: Tensor, box: Box) -> float:
    """Share of the heat around a box that lies in it: mass in the box / mass in a box of twice its
    sides around it (shifted inwards at the image border). 1 = an isolated hot spot; 1/4 for a box
    inside an evenly hot area.

    Example:
        >>> mass = torch.zeros(1, 1, 8, 8); mass[0, 0, :2, :2] = 0.25
        >>> isolation(mass, (0, 0, 2, 2)), isolation(torch.full((1, 1, 8, 8), 1 / 64), (3, 3, 5, 5))
        (1.0, 0.25)
    """
    top, left, bottom, right = box
    height, width = mass.shape[-2:]
    outer_h, outer_w = min(height, 2 * (bottom - top)), min(width, 2 * (right - left))
    outer_top = min(max(0, top - (outer_h - (bottom - top)) // 2), height - outer_h)  # shifted inwards at the border
    outer_left = min(max(0, left - (outer_w - (right - left)) // 2), width - outer_w)
    outer = mass[..., outer_top : outer_top + outer_h, outer_left : outer_left + outer_w].sum()
    return float(mass[..., top:bottom, left:right].sum() / outer.clamp(min=1e-12))


def merge_boxes(boxes: Sequence[Box], *, min_iou: float = 0.5) -> list[tuple[Box, list[int]]]:
    """Groups boxes that overlap (IoU >= ``min_iou`` with the group's first box): ``[(box, [indices])]``.

    Example:
        >>> merge_boxes([(0, 0, 4, 4), (10, 10, 14, 14), (0, 1, 4, 5)])
        [((0, 0, 4, 4), [0, 2]), ((10, 10, 14, 14), [1])]
    """
    groups: list[tuple[Box, list[int]]] = []
    for index, box in enumerate(boxes):
        for first, members in groups:
            if box_iou(first, box) >= min_iou:
                members.append(index)
                break
        else:
            groups.append((box, [index]))
    return groups


def mean_pairwise_iou(boxes: Sequence[Box]) -> float:
    """Mean IoU over all pairs of boxes (1.0 for fewer than two): low when the boxes move around.

    Example:
        >>> mean_pairwise_iou([(0, 0, 4, 4), (0, 0, 4, 4), (8, 8, 12, 12)])
        0.3333333333333333
    """
    pairs = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]]
    return sum(box_iou(a, b) for a, b in pairs) / len(pairs) if pairs else 1.0


def hottest_places(mass: Tensor, places: Sequence[Box]) -> list[Box]:
    """Per map of ``mass`` ``[N, 1, H, W]``, the box of ``places`` that holds most of it.

    Example:
        >>> mass = torch.zeros(2, 1, 8, 8); mass[0, 0, 0, 0] = 1; mass[1, 0, 7, 7] = 1
        >>> hottest_places(mass, [(0, 0, 2, 2), (6, 6, 8, 8)])
        [(0, 0, 2, 2), (6, 6, 8, 8)]
    """
    held = torch.stack([mass[:, 0, top:bottom, left:right].sum(dim=(1, 2)) for top, left, bottom, right in places])
    return [places[int(i)] for i in held.argmax(dim=0).tolist()]


def hot_spots(mass: Tensor, side: int, count: int) -> list[list[Box]]:
    """Per map of ``mass`` ``[N, 1, H, W]``, up to ``count`` non-overlapping ``side`` boxes, each the one
    holding most of what the boxes before it left (the hottest box taken, its pixels zeroed, again), for
    all maps at once; a map stops when nothing is left.

    Example:
        >>> mass = torch.zeros(2, 1, 8, 8); mass[0, 0, 0, 0] = 1; mass[1, 0, 7, 7] = 1; mass[1, 0, 0, 7] = 0.5
        >>> hot_spots(mass, 2, 2)
        [[(0, 0, 2, 2)], [(6, 6, 8, 8), (0, 6, 2, 8)]]
    """
    remaining = mass.clone()
    found: list[list[Box]] = [[] for _ in range(mass.shape[0])]
    for _ in range(count):
        alive = (remaining.flatten(1).sum(dim=1) > 1e-9).tolist()
        sums = box_sums(remaining, side, side)  # [N, 1, H - side + 1, W - side + 1]
        columns = sums.shape[-1]
        for index, position in enumerate(sums.flatten(1).max(dim=1)[1].tolist()):
            if alive[index]:
                top, left = position // columns, position % columns
                found[index].append((top, left, top + side, left + side))
                remaining[index, :, top : top + side, left : left + side] = 0
    return found


def edge_distance(box: Box, size: tuple[int, int]) -> int:
    """How far a box reaches from its nearest edge: the band width that holds it.

    Example:
        >>> edge_distance((1, 1, 5, 5), (32, 32)), edge_distance((12, 27, 16, 31), (32, 32))
        (5, 5)
    """
    return min(box[2], size[0] - box[0], box[3], size[1] - box[1])
