"""A moving mark among a few places, tested at all of them at once (:func:`place_set_votes`).

A swatch in one of the four corners (Ross et al.'s decoy MNIST) sits at one of a few places in every image. The
proposal may show it at some of its places only, so they are first completed on the selection half
(:func:`completed_places`). Then every place is pasted together from an image of the class that follows them
most (:func:`carrier_class`), so the recipient loses its own mark wherever it was and receives the donor's
wherever that was, against as many boxes drawn where the maps are hot, pasted from the same donor. A model
that reads such a mark only partly (beside the object) rarely lets it decide alone, so the test asks whether
the places are clearly more telling than the object's pieces more often than clearly less (a sign test with a
dead zone of ``bench.margin``). A mark at one place is not a region that moves (:func:`one_place_carries`), and
objects that sit at the places are their images' evidence
(:func:`~lightning_xai.functional.shortcut_moving.places_hold_the_evidence`): neither is tested here.

Boxes are ``(top, left, bottom, right)`` in input pixels, bottom and right exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.functional.shortcut import Box, box_iou
from lightning_xai.functional.shortcut_evidence import Votes, paste_places, predict, swap_boxes
from lightning_xai.functional.shortcut_gradients import gradient_heat
from lightning_xai.functional.shortcut_heat import merge_boxes
from lightning_xai.functional.shortcut_interventions import Bench
from lightning_xai.functional.shortcut_moving import band_positions, hot_boxes, places_hold_the_evidence

__all__ = [
    "apart",
    "carrier_class",
    "completed_places",
    "mean_gains",
    "most_carried",
    "one_place_carries",
    "place_set_votes",
]


def most_carried(
    bench: Bench,
    sources: Tensor,
    options: Sequence[Sequence[Box]],
    *,
    recipients: int = 32,
    pool: Tensor | None = None,
) -> list[Box]:
    """Per image of ``sources`` ``[P, C, H, W]``, the option (the same number for every image) whose
    content, pasted at the same place into ``recipients`` images of the bench (of ``pool``, indices,
    when given) that the model puts in other classes, moves their predicted probabilities most on
    average (total variation): where the image keeps what acts on the model wherever it is pasted,
    as a mark does even when the model reads it only beside the object (filling a box instead, as
    :func:`~lightning_xai.functional.shortcut_moving.most_telling` does, favours pieces of the object).
    Without any such image (a model that puts every image in one class), each source's first option.

    Example:
        >>> model = lambda x: torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], dim=1) * 10
        >>> images = torch.zeros(4, 1, 4, 4); images[:2, 0, 0, 0] = 1; images[2:, 0, 0, 0] = -1
        >>> bench = Bench.build(model, images, seed=0, batch_size=8, fill="mean")
        >>> most_carried(bench, images[:1], [[(2, 2, 4, 4), (0, 0, 2, 2)]], recipients=2)
        [(0, 0, 2, 2)]
    """
    with torch.no_grad():
        classes = predict(bench.forward_fn, sources, bench.batch_size).argmax(dim=1).cpu()
    width, best = len(options[0]), []
    for index, choices in enumerate(options):  # one source at a time: at most width x recipients images at once
        others = (bench.predicted != classes[index]).nonzero().flatten()
        if pool is not None:
            others = others[torch.isin(others, pool)]
        chosen = others[torch.randperm(others.numel(), generator=bench.generator)[:recipients]]
        if chosen.numel() == 0:  # no image of another class to paste into
            best.append(choices[0])
            continue
        receiving = bench.on_device(chosen).repeat(width, 1, 1, 1)
        giving = sources[index : index + 1].to(receiving.device).expand(receiving.shape[0], -1, -1, -1)
        boxes = [box for box in choices for _ in range(chosen.numel())]
        with torch.no_grad():
            after = predict(bench.forward_fn, swap_boxes(receiving, giving, boxes, boxes), bench.batch_size).cpu()
        moved = after.view(width, chosen.numel(), -1)
        gains = (moved - bench.probabilities[chosen][None]).abs().sum(dim=2).mean(dim=1)
        best.append(choices[int(gains.argmax())])
    return best


def completed_places(
    bench: Bench, places: Sequence[Box], *, band: int, extra: int = 3, sources: int = 16, recipients: int = 8
) -> list[Box]:
    """``places`` and the other places of their size where at least two of ``sources`` images of the selection
    half hold what acts on the model wherever it is pasted: per image, among ``places`` and its ``extra``
    hottest boxes in the ``band`` by gradient x input, the one :func:`most_carried` picks with
    ``recipients`` images of the selection half (the test half stays untouched); places side by side
    thinned out (:func:`apart`). A proposal shows a moving mark at some of its places only.
    """
    side = places[0][2] - places[0][0]
    chosen = bench.selection[:sources]
    hot = hot_boxes(gradient_heat(bench, chosen), side, band_positions(bench.size, side, band), extra)
    options = [list(places) + boxes for boxes in hot]
    found = most_carried(bench, bench.on_device(chosen), options, recipients=recipients, pool=bench.selection)
    groups = sorted(merge_boxes(found), key=lambda group: -len(group[1]))
    new = [box for box, members in groups if len(members) >= 2 and all(box_iou(box, p) == 0 for p in places)]
    return apart([*places, *new])


def mean_gains(bench: Bench, donor_class: int, place_sets: Sequence[Sequence[Box]]) -> list[float]:
    """For each set of boxes, how much pasting all of them from images of ``donor_class`` (the same donors
    for every set) into the selection half's images of other classes raises ``donor_class``'s probability,
    on average (``nan`` without recipients or donors)."""
    recipients = bench.selection[bench.predicted[bench.selection] != donor_class]
    donors = bench.donors(recipients, donor_class)
    recipients, donors = recipients[donors >= 0], donors[donors >= 0]
    if recipients.numel() == 0:
        return [float("nan")] * len(place_sets)
    receiving, giving = bench.on_device(recipients), bench.on_device(donors)
    moved = torch.cat([paste_places(receiving, giving, [boxes] * len(donors)) for boxes in place_sets])
    with torch.no_grad():
        after = predict(bench.forward_fn, moved, bench.batch_size).cpu()[:, donor_class]
    before = bench.probabilities[recipients, donor_class]
    return (after.view(len(place_sets), -1) - before).mean(dim=1).tolist()


def carrier_class(bench: Bench, places: Sequence[Box]) -> int:
    """The predicted class whose images, pasted at all ``places`` into the selection half's images of
    the other classes, raise its probability most on average (-1 when no class has donors)."""
    gains = {int(c): mean_gains(bench, int(c), [places])[0] for c in bench.predicted.unique().tolist()}
    gains = {c: gain for c, gain in gains.items() if gain == gain}  # classes with donors and recipients
    return max(gains, key=gains.__getitem__) if gains else -1


def one_place_carries(bench: Bench, carrier: int, places: Sequence[Box], *, share: float = 1 / 3) -> bool:
    """Whether the effect stands on one place: without some one of ``places`` the rest carry less than
    ``share`` of what all of them carry together for ``carrier`` (see :func:`mean_gains`; also when
    together they carry nothing). A mark at one fixed place, with pieces of objects beside it, loses
    nearly everything without its place; a mark that moves among ``k >= 3`` places keeps about
    ``((k - 1) / k) ** 2`` of it without any one of them (recipients keep their own mark there, donors
    do not bring theirs)."""
    together, *without = mean_gains(bench, carrier, [places, *([q for q in places if q != box] for box in places)])
    return not together > 0 or min(without) < share * together


def apart(places: Sequence[Box]) -> list[Box]:
    """``places`` in order, leaving out any that comes within a box side of one kept before it: places
    side by side make one larger piece (a strip along an edge is a coherent piece of an object),
    which scattered control boxes of the same size do not match.

    Example:
        >>> apart([(2, 10, 6, 14), (2, 14, 6, 18), (2, 0, 6, 4), (26, 26, 30, 30)])
        [(2, 10, 6, 14), (2, 0, 6, 4), (26, 26, 30, 30)]
    """
    kept: list[Box] = []
    for box in places:
        side = box[2] - box[0]
        gaps = [max(other[0] - box[2], box[0] - other[2], other[1] - box[3], box[1] - other[3]) for other in kept]
        if all(gap >= side for gap in gaps):
            kept.append(box)
    return kept


def place_set_votes(bench: Bench, places: Sequence[Box], *, alpha: float) -> tuple[Votes, list[int]]:
    """All ``places`` pasted at once from images of the class that follows them most (chosen on the
    selection half) into the test half's images of other classes, against as many boxes drawn where
    the maps are hot, pasted from the same donor (``bench.controls`` sets); losses are recipients
    where a control set beat the places by more than ``bench.margin``, ties are left out (see
    :func:`~lightning_xai.functional.shortcut_evidence.count_wins`); each recipient's excess is averaged
    over two donors. Returns the votes and the class (decided or not).

    Nothing is tested (no votes, no class) when fewer than two places are left, when the places hold the
    images' evidence (:func:`~lightning_xai.functional.shortcut_moving.places_hold_the_evidence`: objects
    that sit at the places, not a mark beside them), or when the effect stands on one place
    (:func:`one_place_carries`): a mark at a fixed place is a region or a class mark, tested as such.
    """
    carrier = carrier_class(bench, places)
    if carrier < 0 or len(places) < 2 or places_hold_the_evidence(bench, places):
        return Votes(), []
    if one_place_carries(bench, carrier, places):
        return Votes(), []
    recipients = bench.test[bench.predicted[bench.test] != carrier]

    def paste(taking: Tensor, donors: Tensor) -> tuple[Tensor, Tensor]:
        return bench.paste_with_controls(taking, donors, places)

    def vote(chunk: Tensor) -> Votes:  # two donors each: a mark read beside the object moves little per transplant
        return bench.vote_rounds(chunk, lambda part: bench.donors(part, carrier), paste, drop_ties=True, rounds=2)

    return bench.sequential(vote, recipients, alpha=alpha), [carrier]
