"""ShortcutDetector on hand-built models whose reliance is known: each kind is found, objects stay silent."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from torch import nn

from lightning_xai.functional import shortcut_moving as moving_module
from lightning_xai.functional.shortcut import box_iou
from lightning_xai.functional.shortcut_candidates import Candidate
from lightning_xai.functional.shortcut_evidence import Votes
from lightning_xai.functional.shortcut_interventions import Allowance
from lightning_xai.monitor import shortcut_detector as detector_module
from lightning_xai.monitor import shortcut_verdicts as verdicts_module
from lightning_xai.monitor.images import outline_findings
from lightning_xai.monitor.shortcut_detector import ShortcutDetector
from lightning_xai.shortcuts import Finding, ShortcutReport, Shortcuts
from tests.conftest import without_backward

SIZE, CLASSES = 16, 6
CORNERS = [(0, 0, 4, 4), (0, 12, 4, 16), (12, 0, 16, 4), (12, 12, 16, 16)]


def _templates() -> torch.Tensor:
    return (torch.rand(CLASSES, 8, 8, generator=torch.Generator().manual_seed(5)) > 0.5).float()


def _objects(count: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An 8x8 binary template per class, centred in 16x16 noise; labels cycle through the classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % CLASSES
    images = torch.rand(count, 1, SIZE, SIZE, generator=generator) * 0.3
    images[:, 0, 4:12, 4:12] = _templates()[labels] * 0.7 + 0.15
    return images, labels


class ReadsObject(nn.Module):
    """Correlates the centred 8x8 area with each class's template: a clean model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x.mean(dim=1)[:, 4:12, 4:12].flatten(1) - 0.5
        return 20 * centre @ (_templates().to(x.device).flatten(1) - 0.5).T / 64


class ReadsShade(nn.Module):
    """Class = the grey level of the brightest of ``boxes`` (one fixed box, or the four corners)."""

    def __init__(self, boxes: list[tuple[int, int, int, int]]) -> None:
        super().__init__()
        self.boxes = boxes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = torch.stack(
            [x[:, :, top:bottom, left:right].mean(dim=(1, 2, 3)) for top, left, bottom, right in self.boxes], dim=1
        ).amax(dim=1)
        code = (levels - 0.4) / 0.6 * (CLASSES - 1)
        return -((code[:, None] - torch.arange(float(CLASSES), device=x.device)) ** 2) * 5


class ReadsMark(ReadsObject):
    """Class 0 when the top-right 4x4 box is white, else the object's class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = super().forward(x)
        marked = (x[:, :, 0:4, 12:16].mean(dim=(1, 2, 3)) > 0.95).float()
        return scores + 50 * marked[:, None] * torch.nn.functional.one_hot(torch.tensor(0, device=x.device), CLASSES)


class ReadsColor(nn.Module):
    """Class = which channel is strongest relative to the brightness (3 classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50 * (x.mean(dim=(2, 3)) - x.mean(dim=(1, 2, 3))[:, None])


def _shaded(boxes_of: list, count: int = 64) -> tuple[torch.Tensor, list]:
    images, labels = _objects(count)
    images[:, :, 4:12, 4:12] = 0.2  # no object: only the shade carries the class
    for image, label, box in zip(images, labels.tolist(), boxes_of):
        image[:, box[0] : box[2], box[1] : box[3]] = 0.4 + 0.6 * label / (CLASSES - 1)
    return images, boxes_of


@pytest.fixture
def shade_alone_counts_as_a_mark(monkeypatch):
    """In ``_shaded`` images the shade is all there is to read, so the places hold the images' whole evidence
    (``places_hold_the_evidence``: then it is the object, and nothing is tested). Tests of what the moving-region
    tests do once they run switch that guard off; the guard has tests of its own."""
    monkeypatch.setattr(moving_module, "EVIDENCE_NEAR_PLACES", 1.0)


def _heat(boxes: list, count: int = 16) -> dict[str, torch.Tensor]:
    maps = torch.full((count, 1, SIZE, SIZE), 0.01)
    for index, box in enumerate(boxes[:count]):
        maps[index, :, box[0] : box[2], box[1] : box[3]] = 1.0
    return {"heat": maps}


def _check(model: nn.Module, displays: dict, images: torch.Tensor, settings: Shortcuts = Shortcuts()) -> ShortcutReport:
    return ShortcutDetector(settings).check(model.eval(), displays, images, epoch=2, step=30)


def test_the_checks_state_is_plain_and_a_restored_detector_goes_on_from_it():
    images, _ = _shaded([CORNERS[0]] * 64)
    detector = ShortcutDetector(Shortcuts())
    for epoch in (0, 1):
        detector.check(ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16), images, epoch=epoch, step=epoch)
    state = json.loads(json.dumps(detector.state_dict()))  # plain values: checkpoint- and JSON-safe
    restored = ShortcutDetector(Shortcuts())
    restored.load_state_dict(state)
    assert restored.runs == 2 and restored.retests.records == detector.retests.records
    assert any(record.outcome.confirmed for record in restored.retests.records)  # the outcomes are findings again
    old = ShortcutDetector(Shortcuts())
    old.load_state_dict({})  # a checkpoint saved before the checks had a state
    assert old.runs == 0 and old.retests.records == []


def test_fixed_region_is_found_once_with_its_evidence():
    images, _ = _shaded([CORNERS[0]] * 64)
    detector = ShortcutDetector(Shortcuts())
    report = detector.check(ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16), images, epoch=2, step=30)
    (finding,) = report.new
    assert finding.kind == "region" and finding.box == [0, 0, 4, 4] and finding.classes == []
    assert finding.follow_rate == 1.0 and finding.random_follow_rate == 0.0 and finding.p_value <= finding.level
    assert finding.message.startswith("after epoch 2 the model relies on a 4x4 region at the top-left corner")
    assert report.per_method["heat"]["confirmed"] == 1.0 and report.current["heat"].confirmed
    assert not any("/" in key for key in report.per_method["heat"])
    again = detector.check(ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16), images, epoch=3, step=40)
    assert again.new == [] and again.current["heat"].confirmed and len(detector.findings) == 1  # reported once
    third = detector.check(ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16), images, epoch=4, step=50)
    assert third.waiting == 0 and third.current["heat"].confirmed
    waits = detector.check(ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16), images, epoch=5, step=60)
    assert waits.waiting == 1 and waits.current["heat"].confirmed and waits.new == []  # the same 3 times: it waits


def test_centred_object_stays_silent_even_when_every_box_is_tested():
    images, _ = _objects()
    maps = torch.ones(16, 1, SIZE, SIZE) * 0.01
    maps[:, :, 4:12, 4:12] = 1.0
    maps[:, :, 6:10, 6:10] = 3.0  # the centre of the object is the hottest place
    everything = Shortcuts(min_concentration=0.0, min_isolation=0.0)
    report = _check(ReadsObject(), {"heat": maps}, images, everything)
    assert report.new == [] and report.per_method["heat"]["candidates"] >= 2
    assert (
        report.current["heat"].stay_rate > report.current["heat"].follow_rate
    )  # the rest of the object outweighs the box


def test_a_place_tested_the_same_way_three_times_waits_and_its_last_outcome_stands(monkeypatch):
    images, _ = _objects()
    maps = torch.ones(16, 1, SIZE, SIZE) * 0.01
    maps[:, :, 4:12, 4:12] = 1.0
    maps[:, :, 6:10, 6:10] = 3.0
    detector = ShortcutDetector(Shortcuts(min_concentration=0.0, min_isolation=0.0))
    tested: list[str] = []
    evidence = verdicts_module._evidence
    monkeypatch.setattr(
        verdicts_module, "_evidence", lambda candidate, run: tested.append(candidate.kind) or evidence(candidate, run)
    )

    def check(heat: torch.Tensor, run: int) -> ShortcutReport:
        tested.clear()
        return detector.check(ReadsObject().eval(), {"heat": heat}, images, epoch=run, step=run)

    first, second, third = check(maps, 0), check(maps, 1), check(maps, 2)
    assert first.waiting == second.waiting == third.waiting == 0
    assert len(tested) == third.per_method["heat"]["candidates"] >= 2
    fourth = check(maps, 3)
    assert tested == [] and fourth.waiting == fourth.per_method["heat"]["candidates"]  # rejected 3 times: they wait
    assert fourth.per_method["heat"] == third.per_method["heat"] and fourth.new == []  # the last outcomes stand
    hotter = maps.clone()
    hotter[:, :, 6:10, 6:10] = 6.0  # the maps grow more concentrated there: tested at once
    assert check(hotter, 4).waiting < fourth.waiting and tested


def test_a_moving_region_over_a_fixed_place_found_is_that_place():
    def found(kind: str, box: list[int]) -> Finding:
        return Finding(epoch=0, global_step=1, method="heat", box=box, score=1.0, confirmed=True, message="", kind=kind)

    region, moving = found("region", [1, 1, 5, 5]), found("moving_region", [0, 0, 6, 6])
    assert detector_module._most_precise([moving, region]) == [region]
    elsewhere = found("moving_region", [26, 26, 32, 32])
    assert detector_module._most_precise([elsewhere, region]) == [region, elsewhere]
    detector = ShortcutDetector(Shortcuts())
    detector.findings.append(region)
    assert detector._already_reported(moving) and not detector._already_reported(elsewhere)


def test_moving_region_gets_one_box_per_probe(shade_alone_counts_as_a_mark):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    report = _check(ReadsShade(CORNERS), _heat(places), images)
    moving = [f for f in report.new if f.kind == "moving_region"]
    assert len(moving) == 1 and [tuple(b) for b in moving[0].boxes] == places[:16]
    assert "at varying places (corners" in moving[0].message
    grid = outline_findings(torch.zeros(16, 3, SIZE, SIZE), moving, (SIZE, SIZE))
    assert grid.shape[0] == 3 and grid.sum() > 0


def test_a_moving_mark_the_probes_maps_miss_is_proposed_by_the_test_images_gradients(shade_alone_counts_as_a_mark):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    centre = _heat([(6, 6, 10, 10)] * 16)  # the probes' maps look at the middle, none at a corner
    report = ShortcutDetector(Shortcuts()).check(
        ReadsShade(CORNERS).eval(), centre, images, epoch=2, step=30, probe_images=images[:16]
    )
    moving = [f for f in report.new if f.kind == "moving_region"]
    assert len(moving) == 1 and moving[0].method == detector_module.TEST_IMAGES_SOURCE
    labels = _objects()[1][:16].tolist()
    inside = [box_iou(tuple(box), place) > 0 for box, place in zip(moving[0].boxes, places[:16])]
    # class 0's shade is the darkest: a model that reads the brightest corner does not follow it when pasted
    assert all(found for found, label in zip(inside, labels) if label != 0)
    assert report.per_method[detector_module.TEST_IMAGES_SOURCE]["confirmed"] == 1.0
    assert report.current["heat"].kind == "region" and not report.current["heat"].confirmed  # the maps' centre


def test_a_moving_region_says_in_which_probes_the_model_reads_it_and_draws_the_others_thin_and_grey(
    shade_alone_counts_as_a_mark,
):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    report = ShortcutDetector(Shortcuts()).check(
        ReadsShade(CORNERS).eval(), _heat(places), images, epoch=2, step=30, probe_images=images[:16]
    )
    (moving,) = [f for f in report.new if f.kind == "moving_region"]
    labels = _objects()[1][:16].tolist()
    # class 0's shade is the darkest of all: filled, the brightest corner is noise and the prediction stays 0
    assert moving.boxes_read == [label != 0 for label in labels] and 0 < sum(moving.boxes_read) < 16
    assert f"in {sum(moving.boxes_read)} of 16 probes" in moving.message
    shown = 4 * SIZE  # probes shown larger than the input: outlines of two pixels and of one differ
    grid = outline_findings(torch.zeros(16, 3, shown, shown), [moving], (SIZE, SIZE))

    def cell(index: int) -> torch.Tensor:  # make_grid: 8 columns, 2 pixels of padding
        top, left = 2 + (index // 8) * (shown + 2), 2 + (index % 8) * (shown + 2)
        return grid[:, top : top + shown, left : left + shown]

    unread, read = labels.index(0), next(i for i, label in enumerate(labels) if label != 0)
    assert torch.allclose(cell(unread).amax(dim=(1, 2)), torch.tensor([0.6, 0.6, 0.6]))
    assert torch.allclose(cell(read).amax(dim=(1, 2)), torch.tensor([0.1, 0.9, 1.0]))
    assert (cell(unread).sum(dim=0) > 0).sum() < (cell(read).sum(dim=0) > 0).sum()  # thinner


def test_a_moving_region_found_earlier_is_outlined_again_by_a_later_run_that_confirms_it(
    shade_alone_counts_as_a_mark,
):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    model, detector = ReadsShade(CORNERS).eval(), ShortcutDetector(Shortcuts())
    wrong = [CORNERS[(CORNERS.index(place) + 1) % 4] for place in places]  # the maps look at the next corner
    first = detector.check(model, _heat(wrong), images, epoch=0, step=10)
    (found,) = [f for f in first.new if f.kind == "moving_region"]
    assert [tuple(b) for b in found.boxes] == wrong[:16] and found.outlined_after == 0 and first.outlined_again == []
    said = found.message

    second = detector.check(model, _heat(wrong), images, epoch=1, step=20, probe_images=images[:16])
    alone = ShortcutDetector(Shortcuts()).check(model, _heat(wrong), images, epoch=1, step=20, probe_images=images[:16])
    (fresh,) = [f for f in alone.new if f.kind == "moving_region"]
    assert second.new == [] and second.outlined_again == [found] and detector.findings == [found]
    assert found.boxes == fresh.boxes != [list(box) for box in wrong[:16]] and found.boxes_read == fresh.boxes_read
    assert (found.epoch, found.global_step, found.outlined_after, found.p_value) == (0, 10, 1, first.new[0].p_value)
    assert found.message.startswith(said.split(" Filling it")[0]) and said != found.message
    margin = f"{Shortcuts().min_effect:.0%}"
    assert found.message.endswith(
        f"Outlined again after epoch 1: filling it lowers the predicted class by {margin} or more in "
        f"{sum(fresh.boxes_read)} of 16 probes; in the others the model does not read it there and its outline is "
        "drawn thin, in grey."
    )

    third = detector.check(model, _heat(wrong), images, epoch=2, step=30, probe_images=images[:16])
    assert third.outlined_again == [] and found.outlined_after == 1  # the same outlines: nothing to redraw


def test_a_moving_region_is_not_outlined_again_by_a_run_that_does_not_confirm_it(
    shade_alone_counts_as_a_mark, monkeypatch
):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    wrong = [CORNERS[(CORNERS.index(place) + 1) % 4] for place in places]
    detector = ShortcutDetector(Shortcuts())
    first = detector.check(ReadsShade(CORNERS).eval(), _heat(places), images, epoch=0, step=10)
    (found,) = first.new
    boxes = [list(box) for box in found.boxes]
    outcomes: list[Finding] = []

    def kept(candidate: Candidate, run: verdicts_module.RunTests) -> tuple[Finding, bool]:
        outcome = verdicts_module.candidate_finding(candidate, run)
        outcomes.append(outcome[0])
        return outcome

    monkeypatch.setattr(detector_module, "candidate_finding", kept)
    later = detector.check(ReadsObject().eval(), _heat(wrong), images, epoch=1, step=20)  # the maps' corners
    (rejected,) = [f for f in outcomes if f.kind == "moving_region"]
    assert not rejected.confirmed and rejected.box[2] - rejected.box[0] == found.box[2] - found.box[0]
    assert rejected.boxes == [list(box) for box in wrong[:16]] != boxes  # tested now, other outlines: not taken
    assert later.outlined_again == [] and found.boxes == boxes and found.outlined_after == 0


def test_a_waiting_confirmation_of_an_earlier_run_does_not_outline_again(shade_alone_counts_as_a_mark):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    model, detector = ReadsShade(CORNERS).eval(), ShortcutDetector(Shortcuts())
    reports = [detector.check(model, _heat(places), images, epoch=run, step=10 * run) for run in range(3)]
    (found,) = reports[0].new
    third = reports[2].current[detector_module.TEST_IMAGES_SOURCE]
    assert third is not found and third.confirmed and third.global_step == 20  # run 3's own test
    found.boxes = [[0, 0, 4, 4]] * 16  # outlines that run 3's confirmation does not draw
    fourth = detector.check(model, _heat(places), images, epoch=3, step=40)
    assert fourth.waiting >= 1 and fourth.current[detector_module.TEST_IMAGES_SOURCE] is third  # run 3's stands
    assert fourth.outlined_again == [] and found.boxes == [[0, 0, 4, 4]] * 16 and found.outlined_after == 0


def test_only_a_confirmed_moving_region_of_the_reported_size_with_other_outlines_outlines_it_again():
    def moving(box: list[int], boxes: list[list[int]], *, confirmed: bool = True, kind: str = "moving_region"):
        return Finding(0, 10, "test_gradients", box, 1.0, confirmed, "", kind=kind, boxes=boxes)

    reported = moving([0, 0, 4, 4], [[0, 0, 4, 4], [12, 12, 16, 16]])
    other = [[12, 12, 16, 16], [0, 0, 4, 4]]
    again = detector_module._confirmed_again
    assert again([reported], [moving([12, 0, 16, 4], other)]) == (reported, moving([12, 0, 16, 4], other))
    assert again([reported], [moving([0, 0, 6, 6], other)]) is None  # another size: another place
    assert again([reported], [moving([0, 0, 4, 4], other, confirmed=False)]) is None
    assert again([reported], [moving([0, 0, 4, 4], reported.boxes)]) is None  # the same outlines
    assert again([moving([0, 0, 4, 4], [], kind="region")], [moving([0, 0, 4, 4], other)]) is None


def test_rank_zeros_gradient_heat_is_the_one_used():
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    centre = _heat([(6, 6, 10, 10)] * 16)
    asked: list[torch.Tensor] = []

    def rank_zero_saw_no_gradient(value: torch.Tensor) -> torch.Tensor:
        asked.append(value)
        return torch.zeros_like(value)

    detector = ShortcutDetector(Shortcuts())
    report = detector.check(
        ReadsShade(CORNERS).eval(), centre, images, epoch=2, step=30, agree=rank_zero_saw_no_gradient
    )
    assert len(asked) == 1 and asked[0].shape == (64, 1, SIZE, SIZE) and asked[0].sum() > 0  # this rank's heat
    assert not any(f.kind == "moving_region" for f in report.new)  # rank 0's heat proposes nothing
    assert detector_module.TEST_IMAGES_SOURCE not in report.per_method


class ShadeWithoutGradient(ReadsShade):
    """``ReadsShade`` computed without autograd: its output has no gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x)


def test_a_model_without_gradients_keeps_the_maps_moving_region():
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    report = ShortcutDetector(Shortcuts()).check(
        ShadeWithoutGradient(CORNERS).eval(), _heat(places), images, epoch=2, step=30, probe_images=images[:16]
    )
    moving = [f for f in report.new if f.kind == "moving_region"]
    assert len(moving) == 1 and moving[0].method == "heat"
    assert all(box_iou(tuple(box), place) > 0 for box, place in zip(moving[0].boxes, places[:16]))  # by filling
    assert detector_module.TEST_IMAGES_SOURCE not in report.per_method


class ShadeWithFailingBackward(ReadsShade):
    """``ReadsShade`` behind an op whose backward pass raises."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(without_backward(x))


def test_a_model_whose_backward_fails_keeps_the_maps_moving_region():
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    with pytest.warns(UserWarning, match="could not take the model's gradient"):  # the checks run to their end
        report = _check(ShadeWithFailingBackward(CORNERS), _heat(places), images)
    assert [f.method for f in report.new if f.kind == "moving_region"] == ["heat"]


def test_without_gradient_an_undecided_place_set_test_is_what_the_moving_region_reports(monkeypatch):
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    undecided = Votes(follow=5, stay=9, wins=4, losses=6)
    monkeypatch.setattr(verdicts_module, "place_set_votes", lambda bench, places, alpha: (undecided, [3]))
    candidate = Candidate("moving_region", CORNERS[0], places=list(CORNERS), band=4)
    bench = verdicts_module.Bench.build(
        ShadeWithoutGradient(CORNERS).eval(), images, seed=0, batch_size=64, fill="mean"
    )
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, None, Shortcuts(), seed=1)
    rates, votes, classes, level, turned_down = verdicts_module._moving_evidence(candidate, run)
    assert votes is undecided and classes == [3] and turned_down is None  # the test that ran, not an empty one
    assert level == pytest.approx(1e-3 * verdicts_module.PLACE_SET_SHARE) and "flip_rate" in rates


def test_a_finding_s_level_is_what_its_deciding_look_had_to_reach():
    images, _ = _shaded([CORNERS[0]] * 64)
    bench = verdicts_module.Bench.build(ReadsShade([CORNERS[0]]).eval(), images, seed=0, batch_size=64, fill="mean")
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, None, Shortcuts(), seed=1)
    finding, _ = verdicts_module.candidate_finding(Candidate("region", CORNERS[0], ["heat"], isolation=0.9), run)
    assert bench.test.numel() > 16 and finding.confirmed  # a test of two looks, decided at the first
    share = verdicts_module.DECIDES_SHARE  # a spot at the border: its test of deciding most predictions
    assert finding.level == pytest.approx(1e-3 * share / 2) and finding.p_value <= finding.level
    assert f"needed <= {finding.level:.1e}" in finding.message


def _moving_run(monkeypatch, place_set: tuple[Votes, list[int]], *, hold: bool) -> tuple[list, list[float]]:
    """``_moving_evidence`` on a model reading a shade in a random corner, with the test at all places at once
    answering ``place_set`` and the places holding the images' evidence or not (``hold``); records which
    per-image tests ran, at which level."""
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    log: list[float] = []
    monkeypatch.setattr(
        verdicts_module, "place_set_votes", lambda bench, places, alpha: place_set if not hold else 1 / 0
    )  # when the places hold the evidence, the test at all places at once must not run either
    monkeypatch.setattr(verdicts_module, "places_hold_the_evidence", lambda bench, places: hold)
    moving_votes = verdicts_module.moving_votes

    def logged(bench, own, rival, spots, *, alpha):
        log.append(alpha)
        return moving_votes(bench, own, rival, spots, alpha=alpha)

    monkeypatch.setattr(verdicts_module, "moving_votes", logged)
    candidate = Candidate("moving_region", CORNERS[0], places=list(CORNERS), band=4)
    bench = verdicts_module.Bench.build(ReadsShade(CORNERS).eval(), images, seed=0, batch_size=64, fill="mean")
    run = verdicts_module.RunTests(bench, 1e-3, (SIZE, SIZE), 0, 0, None, Shortcuts(), seed=1)
    return list(verdicts_module._moving_evidence(candidate, run)), log


def test_each_images_own_box_is_tested_at_the_whole_level_when_the_places_were_not_tested_at_once(
    monkeypatch, shade_alone_counts_as_a_mark
):
    (_, votes, classes, level, _), log = _moving_run(monkeypatch, (Votes(), []), hold=False)
    assert log == [pytest.approx(1e-3), None] and level == pytest.approx(1e-3) and classes == []  # None: the guard
    assert votes.decided  # the shade decides: until stop 27 nothing was tested when the places were not
    (_, _, _, level, _), log = _moving_run(monkeypatch, (Votes(follow=5, stay=9, wins=4, losses=6), [3]), hold=False)
    assert log[0] == pytest.approx(1e-3 * (1 - verdicts_module.PLACE_SET_SHARE)) and level == log[0]
    assert log[1:] in ([], [None])  # the guard's count, only after a confirmation


def test_nothing_moving_is_tested_when_the_places_hold_the_images_evidence(monkeypatch):
    (_, votes, classes, _, _), log = _moving_run(monkeypatch, (Votes(), []), hold=True)
    assert log == [] and votes == Votes() and classes == []  # objects that sit at the places


def test_mark_of_one_class_names_the_class():
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    report = _check(ReadsMark(), _heat(boxes), images)
    assert [(f.kind, f.box, f.classes) for f in report.new] == [("class_mark", [0, 12, 4, 16], [0])]
    assert "that images of class 0 carry" in report.new[0].message


class ReadsBrightPixel(ReadsObject):
    """Class 0 when any pixel of the top-right 4x4 box is white, else the object's class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = super().forward(x)
        marked = (x[:, :, 0:4, 12:16].amax(dim=(1, 2, 3)) > 0.95).float()
        return scores + 50 * marked[:, None] * torch.nn.functional.one_hot(torch.tensor(0, device=x.device), CLASSES)


@pytest.mark.parametrize("same_pixel", [True, False])
def test_a_telling_box_is_a_mark_only_when_its_content_recurs_in_the_class(same_pixel):
    """The transplants confirm both (a class-0 donor's box turns any image into a 0); only a tag the class's images
    share is a mark, not a piece that differs from image to image (a stroke of objects at varying places)."""
    images, labels = _objects()
    spots = torch.randint(0, 16, (int((labels == 0).sum()),), generator=torch.Generator().manual_seed(3))
    for index, spot in zip((labels == 0).nonzero().flatten().tolist(), spots.tolist()):
        row, column = (1, 1) if same_pixel else divmod(spot, 4)
        images[index, :, row, 12 + column] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    detector = ShortcutDetector(Shortcuts())
    report = detector.check(ReadsBrightPixel().eval(), _heat(boxes), images, epoch=2, step=30)
    marks = [(f.kind, f.classes) for f in report.new]
    assert marks == ([("class_mark", [0])] if same_pixel else [])
    assert all(box_iou(tuple(f.box), (1, 13, 2, 14)) > 0 for f in report.new)  # shrunk around the tag's pixel
    (tested,) = [r.outcome for r in detector.retests.records if r.kind == "class_mark" and r.box == (0, 12, 4, 16)]
    assert tested.p_value <= tested.level and tested.confirmed is same_pixel  # the same transplant evidence either way


def test_the_class_whose_test_confirmed_a_mark_is_among_its_carriers_when_no_paste_flips_one(monkeypatch):
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    # its one-class test decides on wins, while no paste need flip a prediction: the carriers can all be 0
    monkeypatch.setattr(verdicts_module, "carriers", lambda bench, box: dict.fromkeys(range(CLASSES), 0.0))
    asked: list[list[int]] = []
    real = verdicts_module.others_need

    def recording(bench: object, box: object, carrying: list[int], *, alpha: float) -> bool:
        asked.append(list(carrying))
        return real(bench, box, carrying, alpha=alpha)  # type: ignore[arg-type]

    monkeypatch.setattr(verdicts_module, "others_need", recording)
    report = _check(ReadsMark(), _heat(boxes), images)
    # class 0's own images need their mark: they must not count among the other classes' images
    assert asked and all(0 in carrying for carrying in asked)
    assert [(f.kind, f.box, f.classes) for f in report.new] == [("class_mark", [0, 12, 4, 16], [0])]


class ReadsTwoMarks(ReadsObject):
    """Class 0 when the top-right 4x4 box is white, class 1 when it is black, else the object's class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x[:, :, 0:4, 12:16].mean(dim=(1, 2, 3))
        marks = torch.stack([(level > 0.95).float(), (level < 0.05).float()], dim=1)
        return super().forward(x) + 50 * torch.nn.functional.pad(marks, (0, CLASSES - 2))


def test_a_mark_that_two_classes_carry_names_both():
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    images[labels == 1, :, 0:4, 12:16] = 0.0
    boxes = [(0, 12, 4, 16) if label < 2 else (5, 5, 9, 9) for label in labels.tolist()]
    report = _check(ReadsTwoMarks(), _heat(boxes), images)
    assert [(f.kind, f.box, f.classes) for f in report.new] == [("class_mark", [0, 12, 4, 16], [0, 1])]


def test_a_class_followed_at_the_mark_is_named_only_when_its_own_test_confirms_it(monkeypatch):
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    followed = {0: 0.9, 3: 0.6, 1: 0.0, 2: 0.0, 4: 0.0, 5: 0.0}  # class 3 looks followed: its images carry no mark
    monkeypatch.setattr(verdicts_module, "carriers", lambda bench, box: followed)
    report = _check(ReadsMark(), _heat(boxes), images)
    assert [(f.kind, f.box, f.classes) for f in report.new] == [("class_mark", [0, 12, 4, 16], [0])]


def test_a_region_followed_for_one_class_only_is_that_class_s_mark_only_when_the_class_test_confirms_it(
    monkeypatch,
):
    images, _ = _shaded([CORNERS[0]] * 64)
    one_class = {1: 0.5, 0: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}  # as a weakly read shade can look after one run
    monkeypatch.setattr(verdicts_module, "carriers", lambda bench, box: one_class)
    monkeypatch.setattr(verdicts_module, "others_need", lambda *args, **kwargs: False)  # as a one-class mark
    confirmed = _check(ReadsShade([CORNERS[0]]), _heat([CORNERS[0]] * 16), images)
    assert [(f.kind, f.box, f.classes) for f in confirmed.new] == [("class_mark", [0, 0, 4, 4], [1])]
    asked: list[int] = []

    def undecided(bench: object, box: object, mark_of: int, *, alpha: float) -> Votes:
        asked.append(mark_of)
        return Votes(follow=1, stay=1)

    monkeypatch.setattr(verdicts_module, "class_votes", undecided)
    report = _check(ReadsShade([CORNERS[0]]), _heat([CORNERS[0]] * 16), images)
    assert asked == [1] and [(f.kind, f.box, f.classes) for f in report.new] == [("region", [0, 0, 4, 4], [])]


def test_a_shade_that_every_class_bears_is_a_region_even_when_one_class_s_version_looks_followed(monkeypatch):
    images, _ = _shaded([CORNERS[0]] * 64)
    one_class = {1: 0.5, 0: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}  # as a weakly read shade can look after one run
    monkeypatch.setattr(verdicts_module, "carriers", lambda bench, box: one_class)
    report = _check(ReadsShade([CORNERS[0]]), _heat([CORNERS[0]] * 16), images)
    # filling the corner changes the other classes' predictions too: each class's images bear their own shade
    assert [(f.kind, f.box, f.classes) for f in report.new] == [("region", [0, 0, 4, 4], [])]


def test_a_class_mark_that_most_classes_carry_must_also_decide_as_a_region(monkeypatch):
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    every_class = {c: 0.9 for c in range(CLASSES)}  # as the middle of centred objects is: every class's is followed
    monkeypatch.setattr(verdicts_module, "carriers", lambda bench, box: every_class)
    report = _check(ReadsMark(), _heat(boxes), images)
    assert report.new == []  # the one-class test confirmed it; pasted from images of any class, it decides nothing
    (mark,) = [f for f in report.current.values() if f.kind == "region" and f.box == [0, 12, 4, 16]]
    assert not mark.confirmed and mark.follow_rate < mark.stay_rate


def test_a_class_mark_s_region_test_stopped_by_the_budget_is_recorded_as_cut(monkeypatch):
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    monkeypatch.setattr(verdicts_module, "carriers", lambda bench, box: {c: 0.9 for c in range(CLASSES)})

    real, calls = verdicts_module._region_test, []

    def stopped_by_the_budget(candidate: Candidate, bench: object, level: float) -> verdicts_module.RegionTest:
        calls.append(candidate.box)
        if calls.count((0, 12, 4, 16)) < 2:  # the place's own region test; the second is the class mark's
            return real(candidate, bench, level)  # type: ignore[arg-type]
        bench.allowance.limit = bench.allowance.spent  # type: ignore[attr-defined]  # spent while it ran
        return Votes(follow=1, stay=1), level, False, None

    monkeypatch.setattr(verdicts_module, "_region_test", stopped_by_the_budget)
    counted: dict[tuple[str, tuple[int, ...]], bool] = {}
    detector = ShortcutDetector(Shortcuts())
    record = detector.retests.record

    def recording(candidate: Candidate, outcome: object, **kwargs: bool) -> None:
        counted[(candidate.kind, candidate.box)] = kwargs["counted"]
        record(candidate, outcome, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(detector.retests, "record", recording)
    report = detector.check(ReadsMark().eval(), _heat(boxes), images, epoch=2, step=30)
    # the one-class test decided, the region test that its description called for was cut: not a test outcome
    assert report.new == [] and counted[("class_mark", (0, 12, 4, 16))] is False


def test_color_cue_is_found_and_grey_images_are_not_tested():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 3
    images = torch.rand(64, 3, SIZE, SIZE, generator=generator) * 0.2
    images[torch.arange(64), labels] += 0.6
    report = _check(ReadsColor(), {"heat": torch.rand(16, 1, SIZE, SIZE, generator=generator)}, images)
    assert [f.kind for f in report.new] == ["color"] and report.per_method["color"]["gray_flip_rate"] > 0.5
    grey = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    quiet = _check(ReadsObject(), {"heat": torch.rand(16, 1, SIZE, SIZE, generator=generator)}, grey.contiguous())
    assert quiet.new == [] and quiet.per_method["color"]["follow_rate"] == 0.0


class SendsTintedToOne(nn.Module):
    """Class 1 when most pixels are coloured (a tinted background) or the object is dark, else class 0:
    colour by itself decides nothing, but recolouring a whole image sends it to class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tinted = ((x.amax(dim=1) - x.amin(dim=1)) > 0.1).float().mean(dim=(1, 2)) > 0.5
        bright = x.amax(dim=1)[:, 4:12, 4:12].mean(dim=(1, 2)) > 0.5
        return 20 * torch.nn.functional.one_hot((tinted | ~bright).long(), CLASSES).float()


def test_recolouring_that_sends_every_image_to_one_class_is_not_a_colour_cue():
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 1, SIZE, SIZE, generator=generator) * 0.3).expand(-1, 3, -1, -1).clone()  # grey noise
    primaries = torch.randint(0, 3, (2, 64), generator=generator)
    hues = torch.eye(3)[primaries[0]] + torch.eye(3)[primaries[1]]  # red, yellow, magenta...: any class
    brightness = torch.where(torch.arange(64) % 8 == 0, 0.35, 0.9)  # 7 of 8 objects bright (class 0)
    images[:, :, 4:12, 4:12] = (brightness[:, None] * hues / hues.amax(dim=1, keepdim=True)).view(64, 3, 1, 1)
    report = _check(SendsTintedToOne(), {"heat": torch.rand(16, 1, SIZE, SIZE, generator=generator)}, images)
    color = report.per_method["color"]
    assert color["follow_rate"] > 0.6 > color["stay_rate"]  # class-0 images given class-1 donors' colours "follow"...
    assert report.new == [] and color["win_rate"] == 0.0  # ...as much as when given their own colour the same way


class OneClassOnly(nn.Module):
    """Early training: every image in class 0 (no image of another class to take a colour from)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e-3 * x.flatten(1)[:, :CLASSES] + torch.tensor([10.0] + [0.0] * (CLASSES - 1))


def test_the_colour_test_of_a_one_class_model_or_a_half_precision_model_runs_and_finds_nothing():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, SIZE, SIZE, generator=generator)
    heat = {"heat": torch.rand(16, 1, SIZE, SIZE, generator=generator)}
    one_class = _check(OneClassOnly(), heat, images)
    assert one_class.new == [] and one_class.per_method["color"]["trials"] == 0.0
    torch.manual_seed(0)
    half = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, CLASSES)).to(torch.bfloat16)
    report = _check(half, heat, images.to(torch.bfloat16))
    assert report.per_method["color"]["trials"] > 0 and report.new == []


def test_false_alarm_rate_is_shared_over_candidates_and_runs():
    settings = Shortcuts(false_alarm_rate=0.06)
    assert settings.level(run=1, tests=3) == pytest.approx(0.01)
    assert sum(settings.level(run=r, tests=1) for r in range(1, 10_000)) < 0.06  # the whole fit stays below the rate
    strict = Shortcuts(false_alarm_rate=1e-12)  # no evidence from 32 transplants can reach this
    images, _ = _shaded([CORNERS[0]] * 64)
    report = _check(ReadsShade([CORNERS[0]]), _heat([CORNERS[0]] * 16), images, strict)
    assert report.new == [] and report.current["heat"].follow_rate == 1.0 and not report.current["heat"].confirmed


def test_inpainting_fills_boxes_in_the_ablations_and_the_finding_stands():
    pytest.importorskip("cv2")
    images, _ = _shaded([CORNERS[0]] * 64)
    report = _check(ReadsShade([CORNERS[0]]), _heat([CORNERS[0]] * 16), images, Shortcuts(fill="inpaint"))
    (finding,) = report.new
    assert finding.kind == "region" and finding.box == [0, 0, 4, 4] and finding.p_value <= finding.level
    assert finding.flip_rate > finding.random_flip_rate  # the swatch inpainted away changes predictions, elsewhere not


def test_hide_and_keep_box_inpaint_from_the_rest_of_the_image():
    pytest.importorskip("cv2")
    from lightning_xai.functional.shortcut import hide_box, keep_box

    flat = torch.full((2, 3, 8, 8), 0.7)
    marked = flat.clone()
    marked[..., 0:3, 0:3] = 0.1
    torch.testing.assert_close(hide_box(marked, None, (0, 0, 3, 3)), flat, atol=5e-3, rtol=0)
    kept = keep_box(marked, None, (0, 0, 3, 3))
    torch.testing.assert_close(kept[..., 0:3, 0:3], marked[..., 0:3, 0:3])


def test_a_mark_moving_along_the_border_is_found_in_each_probe(shade_alone_counts_as_a_mark):
    from tests.functional.test_shortcut_moving import ReadsBorderMark, _marked

    images, _, boxes = _marked(seed=3)
    heat = torch.full((16, 1, 32, 32), 0.01)
    for index, box in enumerate(boxes[:16]):
        heat[index, :, box[0] : box[2], box[1] : box[3]] = 1.0
    report = ShortcutDetector(Shortcuts()).check(
        ReadsBorderMark().eval(), {"heat": heat}, images, epoch=1, step=8, probe_images=images[:16]
    )
    (moving,) = [f for f in report.new if f.kind == "moving_region"]
    assert [tuple(b) for b in moving.boxes] == boxes[:16] and moving.p_value <= moving.level
    assert "at varying places (along the border" in moving.message


def test_a_mark_read_beside_the_object_along_the_border_is_found_in_each_probe():
    from tests.functional.test_shortcut_moving import ReadsObjectAndBorderMark, _objects_with_border_marks

    images, boxes = _objects_with_border_marks(seed=3)
    heat = torch.full((16, 1, 32, 32), 0.01)
    heat[:, :, 10:22, 10:22] = 0.05  # every probe's object
    for index, box in enumerate(boxes[:8]):  # the maps show the mark in half the probes
        heat[index, :, box[0] : box[2], box[1] : box[3]] = 1.0
    report = ShortcutDetector(Shortcuts()).check(
        ReadsObjectAndBorderMark().eval(), {"heat": heat}, images, epoch=1, step=8, probe_images=images[:16]
    )
    (moving,) = [f for f in report.new if f.kind == "moving_region"]
    assert moving.p_value <= moving.level and not moving.classes  # confirmed image by image
    assert sum(box_iou(tuple(box), truth) >= 0.5 for box, truth in zip(moving.boxes, boxes)) >= 14


def test_a_mark_read_beside_the_object_at_random_corners_is_found_in_each_probe():
    from tests.functional.test_shortcut_moving import CORNERS as MARK_CORNERS
    from tests.functional.test_shortcut_moving import ReadsObjectAndCornerMark, _objects_with_corner_marks

    images, boxes = _objects_with_corner_marks(seed=2)
    heat = torch.full((16, 1, 32, 32), 0.01)
    heat[:, :, 10:22, 10:22] = 0.05  # every probe's object
    shown = [i for i, box in enumerate(boxes[:16]) if box in MARK_CORNERS[:2]]
    for index in shown:  # the maps show the marks in two corners of four
        box = boxes[index]
        heat[index, :, box[0] : box[2], box[1] : box[3]] = 1.0
    assert len(shown) >= 4
    report = ShortcutDetector(Shortcuts()).check(
        ReadsObjectAndCornerMark().eval(), {"heat": heat}, images, epoch=1, step=8, probe_images=images[:16]
    )
    (moving,) = [f for f in report.new if f.kind == "moving_region"]
    assert moving.p_value <= moving.level and len(moving.classes) == 1
    assert sum(tuple(found) == box for found, box in zip(moving.boxes, boxes[:16])) >= 14  # all four corners
    assert "pasted at all those places at once from images of class" in moving.message


def test_checks_stay_within_their_share_of_the_maps_work(monkeypatch):
    images, _ = _shaded([CORNERS[0]] * 64)
    model, heat = ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16)
    cheap = ShortcutDetector(Shortcuts()).check(model, heat, images, epoch=0, step=1, maps_work=1.0)
    assert [f.box for f in cheap.new] == [[0, 0, 4, 4]] and cheap.untested == 0  # the floor: a few passes
    monkeypatch.setattr(detector_module, "MIN_PASSES", 0)
    starved = ShortcutDetector(Shortcuts()).check(model, heat, images, epoch=0, step=1, maps_work=1.0)
    assert starved.untested >= 1  # the others are left for a later run
    assert [f.box for f in starved.new] == [[0, 0, 4, 4]]  # the most promising candidate's first look is in the floor
    unlimited = ShortcutDetector(Shortcuts(max_cost=None)).check(model, heat, images, epoch=0, step=1, maps_work=1.0)
    assert unlimited.untested == 0 and [f.box for f in unlimited.new] == [[0, 0, 4, 4]]
    with pytest.raises(ValueError, match=re.escape("`max_cost` must be a positive number or None, got 0.")):
        Shortcuts(max_cost=0)


def test_the_checks_budget_is_counted_in_images_so_a_slow_machine_makes_the_same_tests(monkeypatch):
    images, _ = _shaded([CORNERS[0]] * 64)
    model, heat = ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16)
    allowances: list[Allowance] = []
    build = verdicts_module.Bench.build.__func__

    def keep_allowance(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        bench = build(cls, *args, **kwargs)
        allowances.append(bench.allowance)
        return bench

    monkeypatch.setattr(verdicts_module.Bench, "build", classmethod(keep_allowance))

    def check(slow: bool) -> ShortcutReport:
        forward = model.forward
        if slow:
            monkeypatch.setattr(model, "forward", lambda x: (time.sleep(0.002), forward(x))[1])
        report = ShortcutDetector(Shortcuts()).check(model, heat, images, epoch=0, step=1, maps_work=40.0)
        monkeypatch.setattr(model, "forward", forward)
        return report

    fast, slow = check(False), check(True)
    assert [f.to_dict() for f in fast.new] == [f.to_dict() for f in slow.new] and fast.untested == slow.untested
    (fast_allowance, slow_allowance) = allowances
    first_look = verdicts_module.images_to_test(Candidate("region", (0, 0, 4, 4), isolation=1.0), (SIZE, SIZE))
    assert fast_allowance.limit == slow_allowance.limit == 4 * 64 + first_look  # the floor: 4 passes, one first look
    assert fast_allowance.spent == slow_allowance.spent > 64  # every image through the model counted, the same


def test_cheap_maps_still_test_the_most_promising_candidate_with_as_few_test_images_as_large_images_get():
    images, _ = _shaded([CORNERS[0]] * 64)
    model, heat = ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16)
    few = ShortcutDetector(Shortcuts()).check(model, heat, images[:32], epoch=0, step=1, maps_work=1.0)
    assert [f.box for f in few.new] == [[0, 0, 4, 4]]  # 32 test images: 4 passes alone would not fit its first look


def test_a_confirmed_place_whose_description_spends_the_budget_still_waits(monkeypatch):
    images, _ = _shaded([CORNERS[0]] * 64)
    model, heat = ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16)
    monkeypatch.setattr(detector_module, "MIN_PASSES", 1)  # the first look fits; shrinking the box spends the rest
    detector = ShortcutDetector(Shortcuts())
    reports = [detector.check(model, heat, images, epoch=run, step=run, maps_work=1.0) for run in range(4)]
    assert [r.current["heat"].confirmed for r in reports[:3]] == [True, True, True]
    assert reports[3].waiting == 1  # decided three times the same way (not cut short): it waits


def test_maps_of_unknown_cost_count_as_the_images_their_time_would_have_passed(monkeypatch):
    images, _ = _shaded([CORNERS[0]] * 64)
    model, heat = ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16)
    limits: list[float | None] = []
    benches: list[verdicts_module.Bench] = []
    budget, build = ShortcutDetector._budget, verdicts_module.Bench.build.__func__
    monkeypatch.setattr(
        ShortcutDetector,
        "_budget",
        lambda self, work, *, floor: limits.append(work) or budget(self, work, floor=floor),
    )
    monkeypatch.setattr(
        verdicts_module.Bench,
        "build",
        classmethod(lambda cls, *a, **k: benches.append(build(cls, *a, **k)) or benches[-1]),
    )
    ShortcutDetector(Shortcuts()).check(model, heat, images, epoch=0, step=1, maps_work=10.0, unsized_seconds=1e3)
    rate = benches[0].seconds_per_image  # what the test images' prediction pass took per image
    assert rate > 0 and limits[0] == pytest.approx(10.0 + 1e3 / rate)


def test_large_images_use_fewer_test_images(monkeypatch):
    seen: list[int] = []
    build = verdicts_module.Bench.build.__func__

    def counting_build(cls, model, images, **options):
        seen.append(images.shape[0])
        return build(cls, model, images, **options)

    monkeypatch.setattr(verdicts_module.Bench, "build", classmethod(counting_build))
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, 3)).eval()
    heat = {"heat": torch.rand(16, 1, 256, 256, generator=torch.Generator().manual_seed(0))}
    for side, expected in ((256, 45), (32, 128)):  # 128 * (64 / 256) ** 0.75 = 45; up to 64 x 64 all of them
        images = torch.rand(128, 1, side, side, generator=torch.Generator().manual_seed(1))
        ShortcutDetector(Shortcuts()).check(model, {"heat": heat["heat"][..., :side, :side]}, images, epoch=0, step=0)
        assert seen[-1] == expected


def test_a_candidates_cost_is_estimated_before_it_starts():

    region = Candidate("region", (0, 0, 4, 4))
    moving = Candidate("moving_region", (0, 0, 4, 4), places=[CORNERS[0], CORNERS[1], CORNERS[2], CORNERS[3]])
    assert verdicts_module.images_to_test(region, (SIZE, SIZE)) == 128  # 48 ablations + 16 transplants, 4 controls
    spot = Candidate("region", (0, 0, 4, 4), isolation=0.9)  # a spot at the border: then the test of clear wins
    assert verdicts_module.images_to_test(spot, (SIZE, SIZE)) == 128 + 16 * 2 * 5
    # completing the places (16 images' gradients, 3 each; 16 images x 7 options x 8 recipients), the carrier class
    # (10 x 32), all places and all but each one (5 x 32), locating 16 images (16 x 4), then the first look
    # with 2 donors each
    assert verdicts_module.images_to_test(moving, (SIZE, SIZE)) == 48 + 896 + 320 + 160 + 64 + 128 + 80


def _corner_heat(box: tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
    heat = torch.full((16, 1, 32, 32), 0.01)
    heat[:, :, 10:22, 10:22] = 0.05  # every probe's object
    heat[:, :, box[0] : box[2], box[1] : box[3]] = 1.0  # and a lone spot at one corner
    return {"heat": heat}


def test_a_fixed_mark_read_beside_the_object_is_found_as_partial_reliance():
    from tests.functional.test_shortcut_moving import CORNERS as MARK_CORNERS
    from tests.functional.test_shortcut_moving import ReadsObjectAndCornerMark, _objects_with_corner_marks

    images, _ = _objects_with_corner_marks(seed=2, corners=[MARK_CORNERS[0]])
    report = ShortcutDetector(Shortcuts()).check(
        ReadsObjectAndCornerMark().eval(), _corner_heat(MARK_CORNERS[0]), images, epoch=1, step=8
    )
    (finding,) = report.new
    assert finding.kind in ("region", "class_mark") and finding.box == list(MARK_CORNERS[0]) and finding.partial
    assert finding.stay_rate > finding.follow_rate and finding.win_rate > 3 * finding.loss_rate
    assert finding.p_value <= finding.level and "partly relies on a 4x4" in finding.message
    assert "it does not decide most of them (the model reads it beside the object)" in finding.message
    assert Finding(**json.loads(json.dumps(finding.to_dict()))) == finding


def test_a_lone_spot_in_the_maps_where_a_clean_model_reads_noise_is_not_a_finding():
    from tests.functional.test_shortcut_moving import CORNERS as MARK_CORNERS
    from tests.functional.test_shortcut_moving import ReadsCentredObject, _objects_with_corner_marks

    images, _ = _objects_with_corner_marks(seed=2, marked=False)
    report = ShortcutDetector(Shortcuts()).check(
        ReadsCentredObject().eval(), _corner_heat(MARK_CORNERS[0]), images, epoch=1, step=8
    )
    assert report.new == [] and report.per_method["heat"]["candidates"] >= 1
    assert not report.current["heat"].confirmed


def test_a_monitor_run_without_checks_ages_every_place_s_last_test_so_that_old_outcomes_go_stale():
    detector = ShortcutDetector(Shortcuts())
    candidate = Candidate("region", (0, 0, 4, 4), concentration=0.5)
    for _ in range(3):  # rejected three times in a row: the place waits
        detector.retests.record(candidate, "rejected", news=False)
        detector.retests.end_run()
    assert detector.retests.waiting(candidate) is not None
    detector.retests.end_run()  # (that run proposed it and it waited)
    for _ in range(detector.retests.stale_after - 1):
        detector.skip_run()
    record = detector.retests.records[0]
    assert (record.idle, record.waited) == (detector.retests.stale_after, 1)  # older, but no wait counted
    assert detector.retests.waiting(candidate) is None  # stale: tested again when next proposed


def test_the_maps_show_news_when_they_propose_a_place_never_tested_or_grown_more_concentrated():
    detector = ShortcutDetector(Shortcuts())
    maps = torch.full((8, 1, 32, 32), 0.01)
    maps[:, :, 1:5, 1:5] = 1.0  # every probe's heat on one corner
    assert detector.sees_news({"grad_cam": maps}, (32, 32), None)  # never tested
    candidates, _ = detector._plan({"grad_cam": maps}, (32, 32), None)
    assert candidates
    for candidate in candidates.values():
        rejected = Finding(0, 0, "grad_cam", list(candidate.box), 0.0, False, "", kind=candidate.kind)
        detector.retests.record(candidate, rejected, news=False)
    assert not detector.sees_news({"grad_cam": maps}, (32, 32), None)  # the same places, as concentrated
    sharper = torch.full((8, 1, 32, 32), 0.001)
    sharper[:, :, 1:5, 1:5] = 1.0
    assert detector.sees_news({"grad_cam": sharper}, (32, 32), None)  # grown more concentrated since
    assert detector.runs == 0 and all(r.idle == -1 for r in detector.retests.records)  # nothing tested or aged


def test_after_its_checks_the_same_maps_show_no_news_a_confirmed_place_and_a_moving_region_included(
    shade_alone_counts_as_a_mark,
):
    images, _ = _shaded([CORNERS[0]] * 64)
    detector = ShortcutDetector(Shortcuts())
    heat = _heat([CORNERS[0]] * 16)
    assert detector.sees_news(heat, (SIZE, SIZE), None)
    (finding,) = detector.check(ReadsShade([CORNERS[0]]).eval(), heat, images, epoch=2, step=30).new
    assert finding.kind == "region"
    # its class-mark candidate at the same corner was not tested on its own (the confirmed region covers it)
    assert detector.retests.news(
        next(c for c in detector._plan(heat, (SIZE, SIZE), None)[0].values() if c.kind == "class_mark")
    )
    assert not detector.sees_news(heat, (SIZE, SIZE), None)
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    moving = ShortcutDetector(Shortcuts())
    report = moving.check(ReadsShade(CORNERS).eval(), _heat(places), images, epoch=2, step=30)
    assert [f.kind for f in report.new] == ["moving_region"]
    coarse = torch.full((16, 1, SIZE, SIZE), 0.01)  # a coarser map: 2x2 spots at the marks' corners
    for index, box in enumerate(places[:16]):
        coarse[index, :, box[0] : box[0] + 2, box[1] : box[1] + 2] = 1.0
    proposed = [c for c in moving._plan({"grad_cam": coarse}, (SIZE, SIZE), None)[0].values()]
    coarse_moving = [c for c in proposed if c.kind == "moving_region"]
    assert coarse_moving and moving.retests.news(coarse_moving[0])  # another box size than the one tested ...
    assert not moving._news(coarse_moving)  # ... but every moving region is one test, and it was tested


def test_the_checks_take_the_plan_that_sees_news_made_of_the_same_maps_once(monkeypatch):
    plans: list[int] = []
    real = detector_module.plan_candidates
    monkeypatch.setattr(detector_module, "plan_candidates", lambda *a, **k: plans.append(1) or real(*a, **k))
    images, _ = _shaded([CORNERS[0]] * 64)
    detector = ShortcutDetector(Shortcuts())
    heat = _heat([CORNERS[0]] * 16)
    assert detector.sees_news(heat, (SIZE, SIZE), None)
    (finding,) = detector.check(ReadsShade([CORNERS[0]]).eval(), heat, images, epoch=2, step=30).new
    assert len(plans) == 1 and finding.box == [0, 0, 4, 4]  # planned once for both
    detector.check(ReadsShade([CORNERS[0]]).eval(), heat, images, epoch=3, step=40)
    assert len(plans) == 2  # taken once: the next checks plan again (the tests refine a plan's boxes)
    detector.sees_news(heat, (SIZE, SIZE), None)
    detector.check(ReadsShade([CORNERS[0]]).eval(), _heat([CORNERS[0]] * 16), images, epoch=4, step=50)
    assert len(plans) == 4  # other maps (new tensors): a plan of their own
    detector.sees_news(heat, (SIZE, SIZE), None)
    detector.skip_run()  # a run whose checks waited drops the plan
    detector.check(ReadsShade([CORNERS[0]]).eval(), heat, images, epoch=5, step=60)
    assert len(plans) == 6


def test_a_shade_that_is_all_an_image_holds_is_its_object_wherever_it_sits_and_raises_no_moving_region():
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)  # nothing but the shade, at a random corner: each class's object is that patch
    report = _check(ReadsShade(CORNERS), _heat(places), images)
    assert [f for f in report.new if f.kind == "moving_region"] == []
    bench = verdicts_module.Bench.build(ReadsShade(CORNERS).eval(), images, seed=0, batch_size=64, fill="mean")
    assert moving_module.places_hold_the_evidence(bench, CORNERS)
