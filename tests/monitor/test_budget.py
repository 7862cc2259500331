"""The run budget: the schedule, overhead against the rest of the fit, the skip prediction, the deadline."""

from __future__ import annotations

import time

import pytest

from lightning_xai.monitor.budget import Deadline, RunBudget, RunDecision
from lightning_xai.monitor.messages import cost_summary


def test_overhead_is_the_runs_share_of_the_rest_of_the_fit():
    cost = RunBudget()
    cost.start_fit(now=100.0)
    cost.add_run(1.0)
    cost.add_run(3.0)
    assert (cost.runs, cost.seconds, cost.last_run) == (2, 4.0, 3.0)
    assert cost.training_seconds(now=124.0) == 20.0
    assert cost.overhead(now=124.0) == pytest.approx(0.2)
    assert cost.snapshot(now=124.0) == {
        "runs": 2,
        "skipped": 0,
        "failed": 0,
        "seconds": 4.0,
        "training_seconds": 20.0,
        "overhead": pytest.approx(0.2),
    }


def test_a_run_is_predicted_from_the_last_one():
    cost = RunBudget()
    cost.start_fit(now=0.0)
    assert not cost.would_exceed(1e-9, now=1.0)  # before the first run: never skip
    cost.add_run(1.0)
    # 11 s in: 10 s of training; another 1 s run makes 2 s = 20% of it
    assert cost.would_exceed(0.19, now=11.0) and not cost.would_exceed(0.2, now=11.0)
    cost.skipped = 2
    cost.failed = 1
    assert cost_summary(cost).startswith("1 run took 1.0s, ")
    assert cost_summary(cost).endswith("; 2 runs skipped to respect max_overhead; 1 run failed (see summary.json)")


def test_outside_a_fit_nothing_is_skipped_and_a_new_fit_starts_afresh():
    cost = RunBudget()
    cost.add_run(5.0)  # trainer.validate(): no fit clock
    assert not cost.would_exceed(1e-9) and cost.training_seconds() == 0.0
    cost.start_fit()
    assert (cost.runs, cost.seconds, cost.skipped) == (0, 0.0, 0)


def test_timing_run_measures_the_block_even_when_it_raises():
    cost = RunBudget()
    with pytest.raises(RuntimeError), cost.timing_run():
        time.sleep(0.02)
        raise RuntimeError("inside a run")
    assert cost.runs == 1 and cost.seconds >= 0.02


def test_decisions_follow_the_schedule_then_the_overhead_cap():
    budget = RunBudget(every_n_epochs=2, max_overhead=0.1)
    budget.start_fit(now=0.0)
    assert budget.decide(epoch=0, fitting=True, now=1.0) == RunDecision(False, "schedule")
    assert budget.decide(epoch=1, fitting=True, now=1.0) == RunDecision(True)  # the first run always happens
    budget.add_run(5.0)
    assert budget.decide(epoch=3, fitting=True, now=15.0) == RunDecision(False, "overhead")
    assert budget.decide(epoch=3, fitting=False, now=15.0) == RunDecision(True)  # trainer.validate: always
    assert budget.decide(epoch=3, fitting=True, now=200.0) == RunDecision(True)


def test_the_deadline_passes_after_max_seconds_only():
    assert not Deadline(started=10.0, max_seconds=2.0).passed(now=11.9)
    assert Deadline(started=10.0, max_seconds=2.0).passed(now=12.1)
    assert not Deadline(started=10.0, max_seconds=None).passed(now=1e9)
