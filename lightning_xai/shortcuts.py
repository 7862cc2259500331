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

The checks themselves are the monitor's (:mod:`lightning_xai.monitor.shortcut_detector`); this module
holds what users set and read: the settings, the findings and each run's report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import Tensor

from lightning_xai.functional.shortcut import Box, as_box

__all__ = ["Finding", "ShortcutKind", "ShortcutReport", "Shortcuts", "SuspectRegion"]

SuspectRegion = tuple[int, int, int, int] | Literal["border"]
ShortcutKind = Literal["region", "moving_region", "class_mark", "color"]


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
                boxes.append(as_box([int(v) for v in region]))
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
    most predictions (the model reads it beside the object). ``outlined_after``: a moving region's, the epoch
    after which its ``boxes`` and ``boxes_read`` were drawn: the epoch it was found, then that of each later
    run whose test confirms it again (the outlines describe the latest model that confirmed it; see
    ``ShortcutReport.outlined_again``); ``None`` for the other kinds. ``on_shortcut`` is handed a copy, as
    the finding was when found.
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
    outlined_after: int | None = None

    def __post_init__(self) -> None:
        if self.outlined_after is None and self.kind == "moving_region" and self.boxes:
            self.outlined_after = self.epoch  # outlined when found (also a finding saved before the field existed)

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
    :mod:`~lightning_xai.functional.shortcut_retests`), and ``outlined_again``: the moving region found in an
    earlier run, when this run's test confirmed it again and outlined its probes differently (its ``boxes``,
    ``boxes_read``, ``outlined_after`` and the message's last sentence are then this run's; it is not new)."""

    new: list[Finding] = field(default_factory=list)
    current: dict[str, Finding] = field(default_factory=dict)
    per_method: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    untested: int = 0
    waiting: int = 0
    outlined_again: list[Finding] = field(default_factory=list)
