"""What a place does and who carries it, on a run's bench: the ablation rates (reported only), how much filling a box
lowers each image's class, the class whose images lose most without it, the smallest box that keeps its effect,
the classes whose version of it is followed and whether the other classes' images need it too.

These describe a place once its test (:mod:`~lightning_xai.functional.shortcut_interventions`) has decided, or
choose what to test; none of them decides a finding alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.functional.shortcut import Box, hide_box, keep_box
from lightning_xai.functional.shortcut_candidates import random_place
from lightning_xai.functional.shortcut_evidence import predict, sign_test, swap_boxes
from lightning_xai.functional.shortcut_interventions import Bench

__all__ = [
    "ablation_rates",
    "carriers",
    "fill_drops",
    "filled_probabilities",
    "mark_class",
    "others_need",
    "refine",
]


def ablation_rates(bench: Bench, boxes: Sequence[Box], indices: Tensor, *, random_too: bool = True) -> dict[str, float]:
    """Necessity on ``indices`` (box i filled in image i), compared with same-size boxes elsewhere.

    Returns ``flip_rate``, ``random_flip_rate``, ``drop``, ``random_drop`` and ``keep_rate`` (the
    box alone, everything else filled, keeps the prediction).
    """
    images, fills = bench.on_device(indices), bench.fills_of(indices)
    per_image = [None if fills is None else fill[None] for fill in (fills if fills is not None else images)]
    ablated = torch.stack([hide_box(image[None], fill, box)[0] for image, fill, box in zip(images, per_image, boxes)])
    kept = torch.stack([keep_box(image[None], fill, box)[0] for image, fill, box in zip(images, per_image, boxes)])
    parts = [ablated, kept]
    if random_too:
        places = [random_place(bench.size, box, bench.generator) for box in boxes]
        parts.append(
            torch.stack([hide_box(image[None], fill, box)[0] for image, fill, box in zip(images, per_image, places)])
        )
    with torch.no_grad():
        after = predict(bench.forward_fn, torch.cat(parts), bench.batch_size).cpu().view(len(parts), len(boxes), -1)
    predicted = bench.predicted[indices]
    base = bench.probabilities[indices].gather(1, predicted[:, None]).squeeze(1)
    drops = base[None] - after.gather(2, predicted.view(1, -1, 1).expand(len(parts), -1, 1)).squeeze(2)
    changed = (after.argmax(dim=2) != predicted[None]).float()
    random_index = 2 if random_too else 0
    return {
        "flip_rate": float(changed[0].mean()),
        "random_flip_rate": float(changed[random_index].mean()) if random_too else 0.0,
        "drop": float(drops[0].mean()),
        "random_drop": float(drops[random_index].mean()) if random_too else 0.0,
        "keep_rate": float(1 - changed[1].mean()),
    }


def mark_class(bench: Bench, box: Box) -> tuple[int, dict[str, float]]:
    """The class whose images (selection part) lose most when ``box`` is filled, and the ablation rates."""
    indices = bench.selection
    images, fills = bench.on_device(indices), bench.fills_of(indices)
    with torch.no_grad():
        after = predict(bench.forward_fn, hide_box(images, fills, box), bench.batch_size).cpu()
    predicted = bench.predicted[indices]
    drops = bench.probabilities[indices].gather(1, predicted[:, None]).squeeze(1) - after.gather(
        1, predicted[:, None]
    ).squeeze(1)
    classes = predicted.unique()
    means = torch.stack([drops[predicted == c].mean() for c in classes])
    rates = {
        "flip_rate": float((after.argmax(dim=1) != predicted).float().mean()),
        "random_flip_rate": 0.0,
        "drop": float(drops.mean()),
        "random_drop": 0.0,
        "keep_rate": 0.0,
    }
    return int(classes[means.argmax()]), rates


_REFINE_ELEMENTS = 2**25  # the most input elements ``refine`` pastes at once (128 MB in float32)


def refine(
    bench: Bench,
    box: Box,
    sides: Sequence[int],
    donor_class: int | None = None,
    *,
    keep: float = 0.9,
) -> Box:
    """The smallest box in and around (one pixel) a confirmed ``box`` that, pasted from donors, gives
    their class nearly (``keep``) as much probability as ``box`` does.

    Boxes of each side in ``sides`` (smallest first) at every place inside ``box`` are pasted from
    donors (of another class, or of ``donor_class``) into the test half (all boxes of a side in one
    pass); only reporting precision depends on this, not the decision. Of the boxes of a side that
    keep enough, the one nearest ``box``'s centre is taken: refining shrinks the box, it does not move
    it (where the model reads a whole mark evenly, or its edge as much as its middle, boxes across it
    score within noise of each other).

    Example:
        >>> reads_middle = lambda x: torch.stack([x[:, 0, 3:5, 3:5].mean(dim=(1, 2)), 1 - x[:, 0, 3:5, 3:5].mean(dim=(1, 2))], 1)
        >>> images = torch.zeros(32, 1, 10, 10)
        >>> images[::2, :, 1:7, 1:7] = 1.0  # class 0: a bright 6x6 mark
        >>> bench = Bench.build(reads_middle, images, seed=0, batch_size=32, fill="mean")
        >>> refine(bench, (1, 1, 7, 7), sides=[4, 6])  # every 4x4 box over the middle keeps it all
        (2, 2, 6, 6)
    """
    recipients = bench.test if donor_class is None else bench.test[bench.predicted[bench.test] != donor_class]
    donors = bench.donors(recipients, donor_class)
    recipients, donors = recipients[donors >= 0], donors[donors >= 0]
    if recipients.numel() == 0:
        return box

    def follow(boxes: Sequence[Box]) -> Tensor:  # mean probability of the donor's class after each transplant
        count = recipients.numel()
        same = [b for b in boxes for _ in range(count)]  # all boxes of a side in one pass: few, larger batches
        moved = swap_boxes(
            bench.on_device(recipients.repeat(len(boxes))), bench.on_device(donors.repeat(len(boxes))), same, same
        )
        with torch.no_grad():
            probabilities = predict(bench.forward_fn, moved, bench.batch_size).cpu()
        chosen = probabilities.gather(1, bench.predicted[donors].repeat(len(boxes))[:, None])
        return chosen.view(len(boxes), count).mean(dim=1)

    target = keep * float(follow([box])[0])
    height, width = box[2] - box[0], box[3] - box[1]
    top, left = max(0, box[0] - 1), max(0, box[1] - 1)  # also one pixel around it: maps blur a little
    bottom, right = min(bench.size[0], box[2] + 1), min(bench.size[1], box[3] + 1)
    for side in sorted(s for s in sides if s <= min(height, width)):
        inside = [
            (t, c, t + side, c + side) for t in range(top, bottom - side + 1) for c in range(left, right - side + 1)
        ]
        group = max(1, _REFINE_ELEMENTS // (recipients.numel() * bench.images[0].numel()))
        scores = torch.cat([follow(inside[start : start + group]) for start in range(0, len(inside), group)])
        keeping = [(place, score) for place, score in zip(inside, scores.tolist()) if score >= target]
        if keeping:  # the nearest the centre; of those as near, the most followed
            return min(keeping, key=lambda kept: (_centre_distance(kept[0], box), -kept[1]))[0]
    return box


def _centre_distance(box: Box, other: Box) -> float:
    """Squared distance between the centres of two boxes (in half pixels)."""
    return float((box[0] + box[2] - other[0] - other[2]) ** 2 + (box[1] + box[3] - other[1] - other[3]) ** 2)


def carriers(bench: Bench, box: Box, *, per_class: int = 16) -> dict[int, float]:
    """For each predicted class, how often ``box`` pasted from its images is followed (test part;
    up to ``per_class`` recipients of other classes each). Describes a confirmed region; decides nothing."""
    rates: dict[int, float] = {}
    for donor_class in bench.predicted[bench.test].unique().tolist():
        recipients = bench.test[bench.predicted[bench.test] != donor_class][:per_class]
        donors = bench.donors(recipients, donor_class)
        if recipients.numel() == 0 or bool((donors < 0).any()):
            continue
        same = [box] * recipients.numel()
        moved = swap_boxes(bench.on_device(recipients), bench.on_device(donors), same, same)
        with torch.no_grad():
            predicted = predict(bench.forward_fn, moved, bench.batch_size).argmax(dim=1).cpu()
        rates[int(donor_class)] = float((predicted == donor_class).float().mean())
    return rates


def fill_drops(bench: Bench, boxes: Sequence[Box], indices: Tensor | None = None) -> Tensor:
    """Per image ``indices[i]`` of ``bench`` (default: the first ``len(boxes)``), how much filling ``boxes[i]`` lowers the
    probability of its predicted class ``[len(boxes)]`` (one forward pass per image; negative when filling
    raises it).

    Example:
        >>> forward = lambda x: torch.stack([8 * x[:, 0, 0, 0], torch.zeros(len(x))], dim=1)
        >>> images = torch.zeros(2, 1, 4, 4); images[:, :, 0, 0] = 1
        >>> bench = Bench.build(forward, images, seed=0, batch_size=2, fill="mean")
        >>> [round(v, 2) for v in fill_drops(bench, [(0, 0, 1, 1), (3, 3, 4, 4)]).tolist()]
        [0.38, 0.0]
    """
    indices = torch.arange(len(boxes)) if indices is None else indices
    after, predicted = filled_probabilities(bench, boxes, indices), bench.predicted[indices, None]
    return (bench.probabilities[indices].gather(1, predicted) - after.gather(1, predicted))[:, 0]


def filled_probabilities(bench: Bench, boxes: Sequence[Box], indices: Tensor | None = None) -> Tensor:
    """The predicted probabilities ``[len(boxes), classes]`` (CPU) of images ``indices[i]`` of ``bench``
    (default: the first ``len(boxes)``) with ``boxes[i]`` filled, one forward pass per image.

    Example:
        >>> bench = Bench.build(lambda x: x.flatten(1)[:, :2], torch.ones(2, 1, 2, 2), seed=0, batch_size=2, fill="mean")
        >>> filled_probabilities(bench, [(0, 0, 1, 1), (1, 1, 2, 2)]).tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    indices = torch.arange(len(boxes)) if indices is None else indices
    images, fills = bench.on_device(indices), bench.fills_of(indices)
    filled = torch.cat(
        [hide_box(images[i : i + 1], None if fills is None else fills[i : i + 1], box) for i, box in enumerate(boxes)]
    )
    with torch.no_grad():
        return predict(bench.forward_fn, filled, bench.batch_size).cpu()


def others_need(bench: Bench, box: Box, carriers: Sequence[int], *, alpha: float) -> bool:
    """Whether the test images of classes other than ``carriers`` need ``box`` too: filling it lowers their
    predicted class's probability by ``bench.margin`` or more, more often than filling a box of the same size
    elsewhere does (a sign test on the images where one does and the other does not, at ``alpha``).

    A mark that only the ``carriers``' images bear leaves the other images' background at its place, which
    they do not need; a place that every class marks in its own way (a shade, a glyph per class) is needed
    by all, even when the model follows one class's version of it far more than the others' (stop 25: a
    shade on 1-channel digits, read beside the digit, was reported as class 8's mark in 2 of 5 runs).

    Example:
        >>> reads_corner = lambda x: torch.stack([4 * x[:, 0, 0, 0], 4 * (1 - x[:, 0, 0, 0])], dim=1)
        >>> images = torch.full((40, 1, 6, 6), 0.5); images[::2, :, 0, 0] = 1; images[1::2, :, 0, 0] = 0
        >>> bench = Bench.build(reads_corner, images, seed=0, batch_size=40, fill="mean")
        >>> others_need(bench, (0, 0, 2, 2), [0], alpha=0.01)  # class 1's dark corner is needed too
        True
    """
    others = bench.test[~torch.isin(bench.predicted[bench.test], torch.tensor(list(carriers), dtype=torch.long))]
    if others.numel() == 0:
        return False
    places = [random_place(bench.size, box, bench.generator) for _ in range(others.numel())]
    needed = fill_drops(bench, [box] * others.numel(), others) >= bench.margin
    elsewhere = fill_drops(bench, places, others) >= bench.margin
    return sign_test(int((needed & ~elsewhere).sum()), int((elsewhere & ~needed).sum())) <= alpha
