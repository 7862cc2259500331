"""The shortcut checks on a real GPU find what they find on the CPU: the same kinds, boxes, per-probe boxes,
classes and probes read, for a fixed region, a moving one, a class mark, a colour cue and a mark along the
border that the model reads in a few images only (outlined where its content recurs). Skipped without a CUDA
device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.functional import shortcut_moving as moving_module
from lightning_xai.monitor.shortcut_detector import ShortcutDetector
from lightning_xai.shortcuts import Shortcuts
from tests.functional.test_shortcut_moving import BAND, _objects_with_border_marks
from tests.functional.test_shortcut_moving import SIZE as BORDER_SIZE
from tests.functional.test_shortcut_recurrence import ReadsObjectAndTopMark
from tests.monitor.test_shortcut_detector import (
    CORNERS,
    ReadsColor,
    ReadsMark,
    ReadsShade,
    _heat,
    _objects,
    _shaded,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _fixed() -> tuple[nn.Module, dict, torch.Tensor]:
    images, _ = _shaded([CORNERS[0]] * 64)
    return ReadsShade([CORNERS[0]]), _heat([CORNERS[0]] * 16), images


def _moving() -> tuple[nn.Module, dict, torch.Tensor]:
    places = [CORNERS[i % 4] for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    images, _ = _shaded(places)
    return ReadsShade(CORNERS), _heat(places), images


def _class_mark() -> tuple[nn.Module, dict, torch.Tensor]:
    images, labels = _objects()
    images[labels == 0, :, 0:4, 12:16] = 1.0
    boxes = [(0, 12, 4, 16) if label == 0 else (5, 5, 9, 9) for label in labels.tolist()]
    return ReadsMark(), _heat(boxes), images


def _colour() -> tuple[nn.Module, dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 3
    images = torch.rand(64, 3, 16, 16, generator=generator) * 0.2
    images[torch.arange(64), labels] += 0.6
    return ReadsColor(), {"heat": torch.rand(16, 1, 16, 16, generator=generator)}, images


def _border_mark() -> tuple[nn.Module, dict, torch.Tensor]:
    images, _ = _objects_with_border_marks(192, seed=0)
    centre = torch.zeros(16, 1, BORDER_SIZE, BORDER_SIZE)
    centre[:, :, BAND:-BAND, BAND:-BAND] = 1.0
    return ReadsObjectAndTopMark(), {"heat": centre}, images


CASES = {"fixed": _fixed, "moving": _moving, "class mark": _class_mark, "colour": _colour, "border": _border_mark}


def _found(case: str, device: str) -> list[tuple]:
    model, displays, images = CASES[case]()
    images = images.to(device)
    report = ShortcutDetector(Shortcuts()).check(
        model.to(device).eval(), displays, images, epoch=2, step=30, probe_images=images[:16]
    )
    return [(f.kind, f.box, f.boxes, f.classes, f.boxes_read, f.method) for f in report.new]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_checks_on_the_gpu_find_what_they_find_on_the_cpu(case, monkeypatch):
    monkeypatch.setattr(moving_module, "EVIDENCE_NEAR_PLACES", 1.0)  # shade alone counts as a mark (see there)
    on_cpu = _found(case, "cpu")
    assert on_cpu, f"the {case} case finds nothing on the CPU: it compares nothing"
    assert _found(case, "cuda") == on_cpu
