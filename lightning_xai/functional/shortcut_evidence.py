"""Statistical evidence that a small region (or the colours) decides a prediction: transplants against nulls.

Each transplant pastes a part of an image the model puts in another class (the donor) into a
recipient, and ends in the donor's class ("follow"), the recipient's class ("stay") or a third class.

With control boxes (regions, class marks, moving regions) the null is measured in the same run: the
same donor's content at boxes of the same size drawn where the maps are hot (pieces of what the model
looks at, the object included), pasted into the same recipient. A recipient is a *win* when the
candidate raises the donor class's probability by more than a margin above the best control, a
*loss* otherwise; a one-sided sign test of wins against losses gives the p-value. A part of an
object passes only if it outweighs the object's other telling pieces in most recipients; a region
that is the object's centre, a jittered object or an object at a random place stays silent by
construction, whatever the data set. A moving mark tested at all its places at once counts losses
only where a control beat it by the margin and leaves the recipients in between out (a sign test
with a dead zone, see :func:`count_wins`): a mark the model reads beside the object is clearly more
telling than the object's pieces more often than clearly less, without deciding most predictions.
Colour has one control per recipient: the recipient given its own colour the same way as the donor's
(what recolouring does by itself, see
:func:`~lightning_xai.functional.shortcut_colors.swap_colors`). Without controls the sign test compares
follows with stays: the part must decide the prediction more often than the whole rest of the
recipient does.

Tests run sequentially on chunks of recipients: they stop as soon as the p-value is below the level
spent on that look (decided) or the evidence no longer points towards a shortcut (a non-binding
futility stop, which can only lower the false-alarm rate).

Boxes are ``(top, left, bottom, right)`` in input pixels, bottom and right exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai.functional._checks import ForwardFn, check_score_shape
from lightning_xai.functional.batching import BatchSize, chunk_ranges

__all__ = [
    "Votes",
    "count_wins",
    "paste_places",
    "predict",
    "sequential_test",
    "shrunk_counts",
    "sign_test",
    "swap_boxes",
    "transplant_outcomes",
    "transplant_votes",
]

Box = tuple[int, int, int, int]


def sign_test(successes: int, failures: int) -> float:
    """One-sided p-value of ``successes`` against ``failures`` when both are equally likely.

    ``P(X >= successes)`` for ``X ~ Binomial(successes + failures, 1/2)``; 1.0 with no trials.

    Example:
        >>> sign_test(10, 0), sign_test(3, 3), sign_test(0, 0)
        (0.0009765625, 0.65625, 1.0)
    """
    trials = successes + failures
    if trials == 0:
        return 1.0
    return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def shrunk_counts(successes: int, failures: int, *, groups: int | None) -> tuple[int, int]:
    """``successes`` and ``failures`` scaled down to ``groups`` outcomes in all when there are more (``None``: as
    they are), the failures rounded up: outcomes that share an image are not independent, and when every
    outcome rests on one of a few images the evidence is that of a few outcomes, however many were counted.

    Example:
        >>> shrunk_counts(92, 4, groups=10), shrunk_counts(12, 4, groups=10), shrunk_counts(92, 4, groups=None)
        ((9, 1), (7, 3), (92, 4))
    """
    total = successes + failures
    if groups is None or total <= groups:
        return successes, failures
    kept_failures = math.ceil(failures * groups / total)
    return groups - kept_failures, kept_failures


@dataclass
class Votes:
    """Outcomes of transplants, summed over recipients.

    ``follow``/``stay``/``other``: the prediction became the donor's class / stayed the recipient's /
    became a third class. ``wins``/``losses``: recipients where the candidate raised the donor
    class's probability more / less than the best of the same-size control boxes did;
    ``random_follow``: recipients where a control box was followed. ``with_random``: whether the
    controls exist (else the test is follow against stay). ``compared``: recipients whose excess was
    counted as a win, a loss or a tie (with several donors per recipient, fewer than the transplants).
    ``groups``: at most how many independent groups the outcomes fall into (``None``: one per outcome); the
    sign test counts no more outcomes than that (see :func:`shrunk_counts`). ``level``: what the p-value had
    to reach at the last look of the test that voted (its level split over its looks, see
    :func:`sequential_test`; ``None`` for votes not from a test).
    """

    follow: int = 0
    stay: int = 0
    other: int = 0
    wins: int = 0
    losses: int = 0
    random_follow: int = 0
    with_random: bool = True
    decided: bool = False
    compared: int = 0
    groups: int | None = None
    level: float | None = None

    @property
    def trials(self) -> int:
        """Transplants counted."""
        return self.follow + self.stay + self.other

    @property
    def p_value(self) -> float:
        """Sign-test p-value: wins against losses with controls, follows against stays without; with ``groups``,
        the larger of that and the p-value of the counts shrunk to ``groups`` (see :func:`shrunk_counts`)."""
        counted = (self.wins, self.losses) if self.with_random else (self.follow, self.stay)
        return max(sign_test(*counted), sign_test(*shrunk_counts(*counted, groups=self.groups)))

    @property
    def ahead(self) -> bool:
        """Whether the evidence so far points towards a shortcut at all (else testing stops)."""
        return self.wins > self.losses if self.with_random else self.follow > self.stay

    def rates(self) -> dict[str, float]:
        """``follow_rate``, ``stay_rate``, ``random_follow_rate`` (shares of the transplants), ``win_rate``,
        ``loss_rate`` (shares of the recipients compared), ``trials`` and ``p_value``."""
        n = max(1, self.trials)
        random_rate = self.random_follow / n if self.with_random else 0.0
        compared = max(1, self.compared or self.trials)
        return {
            "follow_rate": self.follow / n,
            "stay_rate": self.stay / n,
            "random_follow_rate": random_rate,
            "win_rate": self.wins / compared if self.with_random else 0.0,
            "loss_rate": self.losses / compared if self.with_random else 0.0,
            "trials": float(self.trials),
            "p_value": self.p_value,
        }

    def __add__(self, other: Votes) -> Votes:
        return Votes(
            follow=self.follow + other.follow,
            stay=self.stay + other.stay,
            other=self.other + other.other,
            wins=self.wins + other.wins,
            losses=self.losses + other.losses,
            random_follow=self.random_follow + other.random_follow,
            with_random=self.with_random,
            compared=self.compared + other.compared,
            groups=None if self.groups is None or other.groups is None else self.groups + other.groups,
        )


def sequential_test(
    vote: Callable[[Tensor], Votes],
    recipients: Tensor,
    *,
    alpha: float,
    first: int = 16,
    out_of_budget: Callable[[], bool] | None = None,
    groups: Callable[[Tensor], int] | None = None,
) -> Votes:
    """Votes on the first ``first`` recipients, then on the rest, stopping once decided.

    The level ``alpha`` is split evenly over the (at most two) looks, so the test keeps its level.
    When ``out_of_budget()`` is True before the second look, the test ends undecided (stopping for a
    reason unrelated to the outcomes can only lower the false-alarm rate). ``groups(voted)``: at most how
    many independent groups the outcomes of the recipients voted so far fall into (see :attr:`Votes.groups`);
    when not even all of them winning could reach a look's level, nothing is voted (undecided, no trials).

    Example:
        >>> always = lambda chunk: Votes(follow=len(chunk), with_random=False)
        >>> result = sequential_test(always, torch.arange(40), alpha=0.01)
        >>> result.decided, result.trials, result.level  # two looks (16, then 40): each at half the level
        (True, 16, 0.005)
    """
    bounds = sorted({min(first, recipients.numel()), recipients.numel()})
    level = alpha / len(bounds)
    total, start = Votes(with_random=True), 0
    at_most = groups(recipients) if groups is not None else None
    if at_most is not None and sign_test(at_most, 0) > level:
        return Votes(with_random=True, groups=at_most, level=level)  # the few images' evidence cannot reach it
    for stop in bounds:
        if stop <= start:
            continue
        if start and out_of_budget is not None and out_of_budget():
            return total
        total = total + vote(recipients[start:stop]) if start else vote(recipients[start:stop])
        total.groups = groups(recipients[:stop]) if groups is not None else None
        total.level, start = level, stop
        if total.p_value <= level:
            total.decided = True
            return total
        if not total.ahead:
            return total
    return total


def predict(forward_fn: ForwardFn, images: Tensor, batch_size: BatchSize) -> Tensor:
    """Softmax probabilities ``[N, K]`` in chunks of ``batch_size``."""
    parts = []
    for start, stop in chunk_ranges(images.shape[0], batch_size):
        scores = check_score_shape(forward_fn(images[start:stop]), stop - start)
        parts.append(torch.softmax(scores.float(), dim=1))
    return torch.cat(parts)


def swap_boxes(
    recipients: Tensor, donors: Tensor, recipient_boxes: Sequence[Box], donor_boxes: Sequence[Box]
) -> Tensor:
    """Copies of ``recipients`` ``[N, C, H, W]`` with box i replaced by the donor's box i (same size).

    Example:
        >>> recipients, donors = torch.zeros(1, 1, 2, 3), torch.arange(6.0).view(1, 1, 2, 3)
        >>> swap_boxes(recipients, donors, [(0, 0, 1, 1)], [(1, 2, 2, 3)]).flatten().tolist()
        [5.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    out = recipients.clone()
    for index, (to, source) in enumerate(zip(recipient_boxes, donor_boxes)):
        out[index, :, to[0] : to[2], to[1] : to[3]] = donors[index, :, source[0] : source[2], source[1] : source[3]]
    return out


def paste_places(recipients: Tensor, donors: Tensor, places: Sequence[Sequence[Box]]) -> Tensor:
    """Copies of ``recipients`` ``[N, C, H, W]`` with every box of ``places[i]`` taken from ``donors[i]``
    (the same places in both).

    Example:
        >>> paste_places(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), [[(0, 0, 1, 1), (1, 1, 2, 2)]])[0, 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    out = recipients
    for column in range(len(places[0]) if len(places) else 0):
        boxes = [choices[column] for choices in places]
        out = swap_boxes(out, donors, boxes, boxes)
    return out


def transplant_votes(
    forward_fn: ForwardFn,
    transplanted: Tensor,
    controls: Tensor | None,
    recipient_class: Tensor,
    donor_class: Tensor,
    donor_before: Tensor,
    batch_size: BatchSize,
    margin: float = 0.0,
) -> Votes:
    """Scores transplanted images ``[n, C, H, W]`` against their controls ``[k * n, C, H, W]`` (or ``None``).

    ``controls`` holds ``k`` same-size boxes pasted from the same donors, control ``j`` of recipient
    ``i`` at row ``j * n + i`` (for colour, ``k = 1``: the recipient given its own colour; a control
    "followed" is then one that its own colour put in the donor's class). ``donor_before``: the donor
    class's probability in each recipient before the transplant ``[n]``. A recipient is a win when the candidate raises the donor class's
    probability by more than ``margin`` above what the best control does (a loss when by less).
    """
    votes, excess = transplant_outcomes(
        forward_fn, transplanted, controls, recipient_class, donor_class, donor_before, batch_size
    )
    return count_wins(votes, excess, margin)


def count_wins(votes: Votes, excess: Tensor | None, margin: float, *, drop_ties: bool = False) -> Votes:
    """``votes`` with ``wins``/``losses``: recipients whose ``excess`` ``[n]`` is above/below ``margin``.

    ``drop_ties``: losses are recipients whose best control beat the candidate by more than ``margin``
    (excess below ``-margin``); those within ``margin`` either way are left out (a sign test with a
    dead zone: it asks whether the candidate is clearly better more often than clearly worse, not
    whether it is clearly better in most recipients).

    Example:
        >>> count_wins(Votes(), torch.tensor([0.3, 0.0, 0.2]), 0.1)
        Votes(follow=0, stay=0, other=0, wins=2, losses=1, random_follow=0, with_random=True, decided=False, compared=3, groups=None, level=None)
        >>> count_wins(Votes(), torch.tensor([0.3, 0.0, -0.2]), 0.1, drop_ties=True).losses
        1
    """
    if excess is not None:
        votes.wins = int((excess > margin).sum())
        votes.compared = int(excess.numel())
        votes.losses = int((excess < (-margin if drop_ties else margin)).sum())
    return votes


def transplant_outcomes(
    forward_fn: ForwardFn,
    transplanted: Tensor,
    controls: Tensor | None,
    recipient_class: Tensor,
    donor_class: Tensor,
    donor_before: Tensor,
    batch_size: BatchSize,
) -> tuple[Votes, Tensor | None]:
    """The outcomes of transplants (as in :func:`transplant_votes`, wins not counted) and, with
    controls, each recipient's *excess*: how much more the candidate raised the donor class's
    probability than the best control did ``[n]``."""
    n = transplanted.shape[0]
    if n == 0:
        return Votes(with_random=controls is not None), (None if controls is None else torch.zeros(0))
    with torch.no_grad():
        images = transplanted if controls is None else torch.cat([transplanted, controls])
        probabilities = predict(forward_fn, images, batch_size).cpu()
    recipient_class, donor_class, donor_before = recipient_class.cpu(), donor_class.cpu(), donor_before.cpu()
    predicted = probabilities.argmax(dim=1)
    follows, stays = predicted[:n] == donor_class, predicted[:n] == recipient_class
    votes = Votes(
        follow=int(follows.sum()),
        stay=int(stays.sum()),
        other=int((~follows & ~stays).sum()),
        with_random=controls is not None,
    )
    if controls is None:
        return votes, None
    gains = probabilities.gather(1, donor_class.repeat(images.shape[0] // n)[:, None]).view(-1, n) - donor_before
    votes.random_follow = int((predicted[n:].view(-1, n) == donor_class).any(dim=0).sum())
    return votes, gains[0] - gains[1:].amax(dim=0)
