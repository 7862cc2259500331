"""One shortcut candidate's test in one run: its evidence, and the :class:`~lightning_xai.shortcuts.Finding` it gives.

The detector (:mod:`~lightning_xai.monitor.shortcut_detector`) chooses what to test and when; this module
decides one candidate from interventions on the run's test images
(:mod:`lightning_xai.functional.shortcut_interventions`): a fixed place by transplants (and, at the
border, by clear wins), a class mark by donors of its class, a moving region at all its places at once and
then at each image's own place, the colours by recolouring. A decided fixed place is described (its box
refined, who carries it); a confirmed moving region gets each probe's box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional.shortcut import Box
from lightning_xai.functional.shortcut_candidates import Candidate, spot_at_border
from lightning_xai.functional.shortcut_descriptions import (
    ablation_rates,
    carriers,
    fill_drops,
    mark_class,
    others_need,
    refine,
)
from lightning_xai.functional.shortcut_donors import DonorTest, carried_by_donors
from lightning_xai.functional.shortcut_evidence import Votes
from lightning_xai.functional.shortcut_gradients import gradient_heat
from lightning_xai.functional.shortcut_heat import hottest_places
from lightning_xai.functional.shortcut_interventions import Bench, class_votes, color_votes, region_votes
from lightning_xai.functional.shortcut_marks import MARK_RECURS, carried_share
from lightning_xai.functional.shortcut_moving import (
    carrying_rivals,
    hottest_inside,
    locate,
    moving_votes,
    places_hold_the_evidence,
    rivals,
    spots_of,
)
from lightning_xai.functional.shortcut_places import completed_places, place_set_votes
from lightning_xai.functional.shortcut_recurrence import recurring_boxes, recurring_own, same_images
from lightning_xai.monitor.shortcut_messages import finding_message
from lightning_xai.shortcuts import Finding, Shortcuts

__all__ = ["DECIDES_SHARE", "PLACE_SET_SHARE", "RunTests", "candidate_finding", "color_finding", "images_to_test"]

PLACE_SET_SHARE = 0.75
"""The share of a moving region's level its test at all places at once gets; the per-image test, which
finds marks anywhere along the border but needs the mark to decide most predictions, gets the rest."""
DECIDES_SHARE = 0.5
"""The share of the level of a spot at the border (see :func:`spot_at_border`) that its test of deciding
most predictions gets; the test of clear wins against clear losses (a mark read beside the object) gets
the rest. Other fixed places get the whole level for the first test."""


@dataclass
class RunTests:
    """What the tests of one run share: the bench (with the run's allowance of images), the level, the moment,
    the settings, the run's seed, ``agree`` (``value -> rank 0's value`` when every rank runs the checks of
    a collective forward pass, else ``None``) and whether the run's colour test confirmed (``color_decides``)."""

    bench: Bench
    level: float
    size: tuple[int, int]
    epoch: int
    step: int
    probe_images: Tensor | None
    settings: Shortcuts
    seed: int
    agree: Callable[[Any], Any] | None = None
    color_decides: bool = False

    def fits(self, candidate: Candidate) -> bool:
        """Whether the candidate's first look is expected to end within the run's allowance."""
        return self.bench.allowance.fits(images_to_test(candidate, self.size))


def images_to_test(candidate: Candidate, size: tuple[int, int]) -> int:
    """About how many images the first look at a candidate passes through the model: ablations and 16
    transplants with their controls (a spot at the border, see :func:`spot_at_border`: then 16 more with
    two donors each, the test of clear wins). A moving region first completes its places (16 selection
    images' gradients, a forward and backward pass counting 3; their 3 hottest border boxes, each pasted
    into 8 others), finds the class that follows them (about 10 classes of the 32 selection images) and
    what the places carry without each one, then looks at all places at once with two donors per
    recipient (its ablation rates locate 16 selection images among the places). Describing a confirmed
    place (shrinking its box, who carries it) and the donors' test of a spot confirmed by clear wins (8 x 5
    images per test image, see :func:`carried_by_donors`) come on top and are not estimated.

    Example:
        >>> images_to_test(Candidate("region", (12, 12, 16, 16)), (32, 32))
        128
    """
    first_look = 48 + 16 * 5
    if candidate.kind != "moving_region":
        return first_look + (16 * 2 * 5 if spot_at_border(candidate, size) else 0)
    places = len(candidate.places)
    return 16 * 3 + 16 * (places + 3) * 8 + 320 + 32 * (places + 1) + 16 * places + first_look + 16 * 5


def candidate_finding(candidate: Candidate, run: RunTests) -> tuple[Finding, bool]:
    """Tests ``candidate`` on the run's bench. Returns its finding (confirmed or not, with its evidence) and
    whether the test was cut by the budget before it decided (its outcome then says nothing)."""
    evidence = _evidence(candidate, run)
    boxes = [list(b) for b in candidate.probe_boxes] if candidate.kind == "moving_region" else []
    read = list(candidate.probe_read) if len(candidate.probe_read) == len(boxes) else []
    finding = Finding(
        epoch=run.epoch,
        global_step=run.step,
        method=candidate.methods[0],
        box=list(candidate.box),
        score=evidence["follow_rate"] - evidence["stay_rate"],
        confirmed=bool(evidence["decided"]),
        message="",
        flip_rate=evidence["flip_rate"],
        random_flip_rate=evidence["random_flip_rate"],
        drop_ratio=evidence["drop"] / max(evidence["random_drop"], 1e-3),
        follow_rate=evidence["follow_rate"],
        keep_rate=evidence["keep_rate"],
        kind=evidence["kind"],
        classes=evidence["classes"],
        boxes=boxes,
        boxes_read=read,
        p_value=evidence["p_value"],
        level=evidence["level"],
        confidence=1 - evidence["p_value"],
        stay_rate=evidence["stay_rate"],
        random_follow_rate=evidence["random_follow_rate"],
        win_rate=evidence["win_rate"],
        trials=int(evidence["trials"]),
        loss_rate=evidence["loss_rate"],
        partial=evidence["partial"],
    )
    places = candidate.places if candidate.kind == "moving_region" else None
    finding.message = finding_message(finding, run.size, places, run.settings.min_effect)
    return finding, evidence["cut"]


def color_finding(run: RunTests) -> Finding:
    """The colour test of the run (see :func:`color_votes`) as a finding of kind ``"color"``."""
    votes, gray_flip = color_votes(run.bench, alpha=run.level)
    rates = votes.rates()
    finding = Finding(
        epoch=run.epoch,
        global_step=run.step,
        method="color",
        box=[0, 0, run.size[0], run.size[1]],
        score=rates["follow_rate"] - rates["stay_rate"],
        confirmed=votes.decided,
        message="",
        flip_rate=gray_flip,
        follow_rate=rates["follow_rate"],
        kind="color",
        p_value=rates["p_value"],
        level=run.level if votes.level is None else votes.level,
        confidence=1 - rates["p_value"],
        stay_rate=rates["stay_rate"],
        random_follow_rate=rates["random_follow_rate"],
        win_rate=rates["win_rate"],
        loss_rate=rates["loss_rate"],
        trials=votes.trials,
    )
    finding.message = finding_message(finding, run.size, None, run.settings.min_effect)
    return finding


def _evidence(candidate: Candidate, run: RunTests) -> dict[str, Any]:
    """The candidate's test: ablation rates (reported only: a few images suffice), votes, the kind and classes
    it was described as, the level of its last test, whether it was the test of clear wins (``partial``)
    and whether the budget cut it undecided (``cut``; not when its donors turned down its clear wins, or the guard
    of a moving region its confirmation, which are outcomes: the p-value is then the larger of the two tests', as
    an intersection's; the guard's is the sign test of its count)."""
    bench, level = run.bench, run.level
    box, selection = candidate.box, bench.selection[:16]
    partial = False
    turned_down: DonorTest | Votes | None = None  # the test that turned a confirmation down
    if candidate.kind == "region":
        rates = ablation_rates(bench, [box] * selection.numel(), selection)
        votes, level, partial, turned_down = _region_test(candidate, bench, level)
        classes = []
    elif candidate.kind == "class_mark":
        mark_of, rates = mark_class(bench, box)
        votes, classes = class_votes(bench, box, mark_of, alpha=level), [mark_of]
    else:
        rates, votes, classes, level, turned_down = _moving_evidence(candidate, run)
    cut = not votes.decided and bench.out_of_budget() and turned_down is None  # before describing spends more
    kind = candidate.kind
    if votes.decided and kind != "moving_region":
        kind, classes, region_test = _described(candidate, run, classes, level)
        if region_test is not None:  # a class mark that is a region: its region test stands
            votes, level, partial, turned_down = region_test
            cut = not votes.decided and bench.out_of_budget() and turned_down is None
        elif (
            kind == "class_mark" and carried_share(bench.images, bench.predicted, candidate.box, classes) <= MARK_RECURS
        ):
            votes.decided = False  # what sits there does not recur in the class's images: a telling piece of objects
    rates = {**rates, **votes.rates()}
    if turned_down is not None:
        rates["p_value"] = max(rates["p_value"], turned_down.p_value)
    return {
        **rates,
        "decided": votes.decided,
        "classes": classes,
        "kind": kind,
        "level": level if votes.level is None else votes.level,
        "partial": partial and votes.decided,
        "cut": cut,
    }


def _described(
    candidate: Candidate, run: RunTests, classes: list[int], level: float
) -> tuple[str, list[int], RegionTest | None]:
    """A fixed place whose test decided, described: its box refined (``candidate.box``), then who carries
    it (see :func:`_who_carries`). It is no one class's mark when the other classes' images need it too
    (:func:`others_need`, with the classes followed and the one whose test confirmed it as the carriers);
    a class-mark candidate described as a region must also pass the region test. Describing runs also
    once the budget is spent (its passes are counted, not planned: a decided place is described
    rightly or not at all, and a region test stopped by the budget leaves the place to a later run).
    Returns the kind, the classes named (see :func:`_named_classes`) and that region test (see
    :func:`_region_test`; ``None`` when it was not needed)."""
    bench = run.bench
    sides = run.settings.candidate_sides(bench.size)
    candidate.box = refine(bench, candidate.box, sides, classes[0] if classes else None)
    kind, followed = _who_carries(carriers(bench, candidate.box))
    carrying = sorted({*followed, *classes})
    if kind == "class_mark" and others_need(bench, candidate.box, carrying, alpha=level):
        kind = "region"  # every class marks the place its own way (a shade): no one class's mark
    region_test = None
    if kind == "region" and candidate.kind == "class_mark":  # most classes carry it: it must decide as a region
        region_test = _region_test(replace(candidate, kind="region"), bench, level)
    named = _named_classes(bench, candidate.box, followed, classes, level) if kind == "class_mark" else []
    return (kind if named else "region"), named, region_test  # no class confirmed: the region test stands


RegionTest = tuple[Votes, float, bool, DonorTest | None]
"""A region test's votes, the level of its last test, whether that was the test of clear wins, and the donors'
test that turned its clear wins down (``None`` when none did)."""


def _region_test(candidate: Candidate, bench: Bench, level: float) -> RegionTest:
    """A fixed region: does it decide most predictions (the whole ``level``; ``DECIDES_SHARE`` of it for
    a spot at the border, see :func:`spot_at_border`)? If not, such a spot is tested for clear wins
    at the rest of the level (a mark read beside the object). Returns a :data:`RegionTest`.

    Clear wins are confirmed only when the place is also carried by its donors (most donors of all classes,
    or of one class, win: see :func:`carried_by_donors`): objects that sit at the spot in some images of every
    class win there in those images only. Like describing a decided place, this runs also once the budget is
    spent (its passes are counted, not planned): a confirmed spot is judged rightly or not at all.

    A class mark confirmed at a place that the images of most classes carry (see :func:`_who_carries`)
    is a region and takes this test too, at the same level: it is reported only when both tests
    confirm it (an intersection of tests keeps the level), with this test's evidence. The middle of
    centred objects passes a one-class test (the centre of one class's shape, pasted into the others,
    turns them into that class) but carries every class and decides no more than the rest of the object."""
    if not spot_at_border(candidate, bench.size):
        return region_votes(bench, candidate.box, alpha=level), level, False, None
    votes = region_votes(bench, candidate.box, alpha=level * DECIDES_SHARE)
    if votes.decided or bench.out_of_budget():
        return votes, level * DECIDES_SHARE, False, None
    rest = level * (1 - DECIDES_SHARE)
    votes = region_votes(bench, candidate.box, alpha=rest, clear_wins=True)
    if not votes.decided:
        return votes, rest, True, None
    donors = carried_by_donors(bench, candidate.box)  # past the budget too, as describing
    votes.decided = donors.carried  # if not, the clear wins came from images whose object sits there
    return votes, rest, True, None if donors.carried else donors


def _moving_evidence(
    candidate: Candidate, run: RunTests
) -> tuple[dict[str, float], Votes, list[int], float, Votes | None]:
    """A moving region: all its places at once (completed from the selection half, see
    :func:`completed_places`) at ``PLACE_SET_SHARE`` of the level, then, when that is undecided, each
    image's own box at the rest (the whole level when the places were not tested at once: fewer than two, no
    class follows them, or the effect stands on one place). Nothing is tested when the places hold the images'
    evidence (objects that sit there, see :func:`places_hold_the_evidence`), and each image's own box is not
    tested without gradient heat. Confirmed image by image, it must also not lose in most donors to their
    carrying rivals (:func:`carrying_rivals`: the piece elsewhere that carries the class best), or it is turned
    down; in a run whose colour test confirmed, its test must also decide with what is pasted in grey (a
    piece of an object that carries its class by its colour is the colour finding, not a mark at places; the
    intersection of two tests at the same level keeps that level). A confirmed one gets each probe's box.
    Returns the ablation rates (each selection image's own box filled), the votes, the classes, the level of
    the last test and what turned a confirmation down (the guard's count or the test in grey; ``None`` when
    nothing did, or the budget stopped the test in grey)."""
    bench, level = run.bench, run.level
    selection = bench.selection[:16]
    places = completed_places(bench, candidate.places, band=candidate.band)
    hold = places_hold_the_evidence(bench, places)  # objects that sit at the places: neither test runs
    votes, classes = (Votes(), []) if hold else place_set_votes(bench, places, alpha=level * PLACE_SET_SHARE)
    if votes.decided or hold or not gradient_heat(bench).any():
        few = bench.subset(selection)
        candidate.places = places if votes.decided else candidate.places
        rates = ablation_rates(few, locate(few, candidate.places), few.test)
        if votes.decided and run.probe_images is not None:
            candidate.probe_boxes, candidate.probe_read = _probe_boxes(candidate, run, at_places=True)
        return rates, votes, classes, level * PLACE_SET_SHARE, None
    rest = level * (1 - PLACE_SET_SHARE) if classes else level
    heat = gradient_heat(bench)
    located = locate(bench, candidate.places, band=candidate.band, heat=heat)
    own = recurring_own(bench, located, candidate.band, smallest_side=min(run.settings.candidate_sides(bench.size)))
    rates = ablation_rates(bench, [own[i] for i in selection.tolist()], selection)
    spots = spots_of(heat, own, candidate.band)
    rival = rivals(bench, own, heat)
    votes, turned_down = moving_votes(bench, own, rival, spots, alpha=rest), None
    if votes.decided:  # and, in most donors, no less than the piece elsewhere that carries their class best
        guard = moving_votes(bench, own, carrying_rivals(bench, own, heat, spots), spots, alpha=None)
        votes.decided = guard.wins >= guard.losses
        turned_down = None if votes.decided else guard
    if votes.decided and run.color_decides:  # colour decides: what is pasted must carry the class in grey too
        in_gray = moving_votes(bench, own, rival, spots, alpha=rest, gray=True)
        votes.decided = in_gray.decided  # undecided: an outcome, unless the budget stopped it (then it waits)
        turned_down = None if in_gray.decided or bench.out_of_budget() else in_gray
    if votes.decided and run.probe_images is not None:
        candidate.probe_boxes, candidate.probe_read = _probe_boxes(candidate, run, at_places=False)
    return rates, votes, [], rest, turned_down


def _probe_boxes(candidate: Candidate, run: RunTests, *, at_places: bool) -> tuple[list[Box], list[bool]]:
    """Each probe's own box of a confirmed moving region and whether the model reads it there.

    Confirmed image by image (not ``at_places``): in every probe, the box of the smallest candidate side
    where the probe's content recurs in the images of one class (:func:`_recurring`), like the test
    half's own boxes; where nothing recurs, the box located as in the test images (:func:`locate`), then the
    box of the smallest side in it that holds most of the probe's gradient x input. Confirmed at all its
    places at once (``at_places``): the place holding most of the probe's gradient x input and the box of the
    smallest side in it holding most of that, moved to its recurring box inside the places only where the
    model does not read it. A box is read where filling it lowers the probe's predicted class's probability
    by at least ``min_effect`` (one forward pass per probe).

    On 10 random-corner runs (stop 24; 64 test images each, the four corners as places), the gradient put
    0.76 of the images at their mark's corner on average (0.67-0.84), the place whose content, pasted
    into 96 test images of other classes, moves them most (used until stop 23) 0.75 (0.61-0.86), and
    their sum 0.77: as good, for one forward and backward pass per probe instead of 384 forward passes
    (four places). The misses are images in which the model does not read the mark (stop 25, the 20
    runs of seeds 0-9 with both models, 160 images each): where filling the mark's corner lowers the
    predicted class's probability by more than 0.05 (31-68% of images), the gradient's corner is the
    mark's in 99-100% of them; in the others in 35-66%, and filling or transplanting do no better.
    Hence the read flags, and since stop 32 the recurring box where the probe does not read its box: the
    mark the model reads elsewhere, found by its look alone. Since stop 33 every probe of a region confirmed
    image by image takes its recurring box: a box the model reads is not always the mark (a piece of the
    object in the band is read too). On 25 design fits (seeds 41-47, border and corner swatches, both models;
    26 confirmations, 14 image by image), the gradient's box of a probe that read it was on the mark in 64 of
    109 such probes of the 14, the recurring box in 84; all their outlines: 162 of 224 on the mark before, 182
    after (better in 11, worse in 1). At all places at once the recurring box did worse (124 of 192 outlines
    on the mark against 133, worse in 7 of the 12), so there a read place stays.
    """
    assert run.probe_images is not None
    bench, settings = run.bench, run.settings
    probes = Bench.build(
        bench.forward_fn, run.probe_images.detach(), seed=run.seed, batch_size=bench.batch_size, fill=settings.fill
    )
    heat = gradient_heat(probes) if run.agree is None else run.agree(gradient_heat(probes))
    side = min(settings.candidate_sides(bench.size))
    if not at_places:  # like the test half's own boxes (see _moving_evidence), at the smallest side: every probe
        boxes, recurs = _recurring(candidate, run, probes, torch.arange(probes.images.shape[0]), side)
        lost = (~recurs).nonzero().flatten()
        if lost.numel():  # nothing recurs: located as in the test images
            located = locate(probes.subset(lost), candidate.places, band=candidate.band, heat=heat[lost])
            for index, box in zip(lost.tolist(), hottest_inside(heat[lost], located, side)):
                boxes[index] = box
        return boxes, (fill_drops(probes, boxes) >= settings.min_effect).tolist()
    located = hottest_places(heat, candidate.places)
    blind = (~heat.flatten(1).any(dim=1)).nonzero().flatten()
    if blind.numel():  # probes without gradient: by filling (forward passes only)
        for index, box in zip(blind.tolist(), locate(probes.subset(blind), candidate.places)):
            located[index] = box
    boxes = hottest_inside(heat, located, side)
    read = fill_drops(probes, boxes) >= settings.min_effect
    unread = (~read).nonzero().flatten()
    if unread.numel():  # where the model does not read its place: its recurring box among the places
        found, recurs = _recurring(candidate, run, probes, unread, side, within=candidate.places)
        for index, box, kept in zip(unread.tolist(), found, recurs.tolist()):
            boxes[index] = box if kept else boxes[index]
        read[unread] = fill_drops(probes.subset(unread), [boxes[i] for i in unread.tolist()]) >= settings.min_effect
    return boxes, read.tolist()


def _recurring(
    candidate: Candidate,
    run: RunTests,
    probes: Bench,
    indices: Tensor,
    side: int,
    *,
    within: list[Box] | None = None,
) -> tuple[list[Box], Tensor]:
    """For the probes ``indices``, the ``side`` box where each one's content recurs in one class of the test
    images (:func:`recurring_boxes`, by their predictions, a probe that is one of them left out of its own
    references; inside ``within`` when given), and whether anything recurs there (``[len(indices)]`` bool:
    nothing does where fewer than two classes have enough images, and the box is then arbitrary)."""
    bench = run.bench
    images = probes.images[indices]
    exclude = same_images(images, bench.images)
    found, scores = recurring_boxes(
        images, side, candidate.band, bench.images, bench.predicted, within=within, exclude=exclude
    )
    return found, scores > 0


def _who_carries(rates: dict[int, float]) -> tuple[str, list[int]]:
    """A confirmed place is a ``"region"`` when images of most classes carry a version of it that is
    followed (at least half as often as the most followed class's), else (a third of the classes at
    most) a ``"class_mark"``. Returns the kind and the followed classes, most followed first (the most
    followed alone when none is)."""
    top = max(rates.values(), default=0.0)
    followed = sorted((c for c, rate in rates.items() if rate > 0 and rate >= top / 2), key=lambda c: -rates[c])
    if len(followed) > max(1, len(rates) // 3):
        return "region", []
    return "class_mark", followed or sorted(rates, key=rates.__getitem__)[-1:]


def _named_classes(bench: Bench, box: Box, followed: list[int], tested: list[int], level: float) -> list[int]:
    """The classes a confirmed place names as its carriers: ``tested`` (the class whose one-class test
    confirmed it, if any) and each other class in ``followed`` whose own one-class test confirms it
    (``level`` shared among them); none for a region no class of which is confirmed. Being followed is
    not enough: a class whose version of the place merely lacks another class's mark is followed when
    pasted into that class's images, and a weakly read mark of every class can look followed for one."""
    named = list(tested)
    others = [c for c in followed if c not in named]
    for other in others:
        if class_votes(bench, box, other, alpha=level / len(others)).decided:
            named.append(other)
    return sorted(named)
