"""Where a moving mark sits in an image, by what the images hold rather than by what the model reads there.

A mark that codes a class recurs, at varying places, in the images of that class and not in the others':
a swatch of the class's shade, a glyph, a tag. :func:`recurring_boxes` finds, in each image, the box in the
border band whose content has close copies (anywhere in the band) in the images of one class and none as close
in any other class's. Nothing about the mark's look is assumed (no flatness, no colour), and no threshold: the
box of highest recurrence is taken, whatever the data.

This locates a mark also in the images in which the model does not read it (there, neither its gradient nor
filling the box can say where it is: docs/shortcuts.md, "All places at once"). It proposes nothing and decides
nothing: the tests of a moving region (:func:`~lightning_xai.functional.shortcut_moving.moving_votes`) decide
with the model whether what sits there carries a class; on clean data the most recurring box is a piece of the
object or of the background, and those tests stay as they were.

Boxes are ``(top, left, bottom, right)`` in input pixels, bottom and right exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.functional.shortcut import Box
from lightning_xai.functional.shortcut_interventions import Bench
from lightning_xai.functional.shortcut_moving import band_positions

__all__ = [
    "NEAREST_COPIES",
    "REFINED",
    "SEARCH_SIDE",
    "recurrence_scores",
    "recurring_boxes",
    "recurring_own",
    "same_images",
]

NEAREST_COPIES = 3
"""How many close copies a class's images must hold for the content to recur in that class: the distance to a
class is to its ``NEAREST_COPIES``-th closest image, so that one or two images of another class that carry the
mark (the model's mistakes, a decoy that disagrees with the label) do not make the mark recur there too."""


def _patches(images: Tensor, side: int, positions: Tensor) -> Tensor:
    """The ``side`` boxes of ``images`` ``[N, C, H, W]`` at ``positions`` (flat corners), ``[N, L, C * side^2]``."""
    return F.unfold(images.float(), side)[:, :, positions].transpose(1, 2).contiguous()


def recurrence_scores(
    queries: Tensor,
    references: Tensor,
    reference_classes: Tensor,
    *,
    exclude: Tensor | None = None,
    nearest: int = NEAREST_COPIES,
) -> Tensor:
    """How much each query box's content recurs in one class of references more than in any other.

    For each query box and each class, the distance to that class is the ``nearest``-th smallest, over the
    class's reference images, of the closest box of the image (Euclidean, over all positions given); the score
    is the second smallest class distance minus the smallest (0 when fewer than two classes have ``nearest``
    references).

    Args:
        queries: ``[Q, Lq, D]`` boxes of the query images.
        references: ``[M, L, D]`` boxes of the reference images.
        reference_classes: ``[M]`` (long) each reference's class.
        exclude: ``[Q]`` (long) per query, a reference index to leave out (the query itself), or -1.
        nearest: see :data:`NEAREST_COPIES`.

    Returns:
        ``[Q, Lq]`` scores (float32, >= 0).

    Example:
        >>> flat = lambda value: torch.full((1, 4), value)
        >>> noise = torch.rand(6, 2, 4, generator=torch.Generator().manual_seed(0))
        >>> references = noise.clone(); references[:3, 0] = 5.0  # class 0's images all hold the same mark
        >>> query = torch.stack([torch.cat([flat(5.0), torch.rand(1, 4)])])  # the mark, then noise
        >>> scores = recurrence_scores(query, references, torch.tensor([0, 0, 0, 1, 1, 1]), nearest=2)
        >>> bool(scores[0, 0] > scores[0, 1])
        True
    """
    count, positions, depth = references.shape
    flat = references.reshape(count * positions, depth)
    classes = reference_classes.cpu()
    by_class = [(classes == k).nonzero().flatten() for k in classes.unique().tolist()]  # once, not per query
    scores = torch.zeros(queries.shape[0], queries.shape[1])
    for index, boxes in enumerate(queries):
        closest = torch.cdist(boxes, flat).view(boxes.shape[0], count, positions).amin(dim=2)  # [Lq, M]
        distances = []
        for members in by_class:
            if exclude is not None:
                members = members[members != int(exclude[index])]
            if members.numel() >= nearest:
                distances.append(closest[:, members].topk(nearest, dim=1, largest=False).values[:, -1])
        if len(distances) >= 2:
            two = torch.stack(distances, dim=1).topk(2, dim=1, largest=False).values
            scores[index] = two[:, 1] - two[:, 0]
    return scores


def recurring_boxes(
    images: Tensor,
    side: int,
    band: int,
    references: Tensor,
    reference_classes: Tensor,
    *,
    exclude: Sequence[int] | None = None,
    within: Sequence[Box] | None = None,
    around: Sequence[Box] | None = None,
) -> tuple[list[Box], Tensor]:
    """Per image, the ``side`` box within ``band`` pixels of an edge whose content recurs most in one class of
    the references (:func:`recurrence_scores`), and its score.

    The search scores every other position first (rows and columns), then every position around the
    ``REFINED`` best of those (a mark at an odd offset still shares three quarters of a box found beside it):
    about a third of the cost of scoring every position.

    Args:
        images: ``[N, C, H, W]`` the images to locate the mark in.
        side: the box side in pixels.
        band: how far from an edge the boxes may reach (``>= side``).
        references: ``[M, C, H, W]`` images whose classes are known (the test images, by their predictions).
        reference_classes: ``[M]`` (long).
        exclude: per image, the index of a reference to leave out (the image itself), or -1.
        within: only boxes inside one of these are chosen (the places of a mark moving among a few; the
            references' boxes are still all those of the band). Few positions are all scored.
        around: per image, a smaller box that the box chosen must hold (a mark found at a smaller side).

    Returns:
        The boxes (``N``) and their scores ``[N]`` (0 where no two classes have enough references: the box is
        then one of the band's, arbitrary).

    Example:
        >>> generator = torch.Generator().manual_seed(0)
        >>> images = torch.rand(12, 1, 12, 12, generator=generator) * 0.2
        >>> classes = torch.arange(12) % 2
        >>> tops = torch.randint(0, 9, (12,), generator=generator).tolist()
        >>> for image, (k, top) in enumerate(zip(classes.tolist(), tops)):  # class k's shade on the left edge
        ...     images[image, :, top : top + 3, 0:3] = 0.5 + 0.5 * k
        >>> boxes, _ = recurring_boxes(images, 3, 3, images, classes, exclude=range(12))
        >>> [box[0] for box in boxes] == tops and {box[1] for box in boxes} == {0}
        True
    """
    scale = side / SEARCH_SIDE
    if scale <= 1:
        return _search(images, side, band, references, reference_classes, exclude=exclude, within=within, around=around)
    height, width = images.shape[-2:]
    small = (max(SEARCH_SIDE, round(height / scale)), max(SEARCH_SIDE, round(width / scale)))
    rows, columns = small[0] / height, small[1] / width

    def shrink(boxes: Sequence[Box]) -> list[Box]:  # outward: a place keeps at least the search side
        return [
            (math.floor(a * rows), math.floor(b * columns), math.ceil(c * rows), math.ceil(d * columns))
            for a, b, c, d in boxes
        ]

    found, scores = _search(
        F.interpolate(images.float(), size=small, mode="area"),
        SEARCH_SIDE,
        max(SEARCH_SIDE, round(band / scale)),
        F.interpolate(references.float(), size=small, mode="area"),
        reference_classes,
        exclude=exclude,
        within=shrink(within) if within else None,
        around=shrink(around) if around else None,
    )
    boxes = [_scaled_back(box, side, (height, width), (rows, columns)) for box in found]
    if around is not None:  # rounding may have moved a box off the smaller one it must hold
        boxes = [_holding_box(box, held) for box, held in zip(boxes, around)]
    return boxes, scores


def _scaled_back(box: Box, side: int, size: tuple[int, int], ratios: tuple[float, float]) -> Box:
    """A ``side`` box of an image of ``size`` at the place of ``box``, found in it shrunk by ``ratios`` (rows,
    columns)."""
    top = min(size[0] - side, round(box[0] / ratios[0]))
    left = min(size[1] - side, round(box[1] / ratios[1]))
    return top, left, top + side, left + side


def _holding_box(box: Box, held: Box) -> Box:
    """``box`` moved as little as needed to hold ``held`` (no larger than it).

    Example:
        >>> _holding_box((0, 0, 6, 6), (5, 1, 9, 5))
        (3, 0, 9, 6)
    """
    side = box[2] - box[0]
    top = min(max(box[0], held[2] - side), held[0])
    left = min(max(box[1], held[3] - side), held[1])
    return top, left, top + side, left + side


SEARCH_SIDE = 4
"""The box side, in pixels, at which :func:`recurring_boxes` searches: images whose box is larger are shrunk
(area) until it is this side (a search over every pair of boxes in the band grows with the fourth power of
the image side)."""


def _search(
    images: Tensor,
    side: int,
    band: int,
    references: Tensor,
    reference_classes: Tensor,
    *,
    exclude: Sequence[int] | None = None,
    within: Sequence[Box] | None = None,
    around: Sequence[Box] | None = None,
) -> tuple[list[Box], Tensor]:
    """:func:`recurring_boxes` at the images' own scale: the coarse search, then around its best positions."""
    size = (images.shape[-2], images.shape[-1])
    columns = size[1] - side + 1
    allowed = band_positions(size, side, band).flatten().nonzero().flatten()
    references_boxes = _patches(references.cpu(), side, allowed)
    chosen_from = allowed if within is None else _inside(allowed, columns, side, within)
    chosen_from = chosen_from if chosen_from.numel() else allowed  # no box of the band inside the places given
    coarse = chosen_from[((chosen_from // columns) % 2 == 0) & ((chosen_from % columns) % 2 == 0)]
    if chosen_from.numel() <= 9 * REFINED or coarse.numel() == 0:
        coarse = chosen_from
    left_out_of = [-1] * images.shape[0] if exclude is None else [int(index) for index in exclude]
    boxes: list[Box] = []
    scores = torch.zeros(images.shape[0])
    for index in range(images.shape[0]):
        image = images[index : index + 1].cpu()
        left_out = torch.tensor([left_out_of[index]])
        if around is not None:  # the few boxes holding the smaller one: all scored
            held = _holding(chosen_from, columns, side, around[index])
            near = held if held.numel() else chosen_from
        elif coarse is chosen_from:  # few positions: all scored once
            near = chosen_from
        else:
            first = recurrence_scores(
                _patches(image, side, coarse), references_boxes, reference_classes, exclude=left_out
            )
            near = _near(coarse[first[0].topk(min(REFINED, coarse.numel())).indices], columns, chosen_from)
        second = recurrence_scores(_patches(image, side, near), references_boxes, reference_classes, exclude=left_out)
        chosen = int(second[0].argmax())
        top, left = int(near[chosen]) // columns, int(near[chosen]) % columns
        boxes.append((top, left, top + side, left + side))
        scores[index] = second[0, chosen]
    return boxes, scores


REFINED = 3
"""How many of the best positions of the coarse search (:func:`recurring_boxes`) are searched around."""


def _inside(positions: Tensor, columns: int, side: int, boxes: Sequence[Box]) -> Tensor:
    """The ``positions`` (flat corners on a grid of ``columns``) whose ``side`` box lies inside one of ``boxes``."""
    tops, lefts = positions // columns, positions % columns
    inside = torch.zeros(positions.numel(), dtype=torch.bool)
    for top, left, bottom, right in boxes:
        inside |= (tops >= top) & (lefts >= left) & (tops + side <= bottom) & (lefts + side <= right)
    return positions[inside]


def _holding(positions: Tensor, columns: int, side: int, box: Box) -> Tensor:
    """The ``positions`` (flat corners on a grid of ``columns``) whose ``side`` box holds ``box``."""
    tops, lefts = positions // columns, positions % columns
    holds = (tops <= box[0]) & (lefts <= box[1]) & (tops + side >= box[2]) & (lefts + side >= box[3])
    return positions[holds]


def _near(positions: Tensor, columns: int, allowed: Tensor) -> Tensor:
    """The ``allowed`` positions within one row and column of any of ``positions`` on a grid of ``columns``."""
    tops, lefts = allowed // columns, allowed % columns
    near = torch.zeros(allowed.numel(), dtype=torch.bool)
    for position in positions.tolist():
        near |= ((tops - position // columns).abs() <= 1) & ((lefts - position % columns).abs() <= 1)
    return allowed[near]


def recurring_own(bench: Bench, own: Sequence[Box], band: int, *, smallest_side: int) -> list[Box]:
    """``own`` (a box per image of ``bench``) with the images of the test half given instead the box where their
    content recurs in one class (:func:`recurring_boxes`; references: all of the bench's images by their predicted
    classes, each image left out of its own). The search is at ``smallest_side`` (a box larger than the mark holds
    noise around it that its copies do not share); when the boxes are larger, the box of their side that holds
    the one found and recurs most. An image where nothing recurs (fewer than two classes with enough images)
    keeps its box. The test half are the donors of the per-image test of a moving region: each then gives the
    content at its mark, also where the model does not read it there and its gradient or its filling could not
    place it.

    Example:
        >>> bench = Bench.build(lambda x: x.flatten(1)[:, :2], torch.rand(8, 1, 8, 8), seed=0, batch_size=8, fill="mean")
        >>> own = recurring_own(bench, [(0, 0, 3, 3)] * 8, 3, smallest_side=2)
        >>> len(own), all(box[2] - box[0] == 3 and min(box[0], box[1], 8 - box[2], 8 - box[3]) <= 1 for box in own)
        (8, True)
    """
    side, test = own[0][2] - own[0][0], bench.test
    images, exclude = bench.images[test], test.tolist()
    found, scores = recurring_boxes(
        images, min(side, smallest_side), band, bench.images, bench.predicted, exclude=exclude
    )
    if side > smallest_side:  # the box of the candidate's side holding it that recurs most
        found, _ = recurring_boxes(images, side, band, bench.images, bench.predicted, exclude=exclude, around=found)
    boxes = list(own)
    for index, box, score in zip(test.tolist(), found, scores.tolist()):
        boxes[index] = box if score > 0 else boxes[index]
    return boxes


def same_images(images: Tensor, among: Tensor) -> list[int]:
    """Per image of ``images`` ``[N, C, H, W]``, the index of an identical image in ``among`` ``[M, C, H, W]``,
    or -1 (the probes are often test images too: each must not count itself as a copy of its own mark).

    Example:
        >>> among = torch.arange(12.0).view(3, 1, 2, 2)
        >>> same_images(torch.stack([among[2], among[0] + 1]), among)
        [2, -1]
    """
    flat, others = images.flatten(1).cpu().float(), among.flatten(1).cpu().float()
    indices = []
    for row in flat:
        equal = (others == row).all(dim=1).nonzero().flatten()
        indices.append(int(equal[0]) if equal.numel() else -1)
    return indices
