"""The adaptive schedule: the pure decisions, and the schedule in a real fit."""

from __future__ import annotations

import re

import pytest

from lightning_xai import AttributionMonitor, GradCAM, Occlusion, Shortcuts, Stability
from lightning_xai.demos import SmallCNN
from lightning_xai.monitor.schedule import (
    CHECKS_KEY,
    CHECKS_WAIT_REASON,
    WAKE_MARGIN,
    MethodSchedule,
    checks_wait,
    pick_sentinel,
    sentinel_moved,
)
from lightning_xai.monitor.shortcut_detector import ShortcutDetector
from tests.callback.conftest import cheap_monitor, loaders, make_trainer
from tests.callback.test_stability import _Frozen, _Reshuffled


def _runs(schedule: MethodSchedule, settled: dict[str, bool], wakes: list[bool]) -> list[list[str]]:
    ran = []
    for wake in wakes:
        chosen, _ = schedule.plan(settled, wake=wake)
        schedule.record(chosen, settled, wake=wake)
        ran.append(chosen)
    return ran


def test_settled_methods_run_at_growing_intervals_and_the_sentinel_every_time():
    schedule = MethodSchedule(["grad_cam", "occlusion"], max_interval=4)
    ran = _runs(schedule, {"grad_cam": True, "occlusion": True}, [False] * 12)
    occlusion_runs = [index for index, keys in enumerate(ran) if "occlusion" in keys]
    assert occlusion_runs == [1, 5, 9]  # just settled: skips 1, then 3, then 3 again (intervals 2, 4, 4: capped)
    assert all("grad_cam" in keys for keys in ran)


def test_a_wake_runs_everything_and_restarts_the_intervals():
    schedule = MethodSchedule(["grad_cam", "occlusion"])
    settled = {"grad_cam": True, "occlusion": True}
    _runs(schedule, settled, [False] * 4)
    assert schedule.plan(settled, wake=True)[0] == ["grad_cam", "occlusion"]
    _runs(schedule, settled, [True])
    assert schedule.interval["occlusion"] == 1


def test_the_sentinel_wakes_the_others_only_when_it_moves_clearly_below_the_threshold():
    assert WAKE_MARGIN == 0.1
    assert not sentinel_moved(0.9, 0.9) and not sentinel_moved(0.81, 0.9)  # hovering at the threshold
    assert sentinel_moved(0.79, 0.9) and sentinel_moved(-0.2, 0.9)
    assert not sentinel_moved(None, 0.9)  # nothing to compare with yet
    assert sentinel_moved(0.85, 0.9, margin=0.0)


def test_unsettled_methods_run_every_time():
    schedule = MethodSchedule(["saliency", "occlusion"])
    assert pick_sentinel(["saliency", "occlusion"]) == "saliency"
    ran = _runs(schedule, {"saliency": False, "occlusion": False}, [False] * 5)
    assert ran == [["saliency", "occlusion"]] * 5


def test_a_settled_method_is_left_out_between_its_runs_in_a_real_fit(tmp_path, digits16):
    methods = [GradCAM(), Occlusion(window=4, stride=4)]
    monitor = cheap_monitor(methods=methods, shortcuts=None, stability=Stability(patience=1))
    make_trainer(tmp_path, [monitor], max_epochs=6).fit(_Frozen(SmallCNN(1, 10, width=4)), *loaders(digits16))
    ran = [run["methods"] for run in monitor.history]
    # settled after run 1 (patience 1): run 2 is skipped, then runs 4-6 after run 3
    assert [("occlusion" in methods) for methods in ran] == [True, True, False, True, False, False]
    assert all("grad_cam" in methods for methods in ran)
    assert monitor.history[2]["scheduled_out"] == {"occlusion": "settled: next run after 1 more"}
    assert monitor.history[4]["scheduled_out"] == {"occlusion": "settled: next run after 3 more"}
    assert "scheduled_out" not in monitor.history[3]


def test_moving_maps_keep_every_method_running_and_every_run_is_available(tmp_path, digits16):
    methods = [GradCAM(), Occlusion(window=4, stride=4)]
    moving = cheap_monitor(methods=methods, shortcuts=None, stability=Stability(patience=1))
    make_trainer(tmp_path, [moving], max_epochs=4).fit(_Reshuffled(SmallCNN(1, 10, width=4)), *loaders(digits16))
    assert all(sorted(run["methods"]) == ["grad_cam", "occlusion"] for run in moving.history)
    every = cheap_monitor(methods=methods, shortcuts=None, stability=Stability(patience=1), schedule="every_run")
    make_trainer(tmp_path / "every", [every], max_epochs=6).fit(_Frozen(SmallCNN(1, 10, width=4)), *loaders(digits16))
    assert all(sorted(run["methods"]) == ["grad_cam", "occlusion"] for run in every.history)


def test_the_shortcut_checks_wait_only_when_every_method_but_the_sentinel_was_left_out_and_nothing_is_pending():
    keys = ["grad_cam", "occlusion", "expected_gradients"]
    both = {"occlusion": "settled", "expected_gradients": "settled"}
    assert checks_wait(both, keys, "grad_cam", pending=False)
    assert not checks_wait({"occlusion": "settled"}, keys, "grad_cam", pending=False)  # expected gradients ran
    assert not checks_wait({}, keys, "grad_cam", pending=False)
    assert not checks_wait(both, keys, "grad_cam", pending=True)  # the last checks left candidates untested
    assert not checks_wait({}, ["grad_cam"], "grad_cam", pending=False)  # nothing but the sentinel: every run


def _checked(run: dict) -> bool:
    return "xai_cost/seconds_shortcuts" in run["metrics"]


def _settling_fit(tmp_path, digits16) -> AttributionMonitor:
    """6 epochs of a model that does not learn (maps settled after run 1, patience 1), every candidate tested
    when the checks run: occlusion runs at runs 0, 1 and 3."""
    methods = [GradCAM(), Occlusion(window=4, stride=4)]
    monitor = cheap_monitor(methods=methods, shortcuts=Shortcuts(max_cost=None), stability=Stability(patience=1))
    make_trainer(tmp_path, [monitor], max_epochs=6).fit(_Frozen(SmallCNN(1, 10, width=4)), *loaders(digits16))
    assert [("occlusion" in run["methods"]) for run in monitor.history] == [True, True, False, True, False, False]
    return monitor


def test_the_shortcut_checks_wait_with_the_settled_methods_in_a_real_fit(tmp_path, digits16, caplog, monkeypatch):
    skipped = []
    monkeypatch.setattr(ShortcutDetector, "skip_run", lambda self: skipped.append(self.runs))
    with caplog.at_level("INFO"):
        monitor = _settling_fit(tmp_path, digits16)
    assert [_checked(run) for run in monitor.history] == [("occlusion" in run["methods"]) for run in monitor.history]
    assert monitor.history[2]["scheduled_out"] == {
        "occlusion": "settled: next run after 1 more",
        CHECKS_KEY: CHECKS_WAIT_REASON,
    }
    assert "left out 3 method runs of settled methods and the shortcut checks of 3 runs" in caplog.text
    assert skipped == [2, 3, 3]  # each run without checks ages the retests (after 2 and 3 runs of the checks)


def test_checks_that_left_candidates_untested_run_again_at_the_next_run(tmp_path, digits16, monkeypatch):
    check = ShortcutDetector.check

    def leaving_one_untested(self, *args, **kwargs):  # as when the budget ends before the last candidate
        report = check(self, *args, **kwargs)
        report.untested = 1
        return report

    monkeypatch.setattr(ShortcutDetector, "check", leaving_one_untested)
    monitor = _settling_fit(tmp_path, digits16)
    assert all(_checked(run) for run in monitor.history)
    assert all(CHECKS_KEY not in run.get("scheduled_out", {}) for run in monitor.history)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(
        ValueError, match=re.escape("`schedule` must be one of ['adaptive', 'every_run'], got 'never'.")
    ):
        cheap_monitor(schedule="never")


def test_checks_left_pending_are_kept_in_the_checkpoint_and_failed_checks_leave_them_pending(tmp_path, digits16):
    methods = [GradCAM(), Occlusion(window=4, stride=4)]
    monitor = cheap_monitor(methods=methods, shortcuts=Shortcuts(max_cost=None), stability=Stability(patience=1))
    monitor._run.engine.checks_pending = True
    state = monitor.state_dict()
    assert state["checks_pending"] is True
    resumed = cheap_monitor(methods=methods, shortcuts=Shortcuts(max_cost=None), stability=Stability(patience=1))
    resumed.load_state_dict(state)
    assert resumed._run.engine.checks_pending is True
    resumed.load_state_dict({k: v for k, v in state.items() if k != "checks_pending"})  # saved before the flag
    assert resumed._run.engine.checks_pending is False


def test_checks_that_failed_run_again_at_the_next_run(tmp_path, digits16, monkeypatch):
    def failing(self, *args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ShortcutDetector, "check", failing)
    monkeypatch.setattr(ShortcutDetector, "sees_news", lambda self, *args: False)  # only the failure makes them run
    with pytest.warns(UserWarning, match="out of memory"):
        monitor = _settling_fit(tmp_path, digits16)
    assert all(run["failures"] == {"shortcuts": "RuntimeError: out of memory"} for run in monitor.history)


def test_checks_run_in_a_sentinel_run_whose_maps_show_a_place_never_tested(tmp_path, digits16, monkeypatch):
    shown = []

    def news(self, displays, size, classes):  # as when Grad-CAM starts to show a new spot
        shown.append(sorted(displays))
        return True

    monkeypatch.setattr(ShortcutDetector, "sees_news", news)
    monitor = _settling_fit(tmp_path, digits16)
    assert all(_checked(run) for run in monitor.history)
    assert shown == [["grad_cam"]] * 3  # asked in the three runs of the sentinel alone, with its maps


def test_a_failure_while_looking_for_news_makes_the_checks_run_and_leaves_the_run_whole(
    tmp_path, digits16, monkeypatch
):
    def failing(self, *args):
        raise RuntimeError("boom")

    monkeypatch.setattr(ShortcutDetector, "sees_news", failing)
    monitor = _settling_fit(tmp_path, digits16)
    assert all(_checked(run) and "failures" not in run for run in monitor.history)
