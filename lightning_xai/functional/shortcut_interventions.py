"""The interventions behind each kind of shortcut finding, on a fixed set of test images.

The test images are split in two: the *selection* part (the first 32 at most) chooses what to test (which class a
mark belongs to, where each image's own region is, the ablation rates that are only reported),
the *test* part (the rest) is where transplants decide (see :mod:`lightning_xai.functional.shortcut_evidence`).
A region that is part of an object cannot pass, whatever is selected: it would have to outweigh
the rest of the object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from lightning_xai.functional._checks import ForwardFn
from lightning_xai.functional.batching import FORWARD_BACKWARD_COST, BatchSize
from lightning_xai.functional.shortcut import Box, Fill, box_means, fill_images, hide_box, keep_box
from lightning_xai.functional.shortcut_candidates import random_place
from lightning_xai.functional.shortcut_evidence import (
    Votes,
    count_wins,
    paste_places,
    predict,
    sequential_test,
    sign_test,
    swap_boxes,
    swap_colors,
    to_gray,
    transplant_outcomes,
    transplant_votes,
)

__all__ = [
    "MIN_DONORS",
    "Allowance",
    "Bench",
    "ablation_rates",
    "carriers",
    "class_votes",
    "color_votes",
    "fill_drops",
    "filled_probabilities",
    "mark_class",
    "others_need",
    "refine",
    "region_votes",
]


@dataclass
class Allowance:
    """How many images the checks of a run may pass through the model (``limit``; ``None``: no limit)
    and how many they have passed (``spent``), in forward-equivalents: an image through a pass with
    gradients counts ``FORWARD_BACKWARD_COST`` (3), as the monitor's sizing counts the maps. A count,
    not a clock: the same model, maps and images lead to the same tests on any machine, under any load,
    and on every rank of a sharded model.

    Example:
        >>> allowance = Allowance(limit=10)
        >>> forward = allowance.counting(lambda x: x.sum(dim=1))
        >>> _ = forward(torch.ones(8, 3))
        >>> allowance.spent, allowance.fits(2), allowance.fits(3), allowance.spent_all()
        (8.0, True, False, False)
        >>> _ = forward(torch.ones(4, 3).requires_grad_(True))
        >>> allowance.spent, allowance.spent_all()
        (20.0, True)
    """

    limit: float | None = None
    spent: float = 0.0

    def counting(self, forward_fn: ForwardFn) -> ForwardFn:
        """``forward_fn``, counting the images it is given (``[N, ...]``) against this allowance."""

        def forward(images: Tensor) -> Tensor:
            self.spent += images.shape[0] * (FORWARD_BACKWARD_COST if images.requires_grad else 1.0)
            return forward_fn(images)

        return forward

    def fits(self, images: float) -> bool:
        """Whether ``images`` more forward-equivalents stay within the limit."""
        return self.limit is None or self.spent + images <= self.limit

    def spent_all(self) -> bool:
        """Whether the limit is reached."""
        return self.limit is not None and self.spent >= self.limit


MIN_DONORS = 4
"""The fewest images a recipient's donor is drawn from (else it has none and is left out of the test): a place
that one image's content confirms in every recipient says something about that image, not about the model.
Stop 29: two clean fits at epoch 0 (shapes touching a random corner, SmallCNN seeds 35 and 37) put 127 of 128
test images in one class; the one image of the other class, its shape at a corner, was the donor of every
transplant, and its corner confirmed a ``region`` (p = 4e-13) and a ``class_mark`` (p = 2e-19)."""


@dataclass
class Bench:
    """A model and its test images ``[N, C, H, W]``, with predictions, halves and private randomness.

    ``controls``: control boxes per transplant; ``margin``: how much more the candidate must raise the
    donor's class than the best control; ``rounds``: donors per recipient (their excesses averaged);
    ``allowance``: the images its passes may take (a bench made by :meth:`build` counts every pass
    through ``forward_fn`` against it, see :class:`Allowance`): once it is spent, tests end undecided
    at their next look; ``seconds_per_image``: what its prediction pass took per image;
    ``gradient_maps``, ``gradient_known``: kept by :func:`~lightning_xai.functional.shortcut_moving.gradient_heat`
    (each image's made once; which images' are made).

    Example:
        >>> bench = Bench.build(lambda x: x.flatten(1)[:, :3], torch.rand(8, 1, 4, 4), seed=0, batch_size=8,
        ...                     fill="mean")
        >>> bench.selection.tolist(), bench.test.tolist(), bench.predicted.shape
        ([0, 1, 2, 3], [4, 5, 6, 7], torch.Size([8]))
    """

    forward_fn: ForwardFn
    images: Tensor
    probabilities: Tensor
    fills: Tensor | None
    selection: Tensor
    test: Tensor
    generator: torch.Generator
    batch_size: BatchSize
    heat: Tensor | None = None
    controls: int = 4
    margin: float = 0.1
    rounds: int = 1
    allowance: Allowance = field(default_factory=Allowance)
    seconds_per_image: float = 0.0
    gradient_maps: Tensor | None = None
    gradient_known: Tensor | None = None

    @classmethod
    def build(
        cls,
        forward_fn: ForwardFn,
        images: Tensor,
        *,
        seed: int,
        batch_size: BatchSize,
        fill: Fill,
        heat: Tensor | None = None,
        margin: float = 0.1,
        allowance: Allowance | None = None,
    ) -> Bench:
        """Predicts the images once and splits them into halves; ``heat`` ``[1, 1, H, W]``: where control boxes go;
        ``allowance``: what the bench's passes (this prediction included) are counted against."""
        allowance = allowance if allowance is not None else Allowance()
        forward_fn = allowance.counting(forward_fn)
        started = time.perf_counter()
        with torch.no_grad():
            probabilities = predict(forward_fn, images, batch_size).cpu()
        seconds_per_image = (time.perf_counter() - started) / max(1, images.shape[0])
        half = min(32, images.shape[0] // 2)  # selection needs a few images per class; the test gets the rest
        order = torch.arange(images.shape[0])
        generator = torch.Generator().manual_seed(seed)
        return cls(
            forward_fn,
            images,
            probabilities,
            fill_images(images, fill),
            order[:half],
            order[half:],
            generator,
            batch_size,
            heat,
            margin=margin,
            allowance=allowance,
            seconds_per_image=seconds_per_image,
        )

    def out_of_budget(self) -> bool:
        """Whether the bench's ``allowance`` is spent."""
        return self.allowance.spent_all()

    @property
    def predicted(self) -> Tensor:
        """Predicted classes ``[N]`` (CPU)."""
        return self.probabilities.argmax(dim=1)

    @property
    def size(self) -> tuple[int, int]:
        """Image height and width."""
        return self.images.shape[-2], self.images.shape[-1]

    def donors(
        self, recipients: Tensor, donor_class: int | None = None, *, elsewhere: Sequence[Box] | None = None
    ) -> Tensor:
        """One random donor index per recipient: predicted as ``donor_class``, or as another class; with
        ``elsewhere`` (a box per image), only donors whose box is not the recipient's. -1 (none) when fewer
        than ``MIN_DONORS`` images are left to draw from (with ``units_give`` in :meth:`vote_rounds` the
        images drawn here are recipients: there it is the fewest images a donor's recipient is drawn from).

        Example:
            >>> images = torch.eye(2).view(2, 1, 1, 2).repeat(3, 1, 1, 1)  # classes 0, 1, 0, 1, 0, 1
            >>> bench = Bench.build(lambda x: x.flatten(1), images, seed=0, batch_size=6, fill="mean")
            >>> bench.donors(torch.tensor([1]), 0).tolist()  # three images of class 0: too few
            [-1]
        """
        predicted = self.predicted
        chosen = []
        for index in recipients.tolist():
            pool = (predicted == donor_class) if donor_class is not None else (predicted != predicted[index])
            if elsewhere is not None:
                pool &= torch.tensor([box != elsewhere[index] for box in elsewhere])
            pool = pool.nonzero().flatten()
            chosen.append(
                int(pool[torch.randint(pool.numel(), (1,), generator=self.generator)])
                if pool.numel() >= MIN_DONORS
                else -1
            )
        return torch.tensor(chosen, dtype=torch.long)

    def subset(self, indices: Tensor) -> Bench:
        """The bench of ``images[indices]``: predictions and gradient maps kept, every image in both halves.

        Example:
            >>> bench = Bench.build(lambda x: x.flatten(1)[:, :3], torch.rand(8, 1, 4, 4), seed=0, batch_size=8,
            ...                     fill="mean")
            >>> part = bench.subset(torch.tensor([1, 5]))
            >>> part.images.shape[0], part.test.tolist(), bool((part.probabilities == bench.probabilities[[1, 5]]).all())
            (2, [0, 1], True)
        """
        order = torch.arange(indices.numel())
        return replace(
            self,
            images=self.on_device(indices),
            probabilities=self.probabilities[indices],
            fills=self.fills_of(indices),
            selection=order,
            test=order,
            gradient_maps=None if self.gradient_maps is None else self.gradient_maps[indices],
            gradient_known=None if self.gradient_known is None else self.gradient_known[indices],
        )

    def fills_of(self, indices: Tensor) -> Tensor | None:
        """``fills[indices]`` (``None`` when boxes are inpainted)."""
        return None if self.fills is None else self.fills[indices.to(self.images.device)]

    def on_device(self, indices: Tensor) -> Tensor:
        """``images[indices]``."""
        return self.images[indices.to(self.images.device)]

    def control_sets(self, places: Sequence[Box]) -> list[list[Box]]:
        """``controls`` sets of ``len(places)`` boxes of the places' size, none overlapping a place, drawn
        where the heat is (pieces of what the model looks at, the object included), uniformly where there
        is no heat (all ``places`` themselves when no place is left)."""
        height, width = places[0][2] - places[0][0], places[0][3] - places[0][1]
        heat = self.heat if self.heat is not None else torch.ones(1, 1, *self.size)
        weights = box_means(heat.float(), height, width)[0, 0].clamp(min=0) + 1e-6
        for box in places:
            weights[max(0, box[0] - height + 1) : box[2], max(0, box[1] - width + 1) : box[3]] = 0
        if float(weights.sum()) <= 0:
            return [list(places)] * self.controls
        columns, count = weights.shape[1], self.controls * len(places)
        picks = torch.multinomial(weights.flatten(), count, replacement=True, generator=self.generator).tolist()
        boxes = [(i // columns, i % columns, i // columns + height, i % columns + width) for i in picks]
        return [boxes[k * len(places) : (k + 1) * len(places)] for k in range(self.controls)]

    def transplant(
        self,
        recipients: Tensor,
        box: Box,
        donor_class: int | None = None,
        *,
        drop_ties: bool = False,
        rounds: int | None = None,
    ) -> Votes:
        """Pastes ``box`` from ``rounds`` donors (of ``donor_class``, or of another class) into each
        recipient, against control boxes (same place in both): see :meth:`vote_rounds`."""

        def paste(taking: Tensor, donors: Tensor) -> tuple[Tensor, Tensor]:
            return self.paste_with_controls(taking, donors, [box])

        return self.vote_rounds(
            recipients, lambda chunk: self.donors(chunk, donor_class), paste, drop_ties=drop_ties, rounds=rounds
        )

    def paste_with_controls(self, recipients: Tensor, donors: Tensor, places: Sequence[Box]) -> tuple[Tensor, Tensor]:
        """The donors' content at every one of ``places`` in their recipients (indices ``[n]`` each), and
        ``controls`` copies with each recipient's own drawn :meth:`control_sets` pasted from the same
        donor instead: ``[n, C, H, W]`` and ``[controls * n, C, H, W]`` (control ``k`` of recipient ``i``
        at row ``k * n + i``), as :meth:`vote_rounds` takes them."""
        receiving, giving = self.on_device(recipients), self.on_device(donors)
        drawn = [self.control_sets(places) for _ in range(receiving.shape[0])]
        controls = [paste_places(receiving, giving, [sets[k] for sets in drawn]) for k in range(self.controls)]
        return paste_places(receiving, giving, [places] * receiving.shape[0]), torch.cat(controls)

    def excesses(
        self,
        units: Tensor,
        pick: Callable[[Tensor], Tensor],
        paste: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        *,
        rounds: int | None = None,
        units_give: bool = False,
    ) -> tuple[Tensor, Votes, Tensor]:
        """Transplants with ``rounds`` partners per unit, against controls (``pick``, ``paste`` and ``units_give``
        as in :meth:`vote_rounds`). Returns the units that had a partner in every round ``[m]``, the
        transplants' votes summed, and each kept unit's excess over its best control averaged over its
        partners ``[m]``."""
        rounds = rounds or self.rounds
        given = torch.stack([pick(units) for _ in range(rounds)])
        kept = (given >= 0).all(dim=0)
        units, total = units[kept], Votes()
        excess = torch.zeros(units.numel())
        if units.numel() == 0:
            return units, total, excess
        for partners in given[:, kept]:
            recipients, donors = (partners, units) if units_give else (units, partners)
            transplanted, controls = paste(recipients, donors)
            donor_of = self.predicted[donors]
            votes, gained = transplant_outcomes(
                self.forward_fn,
                transplanted,
                controls,
                self.predicted[recipients],
                donor_of,
                self.probabilities[recipients].gather(1, donor_of[:, None]).squeeze(1),
                self.batch_size,
            )
            total, excess = total + votes, excess + gained / rounds  # type: ignore[operator]
        return units, total, excess

    def groups(self, units: Tensor) -> int:
        """At most how many independent groups the outcomes of transplants between images of different
        predicted classes, with ``units`` (indices) on one side, fall into: each transplant involves an image
        outside the largest predicted class, as the partner drawn from all images or as the unit, so at most
        that many images in all and among ``units``. Outcomes that share an image are not independent. With
        predictions spread over the classes it is more than the units (nothing changes); a young model that
        put 91 of 96 test images in one class let the other 5 decide every transplant, in either direction:
        wins in 92 of 96 recipients (p = 4e-23, counted one per recipient) were the evidence of those few
        images (clean shapes touching a random corner, seed 3 of the evidence suite, stop 31).

        Example:
            >>> images = torch.zeros(12, 1, 1, 2); images[::4, 0, 0, 0] = 1  # images 0, 4, 8 in class 0
            >>> bench = Bench.build(lambda x: x.flatten(1) * 5 + torch.tensor([0.0, 1.0]), images, seed=0,
            ...                     batch_size=12, fill="mean")
            >>> bench.groups(torch.tensor([0, 1, 2, 4])), bench.groups(torch.tensor([1, 2]))
            (5, 3)
        """
        largest = self.predicted.mode().values
        return int((self.predicted != largest).sum() + (self.predicted[units] != largest).sum())

    def vote_rounds(
        self,
        units: Tensor,
        pick: Callable[[Tensor], Tensor],
        paste: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        *,
        drop_ties: bool = False,
        rounds: int | None = None,
        margin: float | None = None,
        units_give: bool = False,
    ) -> Votes:
        """Transplants with ``rounds`` partners per unit, against controls.

        ``units`` are recipients, and ``pick`` gives each a donor index (-1: none); with ``units_give``, the
        units are donors and ``pick`` gives each a recipient. ``paste(recipients, donors)``: the
        transplanted images ``[n, C, H, W]`` and their controls ``[k * n, C, H, W]`` (see
        :func:`transplant_outcomes`). Units without a partner in every round are left out; a unit's
        excess over its best control is averaged over its partners before it counts as a win or a loss
        (``margin``, default ``self.margin``; ``drop_ties``: see :func:`count_wins`). ``rounds``:
        partners per unit (default ``self.rounds``).
        """
        kept, total, excess = self.excesses(units, pick, paste, rounds=rounds, units_give=units_give)
        if kept.numel() == 0:
            return total
        return count_wins(total, excess, self.margin if margin is None else margin, drop_ties=drop_ties)


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


def region_votes(bench: Bench, box: Box, *, alpha: float, clear_wins: bool = False) -> Votes:
    """A box at a fixed place, pasted from an image of another predicted class (test half).

    By default the box must beat the best of the control pieces in most recipients: it decides the
    prediction over the rest of the image (sufficiency; the most telling piece of a centred object
    does not). ``clear_wins``: it must beat them clearly more often than they clearly beat it (ties
    within ``bench.margin`` left out, two donors averaged per recipient, as in
    :func:`~lightning_xai.functional.shortcut_places.place_set_votes`): a mark that the model reads
    beside the object moves the prediction without deciding most of them. Only for places that the
    object cannot explain (see :func:`~lightning_xai.functional.shortcut_candidates.spot_at_border`).
    Like every transplant test, it counts no more outcomes than :meth:`Bench.groups` allows.
    """

    def vote(recipients: Tensor) -> Votes:
        if clear_wins:
            return bench.transplant(recipients, box, drop_ties=True, rounds=2)
        return bench.transplant(recipients, box)

    return sequential_test(vote, bench.test, alpha=alpha, out_of_budget=bench.out_of_budget, groups=bench.groups)


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


def class_votes(bench: Bench, box: Box, mark_of: int, *, alpha: float) -> Votes:
    """A mark at a fixed place that images of class ``mark_of`` carry, pasted into other classes' images."""
    others = bench.test[bench.predicted[bench.test] != mark_of]

    def vote(recipients: Tensor) -> Votes:
        return bench.transplant(recipients, box, mark_of)

    return sequential_test(vote, others, alpha=alpha, out_of_budget=bench.out_of_budget, groups=bench.groups)


def color_votes(bench: Bench, *, alpha: float) -> tuple[Votes, float]:
    """Each test image given the colour of an image of another class, at its own brightness
    (:func:`swap_colors`), against the same image given its own colour the same way (the control:
    what recolouring does by itself). A recipient is a win when the donor's colour raises the donor's
    class by more than ``bench.margin`` above what its own colour does. Also returns the share of
    predictions (selection half) that change when colour is replaced by grey.

    Without the control, a young model that sends every recoloured image to one class (a tinted
    background reads as a large object) looks as if it followed the donors' colours whenever most
    donors are of that class.
    """
    with torch.no_grad():
        grey = (
            predict(bench.forward_fn, to_gray(bench.on_device(bench.selection)), bench.batch_size).cpu().argmax(dim=1)
        )
    gray_flip = float((grey != bench.predicted[bench.selection]).float().mean())
    # one black level for the whole test: each swap depends on its own pair only
    black = float(bench.images.amin()) if bench.images.numel() else 0.0

    def vote(recipients: Tensor) -> Votes:
        donors = bench.donors(recipients)
        keep = donors >= 0
        recipients, donors = recipients[keep], donors[keep]
        receiving = bench.on_device(recipients)
        before = bench.probabilities[recipients].gather(1, bench.predicted[donors][:, None]).squeeze(1)
        return transplant_votes(
            bench.forward_fn,
            swap_colors(receiving, bench.on_device(donors), black=black),
            swap_colors(receiving, receiving, black=black),
            bench.predicted[recipients],
            bench.predicted[donors],
            before,
            bench.batch_size,
            bench.margin,
        )

    return sequential_test(
        vote, bench.test, alpha=alpha, out_of_budget=bench.out_of_budget, groups=bench.groups
    ), gray_flip


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
