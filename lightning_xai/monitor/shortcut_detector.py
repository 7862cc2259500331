"""The shortcut checks of the monitor's runs: candidates from the maps, each tested once per run.

Each validation run, the probes' maps propose candidates (:func:`plan_candidates`), the test images'
gradient x input proposes the moving region, and each candidate is tested once, whichever methods proposed
it (:mod:`~lightning_xai.monitor.shortcut_verdicts`), most promising first, within the run's budget of
images through the model (``Shortcuts.max_cost``). A place tested the same way in earlier runs waits
(:class:`Retests`), a fixed place overlapping one confirmed earlier in the run is that place, and a
finding is new only once per place; a moving region found earlier and confirmed again takes that test's
outlines of the probes (``ShortcutReport.outlined_again``). The settings, findings and reports are in
:mod:`lightning_xai.shortcuts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import BatchSize, default_batch_size
from lightning_xai.functional.shortcut import Box, as_box, box_iou, box_shape, mass_outside
from lightning_xai.functional.shortcut_candidates import Candidate, moving_candidate, plan_candidates
from lightning_xai.functional.shortcut_gradients import gradient_heat
from lightning_xai.functional.shortcut_heat import hottest_places, normalized_mass
from lightning_xai.functional.shortcut_interventions import Allowance, Bench
from lightning_xai.functional.shortcut_retests import Retests
from lightning_xai.monitor.shortcut_messages import outlined_again_message
from lightning_xai.monitor.shortcut_verdicts import RunTests, candidate_finding, color_finding, images_to_test
from lightning_xai.monitor.sizing import work_scale
from lightning_xai.shortcuts import Finding, ShortcutReport, Shortcuts

__all__ = ["EVIDENCE_KEYS", "MIN_PASSES", "MIN_TEST_IMAGES", "TEST_IMAGES_SOURCE", "ShortcutDetector"]

_Plan = tuple[dict[Any, Candidate], dict[str, float]]
"""The candidates the maps propose, by key, and each method's peak concentration."""
_FIXED = ("region", "class_mark")
"""The kinds of finding at one fixed place."""
MIN_PASSES = 4
"""The checks may always pass the test images this many times through the model, besides the first look at the
most promising candidate (the budget's floor)."""
TEST_IMAGES_SOURCE = "test_gradients"
"""The name under which a candidate proposed by the test images' own gradient x input is reported."""
MIN_TEST_IMAGES = 32
"""Fewest test images the checks use when ``test_images`` is scaled down for large images."""
EVIDENCE_KEYS = (
    "p_value",
    "follow_rate",
    "stay_rate",
    "random_follow_rate",
    "win_rate",
    "trials",
    "flip_rate",
    "random_flip_rate",
    "keep_rate",
)


class ShortcutDetector:
    """Proposes candidates from the maps, tests each once per run, remembers what was reported."""

    def __init__(self, settings: Shortcuts) -> None:
        self.settings = settings
        self.findings: list[Finding] = []
        self.runs = 0
        self.retests: Retests[Finding] = Retests()
        self._planned: tuple[dict[str, Tensor], tuple[int, int], Tensor | None, _Plan] | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed fit needs to check on as the fit would have, as plain values: the runs checked so far
        (each run's share of ``false_alarm_rate`` and its draws follow from the count) and the places tested,
        with their last outcomes (which of them wait). The findings are saved by the monitor.

        Example:
            >>> detector = ShortcutDetector(Shortcuts())
            >>> detector.runs = 3
            >>> restored = ShortcutDetector(Shortcuts())
            >>> restored.load_state_dict(detector.state_dict())
            >>> restored.runs
            3
        """
        return {"runs": self.runs, "places": self.retests.state_dict(Finding.to_dict)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Goes on from :meth:`state_dict`'s state (a checkpoint saved before it existed: from run 1, no place tested)."""
        self.runs = int(state.get("runs", 0))
        self.retests.load_state_dict(state.get("places", []), lambda saved: Finding(**saved))

    def check(
        self,
        model: nn.Module,
        displays: dict[str, Tensor],
        test_images: Tensor,
        *,
        epoch: int,
        step: int,
        batch_size: BatchSize | None = None,
        probe_images: Tensor | None = None,
        maps_work: float | None = None,
        unsized_seconds: float = 0.0,
        probe_classes: Tensor | None = None,
        agree: Callable[[Any], Any] | None = None,
    ) -> ShortcutReport:
        """Tests this run's candidates on ``test_images`` ``[N, C, H, W]`` (on the model's device).

        ``displays``: non-negative maps ``[P, 1, H, W]`` of the probes per method. Classes are the
        model's predictions. ``batch_size``: images per forward pass (an int or a tuner).
        ``probe_images``: the probes ``[P, C, H, W]`` (model inputs): a confirmed moving region's box
        in each probe is then found from the probe's gradient or as in the test images (else from the maps).
        ``maps_work``: the images this run's maps passed through the model, in forward-equivalents
        (the checks may pass ``max_cost`` times as many; ``None``: no limit); ``unsized_seconds``: the
        time of maps whose passes are not known (Captum's methods, your own), counted as the images the
        test images' prediction pass would have taken in that time.
        ``probe_classes``: the probes' predicted classes ``[P]``: a spot of some probes is tested as a
        class mark only where the other classes' probes do not look.
        ``agree``: ``value -> rank 0's value`` on every rank, when every rank runs the checks (a collective
        forward pass): decisions taken from a backward pass are rank 0's (its gradient heat of the test
        images, and of the probes when a moving region is confirmed).
        """
        started = time.perf_counter()
        self.runs += 1
        size = (test_images.shape[-2], test_images.shape[-1])
        s = self.settings
        test_images = test_images[: max(MIN_TEST_IMAGES, round(s.test_images * work_scale(size)))]
        candidates, peaks = self._take_plan(displays, size, probe_classes)
        colored = s.colors and test_images.shape[1] == 3
        batch_size = batch_size or default_batch_size(test_images, backward=False)
        with leave_no_trace(model, test_images.device), torch.no_grad():
            heat = (
                torch.stack([normalized_mass(maps).mean(dim=0) for maps in displays.values()]).mean(dim=0, keepdim=True)
                if displays
                else None
            )
            allowance = Allowance()
            bench = Bench.build(
                model,
                test_images.detach(),
                seed=self.runs,
                batch_size=batch_size,
                fill=s.fill,
                heat=heat,
                margin=s.min_effect,
                allowance=allowance,
            )
            if maps_work is not None and unsized_seconds > 0:
                maps_work += unsized_seconds / max(bench.seconds_per_image, 1e-9)
            candidates = self._with_moving_from_test_images(candidates, bench, displays, agree)
            level = s.level(run=self.runs, tests=len(candidates) + int(colored))
            candidates = dict(sorted(candidates.items(), key=lambda item: _promise(item[1])))
            first = next(iter(candidates.values()), None)
            floor = MIN_PASSES * test_images.shape[0] + (0 if first is None else images_to_test(first, size))
            allowance.limit = self._budget(maps_work, floor=floor)
            run = RunTests(bench, level, size, epoch, step, probe_images, s, seed=self.runs, agree=agree)
            color = [color_finding(run)] if colored else []
            run.color_decides = any(finding.confirmed for finding in color)
            tested, fresh, untested, waiting = self._test_all(candidates, run)
            tested += color
        self.retests.end_run()
        per_method, current = self._per_method(displays, candidates, tested, peaks)
        new = [f for f in _most_precise([f for f in tested if f.confirmed]) if not self._already_reported(f)]
        outlined_again = self._outline_again(fresh)
        self.findings.extend(new)
        return ShortcutReport(
            new=new,
            current=current,
            per_method=per_method,
            seconds=time.perf_counter() - started,
            untested=untested,
            waiting=waiting,
            outlined_again=outlined_again,
        )

    def _take_plan(self, displays: dict[str, Tensor], size: tuple[int, int], probe_classes: Tensor | None) -> _Plan:
        """The plan :meth:`sees_news` made of these very maps (the same tensors) in this run, else a new one.
        A plan is taken once: the tests refine the boxes of its candidates."""
        planned, self._planned = self._planned, None
        if (
            planned is not None
            and planned[1] == size
            and planned[2] is probe_classes
            and planned[0].keys() == displays.keys()
            and all(planned[0][name] is maps for name, maps in displays.items())
        ):
            return planned[3]
        return self._plan(displays, size, probe_classes)

    def _plan(self, displays: dict[str, Tensor], size: tuple[int, int], probe_classes: Tensor | None) -> _Plan:
        """The places the maps propose (see :func:`plan_candidates`) and each method's peak concentration."""
        s = self.settings
        return plan_candidates(
            displays,
            size,
            s.candidate_sides(size),
            min_concentration=s.min_concentration,
            min_isolation=s.min_isolation,
            max_places=s.max_places,
            suspects=s.suspects(size),
            classes=None if probe_classes is None else probe_classes.cpu(),
        )

    def sees_news(self, displays: dict[str, Tensor], size: tuple[int, int], probe_classes: Tensor | None) -> bool:
        """Whether the maps ``displays`` (``[P, 1, H, W]`` per method, images of ``size``) propose a place never
        tested, or one whose maps grew more concentrated since its test (``Retests.news``): without a pass
        through the model, what would make checks worth running in a run the schedule leaves to its sentinel.

        As :meth:`check` has it: a fixed place overlapping a confirmed one is that place (not tested on its
        own), and every moving region is one test whose places the test images' gradients propose (a
        moving region is news only while none was ever tested)."""
        plan = self._plan(displays, size, probe_classes)
        self._planned = (dict(displays), size, probe_classes, plan)  # for this run's checks, if they run
        return self._news(plan[0].values())

    def _news(self, candidates: Iterable[Candidate]) -> bool:
        """Whether any of ``candidates`` is news (see :meth:`sees_news`)."""
        confirmed = [record.outcome for record in self.retests.records if record.outcome.confirmed]
        moving_tested = any(record.kind == "moving_region" for record in self.retests.records)
        for candidate in candidates:
            if candidate.kind == "moving_region":
                if not moving_tested:
                    return True
            elif _covering(candidate, confirmed) is None and self.retests.news(candidate):
                return True
        return False

    def skip_run(self) -> None:
        """A monitor run without checks (the adaptive schedule's, see
        :func:`~lightning_xai.monitor.schedule.checks_wait`): every place's last test is one run older, so
        that ``Retests.stale_after`` still counts the monitor's runs."""
        self._planned = None
        self.retests.end_run()

    def _with_moving_from_test_images(
        self,
        candidates: dict[Any, Candidate],
        bench: Bench,
        displays: dict[str, Tensor],
        agree: Callable[[Any], Any] | None,
    ) -> dict[Any, Candidate]:
        """The candidates, with the moving region proposed by the gradient x input of the selection half's
        test images (up to 32, see :func:`moving_candidate`) in place of the maps' (16 probes). A mark
        the model reads beside the object is seldom among the probes' hottest spots: on two ResNet runs with
        a swatch in a random corner (stop 24, seeds 3 and 7), expected gradients showed it among a probe's
        3 hottest spots in 2 or 3 of 16 probes and the other methods in none, while the selection half's
        gradients lined it up at the four corners. The maps' proposal stands when the gradients propose
        none (a model without gradients or whose backward pass fails, spots that do not line up).
        ``agree``: rank 0's gradient heat of all the test images on every rank (a backward pass need not
        give the same bits on every rank, and every rank must make the same tests when a forward pass is
        collective): the proposal, the places completed and the per-image test then agree. Each probe's box,
        until a confirmed region locates it by the probe's gradient (see :mod:`~lightning_xai.monitor.shortcut_verdicts`), is the place
        holding most of the probe's maps."""
        if agree is not None:  # every later decision from the test images' gradients is rank 0's
            bench.gradient_maps = agree(gradient_heat(bench))
        heat = gradient_heat(bench, bench.selection)
        s = self.settings
        sides = s.candidate_sides(bench.size)
        moving = moving_candidate(normalized_mass(heat), sides, s.min_isolation, s.max_places) if heat.any() else None
        if moving is None:
            return candidates
        kept = {key: candidate for key, candidate in candidates.items() if candidate.kind != "moving_region"}
        moving.methods = [TEST_IMAGES_SOURCE]
        probes = [normalized_mass(maps) for maps in displays.values()]
        moving.probe_boxes = hottest_places(torch.stack(probes).mean(dim=0), moving.places) if probes else []
        kept[moving.key] = moving
        return kept

    def _test_all(self, candidates: dict[Any, Candidate], run: RunTests) -> _Tests:
        """Each candidate's finding, in order: tested now, or the finding standing for it (a place confirmed
        earlier in this run, or one decided the same way in earlier runs); candidates that would not fit
        in the budget are removed."""
        tested: list[Finding] = []
        fresh: list[Finding] = []
        untested = waiting = 0
        for key, candidate in list(candidates.items()):
            covering = _covering(candidate, tested)
            record = self.retests.waiting(candidate) if covering is None else None
            if covering is not None:
                tested.append(covering)
            elif record is not None:
                tested.append(record.outcome)
                waiting += 1
            elif not run.fits(candidate):
                del candidates[key]  # left for a later run
                untested += 1
            else:
                tested.append(self._tested(candidate, run))
                fresh.append(tested[-1])
        return _Tests(tested, fresh, untested, waiting)

    def _tested(self, candidate: Candidate, run: RunTests) -> Finding:
        """Tests ``candidate`` and remembers the outcome for its place (see :class:`Retests`)."""
        proposed = replace(candidate)  # the evidence refines a confirmed box: the place is the proposed one
        finding, cut = candidate_finding(candidate, run)
        news = finding.confirmed and not self._already_reported(finding)
        self.retests.record(proposed, finding, news=news, counted=not cut)
        return finding

    def _budget(self, maps_work: float | None, *, floor: float) -> float | None:
        """Forward-equivalents the checks of this run may take (``None``: no limit): ``max_cost`` times
        the maps' (cheap maps, cheap checks), and at least ``floor``
        (a few passes over the test images and the first look at the most promising candidate, so that
        it is tested even when the maps are very cheap)."""
        if self.settings.max_cost is None or maps_work is None:
            return None
        return max(self.settings.max_cost * maps_work, floor)

    def _per_method(
        self,
        displays: dict[str, Tensor],
        candidates: dict[Any, Candidate],
        tested: list[Finding],
        peaks: dict[str, float],
    ) -> tuple[dict[str, dict[str, float]], dict[str, Finding]]:
        per_method: dict[str, dict[str, float]] = {}
        current: dict[str, Finding] = {}
        pairs = list(zip(candidates.values(), tested))
        sources: dict[str, Tensor | None] = dict(displays)
        if any(TEST_IMAGES_SOURCE in candidate.methods for candidate in candidates.values()):
            sources[TEST_IMAGES_SOURCE] = None
        for name, maps in sources.items():
            numbers = {"candidates": float(sum(name in c.methods for c in candidates.values()))}
            if name in peaks:  # the test images' gradients propose moving regions only
                numbers["peak_concentration"] = peaks[name]
            numbers.update(
                {key: 1.0 if key == "p_value" else 0.0 for key in (*EVIDENCE_KEYS, "confirmed")}
            )  # no candidate: nothing found
            own = [finding for candidate, finding in pairs if name in candidate.methods]
            if own:
                best = min(own, key=lambda f: (f.p_value, -f.score))
                current[name] = best
                numbers.update({key: float(getattr(best, key)) for key in EVIDENCE_KEYS})
                numbers["confirmed"] = float(best.confirmed)
            masks = self.settings.object_masks
            if masks is not None and maps is not None and masks.shape[0] == maps.shape[0]:
                numbers["outside_mass_mean"] = float(mass_outside(maps, masks).mean())
            per_method[name] = numbers
        if len(tested) > len(pairs):
            color = tested[-1]
            per_method["color"] = {
                "gray_flip_rate": color.flip_rate,
                **{
                    k: float(getattr(color, k))
                    for k in ("p_value", "follow_rate", "stay_rate", "win_rate", "loss_rate", "trials")
                },
            }
            per_method["color"]["confirmed"] = float(color.confirmed)
        return per_method, current

    def _outline_again(self, fresh: list[Finding]) -> list[Finding]:
        """The moving region reported in an earlier run, outlined as one of ``fresh`` (this run's tests) draws it
        when that test confirms it again (see :func:`_confirmed_again`); ``[]`` when none does. The finding
        keeps its ``epoch``, evidence and reaction (it is not new).

        A finding's outlines are those of the model that confirmed it last. The outlines of a region found at
        epochs 0-1 come from a young model's predictions (each probe's box is where its content recurs in the
        images of one predicted class); a later confirmation draws them with the predictions of a model that
        has learnt more, and the outlines say where the model of today reads the mark. On the design fits of
        stop 34 (seeds 41-47, a swatch in a random corner or along the border, both models; 28 fits, 18 with a
        moving region), 8 regions were confirmed again by epoch 2: their outlines on the planted mark went from 86
        to 104 of 128 (better in 6, worse in 2), and 2 findings outlined wrong (in fewer than half the probes)
        became right, none the other way."""
        pair = _confirmed_again(self.findings, fresh)
        if pair is None:
            return []
        reported, again = pair
        reported.message = outlined_again_message(reported, again, self.settings.min_effect)
        reported.boxes = [list(box) for box in again.boxes]
        reported.boxes_read = list(again.boxes_read)
        reported.outlined_after = again.epoch
        return [reported]

    def _already_reported(self, finding: Finding) -> bool:
        return any(_repeats(finding.kind, as_box(finding.box), old) for old in self.findings)


class _Tests(NamedTuple):
    """A run's tests (see :meth:`ShortcutDetector._test_all`): every candidate's finding in order, those tested in
    this run (``fresh``), and how many candidates were ``untested`` (the budget) and ``waiting``."""

    findings: list[Finding]
    fresh: list[Finding]
    untested: int
    waiting: int


def _confirmed_again(reported: list[Finding], fresh: list[Finding]) -> tuple[Finding, Finding] | None:
    """The reported moving region and the test of this run (``fresh``) that confirms it again with other outlines,
    or ``None``: a moving region of the same box size (the same place, as :class:`Retests` has it), confirmed, with
    per-probe boxes that differ from the reported ones.

    Example:
        >>> def moving(step, boxes):
        ...     return Finding(0, step, "test_gradients", [0, 0, 4, 4], 1.0, True, "", kind="moving_region", boxes=boxes)
        >>> found, again = moving(10, [[0, 0, 4, 4]]), moving(20, [[12, 12, 16, 16]])
        >>> _confirmed_again([found], [again]) == (found, again), _confirmed_again([found], [moving(20, [[0, 0, 4, 4]])])
        (True, None)
    """
    old = next((f for f in reported if f.kind == "moving_region"), None)
    if old is None:
        return None
    shape = box_shape(old.box)
    for new in fresh:
        if new.kind == "moving_region" and new.confirmed and new.boxes and box_shape(new.box) == shape:
            changed = (new.boxes, new.boxes_read) != (old.boxes, old.boxes_read)
            return (old, new) if changed else None
    return None


def _covering(candidate: Candidate, tested: list[Finding]) -> Finding | None:
    """A fixed place confirmed earlier in this run that overlaps ``candidate``'s box (one finding per place)."""
    if candidate.kind not in _FIXED:
        return None
    return next((f for f in tested if f.confirmed and _repeats(candidate.kind, candidate.box, f)), None)


def _repeats(kind: str, box: Box, old: Finding) -> bool:
    """Whether a finding of ``kind`` at ``box`` says again what ``old`` said: one colour finding, one moving
    region; a fixed place overlapping a fixed place; a moving region over a fixed place (a box larger than a
    fixed mark lands on it at a few offsets). A fixed place is not repeated by an earlier moving region."""
    if kind in ("color", "moving_region") and old.kind == kind:
        return True
    return kind in (*_FIXED, "moving_region") and old.kind in _FIXED and box_iou(box, as_box(old.box)) > 0


def _promise(candidate: Candidate) -> tuple[int, float]:
    """Test order: fixed regions (most concentrated first), moving regions, then marks of single probes."""
    order = {"region": 0, "moving_region": 1, "class_mark": 2}
    return order.get(candidate.kind, 3), -candidate.concentration


def _most_precise(findings: list[Finding]) -> list[Finding]:
    """One finding per place: a region before a class mark there, then the smallest box, then the lowest p-value;
    a moving region over a fixed place found in the same run is that place."""
    order = {"color": 0, "region": 1, "class_mark": 2, "moving_region": 3}
    kept: list[Finding] = []
    for finding in sorted(
        findings, key=lambda f: (order[f.kind], (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), f.p_value)
    ):
        if not any(_repeats(finding.kind, as_box(finding.box), old) for old in kept):  # fixed places come first
            kept.append(finding)
    return kept
