"""The on-disk history: atomic files, summary.json, state round trip."""

from __future__ import annotations

import json

import torch

from lightning_xai.history import SUMMARY_FORMAT, AttributionHistory


def _record(history: AttributionHistory, step: int) -> dict:
    return history.record(
        global_step=step, epoch=step // 10, stage="fit", maps={"grad_cam": torch.rand(2, 1, 4, 4, dtype=torch.float64)},
        targets=torch.tensor([0, 1]), predictions=torch.tensor([0, 0]), probabilities=torch.tensor([0.9, 0.4]),
        metrics={"seconds/total": 0.5}, skipped=["occlusion"],
    )


def test_runs_are_written_and_listed(tmp_path):
    history = AttributionHistory(tmp_path)
    _record(history, 10)
    _record(history, 10)  # e.g. trainer.validate() after fit, at the same step
    _record(history, 20)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["format"] == SUMMARY_FORMAT
    assert [run["file"] for run in summary["runs"]] == ["runs/step-00000010.pt", "runs/step-00000010-1.pt", "runs/step-00000020.pt"]
    assert summary["runs"][0]["skipped"] == ["occlusion"] and summary["runs"][0]["metrics"] == {"seconds/total": 0.5}
    loaded = history.load_run(summary["runs"][2])
    assert loaded["maps"]["grad_cam"].dtype == torch.float32 and loaded["global_step"] == 20
    assert not [p for p in tmp_path.rglob(".*")], "temporary files left behind"


def test_state_round_trip_uses_absolute_paths(tmp_path):
    history = AttributionHistory(tmp_path / "first")
    _record(history, 5)
    state = history.state_dict()
    resumed = AttributionHistory(tmp_path / "second")
    resumed.load_state_dict(state)
    _record(resumed, 6)
    runs = resumed.load_summary()["runs"]
    assert runs[0]["file"] == str((tmp_path / "first" / "runs" / "step-00000005.pt").resolve())
    assert resumed.load_run(runs[0])["global_step"] == 5 and resumed.load_run(runs[1])["global_step"] == 6
    torch.save(state, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True) == state
