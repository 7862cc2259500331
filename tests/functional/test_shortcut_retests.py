"""Retests: which candidate places wait, for how long, and what wakes them."""

from __future__ import annotations

from lightning_xai.functional.shortcut_candidates import Candidate
from lightning_xai.functional.shortcut_retests import Retests


def _runs(retests: Retests[str], candidate: Candidate, count: int, *, news: bool = False) -> list[bool]:
    """Whether ``candidate`` was tested in each of ``count`` runs (rejected each time unless ``news``)."""
    tested = []
    for _ in range(count):
        standing = retests.waiting(candidate)
        tested.append(standing is None)
        if standing is None:
            retests.record(candidate, "outcome", news=news)
        retests.end_run()
    return tested


def _rejected(times: int) -> tuple[Retests[str], Candidate]:
    """A 4x4 spot rejected in ``times`` runs in a row."""
    retests: Retests[str] = Retests()
    spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
    for _ in range(times):
        retests.record(spot, "rejected", news=False)
        retests.end_run()
    return retests, spot


def test_a_place_rejected_again_and_again_waits_longer_up_to_max_wait():
    spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
    tested = _runs(Retests(max_wait=3), spot, 12)
    assert [run for run, was in enumerate(tested) if was] == [0, 1, 2, 4, 8]


def test_a_place_with_news_every_run_is_tested_every_run():
    spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
    assert _runs(Retests(), spot, 5, news=True) == [True] * 5


def test_a_waiting_place_whose_maps_grow_concentrated_is_tested_at_once():
    retests: Retests[str] = Retests(wake_ratio=1.25)
    _runs(retests, Candidate("region", (0, 0, 4, 4), concentration=3.0), 3)
    assert retests.waiting(Candidate("region", (0, 0, 4, 4), concentration=3.5)) is not None  # 1.17x: waits
    assert retests.waiting(Candidate("region", (0, 0, 4, 4), concentration=3.75)) is None  # 1.25x: tested


def test_its_last_outcome_stands_while_it_waits():
    retests: Retests[str] = Retests()
    spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
    for outcome in ("first", "second", "third"):
        retests.record(spot, outcome, news=False)
        retests.end_run()
    standing = retests.waiting(spot)
    assert standing is not None and standing.outcome == "third"


def test_a_test_cut_short_does_not_lengthen_the_wait():
    retests, spot = _rejected(2)
    retests.record(spot, "out of time", news=False, counted=False)
    retests.end_run()
    assert retests.waiting(spot) is None  # still two counted rejections: tested again next run


def test_same_place_means_same_kind_and_half_overlap_or_for_moving_regions_same_size():
    retests: Retests[str] = Retests()
    for candidate in (
        Candidate("region", (0, 0, 4, 4), concentration=3.0),
        Candidate("moving_region", (0, 0, 4, 4), concentration=3.0),
    ):
        for _ in range(3):
            retests.record(candidate, candidate.kind, news=False)
    retests.end_run()
    assert retests.waiting(Candidate("region", (0, 1, 4, 5), concentration=3.0)) is not None  # IoU 0.6
    assert retests.waiting(Candidate("region", (0, 2, 4, 6), concentration=3.0)) is None  # IoU 1/3
    assert retests.waiting(Candidate("class_mark", (0, 0, 4, 4), concentration=3.0)) is None  # another kind
    moved = retests.waiting(Candidate("moving_region", (12, 12, 16, 16), concentration=3.0))
    assert moved is not None and moved.outcome == "moving_region"
    assert retests.waiting(Candidate("moving_region", (12, 10, 16, 16), concentration=3.0)) is None  # other size


def test_only_runs_that_propose_the_place_count_as_waiting():
    retests, spot = _rejected(3)  # rejected three times: waits one run that proposes it
    for _ in range(5):
        retests.end_run()  # runs whose maps did not propose it (e.g. only the cheap sentinel ran)
    assert retests.waiting(spot) is not None  # proposed again: this is the run it waits
    retests.end_run()
    assert retests.waiting(spot) is None


def test_under_the_adaptive_schedule_a_place_of_the_expensive_methods_is_not_retested_at_each_of_their_runs():
    retests: Retests[str] = Retests(max_wait=3)
    spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
    expensive = {0, 1, 2, 3, 5, 9, 17, 25, 33}  # epochs of the full runs of a 34-epoch fit (sentinel in between)
    tested = []
    for epoch in range(34):
        if epoch in expensive and retests.waiting(spot) is None:
            tested.append(epoch)
            retests.record(spot, "rejected", news=False)
        retests.end_run()
    # waits 1, then 3 of its proposals or 16 runs, whichever ends first (with every run counted: 0-2, 5, 9, 17, ...)
    assert tested == [0, 1, 2, 5, 25]


def test_a_place_not_proposed_for_long_is_tested_when_it_comes_back():
    retests, spot = _rejected(8)  # waits 3 of its proposals
    assert retests.waiting(spot) is not None
    for _ in range(16):
        retests.end_run()  # not proposed: its wait does not shorten, but its last outcome grows old
    assert retests.waiting(spot) is None


def test_saved_and_restored_between_runs_the_waits_go_on_as_without_the_break():
    spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
    moving = Candidate("moving_region", (0, 0, 4, 4), concentration=0.0)
    unbroken: Retests[str] = Retests(max_wait=3)
    before = _runs(unbroken, spot, 5) + _runs(unbroken, moving, 2)
    broken: Retests[str] = Retests(max_wait=3)
    assert _runs(broken, spot, 5) + _runs(broken, moving, 2) == before
    saved = broken.state_dict(lambda outcome: {"said": outcome})
    assert all(isinstance(place["box"], list) for place in saved)  # plain values, for a checkpoint
    restored: Retests[str] = Retests(max_wait=3)
    restored.load_state_dict(saved, lambda plain: plain["said"])
    assert restored.records == broken.records
    # tested at its runs 0, 1, 2, 4 and 8: the 9th is the 4th after the break
    assert _runs(restored, spot, 7) == _runs(unbroken, spot, 7) == [False, False, False, True, False, False, False]
    assert _runs(restored, moving, 3) == _runs(unbroken, moving, 3)


def test_a_fresh_store_restored_from_nothing_tests_everything():
    restored: Retests[str] = Retests()
    restored.load_state_dict([], str)
    assert restored.records == [] and restored.waiting(Candidate("region", (0, 0, 4, 4), concentration=3.0)) is None
