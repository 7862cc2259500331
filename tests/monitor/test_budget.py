"""The monitor's cost accounting: overhead against the rest of the fit, and the skip prediction."""

from __future__ import annotations

import time

import pytest

from lightning_xai._cost import MonitorCost


def test_overhead_is_the_runs_share_of_the_rest_of_the_fit():
    cost = MonitorCost()
    cost.start_fit(now=100.0)
    cost.add_run(1.0)
    cost.add_run(3.0)
    assert (cost.runs, cost.seconds, cost.last_run) == (2, 4.0, 3.0)
    assert cost.training_seconds(now=124.0) == 20.0
    assert cost.overhead(now=124.0) == pytest.approx(0.2)
    assert cost.describe(now=124.0) == "2 runs took 4.0s, 20% on top of the rest of the fit (20.0s)"
    assert cost.snapshot(now=124.0) == {"runs": 2, "skipped": 0, "seconds": 4.0, "training_seconds": 20.0, "overhead": pytest.approx(0.2)}


def test_a_run_is_predicted_from_the_last_one():
    cost = MonitorCost()
    cost.start_fit(now=0.0)
    assert not cost.would_exceed(1e-9, now=1.0)  # before the first run: never skip
    cost.add_run(1.0)
    # 11 s in: 10 s of training; another 1 s run makes 2 s = 20% of it
    assert cost.would_exceed(0.19, now=11.0) and not cost.would_exceed(0.2, now=11.0)
    assert cost.describe(now=11.0) == "1 run took 1.0s, 10% on top of the rest of the fit (10.0s)"
    cost.skipped = 2
    assert cost.describe(now=11.0).endswith("; 2 runs skipped to respect max_overhead")


def test_outside_a_fit_nothing_is_skipped_and_a_new_fit_starts_afresh():
    cost = MonitorCost()
    cost.add_run(5.0)  # trainer.validate(): no fit clock
    assert not cost.would_exceed(1e-9) and cost.training_seconds() == 0.0
    cost.start_fit()
    assert (cost.runs, cost.seconds, cost.skipped) == (0, 0.0, 0)


def test_timing_run_measures_the_block_even_when_it_raises():
    cost = MonitorCost()
    with pytest.raises(RuntimeError), cost.timing_run():
        time.sleep(0.02)
        raise RuntimeError("inside a run")
    assert cost.runs == 1 and cost.seconds >= 0.02
