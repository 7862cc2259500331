"""What the ranks do together around a run: rank 0's decision and reference images on every rank, failures exchanged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lightning_xai.monitor import ranks
from lightning_xai.monitor.budget import RunBudget, RunDecision
from lightning_xai.monitor.collector import Collector
from lightning_xai.monitor.engine import ShareError
from tests.monitor.test_sharding import ThreadRanks


def fake_run(team, **fields):  # type: ignore[no-untyped-def]
    return SimpleNamespace(engine=SimpleNamespace(team=team), references_shared=False, **fields)


def test_rank_zeros_decision_holds_on_every_rank():
    def work(team):  # type: ignore[no-untyped-def]
        budget = RunBudget(every_n_epochs=1 if team.is_zero else 2)  # rank 0 runs at epoch 0, rank 1 would not
        trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), current_epoch=0, is_global_zero=team.is_zero)
        return ranks.decide(fake_run(team, budget=budget), trainer)

    assert ThreadRanks(2).run(work) == [RunDecision(True), RunDecision(True)]


def test_rank_zeros_reference_images_are_sent_once_to_every_rank():
    references = torch.rand(3, 1, 4, 4)

    def work(team):  # type: ignore[no-untyped-def]
        collector = Collector(num_probes=2, test_images=0, reference_count=0, seed=0)
        collector.references = references.clone() if team.is_zero else None
        run = fake_run(team, collector=collector)
        first = ranks.shared_references(run, (4, 4))
        second = ranks.shared_references(run, (2, 2))  # resized on every rank, not sent again
        return first, second, run.references_shared

    threads = ThreadRanks(2)
    for first, second, shared in threads.run(work):
        assert torch.equal(first, references) and second.shape == (3, 1, 2, 2) and shared
    assert threads.entered == [["broadcast"], ["broadcast"]]


@pytest.mark.parametrize("failing", [0, 1])
def test_a_first_check_failing_on_one_rank_fails_on_every_rank_after_the_exchange(failing):
    def work(team):  # type: ignore[no-untyped-def]
        def check(*_):  # type: ignore[no-untyped-def]
            if team.rank == failing:
                raise ValueError("bad probes")

        run = fake_run(team, checked=False, methods_recorded=True, check=check)
        ranks.first_checks(run, None, None, None)  # type: ignore[arg-type]

    threads = ThreadRanks(2)
    results = threads.run(work)
    assert isinstance(results[failing], ValueError) and str(results[failing]) == "bad probes"
    assert isinstance(results[1 - failing], ShareError)
    assert str(results[1 - failing]) == f"rank {failing}: ValueError: bad probes"
    assert threads.entered == [["gather"], ["gather"]]
