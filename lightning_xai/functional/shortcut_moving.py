"""The interventions behind a moving-region finding: each image's own region, against its own rival.

A shortcut that moves (a swatch in a random corner, a mark at a random place along the border) sits
at a different place in every image, so each test image needs its own box. It is looked for in the
*border band* the probes' hot spots were found in (see
:func:`~lightning_xai.functional.shortcut_candidates.plan_candidates`): the options are the places
seen in the probes and the image's hottest boxes in the band by gradient x input; the image's own
box is the option whose filling moves its predicted probabilities most (total variation).

A box chosen that way is, by construction, a telling piece of the image, whatever it holds. So it is
compared with a *rival* chosen the same way in the same image: among a few boxes drawn where the
image's own gradient heat is (not overlapping its own box), the one whose filling moves the
probabilities most. Each recipient receives the own region of several donors of other classes
(pasted into its own box) and, from the same donors, the rival's place; a recipient is a win when
the own region raises the donor's class more than the rival does by more than ``bench.margin``
(``Shortcuts.min_effect``), on average over its donors. A piece of an object passes only if it
outweighs the most telling other piece of the object.

Boxes are ``(top, left, bottom, right)`` in input pixels, bottom and right exclusive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.functional.batching import chunk_ranges
from lightning_xai.functional.shortcut import Box, box_iou, box_means, hide_box
from lightning_xai.functional.shortcut_evidence import Votes, predict, sequential_test, swap_boxes
from lightning_xai.functional.shortcut_interventions import Bench

__all__ = ["band_positions", "gradient_heat", "hot_boxes", "locate", "most_telling", "moves", "moving_votes", "rivals"]


def band_positions(size: tuple[int, int], side: int, band: int, *, inside: bool = True) -> Tensor:
    """Which top-left corners ``[H - side + 1, W - side + 1]`` give a ``side`` box lying within ``band``
    pixels of an edge (``inside=False``: boxes that do not touch the band at all).

    Example:
        >>> band_positions((6, 6), 2, 2).int().tolist()[1]
        [1, 0, 0, 0, 1]
    """
    rows = torch.arange(size[0] - side + 1)[:, None]
    columns = torch.arange(size[1] - side + 1)[None]
    within = (rows + side <= band) | (columns + side <= band) | (rows >= size[0] - band) | (columns >= size[1] - band)
    if inside:
        return within
    return (rows >= band) & (columns >= band) & (rows + side <= size[0] - band) & (columns + side <= size[1] - band)


def gradient_heat(bench: Bench) -> Tensor:
    """|gradient x (image - fill)| of each test image's predicted log-probability, channels summed
    ``[N, 1, H, W]``; made once per bench (moving candidates of several sizes share it)."""
    if bench.gradient_maps is None:
        parts = []
        fills = bench.fills if bench.fills is not None else bench.images.mean(dim=(2, 3), keepdim=True)
        for start, stop in chunk_ranges(bench.images.shape[0], bench.batch_size):
            with torch.inference_mode(False), torch.enable_grad():
                images = bench.images[start:stop].detach().clone().requires_grad_(True)
                scores = torch.log_softmax(bench.forward_fn(images).float(), dim=1)
                chosen = scores.gather(1, bench.predicted[start:stop, None].to(scores.device)).sum()
                (gradient,) = torch.autograd.grad(chosen, images)
            parts.append((gradient * (images.detach() - fills[start:stop])).abs().sum(dim=1, keepdim=True).cpu())
        bench.gradient_maps = torch.cat(parts)
    return bench.gradient_maps


def hot_boxes(heat: Tensor, side: int, allowed: Tensor, count: int) -> list[list[Box]]:
    """Per map of ``heat`` ``[N, 1, H, W]``, ``count`` non-overlapping ``side`` boxes holding most heat,
    with top-left corners where ``allowed`` ``[H - side + 1, W - side + 1]`` is True.

    Example:
        >>> heat = torch.zeros(1, 1, 6, 6); heat[0, 0, 4:, 4:] = 1
        >>> hot_boxes(heat, 2, torch.ones(5, 5, dtype=torch.bool), 1)
        [[(4, 4, 6, 6)]]
    """
    inside = box_means(heat.float(), side, side)[:, 0].masked_fill(~allowed, -1.0)
    columns = inside.shape[-1]
    chosen: list[list[Box]] = []
    for scores in inside:
        scores, boxes = scores.clone(), []
        for _ in range(count):
            index = int(scores.argmax())
            top, left = index // columns, index % columns
            boxes.append((top, left, top + side, left + side))
            scores[max(0, top - side + 1) : top + side, max(0, left - side + 1) : left + side] = -1.0
        chosen.append(boxes)
    return chosen


def most_telling(bench: Bench, options: Sequence[Sequence[Box]]) -> list[Box]:
    """Per test image, the option (the same number for every image) whose filling moves its
    predicted probabilities most (total variation)."""
    moved = []
    for column in range(len(options[0])):
        boxes = [choices[column] for choices in options]
        filled = torch.stack(
            [
                hide_box(bench.images[i : i + 1], None if bench.fills is None else bench.fills[i : i + 1], box)[0]
                for i, box in enumerate(boxes)
            ]
        )
        with torch.no_grad():
            after = predict(bench.forward_fn, filled, bench.batch_size).cpu()
        moved.append((after - bench.probabilities).abs().sum(dim=1))
    best = torch.stack(moved).argmax(dim=0)
    return [options[i][int(j)] for i, j in enumerate(best.tolist())]


def locate(
    bench: Bench, places: Sequence[Box], *, band: int = 0, heat: Tensor | None = None, extra: int = 3
) -> list[Box]:
    """Each test image's own region: among ``places`` and (``band > 0``) its ``extra`` hottest boxes
    of ``heat`` ``[N, 1, H, W]`` (default: :func:`gradient_heat`) in the border band, the most telling one."""
    side = places[0][2] - places[0][0]
    options = [list(places) for _ in range(bench.images.shape[0])]
    if band > 0:
        allowed = band_positions(bench.size, side, band)
        heat = gradient_heat(bench) if heat is None else heat
        for choices, hot in zip(options, hot_boxes(heat, side, allowed, extra)):
            choices.extend(hot)
    return most_telling(bench, options)


def rivals(bench: Bench, own: Sequence[Box], heat: Tensor, *, count: int = 4) -> list[Box]:
    """Each test image's rival: among ``count`` boxes of its own box's size drawn where ``heat``
    ``[N, 1, H, W]`` (the image's own gradient heat) is, not overlapping its own box, the most telling one."""
    side = own[0][2] - own[0][0]
    weights = box_means(heat.float(), side, side)[:, 0].clamp(min=0) + 1e-9  # [N, H - side + 1, W - side + 1]
    columns = weights.shape[-1]
    options = []
    for image, box in enumerate(own):
        allowed = weights[image].clone()
        allowed[max(0, box[0] - side + 1) : box[2], max(0, box[1] - side + 1) : box[3]] = 0
        picks = torch.multinomial(allowed.flatten(), count, replacement=True, generator=bench.generator).tolist()
        options.append([(i // columns, i % columns, i // columns + side, i % columns + side) for i in picks])
    return most_telling(bench, options)


def moves(own: Sequence[Box], *, at_one_place: float = 0.5) -> bool:
    """Whether the images' own boxes move: at most ``at_one_place`` of them overlap the most common box
    (a shortcut at one of the four corners has about a quarter there).

    Example:
        >>> moves([(0, 0, 6, 6), (1, 1, 7, 7), (0, 1, 6, 7), (26, 26, 32, 32)])  # one mark, found at offsets
        False
        >>> moves([(0, 0, 6, 6), (0, 26, 6, 32), (26, 0, 32, 6), (26, 26, 32, 32)])  # the four corners
        True
    """
    modal = Counter(own).most_common(1)[0][0]
    overlapping = sum(box_iou(box, modal) > 0 for box in own)
    return overlapping <= at_one_place * len(own)


def moving_votes(bench: Bench, own: Sequence[Box], rival: Sequence[Box], *, alpha: float) -> Votes:
    """Each recipient's own box receives the own region of ``bench.rounds`` images of other classes; its
    rival box receives the same donors' content at that place (test half, sequential). Recipients
    without a donor whose own box is elsewhere are left out; when half the own boxes or more sit at
    one place (overlap the most common box: a box larger than a fixed mark lands on it at a few
    offsets) the region does not move (a fixed region's test covers it) and nothing is decided."""
    if not moves(own):
        return Votes()

    def paste(taking: Tensor, donors: Tensor) -> tuple[Tensor, Tensor]:
        """The donors' own regions in the recipients' own boxes; the donors' content at the rivals' places."""
        receiving, giving = bench.on_device(taking), bench.on_device(donors)
        to, source = [own[i] for i in taking.tolist()], [own[i] for i in donors.tolist()]
        places = [rival[i] for i in taking.tolist()]
        return swap_boxes(receiving, giving, to, source), swap_boxes(receiving, giving, places, places)

    def vote(recipients: Tensor) -> Votes:
        return bench.vote_rounds(recipients, lambda chunk: bench.donors(chunk, elsewhere=own), paste)

    return sequential_test(vote, bench.test, alpha=alpha, out_of_time=bench.out_of_time)
