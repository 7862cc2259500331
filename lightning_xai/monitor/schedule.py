"""Which methods run in a validation run: spend where the explanations change.

The *sentinel* (Grad-CAM when the monitor has it, else its first method: the cheapest signal)
runs every time with the predictions. Every other method runs every time until its maps have
settled (see :class:`~lightning_xai.Stability`); from then on at growing intervals: it skips 1 run,
then 3, then 7 (``max_interval - 1``), and runs every time again as soon as the sentinel's maps
move (rank correlation with its last maps below the stability threshold less ``WAKE_MARGIN``) or
the probe accuracy jumps. ``AttributionMonitor(schedule="every_run")`` runs every method every time.
A method settles after ``Stability.patience`` runs in a row that agreed with the one before, so the
run right after is skipped: a 20-epoch fit whose maps settle at epoch 3 runs them at epochs 0-3, 5, 9
and 17.

The shortcut checks follow the other methods (:func:`checks_wait`): a run that the schedule left to the
sentinel alone (every other method settled, the sentinel's maps did not move, the accuracy did not
jump) leaves the checks out too, unless the last checks left candidates untested (their budget ran out)
or failed, or the sentinel's maps show a place the checks never tested or one grown more concentrated
since its test (as a shortcut being learnt does).

The margin is a hysteresis: methods settle when their correlation stays at the threshold or above,
and a sentinel that hovers at the threshold (Grad-CAM's coarse maps often do) would otherwise wake
the settled methods at every other run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CHECKS_KEY",
    "CHECKS_WAIT_REASON",
    "FIRST_INTERVAL",
    "WAKE_MARGIN",
    "MethodSchedule",
    "ScheduleName",
    "checks_wait",
    "pick_sentinel",
    "sentinel_moved",
]

ScheduleName = Literal["adaptive", "every_run"]
WAKE_MARGIN = 0.1
FIRST_INTERVAL = 2  # a method that has just settled skips the next run
CHECKS_KEY = "shortcuts"  # the shortcut checks' entry in a run's ``scheduled_out``
CHECKS_WAIT_REASON = "maps settled: the checks run with the other methods' next run"


def sentinel_moved(correlation: float | None, threshold: float, *, margin: float = WAKE_MARGIN) -> bool:
    """Whether the sentinel's maps moved: rank correlation with its last maps below ``threshold - margin``
    (``None``: nothing to compare with yet).

    Example:
        >>> sentinel_moved(0.85, 0.9), sentinel_moved(0.75, 0.9), sentinel_moved(None, 0.9)
        (False, True, False)
    """
    return correlation is not None and correlation < threshold - margin


def checks_wait(left_out: Mapping[str, str], keys: Sequence[str], sentinel: str, *, pending: bool) -> bool:
    """Whether this run's shortcut checks wait: the schedule ``left_out`` every method but the ``sentinel``
    (of ``keys``) and nothing is ``pending`` (the last checks left candidates untested or failed, or the
    sentinel's maps show a place never tested or grown more concentrated since its test).

    The checks propose their places from the run's maps and test them on the model as it is now; a run
    in which only the sentinel's maps were drawn is one in which nothing was seen to change.

    Example:
        >>> keys = ["grad_cam", "occlusion"]
        >>> checks_wait({"occlusion": "settled"}, keys, "grad_cam", pending=False)
        True
        >>> checks_wait({}, keys, "grad_cam", pending=False), checks_wait({"occlusion": "settled"}, keys, "grad_cam", pending=True)
        (False, False)
    """
    others = [key for key in keys if key != sentinel]
    return not pending and bool(others) and all(key in left_out for key in others)


def pick_sentinel(keys: Sequence[str]) -> str:
    """Grad-CAM's key when there is one (one pass, the cheapest map), else the first method's.

    Example:
        >>> pick_sentinel(["occlusion", "grad_cam"]), pick_sentinel(["saliency", "occlusion"])
        ('grad_cam', 'saliency')
    """
    return next((key for key in keys if key.startswith("grad_cam")), keys[0])


@dataclass
class MethodSchedule:
    """The adaptive schedule's state: how long each settled method has waited, and its interval.

    Example:
        >>> schedule = MethodSchedule(["grad_cam", "occlusion"])
        >>> settled = {"grad_cam": True, "occlusion": True}
        >>> schedule.plan(settled, wake=False)
        (['grad_cam'], {'occlusion': 'settled: next run after 1 more'})
        >>> schedule.record(["grad_cam"], settled, wake=False)
        >>> schedule.plan(settled, wake=False)[0]
        ['grad_cam', 'occlusion']
        >>> schedule.record(["grad_cam", "occlusion"], settled, wake=False)
        >>> schedule.plan(settled, wake=False)
        (['grad_cam'], {'occlusion': 'settled: next run after 3 more'})
        >>> schedule.plan(settled, wake=True)[0]
        ['grad_cam', 'occlusion']
    """

    keys: list[str]
    max_interval: int = 8
    sentinel: str = ""
    waited: dict[str, int] = field(default_factory=dict)
    interval: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sentinel = self.sentinel or pick_sentinel(self.keys)
        self.waited = {key: 0 for key in self.keys} | self.waited
        self.interval = {key: 1 for key in self.keys} | self.interval

    def plan(self, settled: Mapping[str, bool], *, wake: bool) -> tuple[list[str], dict[str, str]]:
        """The keys to run now (pure), and for each left out, why."""
        run: list[str] = []
        left: dict[str, str] = {}
        for key in self.keys:
            due = self.waited[key] + 1 >= self._settled_interval(key)
            if key == self.sentinel or wake or not settled.get(key, False) or due:
                run.append(key)
            else:
                left[key] = f"settled: next run after {self._settled_interval(key) - self.waited[key] - 1} more"
        return run, left

    def record(self, ran: Sequence[str], settled: Mapping[str, bool], *, wake: bool) -> None:
        """Updates the waits and intervals after a run: settled methods that ran wait twice as long next time."""
        for key in self.keys:
            if key not in ran:
                self.waited[key] += 1
                continue
            self.waited[key] = 0
            keep_growing = settled.get(key, False) and not wake and key != self.sentinel
            self.interval[key] = min(self.max_interval, 2 * self._settled_interval(key)) if keep_growing else 1

    def _settled_interval(self, key: str) -> int:
        """Runs from one run of a settled method to its next (``FIRST_INTERVAL`` at least)."""
        return max(FIRST_INTERVAL, self.interval[key])

    def state_dict(self) -> dict[str, dict[str, int]]:
        """Waits and intervals (plain ints, for the checkpoint)."""
        return {"waited": dict(self.waited), "interval": dict(self.interval)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, int]]) -> None:
        """Continues a checkpoint's waits and intervals."""
        self.waited.update({k: int(v) for k, v in state.get("waited", {}).items() if k in self.waited})
        self.interval.update({k: int(v) for k, v in state.get("interval", {}).items() if k in self.interval})
