"""Flagging shortcut learning while training runs: candidates from the maps, decided by transplants.

Each validation run, the probes' maps propose candidates: a box where the heat of every probe sits
(kind ``"region"``), a compact hot spot of single probes that may be a mark one class carries
(``"class_mark"``), and, for colour images, the colours (``"color"``). Hot spots that move from
image to image (``"moving_region"``) are proposed by the gradient x input of test images (more images
than probes, and a mark read beside the object is seldom among the probes' hottest spots), or by the
probes' maps when those propose none. Each candidate is tested once per run, whichever methods proposed
it, on validation images the probes are not needed for (:mod:`lightning_xai.functional.shortcut_interventions`):
pasted from an image of another class, the region (or the colours) must decide the prediction more
often than all the rest of the image does, and more often than a box of the same size elsewhere.
A part of an object cannot pass unless it outweighs the rest of the object, so centred, jittered or
moving objects raise no finding by construction. Each test gives a p-value; a candidate is confirmed
when it is below ``false_alarm_rate`` shared out over the run's candidates (Bonferroni) and over
runs (run ``r`` gets ``1 / (r (r + 1))`` of it, which sums to 1): the chance of any false alarm in a
whole fit stays below ``false_alarm_rate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import BatchSize, default_batch_size
from lightning_xai.functional.shortcut import Box, box_iou, mass_outside
from lightning_xai.functional.shortcut_candidates import (
    Candidate,
    describe_place,
    describe_places,
    hottest_places,
    moving_candidate,
    normalized_mass,
    plan_candidates,
    spot_at_border,
)
from lightning_xai.functional.shortcut_evidence import Votes
from lightning_xai.functional.shortcut_interventions import (
    Allowance,
    Bench,
    ablation_rates,
    carriers,
    class_votes,
    color_votes,
    fill_drops,
    mark_class,
    others_need,
    refine,
    region_votes,
)
from lightning_xai.functional.shortcut_moving import (
    completed_places,
    gradient_heat,
    hottest_inside,
    locate,
    moving_votes,
    place_set_votes,
    rivals,
)
from lightning_xai.functional.shortcut_retests import Retests
from lightning_xai.monitor.sizing import work_scale
from lightning_xai.render import draw_box, make_grid

__all__ = [
    "Finding",
    "ShortcutDetector",
    "ShortcutKind",
    "ShortcutReport",
    "Shortcuts",
    "describe_place",
    "outline_findings",
]

SuspectRegion = tuple[int, int, int, int] | Literal["border"]
ShortcutKind = Literal["region", "moving_region", "class_mark", "color"]
_FIXED = ("region", "class_mark")
"""The kinds of finding at one fixed place."""
PLACE_SET_SHARE = 0.75
"""The share of a moving region's level its test at all places at once gets; the per-image test, which
finds marks anywhere along the border but needs the mark to decide most predictions, gets the rest."""
DECIDES_SHARE = 0.5
"""The share of the level of a spot at the border (see :func:`spot_at_border`) that its test of deciding
most predictions gets; the test of clear wins against clear losses (a mark read beside the object) gets
the rest. Other fixed places get the whole level for the first test."""
MIN_PASSES = 4
"""The checks may always pass the test images this many times through the model, besides the first look at the
most promising candidate (the budget's floor)."""
TEST_IMAGES_SOURCE = "test_gradients"
"""The name under which a candidate proposed by the test images' own gradient x input is reported."""
UNREAD_OUTLINE: dict[str, Any] = {"color": (0.6, 0.6, 0.6), "thickness": 1}
"""How a moving region's box is drawn in a probe where the model does not read it (``Finding.boxes_read``)."""
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


@dataclass(frozen=True)
class Shortcuts:
    """Settings of shortcut detection.

    Args:
        false_alarm_rate: the chance of any false finding in a whole fit that you accept; the one
            knob that sets how strong the evidence must be.
        min_effect: how much more (in probability) a region pasted from an image of another class must
            raise that class than the best of 4 pieces of the same size where the model looks, in
            most images: what counts as relying on a region rather than on an object it is part of.
        box_sides: candidate box sides as fractions of the shorter image side.
        test_images: validation images used for the interventions (half select, half decide); for
            images above 64 x 64 the checks use fewer, scaled like the rest of the default work
            (:func:`lightning_xai.monitor.sizing.work_scale`; 32 at least: 32 at 512 x 512).
        min_concentration: a fixed region is a candidate only if the probes' mean heat in it is at
            least this many times its area share (suspect regions are tested regardless).
        min_isolation: a box is a candidate only if it holds this share of the heat in the box
            grown by half its side (a compact spot, not a piece of a larger hot object).
        max_places: most single-probe hot spots tested per method as marks of a class.
        colors: test colour images for a colour cue.
        fill: what replaces a box in the ablations (the reported rates, a class mark's class, a moving
            region's place): ``"mean"``, ``"blur"`` or ``"inpaint"`` (OpenCV, ``pip install "lightning-xai[inpaint]"``).
        suspect_regions: boxes ``(top, left, bottom, right)`` always tested, or ``"border"``.
        object_masks: per-probe object masks ``[P, 1, H, W]`` (given probes only): the share of
            attribution outside the object is reported per method.
        max_cost: the checks of a run may pass this many times as many images through the model as
            the run's maps did (forward-equivalents: a pass with gradients counts 3; and at least 4
            passes over the test images and the most promising candidate's first look, so that
            cheap maps do not starve the checks): candidates
            that would not fit in what is left are not started but left for a later run (the most
            promising are tested first), and a test running when it is spent stops undecided at its
            next look (the description of a place just confirmed is finished). Counted in images,
            not seconds, so the same run makes the same tests on any machine and under any load.
            ``None``: no limit.

    Example:
        >>> Shortcuts(suspect_regions=["border"]).candidate_sides((32, 32))
        [4, 6, 8]
        >>> Shortcuts().level(run=1, tests=10)
        0.0005
    """

    false_alarm_rate: float = 0.01
    box_sides: tuple[float, ...] = (1 / 8, 3 / 16, 1 / 4)
    test_images: int = 128
    min_effect: float = 0.1
    min_concentration: float = 2.0
    min_isolation: float = 0.4
    max_places: int = 4
    colors: bool = True
    fill: Literal["mean", "blur", "inpaint"] = "mean"
    suspect_regions: Sequence[SuspectRegion] = ()
    object_masks: Tensor | None = field(default=None, compare=False)
    max_cost: float | None = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.false_alarm_rate, (int, float)) or not 0 < self.false_alarm_rate < 1:
            raise ValueError(f"`false_alarm_rate` must be a probability in (0, 1), got {self.false_alarm_rate!r}.")
        if not isinstance(self.min_effect, (int, float)) or not 0 <= self.min_effect < 1:
            raise ValueError(f"`min_effect` must be in [0, 1), got {self.min_effect!r}.")
        if not 0 <= self.min_isolation <= 1:
            raise ValueError(f"`min_isolation` must be a share in [0, 1], got {self.min_isolation!r}.")
        for name in ("test_images", "max_places"):
            if (
                isinstance(getattr(self, name), bool)
                or not isinstance(getattr(self, name), int)
                or getattr(self, name) < 2
            ):
                raise ValueError(f"`{name}` must be an int >= 2, got {getattr(self, name)!r}.")
        if self.max_cost is not None and (
            isinstance(self.max_cost, bool) or not isinstance(self.max_cost, (int, float)) or self.max_cost <= 0
        ):
            raise ValueError(f"`max_cost` must be a positive number or None, got {self.max_cost!r}.")
        if self.fill not in ("mean", "blur", "inpaint"):
            raise ValueError(f"`fill` must be one of ['mean', 'blur', 'inpaint'], got {self.fill!r}.")
        for region in self.suspect_regions:
            if region != "border" and not (isinstance(region, (tuple, list)) and len(region) == 4):
                raise ValueError(
                    f"`suspect_regions` must hold (top, left, bottom, right) boxes or 'border', got {region!r}."
                )

    def candidate_sides(self, size: tuple[int, int]) -> list[int]:
        """Box sides in pixels for images of ``size``."""
        return sorted({max(2, round(fraction * min(size))) for fraction in self.box_sides})

    def suspects(self, size: tuple[int, int]) -> list[Box]:
        """The suspect regions as boxes for images of ``size``."""
        boxes: list[Box] = []
        for region in self.suspect_regions:
            if region == "border":
                strip = max(2, min(size) // 8)
                height, width = size
                boxes += [
                    (0, 0, strip, width),
                    (height - strip, 0, height, width),
                    (0, 0, height, strip),
                    (0, width - strip, height, width),
                ]
            else:
                boxes.append(_as_box([int(v) for v in region]))
        return boxes

    def level(self, *, run: int, tests: int) -> float:
        """The p-value a test must reach in run ``run`` (1-based) among ``tests`` tests."""
        return self.false_alarm_rate / (run * (run + 1)) / max(1, tests)


@dataclass
class Finding:
    """Something the model relies on. ``box`` is ``[top, left, bottom, right]`` in input pixels.

    ``kind``: ``"region"`` (a fixed place), ``"moving_region"`` (``boxes``: one per probe;
    ``boxes_read``: whether the model reads each probe's box, i.e. filling it lowers the probe's predicted
    class's probability by at least ``Shortcuts.min_effect``; ``classes``: when it was confirmed at all its
    places at once, the class whose images were pasted),
    ``"class_mark"`` (a mark the images of ``classes`` carry) or ``"color"`` (``box``: the whole
    image). ``p_value`` is the test's p-value, ``level`` the bound it had to reach (the false-alarm
    rate shared out over candidates and runs), ``confidence`` is ``1 - p_value``. ``partial``: a
    fixed spot at the border confirmed because it raises the donor's class clearly more often than
    pieces of what the model looks at clearly do (``win_rate`` against ``loss_rate``), without deciding
    most predictions (the model reads it beside the object).
    """

    epoch: int
    global_step: int
    method: str
    box: list[int]
    score: float
    confirmed: bool
    message: str
    flip_rate: float = 0.0
    random_flip_rate: float = 0.0
    drop_ratio: float = 0.0
    follow_rate: float = 0.0
    keep_rate: float = 0.0
    kind: str = "region"
    classes: list[int] = field(default_factory=list)
    boxes: list[list[int]] = field(default_factory=list)
    boxes_read: list[bool] = field(default_factory=list)
    p_value: float = 1.0
    level: float = 0.0
    confidence: float = 0.0
    stay_rate: float = 0.0
    random_follow_rate: float = 0.0
    win_rate: float = 0.0
    trials: int = 0
    loss_rate: float = 0.0
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON- and checkpoint-safe dict; ``Finding(**finding.to_dict())`` rebuilds it."""
        return asdict(self)


@dataclass
class ShortcutReport:
    """One run's shortcut checks: ``new`` confirmed findings, each method's best ``current`` candidate,
    plain evidence numbers ``per_method`` (``{"peak_concentration": .., "p_value": ..}``; colour under
    ``"color"``), the ``seconds`` the checks took, how many candidates were left ``untested`` (``max_cost``) and how
    many were ``waiting`` (tested the same way in earlier runs, or the same place tested earlier in
    this run by another method's proposal: that outcome stands, see
    :mod:`~lightning_xai.functional.shortcut_retests`)."""

    new: list[Finding] = field(default_factory=list)
    current: dict[str, Finding] = field(default_factory=dict)
    per_method: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    untested: int = 0
    waiting: int = 0


@dataclass
class _RunTests:
    """What the tests of one run share: the bench (with the run's allowance of images), the level, the moment."""

    bench: Bench
    level: float
    size: tuple[int, int]
    epoch: int
    step: int
    probe_images: Tensor | None

    def fits(self, candidate: Candidate) -> bool:
        """Whether the candidate's first look is expected to end within the run's allowance."""
        return self.bench.allowance.fits(_images_to_test(candidate, self.size))


class ShortcutDetector:
    """Proposes candidates from the maps, tests each once per run, remembers what was reported."""

    def __init__(self, settings: Shortcuts) -> None:
        self.settings = settings
        self._agree: Callable[[Any], Any] | None = None  # this check's, see :meth:`check`
        self.findings: list[Finding] = []
        self.runs = 0
        self.retests: Retests[Finding] = Retests()

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
        self._agree = agree
        size = (test_images.shape[-2], test_images.shape[-1])
        s = self.settings
        test_images = test_images[: max(MIN_TEST_IMAGES, round(s.test_images * work_scale(size)))]
        candidates, peaks = self._plan(displays, size, probe_classes)
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
            floor = MIN_PASSES * test_images.shape[0] + (0 if first is None else _images_to_test(first, size))
            allowance.limit = self._budget(maps_work, floor=floor)
            run = _RunTests(bench, level, size, epoch, step, probe_images)
            color = [self._color_finding(run)] if colored else []
            tested, untested, waiting = self._test_all(candidates, run)
            tested += color
        self.retests.end_run()
        per_method, current = self._per_method(displays, candidates, tested, peaks)
        new = [f for f in _most_precise([f for f in tested if f.confirmed]) if not self._already_reported(f)]
        self.findings.extend(new)
        return ShortcutReport(
            new=new,
            current=current,
            per_method=per_method,
            seconds=time.perf_counter() - started,
            untested=untested,
            waiting=waiting,
        )

    def _plan(
        self, displays: dict[str, Tensor], size: tuple[int, int], probe_classes: Tensor | None
    ) -> tuple[dict[Any, Candidate], dict[str, float]]:
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
        return self._news(self._plan(displays, size, probe_classes)[0].values())

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
        until a confirmed region locates it by the probe's gradient (see ``_probe_boxes``), is the place
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

    def _test_all(self, candidates: dict[Any, Candidate], run: _RunTests) -> tuple[list[Finding], int, int]:
        """Each candidate's finding, in order: tested now, or the finding standing for it (a place confirmed
        earlier in this run, or one decided the same way in earlier runs); candidates that would not fit
        in the budget are removed. Returns the findings and how many were ``untested`` and ``waiting``."""
        tested: list[Finding] = []
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
        return tested, untested, waiting

    def _tested(self, candidate: Candidate, run: _RunTests) -> Finding:
        """Tests ``candidate`` and remembers the outcome for its place (see :class:`Retests`)."""
        proposed = replace(candidate)  # the evidence refines a confirmed box: the place is the proposed one
        evidence = self._evidence(candidate, run.bench, run.level, run.probe_images)
        finding = self._finding(candidate, evidence, run.size, run.epoch, run.step, evidence["level"])
        news = finding.confirmed and not self._already_reported(finding)
        self.retests.record(proposed, finding, news=news, counted=not evidence["cut"])
        return finding

    def _budget(self, maps_work: float | None, *, floor: float) -> float | None:
        """Forward-equivalents the checks of this run may take (``None``: no limit): ``max_cost`` times
        the maps' (cheap maps, cheap checks), and at least ``floor``
        (a few passes over the test images and the first look at the most promising candidate, so that
        it is tested even when the maps are very cheap)."""
        if self.settings.max_cost is None or maps_work is None:
            return None
        return max(self.settings.max_cost * maps_work, floor)

    def _evidence(
        self, candidate: Candidate, bench: Bench, level: float, probe_images: Tensor | None = None
    ) -> dict[str, Any]:
        box, selection = candidate.box, bench.selection[:16]  # ablation rates are only reported: a few images suffice
        partial = False
        if candidate.kind == "region":
            rates = ablation_rates(bench, [box] * selection.numel(), selection)
            votes, level, partial = self._region_votes(candidate, bench, level)
            classes = []
        elif candidate.kind == "class_mark":
            mark_of, rates = mark_class(bench, box)
            votes, classes = class_votes(bench, box, mark_of, alpha=level), [mark_of]
        else:
            rates, votes, classes, level = self._moving_evidence(candidate, bench, level, probe_images)
        cut = not votes.decided and bench.out_of_budget()  # before the description of a decided place spends more
        kind = candidate.kind
        if votes.decided and kind != "moving_region":
            kind, classes, region_test = self._described(candidate, bench, box, classes, level)
            if region_test is not None:  # a class mark that is a region: its region test stands
                votes, level, partial = region_test
                cut = not votes.decided and bench.out_of_budget()
        return {
            **rates,
            **votes.rates(),
            "decided": votes.decided,
            "classes": classes,
            "kind": kind,
            "level": level,
            "partial": partial and votes.decided,
            "cut": cut,
        }

    def _described(
        self, candidate: Candidate, bench: Bench, box: Box, classes: list[int], level: float
    ) -> tuple[str, list[int], tuple[Votes, float, bool] | None]:
        """A fixed place whose test decided, described: its box refined (``candidate.box``), then who carries
        it (see :func:`_who_carries`). It is no one class's mark when the other classes' images need it too
        (:func:`others_need`, with the classes followed and the one whose test confirmed it as the carriers);
        a class-mark candidate described as a region must also pass the region test. Describing runs also
        once the budget is spent (its passes are counted, not planned: a decided place is described
        rightly or not at all, and a region test stopped by the budget leaves the place to a later run).
        Returns the kind, the classes named (see :func:`_named_classes`) and that region test's votes, level
        and partiality (``None`` when it was not needed)."""
        candidate.box = refine(bench, box, self.settings.candidate_sides(bench.size), classes[0] if classes else None)
        kind, followed = _who_carries(carriers(bench, candidate.box))
        carrying = sorted({*followed, *classes})
        if kind == "class_mark" and others_need(bench, candidate.box, carrying, alpha=level):
            kind = "region"  # every class marks the place its own way (a shade): no one class's mark
        region_test = None
        if kind == "region" and candidate.kind == "class_mark":  # most classes carry it: it must decide as a region
            region_test = self._region_votes(replace(candidate, kind="region"), bench, level)
        named = _named_classes(bench, candidate.box, followed, classes, level) if kind == "class_mark" else []
        return (kind if named else "region"), named, region_test  # no class confirmed: the region test stands

    @staticmethod
    def _region_votes(candidate: Candidate, bench: Bench, level: float) -> tuple[Votes, float, bool]:
        """A fixed region: does it decide most predictions (the whole ``level``; ``DECIDES_SHARE`` of it for
        a spot at the border, see :func:`spot_at_border`)? If not, such a spot is tested for clear wins
        at the rest of the level (a mark read beside the object). Returns the votes, the level of the last
        test and whether it was the test of clear wins.

        A class mark confirmed at a place that the images of most classes carry (see :func:`_who_carries`)
        is a region and takes this test too, at the same level: it is reported only when both tests
        confirm it (an intersection of tests keeps the level), with this test's evidence. The middle of
        centred objects passes a one-class test (the centre of one class's shape, pasted into the others,
        turns them into that class) but carries every class and decides no more than the rest of the object."""
        if not spot_at_border(candidate, bench.size):
            return region_votes(bench, candidate.box, alpha=level), level, False
        votes = region_votes(bench, candidate.box, alpha=level * DECIDES_SHARE)
        if votes.decided or bench.out_of_budget():
            return votes, level * DECIDES_SHARE, False
        rest = level * (1 - DECIDES_SHARE)
        return region_votes(bench, candidate.box, alpha=rest, clear_wins=True), rest, True

    def _moving_evidence(
        self, candidate: Candidate, bench: Bench, level: float, probe_images: Tensor | None
    ) -> tuple[dict[str, float], Votes, list[int], float]:
        """A moving region: all its places at once (completed from the selection half, see
        :func:`completed_places`) at ``PLACE_SET_SHARE`` of ``level``, then, when that is undecided, each
        image's own box at the rest; nothing more when its effect stands on one place (a fixed mark, tested
        as a region or a class mark) or without gradient heat. A confirmed one gets each probe's box. Returns the ablation rates
        (each selection image's own box filled), the votes, the classes and the level of the last test."""
        selection = bench.selection[:16]
        places = completed_places(bench, candidate.places, band=candidate.band)
        votes, classes = place_set_votes(bench, places, alpha=level * PLACE_SET_SHARE)
        # without gradient heat the per-image test's rivals cannot be drawn where each image's evidence is
        if votes.decided or not classes or not gradient_heat(bench).any():
            few = bench.subset(selection)
            candidate.places = places if votes.decided else candidate.places
            rates = ablation_rates(few, locate(few, candidate.places), few.test)
            if votes.decided and probe_images is not None:
                candidate.probe_boxes, candidate.probe_read = self._probe_boxes(
                    bench, candidate, probe_images, at_places=True
                )
            return rates, votes, classes, level * PLACE_SET_SHARE
        heat = gradient_heat(bench)
        own = locate(bench, candidate.places, band=candidate.band, heat=heat)
        rates = ablation_rates(bench, [own[i] for i in selection.tolist()], selection)
        votes = moving_votes(bench, own, rivals(bench, own, heat), alpha=level * (1 - PLACE_SET_SHARE))
        if votes.decided and probe_images is not None:
            candidate.probe_boxes, candidate.probe_read = self._probe_boxes(
                bench, candidate, probe_images, at_places=False
            )
        return rates, votes, [], level * (1 - PLACE_SET_SHARE)

    def _probe_boxes(
        self, bench: Bench, candidate: Candidate, probe_images: Tensor, *, at_places: bool
    ) -> tuple[list[Box], list[bool]]:
        """Each probe's own box of a confirmed moving region: its place (``at_places``, confirmed at all its
        places at once: the place holding most of the probe's gradient x input; else located as in the test
        images, see :func:`locate`), then the box of the smallest side in it that holds most of the probe's
        gradient x input. Returns the boxes and whether the model reads each (filling it lowers the probe's
        predicted class's probability by at least ``min_effect``: one forward pass per probe).

        On 10 random-corner runs (stop 24; 64 test images each, the four corners as places), the gradient put
        0.76 of the images at their mark's corner on average (0.67-0.84), the place whose content, pasted
        into 96 test images of other classes, moves them most (used until stop 23) 0.75 (0.61-0.86), and
        their sum 0.77: as good, for one forward and backward pass per probe instead of 384 forward passes
        (four places). The misses are images in which the model does not read the mark (stop 25, the 20
        runs of seeds 0-9 with both models, 160 images each): where filling the mark's corner lowers the
        predicted class's probability by more than 0.05 (31-68% of images), the gradient's corner is the
        mark's in 99-100% of them; in the others in 35-66%, and filling or transplanting do no better.
        Hence the read flags: an outline is known to be on what the model reads only in the probes that read it."""
        images = probe_images.detach()
        probes = Bench.build(
            bench.forward_fn, images, seed=self.runs, batch_size=bench.batch_size, fill=self.settings.fill
        )
        heat = gradient_heat(probes) if self._agree is None else self._agree(gradient_heat(probes))
        if at_places:
            located = hottest_places(heat, candidate.places)
            blind = (~heat.flatten(1).any(dim=1)).nonzero().flatten()
            if blind.numel():  # probes without gradient: by filling (forward passes only)
                for index, box in zip(blind.tolist(), locate(probes.subset(blind), candidate.places)):
                    located[index] = box
        else:
            located = locate(probes, candidate.places, band=candidate.band, heat=heat)
        boxes = hottest_inside(heat, located, min(self.settings.candidate_sides(bench.size)))
        return boxes, (fill_drops(probes, boxes) >= self.settings.min_effect).tolist()

    def _finding(
        self, candidate: Candidate, evidence: dict[str, Any], size: tuple[int, int], epoch: int, step: int, level: float
    ) -> Finding:
        boxes = [list(b) for b in candidate.probe_boxes] if candidate.kind == "moving_region" else []
        read = list(candidate.probe_read) if len(candidate.probe_read) == len(boxes) else []
        finding = Finding(
            epoch=epoch,
            global_step=step,
            method=candidate.methods[0],
            box=list(candidate.box),
            score=evidence["follow_rate"] - evidence["stay_rate"],
            confirmed=bool(evidence["decided"]),
            message="",
            flip_rate=evidence["flip_rate"],
            random_flip_rate=evidence["random_flip_rate"],
            drop_ratio=evidence["drop"] / max(evidence["random_drop"], 1e-3),
            follow_rate=evidence["follow_rate"],
            keep_rate=evidence["keep_rate"],
            kind=evidence["kind"],
            classes=evidence["classes"],
            boxes=boxes,
            boxes_read=read,
            p_value=evidence["p_value"],
            level=level,
            confidence=1 - evidence["p_value"],
            stay_rate=evidence["stay_rate"],
            random_follow_rate=evidence["random_follow_rate"],
            win_rate=evidence["win_rate"],
            trials=int(evidence["trials"]),
            loss_rate=evidence["loss_rate"],
            partial=evidence["partial"],
        )
        finding.message = _message(finding, size, candidate, self.settings.min_effect)
        return finding

    def _color_finding(self, run: _RunTests) -> Finding:
        bench, level, size, epoch, step = run.bench, run.level, run.size, run.epoch, run.step
        votes, gray_flip = color_votes(bench, alpha=level)
        rates = votes.rates()
        finding = Finding(
            epoch=epoch,
            global_step=step,
            method="color",
            box=[0, 0, size[0], size[1]],
            score=rates["follow_rate"] - rates["stay_rate"],
            confirmed=votes.decided,
            message="",
            flip_rate=gray_flip,
            follow_rate=rates["follow_rate"],
            kind="color",
            p_value=rates["p_value"],
            level=level,
            confidence=1 - rates["p_value"],
            stay_rate=rates["stay_rate"],
            random_follow_rate=rates["random_follow_rate"],
            win_rate=rates["win_rate"],
            loss_rate=rates["loss_rate"],
            trials=votes.trials,
        )
        finding.message = _message(finding, size, None, self.settings.min_effect)
        return finding

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

    def _already_reported(self, finding: Finding) -> bool:
        return any(_repeats(finding.kind, _as_box(finding.box), old) for old in self.findings)


def _images_to_test(candidate: Candidate, size: tuple[int, int]) -> int:
    """About how many images the first look at a candidate passes through the model: ablations and 16
    transplants with their controls (a spot at the border, see :func:`spot_at_border`: then 16 more with
    two donors each, the test of clear wins). A moving region first completes its places (16 selection
    images' gradients, a forward and backward pass counting 3; their 3 hottest border boxes, each pasted
    into 8 others), finds the class that follows them (about 10 classes of the 32 selection images) and
    what the places carry without each one, then looks at all places at once with two donors per
    recipient (its ablation rates locate 16 selection images among the places). Describing a confirmed
    place (shrinking its box, who carries it) comes on top and is not estimated."""
    first_look = 48 + 16 * 5
    if candidate.kind != "moving_region":
        return first_look + (16 * 2 * 5 if spot_at_border(candidate, size) else 0)
    places = len(candidate.places)
    return 16 * 3 + 16 * (places + 3) * 8 + 320 + 32 * (places + 1) + 16 * places + first_look + 16 * 5


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
    return kind in (*_FIXED, "moving_region") and old.kind in _FIXED and box_iou(box, _as_box(old.box)) > 0


def _promise(candidate: Candidate) -> tuple[int, float]:
    """Test order: fixed regions (most concentrated first), moving regions, then marks of single probes."""
    order = {"region": 0, "moving_region": 1, "class_mark": 2}
    return order.get(candidate.kind, 3), -candidate.concentration


def _who_carries(rates: dict[int, float]) -> tuple[str, list[int]]:
    """A confirmed place is a ``"region"`` when images of most classes carry a version of it that is
    followed (at least half as often as the most followed class's), else (a third of the classes at
    most) a ``"class_mark"``. Returns the kind and the followed classes, most followed first (the most
    followed alone when none is)."""
    top = max(rates.values(), default=0.0)
    followed = sorted((c for c, rate in rates.items() if rate > 0 and rate >= top / 2), key=lambda c: -rates[c])
    if len(followed) > max(1, len(rates) // 3):
        return "region", []
    return "class_mark", followed or sorted(rates, key=rates.__getitem__)[-1:]


def _named_classes(bench: Bench, box: Box, followed: list[int], tested: list[int], level: float) -> list[int]:
    """The classes a confirmed place names as its carriers: ``tested`` (the class whose one-class test
    confirmed it, if any) and each other class in ``followed`` whose own one-class test confirms it
    (``level`` shared among them); none for a region no class of which is confirmed. Being followed is
    not enough: a class whose version of the place merely lacks another class's mark is followed when
    pasted into that class's images, and a weakly read mark of every class can look followed for one."""
    named = list(tested)
    others = [c for c in followed if c not in named]
    for other in others:
        if class_votes(bench, box, other, alpha=level / len(others)).decided:
            named.append(other)
    return sorted(named)


def _as_box(box: Sequence[int]) -> Box:
    """``(top, left, bottom, right)`` from a box's four numbers (a finding keeps its box as a list)."""
    return box[0], box[1], box[2], box[3]


def _most_precise(findings: list[Finding]) -> list[Finding]:
    """One finding per place: a region before a class mark there, then the smallest box, then the lowest p-value;
    a moving region over a fixed place found in the same run is that place."""
    order = {"color": 0, "region": 1, "class_mark": 2, "moving_region": 3}
    kept: list[Finding] = []
    for finding in sorted(
        findings, key=lambda f: (order[f.kind], (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), f.p_value)
    ):
        if not any(_repeats(finding.kind, _as_box(finding.box), old) for old in kept):  # fixed places come first
            kept.append(finding)
    return kept


def _message(finding: Finding, size: tuple[int, int], candidate: Candidate | None, margin: float) -> str:
    """The finding in words, with its evidence."""
    significance = f"(p = {finding.p_value:.1e}, needed <= {finding.level:.1e})"
    if finding.kind == "color":
        return (
            f"after epoch {finding.epoch} the model relies on colour: given the colour of an image of another class "
            f"(brightness kept), the prediction follows it in {finding.follow_rate:.0%} of {finding.trials} images and "
            f"stays in {finding.stay_rate:.0%}; it raises the donor's class by {margin:.0%} more than the image's own "
            f"colour given the same way in {finding.win_rate:.0%} of images {significance}; in grey, "
            f"{finding.flip_rate:.0%} of predictions change."
        )
    evidence = (
        f"the prediction follows it in {finding.follow_rate:.0%} of {finding.trials} transplants "
        f"and stays in {finding.stay_rate:.0%}"
    )
    if finding.partial:
        evidence += (
            f": it does not decide most of them (the model reads it beside the object); it raises the donor's class by {margin:.0%} "
            f"more than each of 4 pieces of the same size where the model looks in {finding.win_rate:.0%} of "
            f"images and by {margin:.0%} less than one of them in {finding.loss_rate:.0%}"
        )
    else:
        evidence += (
            f"; it raises the donor's class by {margin:.0%} more than each of 4 pieces of the same size "
            f"where the model looks in {finding.win_rate:.0%} of images "
            f"(those pieces were followed in {finding.random_follow_rate:.0%})"
        )
    evidence += f" {significance}"
    relies = "partly relies" if finding.partial else "relies"
    top, left, bottom, right = finding.box
    shape = f"{bottom - top}x{right - left}"
    where = f"(rows {top}-{bottom - 1}, columns {left}-{right - 1}, found with {finding.method})"
    if finding.kind == "moving_region":
        places = describe_places(candidate.places if candidate else [_as_box(finding.box)], size)
        moving = (
            f"after epoch {finding.epoch} the model relies on a small {shape} region at varying places "
            f"({places}, found with {finding.method})"
        )
        read = _where_read(finding.boxes_read, margin)
        if not finding.classes:
            return f"{moving}: swapped for the same kind of region from an image of another class, {evidence}.{read}"
        donors = ", ".join(map(str, finding.classes))
        return (
            f"{moving}: pasted at all those places at once from images of class "
            f"{donors}, the prediction follows in {finding.follow_rate:.0%} of {finding.trials} transplants and "
            f"stays in {finding.stay_rate:.0%}; it raises class {donors} by {margin:.0%} more than as many pieces "
            f"where the model looks in {finding.win_rate:.0%} of images, more often than by {margin:.0%} less "
            f"{significance}.{read}"
        )
    if finding.kind == "class_mark":
        return (
            f"after epoch {finding.epoch} the model {relies} on a {shape} mark at the "
            f"{describe_place(_as_box(finding.box), size)} {where} that images of class "
            f"{', '.join(map(str, finding.classes))} carry: pasted into images of other classes, {evidence}."
        )
    return (
        f"after epoch {finding.epoch} the model {relies} on a {shape} region at the "
        f"{describe_place(_as_box(finding.box), size)} {where}: pasted from an image of another class, {evidence}; "
        f"replacing it changes {finding.flip_rate:.0%} of predictions (elsewhere: {finding.random_flip_rate:.0%})."
    )


def _where_read(read: list[bool], margin: float) -> str:
    """In words, in how many probes the model reads a moving region's box (``Finding.boxes_read``)."""
    if not read:
        return ""
    if all(read):
        return f" Filling it lowers the predicted class by {margin:.0%} or more in every probe."
    return (
        f" Filling it lowers the predicted class by {margin:.0%} or more in {sum(read)} of {len(read)} probes; in "
        "the others the model does not read it there and its outline is drawn thin, in grey."
    )


def outline_findings(rgb: Tensor, findings: list[Finding], size: tuple[int, int]) -> Tensor:
    """The probes ``[P, 3, H', W']`` with each finding's box drawn (moving regions: each probe's own, thin and
    grey in probes where the model does not read it, see ``Finding.boxes_read``), as one grid."""
    scale = (rgb.shape[-2] / size[0], rgb.shape[-1] / size[1])
    rescale = lambda b: (round(b[0] * scale[0]), round(b[1] * scale[1]), round(b[2] * scale[0]), round(b[3] * scale[1]))
    outlined = rgb.clone()
    for finding in findings:
        if finding.kind == "color":
            continue
        if finding.kind == "moving_region" and len(finding.boxes) == rgb.shape[0]:
            read = finding.boxes_read if len(finding.boxes_read) == len(finding.boxes) else [True] * len(finding.boxes)
            outlined = torch.cat(
                [
                    draw_box(outlined[i : i + 1], rescale(box), **({} if seen else UNREAD_OUTLINE))
                    for i, (box, seen) in enumerate(zip(finding.boxes, read))
                ]
            )
        else:
            outlined = draw_box(outlined, rescale(finding.box))
    return make_grid(outlined)
