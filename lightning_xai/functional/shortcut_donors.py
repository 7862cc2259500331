"""Whether a fixed place's evidence follows the donors' classes (a mark) or some of the images (an object there).

The test of clear wins (:func:`~lightning_xai.functional.shortcut_interventions.region_votes` with
``clear_wins``) confirms a spot at the border when the box's content, pasted from an image of another
class, clearly beats the control pieces more often than it clearly loses: ties are left out, so the
donors that decide it can be a minority. Objects that sit at that spot in some of the images (shapes
touching a random corner) pass it: the donors whose object is there win, the others tie.

A mark and such an object differ in *which* donors win. A mark is in every image of the classes that
carry it, so in most donors of those classes the box wins: in most donors of all classes for a shade that
every class carries, in most donors of one class for a mark on that class. An object sits at the spot in
a share of the images of each class, and wins in that share. So each donor is pasted into
:data:`DONOR_RECIPIENTS` recipients of other classes and *wins* when it raises its class, on average,
by more than half the bench's margin over the best control; the place is *carried by its donors* when
most donors win, or most donors of one class (with at least :data:`MIN_CLASS_DONORS` donors) do: one-sided
sign tests, the classes' Bonferroni-corrected, each of the two at :data:`CARRY_LEVEL` (so at most twice it
together). This is a further condition on a place the test of clear wins confirmed at its own level, which
it keeps (a finding needs both); its level only bounds how often the donors of an object that wins in at
most half of each class's images pass. A class's own test needs enough donors to reach the level: with 10
classes of about 10 donors each, all of a class's donors must win (a one-class mark is usually confirmed by
the test of its class, :func:`~lightning_xai.functional.shortcut_interventions.class_votes`, instead).

Example:
    >>> wins, classes = torch.tensor([True] * 9 + [False] * 21), torch.tensor([0] * 9 + [1] * 21)
    >>> round(most_win(wins, classes), 5)  # all 9 donors of class 0 win: 2 ** -9, times 2 classes
    0.00391
"""

from __future__ import annotations

from dataclasses import dataclass

import torch  # noqa: F401  (the examples use it)
from torch import Tensor

from lightning_xai.functional.shortcut import Box
from lightning_xai.functional.shortcut_evidence import sign_test
from lightning_xai.functional.shortcut_interventions import Bench

__all__ = [
    "CARRY_LEVEL",
    "DONOR_RECIPIENTS",
    "MIN_CLASS_DONORS",
    "DonorTest",
    "carried_by_donors",
    "donor_excesses",
    "most_win",
]

DONOR_RECIPIENTS = 8
"""Recipients of other classes per donor; the donor's excess over the best control is their mean."""
MIN_CLASS_DONORS = 5
"""The fewest donors of a class for its own test."""
CARRY_LEVEL = 0.01
"""The level of the tests that most donors (of all classes, or of one) win. Chosen on design fits (seeds 40-49
of the benchmark suite): every place that the test of clear wins confirmed on a planted mark (33) passed, the
clean fit's object corner it confirmed did not, nor did any of 204 object corners of clean fits tested
directly (stop 30 of benchmarks/shortcut_evidence.md)."""


@dataclass
class DonorTest:
    """The outcome of :func:`carried_by_donors`: donors that won, donors, the p-value and whether it confirmed."""

    wins: int = 0
    donors: int = 0
    p_value: float = 1.0
    carried: bool = False


def most_win(wins: Tensor, classes: Tensor, *, min_count: int = MIN_CLASS_DONORS) -> float:
    """p-value that most donors win ``[n]`` (bool), of all classes or of one class of ``classes`` ``[n]`` with at
    least ``min_count`` donors: the smaller of the sign test over all donors and the smallest class's sign test
    times the number of classes tested (Bonferroni); 1.0 without donors.

    Example:
        >>> classes = torch.tensor([0] * 10 + [1] * 10)
        >>> most_win(torch.ones(20, dtype=torch.bool), classes) < 1e-5  # every donor wins
        True
        >>> round(most_win(torch.arange(20) % 2 == 0, classes), 3)  # half of each class
        0.588
    """
    won = int(wins.sum())
    overall = sign_test(won, wins.numel() - won)
    labels, counts = classes.unique(return_counts=True)
    tested = labels[counts >= min_count].tolist()
    per_class = [sign_test(int(wins[classes == c].sum()), int((~wins[classes == c]).sum())) for c in tested]
    return min(overall, min(per_class, default=1.0) * max(1, len(tested)))


def donor_excesses(bench: Bench, box: Box, recipients_each: int = DONOR_RECIPIENTS) -> tuple[Tensor, Tensor]:
    """Each test image's excess as a donor of ``box``: how much more pasting ``box`` from it raised its class's
    probability than the best control did, mean over ``recipients_each`` recipients of other predicted classes.

    Args:
        bench: the run's bench (its test half are the donors; its generator draws the recipients).
        box: ``(top, left, bottom, right)``.
        recipients_each: recipients per donor.

    Returns:
        The excesses ``[n]`` and the donors' predicted classes ``[n]``; images for which too few recipients
        are left (see :meth:`Bench.donors`) are left out.

    Example:
        >>> bench = Bench.build(lambda x: x.flatten(1)[:, :2], torch.rand(16, 1, 4, 4), seed=0, batch_size=16,
        ...                     fill="mean")
        >>> excess, classes = donor_excesses(bench, (0, 0, 1, 1), recipients_each=2)
        >>> excess.shape == classes.shape, bool((excess.abs() <= 1).all())
        (True, True)
    """

    def paste(recipients: Tensor, donors: Tensor) -> tuple[Tensor, Tensor]:
        return bench.paste_with_controls(recipients, donors, [box])

    units, _, excess = bench.excesses(bench.test, bench.donors, paste, rounds=recipients_each, units_give=True)
    return excess, bench.predicted[units]


def carried_by_donors(bench: Bench, box: Box, *, level: float = CARRY_LEVEL) -> DonorTest:
    """Whether ``box`` is carried by its donors (see the module's docstring): most donors, of all classes or of
    one class, raise their class by more than half of ``bench.margin`` over the best control.

    Example:
        >>> def reads_corner(x):  # class 1 when the top-left pixel is bright
        ...     return torch.stack([torch.zeros(len(x)), 10 * (x[:, 0, 0, 0] - 0.5)], dim=1)
        >>> images = torch.rand(96, 1, 8, 8) * 0.1
        >>> images[::2, 0, 0, 0] = 1.0  # a mark on every image of class 1
        >>> bench = Bench.build(reads_corner, images, seed=0, batch_size=96, fill="mean")
        >>> carried_by_donors(bench, (0, 0, 2, 2)).carried
        True
    """
    excess, classes = donor_excesses(bench, box)
    wins = excess > bench.margin / 2
    p_value = most_win(wins, classes)
    return DonorTest(int(wins.sum()), wins.numel(), p_value, p_value <= level)
