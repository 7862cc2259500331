"""The interventions behind each kind of shortcut finding, on a fixed set of test images.

The test images are split in two: the *selection* part (the first 32 at most) chooses what to test (which class a
mark belongs to, where each image's own region is, the ablation rates that are only reported),
the *test* part (the rest) is where transplants decide (see :mod:`lightning_xai.functional.shortcut_evidence`).
A region that is part of an object cannot pass, whatever is selected: it would have to outweigh
the rest of the object. What a place does beyond its test (the ablation rates, its refined box, who carries it)
is in :mod:`~lightning_xai.functional.shortcut_descriptions`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from lightning_xai.functional._checks import ForwardFn
from lightning_xai.functional.batching import FORWARD_BACKWARD_COST, BatchSize
from lightning_xai.functional.shortcut import Box, Fill, box_means, fill_images
from lightning_xai.functional.shortcut_colors import swap_colors, to_gray
from lightning_xai.functional.shortcut_evidence import (
    Votes,
    count_wins,
    paste_places,
    predict,
    sequential_test,
    transplant_outcomes,
    transplant_votes,
)

__all__ = [
    "MIN_DONORS",
    "Allowance",
    "Bench",
    "class_votes",
    "color_votes",
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
    ``gradient_maps``, ``gradient_known``: kept by :func:`~lightning_xai.functional.shortcut_gradients.gradient_heat`
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

    def sequential(self, vote: Callable[[Tensor], Votes], units: Tensor, *, alpha: float) -> Votes:
        """:func:`~lightning_xai.functional.shortcut_evidence.sequential_test` of ``vote`` over ``units``
        (indices) on this bench: it stops undecided once the allowance is spent, and counts no more outcomes
        than :meth:`groups` allows. Every transplant test runs through it."""
        return sequential_test(vote, units, alpha=alpha, out_of_budget=self.out_of_budget, groups=self.groups)

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


def region_votes(bench: Bench, box: Box, *, alpha: float, clear_wins: bool = False) -> Votes:
    """A box at a fixed place, pasted from an image of another predicted class (test half).

    By default the box must beat the best of the control pieces in most recipients: it decides the
    prediction over the rest of the image (sufficiency; the most telling piece of a centred object
    does not). ``clear_wins``: it must beat them clearly more often than they clearly beat it (ties
    within ``bench.margin`` left out, two donors averaged per recipient, as in
    :func:`~lightning_xai.functional.shortcut_places.place_set_votes`): a mark that the model reads
    beside the object moves the prediction without deciding most of them. Only for places that the
    object cannot explain (see :func:`~lightning_xai.functional.shortcut_candidates.spot_at_border`).
    Like every transplant test, it counts no more outcomes than :meth:`Bench.groups` allows (see
    :meth:`Bench.sequential`).
    """

    def vote(recipients: Tensor) -> Votes:
        if clear_wins:
            return bench.transplant(recipients, box, drop_ties=True, rounds=2)
        return bench.transplant(recipients, box)

    return bench.sequential(vote, bench.test, alpha=alpha)


def class_votes(bench: Bench, box: Box, mark_of: int, *, alpha: float) -> Votes:
    """A mark at a fixed place that images of class ``mark_of`` carry, pasted into other classes' images."""
    others = bench.test[bench.predicted[bench.test] != mark_of]

    def vote(recipients: Tensor) -> Votes:
        return bench.transplant(recipients, box, mark_of)

    return bench.sequential(vote, others, alpha=alpha)


def color_votes(bench: Bench, *, alpha: float) -> tuple[Votes, float]:
    """Each test image given the colour of an image of another class, at its own brightness
    (:func:`~lightning_xai.functional.shortcut_colors.swap_colors`), against the same image given its own colour the same way (the control:
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

    return bench.sequential(vote, bench.test, alpha=alpha), gray_flip
