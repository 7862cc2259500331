"""The region test of a spot at the border: clear wins stand only where the donors carry the spot."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.functional.shortcut import box_iou
from lightning_xai.functional.shortcut_candidates import Candidate
from lightning_xai.functional.shortcut_descriptions import fill_drops
from lightning_xai.functional.shortcut_evidence import Votes, sign_test
from lightning_xai.functional.shortcut_gradients import gradient_heat
from lightning_xai.functional.shortcut_interventions import Allowance, Bench
from lightning_xai.functional.shortcut_moving import hottest_inside, locate
from lightning_xai.monitor import shortcut_verdicts as verdicts_module
from lightning_xai.shortcuts import Shortcuts
from tests.functional.test_shortcut_donors import CORNER, _brightest_object, _object_images
from tests.functional.test_shortcut_moving import (
    BAND,
    CORNERS,
    SIDE,
    SIZE,
    ReadsCentredObject,
    ReadsObjectAndBorderMark,
    ReadsObjectAndCornerMark,
    _object_templates,
    _objects_with_border_marks,
    _objects_with_corner_marks,
)
from tests.functional.test_shortcut_recurrence import ReadsObjectAndTopMark

VALUES = [0.3, 0.6, 0.9]


def _clear_wins_confirm(monkeypatch, *, spends: bool = False) -> list[bool]:
    """The test of deciding most predictions rejects, the test of clear wins confirms (``spends``: and spends
    the run's allowance); notes which ran."""
    ran: list[bool] = []

    def region_votes(bench, box, *, alpha, clear_wins=False):
        ran.append(clear_wins)
        if clear_wins and spends:
            bench.allowance.limit = bench.allowance.spent
        return Votes(follow=20, wins=20 if clear_wins else 0, losses=0 if clear_wins else 20, decided=clear_wins)

    monkeypatch.setattr(verdicts_module, "region_votes", region_votes)
    return ran


def _bench(images: torch.Tensor, forward) -> Bench:
    return Bench.build(forward, images, seed=0, batch_size=256, fill="mean", heat=images.mean(dim=0, keepdim=True))


def test_clear_wins_at_a_corner_where_objects_sit_in_some_images_are_not_confirmed(monkeypatch):
    ran = _clear_wins_confirm(monkeypatch)
    images, _ = _object_images(VALUES, 192, seed=0, corners=True)
    votes, _, partial, turned_down = verdicts_module._region_test(
        Candidate("region", CORNER, isolation=0.9), _bench(images, _brightest_object(VALUES)), 1e-3
    )
    assert ran == [False, True] and partial and not votes.decided
    assert turned_down is not None and not turned_down.carried


def test_clear_wins_at_a_corner_that_every_class_marks_stand(monkeypatch):
    ran = _clear_wins_confirm(monkeypatch)
    images, classes = _object_images(VALUES, 192, seed=2, corners=False)
    images[:, 0, :3, :3] = torch.tensor(VALUES)[classes][:, None, None]
    centres = torch.tensor(VALUES)
    bench = _bench(images, lambda x: -40 * (x[:, 0, :3, :3].mean(dim=(1, 2))[:, None] - centres) ** 2)
    votes, _, partial, turned_down = verdicts_module._region_test(
        Candidate("region", CORNER, isolation=0.9), bench, 1e-3
    )
    assert ran == [False, True] and partial and votes.decided and turned_down is None


def _mark_bench() -> Bench:
    images, classes = _object_images(VALUES, 192, seed=2, corners=False)
    images[:, 0, :3, :3] = torch.tensor(VALUES)[classes][:, None, None]
    centres = torch.tensor(VALUES)
    return _bench(images, lambda x: -40 * (x[:, 0, :3, :3].mean(dim=(1, 2))[:, None] - centres) ** 2)


def _object_bench() -> Bench:
    images, _ = _object_images(VALUES, 192, seed=0, corners=True)
    return _bench(images, _brightest_object(VALUES))


@pytest.mark.parametrize(("make", "carried"), [(_mark_bench, True), (_object_bench, False)])
def test_the_donors_are_tested_also_once_the_test_of_clear_wins_spent_the_budget(monkeypatch, make, carried):
    ran = _clear_wins_confirm(monkeypatch, spends=True)
    bench = make()
    votes, _, _, _ = verdicts_module._region_test(Candidate("region", CORNER, isolation=0.9), bench, 1e-3)
    assert ran == [False, True] and bench.out_of_budget() and votes.decided is carried


def test_a_spot_its_donors_turn_down_is_an_outcome_not_a_cut_and_reports_the_larger_p_value(monkeypatch):
    _clear_wins_confirm(monkeypatch, spends=True)
    bench = _object_bench()
    run = verdicts_module.RunTests(bench, 1e-3, (12, 12), 0, 0, None, Shortcuts(), seed=0)
    finding, cut = verdicts_module.candidate_finding(Candidate("region", CORNER, ["grad_cam"], isolation=0.9), run)
    assert not finding.confirmed and not cut  # judged: the place may wait like any rejected one
    assert finding.p_value > 0.01 > finding.level  # the donors' test, not the clear wins' 1e-6


def test_a_probe_that_does_not_read_its_mark_is_outlined_where_its_content_recurs_in_one_class():
    images, marks = _objects_with_border_marks()
    bench = Bench.build(ReadsObjectAndTopMark().eval(), images, seed=0, batch_size=128, fill="mean")
    candidate = Candidate("moving_region", marks[0], places=[marks[0], marks[1]], band=BAND)
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, images[:32], Shortcuts(), seed=0)
    outlines, read = verdicts_module._probe_boxes(candidate, run, at_places=False)
    unread = [i for i in range(32) if not read[i]]
    on_mark = [box_iou(tuple(outlines[i]), marks[i]) >= 0.5 for i in unread]
    assert len(unread) >= 16 and sum(on_mark) >= 0.9 * len(unread)  # the model's gradient and filling place few


class ReadsObjectCornerAndBorderMark(ReadsObjectAndBorderMark):
    """The evidence of the top-left 4x4 piece of the centred object alone (the model's confidence stays low enough
    for filling it to matter: it is read in every probe) and of the mark along the border (read in about a third)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        piece = x.mean(dim=1)[:, 10:14, 10:14].flatten(1) - 0.3
        templates = _object_templates().to(x.device)[:, :4, :4].flatten(1) - 0.5
        mark = super().forward(x) - ReadsCentredObject.forward(self, x)
        return mark + 48 * piece @ templates.T / 16


def _read_flags(run: verdicts_module.RunTests, outlines: list) -> list[bool]:
    """Whether filling each outline lowers its probe's predicted class by ``min_effect`` (as a finding says)."""
    assert run.probe_images is not None
    probes = Bench.build(run.bench.forward_fn, run.probe_images, seed=0, batch_size=128, fill=run.settings.fill)
    return (fill_drops(probes, outlines) >= run.settings.min_effect).tolist()


def test_a_region_confirmed_image_by_image_outlines_every_probe_where_its_content_recurs_even_where_its_box_is_read(
    monkeypatch,
):
    piece = (10, 10, 14, 14)  # the gradient's box is a piece of the object the model reads
    monkeypatch.setattr(verdicts_module, "hottest_inside", lambda heat, boxes, side: [piece] * len(boxes))
    images, marks = _objects_with_border_marks()
    bench = Bench.build(ReadsObjectCornerAndBorderMark().eval(), images, seed=0, batch_size=128, fill="mean")
    candidate = Candidate("moving_region", marks[0], places=[marks[0], marks[1]], band=BAND)
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, images[:32], Shortcuts(), seed=0)
    assert all(_read_flags(run, [piece] * 32))  # read in every probe...
    outlines, read = verdicts_module._probe_boxes(candidate, run, at_places=False)
    assert sum(box_iou(tuple(box), mark) >= 0.5 for box, mark in zip(outlines, marks[:32])) >= 30  # ...not the mark
    assert read == _read_flags(run, outlines) and 0 < sum(read) < 32  # the flags are the recurring boxes'


def test_at_all_places_a_probe_that_does_not_read_its_place_is_outlined_at_its_mark_among_the_places(monkeypatch):
    wrong = CORNERS[0]  # the gradient's place, the same in every probe: the mark's in a quarter of them
    monkeypatch.setattr(verdicts_module, "hottest_inside", lambda heat, boxes, side: [wrong] * len(boxes))
    images, marks = _objects_with_corner_marks()
    bench = Bench.build(ReadsObjectAndCornerMark().eval(), images, seed=0, batch_size=128, fill="mean")
    candidate = Candidate("moving_region", CORNERS[0], places=list(CORNERS), band=BAND)
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, images[:32], Shortcuts(), seed=0)
    unread = [i for i, seen in enumerate(_read_flags(run, [wrong] * 32)) if not seen]
    outlines, read = verdicts_module._probe_boxes(candidate, run, at_places=True)
    on_mark = [box_iou(tuple(outlines[i]), marks[i]) >= 0.5 for i in unread]
    assert len(unread) >= 16 and sum(on_mark) >= 0.9 * len(unread)
    assert all(any(box_iou(tuple(box), place) > 0 for place in CORNERS) for box in outlines)  # inside the places
    assert read == _read_flags(run, outlines)


def test_at_all_places_a_place_the_probe_reads_stays_even_where_it_is_not_the_mark(monkeypatch):
    piece = (10, 10, 14, 14)  # a piece of the object the model reads in every probe
    monkeypatch.setattr(verdicts_module, "hottest_inside", lambda heat, boxes, side: [piece] * len(boxes))
    images, marks = _objects_with_border_marks()
    bench = Bench.build(ReadsObjectCornerAndBorderMark().eval(), images, seed=0, batch_size=128, fill="mean")
    candidate = Candidate("moving_region", marks[0], places=[marks[0], marks[1]], band=BAND)
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, images[:32], Shortcuts(), seed=0)
    outlines, read = verdicts_module._probe_boxes(candidate, run, at_places=True)
    assert outlines == [piece] * 32 and all(read)


def test_a_probe_whose_content_cannot_recur_keeps_the_box_located_as_in_the_test_images():
    images, marks = _objects_with_border_marks(count=6)  # no two classes have three test images: nothing recurs
    bench = Bench.build(ReadsObjectAndBorderMark().eval(), images, seed=0, batch_size=128, fill="mean")
    candidate = Candidate("moving_region", marks[0], places=[marks[0], marks[1]], band=BAND)
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, images, Shortcuts(), seed=0)
    probes = Bench.build(bench.forward_fn, images, seed=0, batch_size=128, fill="mean")
    assert not verdicts_module._recurring(candidate, run, probes, torch.arange(6), SIDE)[1].any()
    heat = gradient_heat(probes)
    located = hottest_inside(heat, locate(probes, candidate.places, band=BAND, heat=heat), SIDE)
    outlines, read = verdicts_module._probe_boxes(candidate, run, at_places=False)
    assert outlines == located and read == _read_flags(run, outlines)


def _border_mark_finding(monkeypatch, votes, *, allowance=None, color_decides=False):
    """The finding of a moving region on objects with border marks, ``moving_votes`` answered by ``votes``: the
    finding, whether the budget cut it, and the bench."""
    images, marks = _objects_with_border_marks()
    bench = Bench.build(
        ReadsObjectAndBorderMark().eval(), images, seed=0, batch_size=128, fill="mean", allowance=allowance
    )
    monkeypatch.setattr(verdicts_module, "moving_votes", votes)
    candidate = Candidate("moving_region", marks[0], ["test_gradients"], places=[marks[0], marks[1]], band=BAND)
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, None, Shortcuts(), seed=0)
    run.color_decides = color_decides
    return (*verdicts_module.candidate_finding(candidate, run), bench)


@pytest.mark.parametrize(("guard_wins", "guard_losses", "confirmed"), [(5, 1, True), (3, 3, True), (1, 5, False)])
def test_a_region_confirmed_image_by_image_must_not_lose_to_the_rival_that_carries_the_class_in_most_donors(
    monkeypatch, guard_wins, guard_losses, confirmed
):
    counted = []

    def votes(bench, own, rival, spots, *, alpha):
        if alpha is None:  # the guard's count: every donor, no level
            counted.append(rival)
            return Votes(wins=guard_wins, losses=guard_losses, compared=guard_wins + guard_losses)
        return Votes(wins=40, losses=2, compared=42, decided=True, level=alpha)  # the test itself confirms

    spent = Allowance(limit=1.0)  # the budget is spent: a turn-down must still not read as the budget's cut
    finding, cut, bench = _border_mark_finding(monkeypatch, votes, allowance=spent)
    assert len(counted) == 1 and len(counted[0]) == bench.images.shape[0]  # one guard, a rival per image
    assert bench.out_of_budget() and finding.confirmed is confirmed and not cut  # a turn-down is an outcome
    tested = Votes(wins=40, losses=2).p_value
    assert finding.p_value == (tested if confirmed else max(tested, sign_test(guard_wins, guard_losses)))


@pytest.mark.parametrize(
    ("color_decides", "in_gray_decides", "confirmed"), [(False, False, True), (True, True, True), (True, False, False)]
)
def test_in_a_run_where_colour_decides_a_moving_region_must_also_decide_with_its_pastes_in_grey(
    monkeypatch, color_decides, in_gray_decides, confirmed
):
    grays = []

    def votes(bench, own, rival, spots, *, alpha, gray=False):
        if alpha is None:  # the guard's count: the region carries its class more than the carrying rival
            return Votes(wins=5, losses=1, compared=6)
        grays.append(gray)
        decided = in_gray_decides if gray else True
        return Votes(wins=40 if decided else 6, losses=2 if decided else 5, compared=42, decided=decided, level=alpha)

    finding, cut, _ = _border_mark_finding(monkeypatch, votes, color_decides=color_decides)
    assert grays == ([False, True] if color_decides else [False])  # the test in grey runs only when colour decides
    assert finding.confirmed is confirmed and not cut
    tested = Votes(wins=40, losses=2).p_value
    assert finding.p_value == (tested if confirmed else max(tested, Votes(wins=6, losses=5).p_value))
