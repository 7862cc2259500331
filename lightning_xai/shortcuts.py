"""Flagging shortcut learning while training runs: where the heat sits, confirmed by intervention.

Each validation run, for every method, the boxes where the probes' attribution mass is most
concentrated (the same place in images of every class) become candidates, together with any
regions the user suspects. Each candidate is then tested on validation images by intervention
(:func:`lightning_xai.functional.shortcut.intervene`): a finding is *confirmed* when replacing
the box changes many predictions while equally sized boxes elsewhere change few, or when
pasting the box from an image of another class makes the prediction follow the patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from lightning_xai.functional._batching import BatchSize
from lightning_xai.functional.shortcut import Box, box_iou, concentrated_boxes, intervene, mass_outside
from lightning_xai.render import draw_box, make_grid

SuspectRegion = Union[tuple[int, int, int, int], Literal["border"]]


@dataclass(frozen=True)
class Shortcuts:
    """Settings of shortcut detection.

    Args:
        box_sides: candidate box sides as fractions of the shorter image side.
        min_concentration: a box is a candidate only if the probes' mean attribution mass in it is
            at least this many times its share of the image area (heat at the same place in
            images of every class); suspect regions are tested regardless.
        min_flip_rate: share of predictions that replacing the box must change...
        min_flip_ratio: ...and how many times more than boxes elsewhere change;
        min_drop_ratio: ...and how many times more the predicted class's probability must fall.
        min_follow_rate: alternatively, share of transplants after which the prediction follows
            the pasted patch.
        test_images: validation images used for the interventions (the probes if fewer are seen).
        n_random: equally sized boxes elsewhere for comparison.
        fill: what replaces a box: ``"mean"`` (the image's channel means) or ``"blur"``.
        suspect_regions: boxes ``(top, left, bottom, right)`` always tested, or ``"border"``
            for strips along the four edges.
        object_masks: per-probe object masks ``[P, 1, H, W]`` (given probes only): the share of
            attribution outside the object is logged per method.

    Example:
        >>> Shortcuts(suspect_regions=["border"]).candidate_sides((32, 32))
        [4, 6, 8]
    """

    box_sides: tuple[float, ...] = (1 / 8, 3 / 16, 1 / 4)
    min_concentration: float = 2.5
    min_flip_rate: float = 0.3
    min_flip_ratio: float = 3.0
    min_drop_ratio: float = 5.0
    min_follow_rate: float = 0.5
    test_images: int = 64
    n_random: int = 8
    fill: Literal["mean", "blur"] = "mean"
    suspect_regions: Sequence[SuspectRegion] = ()
    object_masks: Tensor | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("min_flip_rate", "min_follow_rate"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"`{name}` must be a share in (0, 1], got {getattr(self, name)!r}.")
        if self.fill not in ("mean", "blur"):
            raise ValueError(f"`fill` must be one of ['mean', 'blur'], got {self.fill!r}.")
        for region in self.suspect_regions:
            if region != "border" and not (isinstance(region, (tuple, list)) and len(region) == 4):
                raise ValueError(f"`suspect_regions` must hold (top, left, bottom, right) boxes or 'border', got {region!r}.")

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
                boxes += [(0, 0, strip, width), (height - strip, 0, height, width), (0, 0, height, strip), (0, width - strip, height, width)]
            else:
                boxes.append(tuple(int(v) for v in region))  # type: ignore[arg-type]
        return boxes


@dataclass
class Finding:
    """A region the model relies on. ``box`` is ``[top, left, bottom, right]`` in input pixels."""

    epoch: int
    global_step: int
    method: str
    box: list[int]
    score: float
    confirmed: bool
    message: str
    flip_rate: float
    random_flip_rate: float
    drop_ratio: float
    follow_rate: float
    keep_rate: float

    def to_dict(self) -> dict[str, Any]:
        """JSON- and checkpoint-safe dict."""
        return asdict(self)


def describe_place(box: Box, size: tuple[int, int]) -> str:
    """Where a box lies, in words: ``"top-left corner"``, ``"bottom edge"``, ``"centre"``...

    Example:
        >>> describe_place((1, 1, 5, 5), (32, 32)), describe_place((14, 14, 18, 18), (32, 32))
        ('top-left corner', 'centre')
    """
    rows = ("top", "middle", "bottom")[min(2, int(3 * (box[0] + box[2]) / 2 / size[0]))]
    cols = ("left", "centre", "right")[min(2, int(3 * (box[1] + box[3]) / 2 / size[1]))]
    if rows == "middle" and cols == "centre":
        return "centre"
    if rows == "middle":
        return f"{cols} edge"
    if cols == "centre":
        return f"{rows} edge"
    return f"{rows}-{cols} corner"


class ShortcutDetector:
    """Runs candidate search and interventions for each method; remembers what was reported."""

    def __init__(self, settings: Shortcuts) -> None:
        self.settings = settings
        self.findings: list[Finding] = []

    def check(
        self, model: nn.Module, displays: dict[str, Tensor], test_images: Tensor, *, epoch: int, step: int, batch_size: BatchSize | None = None
    ) -> tuple[dict[str, Finding], list[Finding], dict[str, float]]:
        """Tests this run's candidates (``batch_size``: images per forward pass of the interventions).

        Returns:
            (each method's best candidate, the confirmed findings not reported before, scalars to log).
        """
        size = tuple(test_images.shape[-2:])
        metrics: dict[str, float] = {}
        current: dict[str, Finding] = {}
        new: list[Finding] = []
        tested: dict[Box, dict[str, float]] = {}  # methods often point at the same boxes: test each once
        for name, maps in displays.items():
            found = concentrated_boxes(maps, self.settings.candidate_sides(size))  # type: ignore[arg-type]
            metrics[f"shortcut/{name}/peak_concentration"] = found[0][1] if found else 0.0
            best = self._best_candidate(model, found, test_images, size, tested, batch_size)
            if best is None:
                continue
            box, scores = best
            finding = self._finding(name, box, scores, size, epoch, step)  # type: ignore[arg-type]
            current[name] = finding
            metrics.update({f"shortcut/{name}/{key}": value for key, value in scores.items() if key != "concentration"})
            metrics[f"shortcut/{name}/confirmed"] = float(finding.confirmed)
            if self.settings.object_masks is not None and self.settings.object_masks.shape[0] == maps.shape[0]:
                metrics[f"shortcut/{name}/outside_mass_mean"] = float(mass_outside(maps, self.settings.object_masks).mean())
            if finding.confirmed and not self._already_reported(finding):
                new.append(finding)
        new = _smallest_per_region(new)
        self.findings.extend(new)
        return current, new, metrics

    def _best_candidate(
        self,
        model: nn.Module,
        found: list[tuple[Box, float]],
        images: Tensor,
        size: tuple[int, int],
        tested: dict[Box, dict[str, float]],
        batch_size: BatchSize | None,
    ) -> tuple[Box, dict[str, float]] | None:
        candidates = [(box, c) for box, c in found if c >= self.settings.min_concentration]
        candidates += [(box, 0.0) for box in self.settings.suspects(size)]
        scored = []
        for box, concentration in candidates:
            if box not in tested:
                tested[box] = intervene(
                    model, images, box, fill=self.settings.fill, n_random=self.settings.n_random,
                    generator=torch.Generator().manual_seed(0), batch_size=batch_size,
                )
            scored.append((box, {**tested[box], "concentration": concentration}))
        if not scored:
            return None
        confirmed = [item for item in scored if self._confirms(item[1])]
        if confirmed:
            return _most_precise(confirmed)
        return max(scored, key=lambda item: self._score(item[1]))

    def _confirms(self, scores: dict[str, float]) -> bool:
        s = self.settings
        by_ablation = (
            scores["flip_rate"] >= s.min_flip_rate
            and scores["flip_rate"] >= s.min_flip_ratio * scores["random_flip_rate"]
            and scores["drop_ratio"] >= s.min_drop_ratio
        )
        return by_ablation or scores["follow_rate"] >= s.min_follow_rate

    @staticmethod
    def _score(scores: dict[str, float]) -> float:
        return max(scores["flip_rate"] - scores["random_flip_rate"], scores["follow_rate"])

    def _finding(self, method: str, box: Box, scores: dict[str, float], size: tuple[int, int], epoch: int, step: int) -> Finding:
        height, width = box[2] - box[0], box[3] - box[1]
        message = (
            f"after epoch {epoch} the model relies on a {height}x{width} region at the {describe_place(box, size)} "
            f"(rows {box[0]}-{box[2] - 1}, columns {box[1]}-{box[3] - 1}, found with {method}): replacing it changes "
            f"{scores['flip_rate']:.0%} of predictions (boxes of that size elsewhere: {scores['random_flip_rate']:.0%})"
        )
        if scores["follow_rate"] >= 0.2:
            message += f"; pasted from an image of another class, the prediction follows it {scores['follow_rate']:.0%} of the time"
        return Finding(
            epoch=epoch, global_step=step, method=method, box=list(box), score=self._score(scores),
            confirmed=self._confirms(scores), message=message + ".",
            flip_rate=scores["flip_rate"], random_flip_rate=scores["random_flip_rate"], drop_ratio=scores["drop_ratio"],
            follow_rate=scores["follow_rate"], keep_rate=scores["keep_rate"],
        )

    def _already_reported(self, finding: Finding) -> bool:
        return any(box_iou(tuple(finding.box), tuple(old.box)) > 0 for old in self.findings)  # type: ignore[arg-type]


def _most_precise(candidates: list[tuple[Box, dict[str, float]]]) -> tuple[Box, dict[str, float]]:
    """The smallest box that carries nearly (80%) as much evidence as the best one.

    A box inside the real region is confirmed too but explains less; a box around it explains
    as much but is less precise.
    """
    best = max(_evidence(scores) for _, scores in candidates)
    strong = [item for item in candidates if _evidence(item[1]) >= 0.8 * best]
    return min(strong, key=lambda item: (_area(item[0]), -_evidence(item[1])))


def _evidence(scores: dict[str, float]) -> float:
    """Necessity (predictions change without the box) plus sufficiency (the box alone keeps them, pasted it is followed)."""
    return scores["flip_rate"] + scores["keep_rate"] + scores["follow_rate"]


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _smallest_per_region(findings: list[Finding]) -> list[Finding]:
    """Of findings whose boxes overlap (several methods, one region), keeps the most precise one (see ``_most_precise``)."""
    overlaps = lambda a, b: box_iou(tuple(a.box), tuple(b.box)) > 0  # type: ignore[arg-type]  # noqa: E731
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (_area(tuple(f.box)), -_evidence(asdict(f)))):  # type: ignore[arg-type]
        best_nearby = max(_evidence(asdict(other)) for other in findings if overlaps(finding, other))
        if _evidence(asdict(finding)) >= 0.8 * best_nearby and not any(overlaps(finding, other) for other in kept):
            kept.append(finding)
    return kept


def outline_findings(rgb: Tensor, findings: list[Finding], size: tuple[int, int]) -> Tensor:
    """The probes ``[P, 3, H', W']`` with each finding's box drawn on them, as one grid image."""
    scale = (rgb.shape[-2] / size[0], rgb.shape[-1] / size[1])
    outlined = rgb.clone()
    for finding in findings:
        top, left, bottom, right = finding.box
        box = (round(top * scale[0]), round(left * scale[1]), round(bottom * scale[0]), round(right * scale[1]))
        outlined = draw_box(outlined, box)
    return make_grid(outlined)
