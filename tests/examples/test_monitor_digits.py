"""examples/monitor_digits.py trains with the monitor, logs to TensorBoard and compares fit time."""

from __future__ import annotations

import runpy
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai.monitor import tags

ROOT = Path(__file__).resolve().parents[2]


def test_monitor_digits_example(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "monitor_digits.py"))
    result = example["main"](tmp_path, epochs=2, compare=True)
    assert [run["epoch"] for run in result["runs"]] == [0, 1]
    assert result["seconds_with"] > 0 and result["seconds_without"] > 0
    output = capsys.readouterr().out
    assert "fit without the monitor" in output and "the monitor added" in output
    events = EventAccumulator(str(result["log_dir"]), size_guidance={"images": 0})
    events.Reload()
    expected = {tags.PROBES_IMAGE} | {tags.maps_image(name) for name in ("grad_cam", "occlusion", "expected_gradients")}
    assert expected <= set(events.Tags()["images"])


def test_monitor_digits_with_faithfulness(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "monitor_digits.py"))
    result = example["main"](tmp_path, epochs=2, faithfulness=True)
    metrics = result["runs"][-1]["metrics"]
    assert tags.faithfulness("occlusion", "deletion_auc_mean") in metrics
    assert tags.completeness("integrated_gradients", "relative_gap_mean") in metrics
    assert "deletion AUC" in capsys.readouterr().out
