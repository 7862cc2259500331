"""examples/decoy_digits.py: the decoy is flagged where it is, the clean control stays silent."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai.monitor import tags

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    return runpy.run_path(str(ROOT / "examples" / "decoy_digits.py"))


def test_decoy_is_flagged_at_the_swatch(example, tmp_path, capsys):
    with pytest.warns(
        UserWarning,
        match="AttributionMonitor found a likely shortcut: after epoch 0 the model (partly )?relies on a 4x4 region at the "
        "top-left corner",  # partly: it moves predictions clearly without deciding most (the digit still counts)
    ):
        result = example["main"](tmp_path, epochs=2, seed=0)
    assert result["first_epoch"] == 0 and result["iou"] >= 0.5
    assert result["val_accuracy"] > result["accuracy_without_decoy"] + 0.2  # accuracy hides the shortcut
    finding = result["findings"][0]
    assert (
        set(finding) >= {"epoch", "global_step", "method", "box", "score", "confirmed", "message"}
        and finding["confirmed"]
    )
    log_dir = tmp_path / "lightning_logs" / "version_0"
    summary = json.loads((log_dir / "xai" / "summary.json").read_text())
    assert summary["findings"] == result["findings"]
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    method = finding["method"]
    assert tags.shortcut_image(method) in events.Tags()["images"]
    p_values = events.Scalars(tags.shortcut(method, "p_value"))
    assert len(p_values) == 2 and p_values[0].value <= finding["level"]
    assert re.search("the model (partly )?relies on", capsys.readouterr().out)


def test_clean_control_has_no_finding(example, tmp_path):
    result = example["main"](tmp_path, epochs=2, seed=0, clean=True)
    assert result["findings"] == [] and result["first_epoch"] is None
