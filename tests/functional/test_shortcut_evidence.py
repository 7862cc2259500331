"""Sign tests, sequential stopping and the transplants that feed them, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_xai.functional.shortcut_evidence import (
    Votes,
    paste_places,
    sequential_test,
    shrunk_counts,
    sign_test,
    swap_boxes,
    transplant_votes,
)


def test_sign_test_matches_the_binomial_tail():
    assert sign_test(5, 0) == 1 / 32
    assert sign_test(2, 1) == pytest.approx((math.comb(3, 2) + 1) / 8)
    assert sign_test(0, 7) == 1.0 and sign_test(0, 0) == 1.0


def test_votes_count_no_more_outcomes_than_independent_groups():
    assert shrunk_counts(92, 4, groups=10) == (9, 1) and shrunk_counts(30, 30, groups=10) == (5, 5)
    assert shrunk_counts(12, 4, groups=None) == (12, 4) and shrunk_counts(12, 4, groups=40) == (12, 4)
    assert Votes(wins=92, losses=4, groups=10).p_value == sign_test(9, 1)
    assert Votes(wins=12, losses=4).p_value == Votes(wins=12, losses=4, groups=40).p_value == sign_test(12, 4)
    assert (Votes(wins=8, groups=5) + Votes(wins=8, groups=5)).groups == 10  # a bound for both: their sum
    assert (Votes(wins=8, groups=5) + Votes(wins=8)).groups is None
    assert Votes(follow=92, stay=4, with_random=False, groups=10).p_value == sign_test(9, 1)


def test_shrinking_the_counts_never_makes_the_evidence_stronger():
    for wins in range(0, 40, 3):
        for losses in range(0, 40, 3):
            for groups in range(1, 50, 4):
                assert Votes(wins=wins, losses=losses, groups=groups).p_value >= sign_test(wins, losses)


def test_sequential_test_counts_the_groups_of_the_units_voted_so_far_and_skips_what_cannot_decide():
    calls: list[int] = []

    def strong(chunk: torch.Tensor) -> Votes:
        calls.append(chunk.numel())
        return Votes(wins=chunk.numel())

    halves = sequential_test(strong, torch.arange(40), alpha=2**-16, groups=lambda voted: voted.numel() // 2)
    assert halves.decided and halves.groups == 20 and calls == [16, 24]  # 16 wins count as 8: a second look
    calls.clear()
    few = sequential_test(strong, torch.arange(40), alpha=2**-10, groups=lambda voted: 10)
    assert not few.decided and few.trials == 0 and few.groups == 10 and calls == []  # 2^-10 > alpha / 2


def test_sequential_test_splits_its_level_and_stops_early():
    calls: list[int] = []

    def strong(chunk: torch.Tensor) -> Votes:
        calls.append(chunk.numel())
        return Votes(wins=chunk.numel())

    decided = sequential_test(strong, torch.arange(40), alpha=2 * 2**-16)  # 16 wins: p = 2^-16 = alpha / 2
    assert decided.decided and calls == [16]
    calls.clear()
    undecided = sequential_test(strong, torch.arange(40), alpha=2**-16)  # needs the second look
    assert undecided.decided and calls == [16, 24]
    calls.clear()
    cut = sequential_test(strong, torch.arange(40), alpha=2**-16, out_of_budget=lambda: True)
    assert not cut.decided and cut.wins == 16 and calls == [16]  # out of time: no second look, undecided

    def weak(chunk: torch.Tensor) -> Votes:
        calls.append(chunk.numel())
        return Votes(wins=2, losses=chunk.numel() - 2)

    calls.clear()
    futile = sequential_test(weak, torch.arange(40), alpha=0.5)
    assert not futile.decided and calls == [16]  # behind after the first look: no second one


def test_votes_say_what_the_last_look_of_their_test_had_to_reach():
    def strong(chunk: torch.Tensor) -> Votes:
        return Votes(wins=chunk.numel())

    assert sequential_test(strong, torch.arange(40), alpha=0.01).level == 0.005  # two looks (16, 40): half each
    assert sequential_test(strong, torch.arange(12), alpha=0.01).level == 0.01  # one look: all of it
    assert sequential_test(strong, torch.arange(40), alpha=2**-10, groups=lambda voted: 10).level == 2**-11
    assert Votes().level is None and (Votes(level=0.1) + Votes(level=0.1)).level is None  # not from a test


def test_transplant_votes_count_follows_and_wins_against_controls():
    reads_first_pixel = lambda x: torch.stack([x[:, 0, 0, 0], 1 - x[:, 0, 0, 0]], dim=1) * 20
    transplanted = torch.zeros(4, 1, 2, 2)
    transplanted[:2, 0, 0, 0] = 1.0  # recipients 0, 1 now look like class 0
    controls = torch.zeros(8, 1, 2, 2)  # two controls each: still class 1
    votes = transplant_votes(
        reads_first_pixel,
        transplanted,
        controls,
        recipient_class=torch.ones(4, dtype=torch.long),
        donor_class=torch.zeros(4, dtype=torch.long),
        donor_before=torch.zeros(4),
        batch_size=3,
        margin=0.1,
    )
    assert (votes.follow, votes.stay, votes.other, votes.wins, votes.losses, votes.random_follow) == (2, 2, 0, 2, 2, 0)
    assert votes.p_value == sign_test(2, 2) and votes.rates()["follow_rate"] == 0.5
    assert votes.rates()["win_rate"] == votes.rates()["loss_rate"] == 0.5


def test_swapped_boxes_take_the_donor_s_content():
    recipients, donors = torch.zeros(1, 1, 3, 3), torch.arange(9.0).view(1, 1, 3, 3)
    assert swap_boxes(recipients, donors, [(0, 0, 1, 2)], [(2, 1, 3, 3)]).flatten().tolist()[:3] == [7.0, 8.0, 0.0]


def test_paste_places_takes_every_place_from_the_donor():
    moved = paste_places(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8), [[(0, 0, 2, 2), (6, 6, 8, 8)]] * 2)
    assert float(moved.sum()) == 16 and float(moved[:, :, 2:6, 2:6].sum()) == 0
