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


def test_killing_the_writer_leaves_every_listed_run_readable(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from lightning_xai.history import load_run, read_summary

    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    writer = subprocess.Popen([sys.executable, str(root / "tests" / "history_writer_script.py"), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 60
    written = 0
    while written < 5 and time.monotonic() < deadline:  # let it write a few runs, then kill it mid-write
        written = int(writer.stdout.readline() or 0)
    time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    runs = read_summary(tmp_path)["runs"]
    assert len(runs) >= 5
    assert [run["global_step"] for run in runs] == list(range(1, len(runs) + 1))
    for run in runs:
        assert load_run(tmp_path, run)["maps"]["occlusion"].shape == (64, 3, 64, 64)


def test_damaged_and_foreign_files_get_clear_messages(tmp_path):
    import pytest

    from lightning_xai.history import HistoryError, load_run, read_summary

    history = AttributionHistory(tmp_path)
    entry = _record(history, 1)
    (tmp_path / "notes.txt").write_text("a user's own file")  # foreign files are ignored
    assert len(read_summary(tmp_path)["runs"]) == 1
    run_file = tmp_path / entry["file"]
    run_file.write_bytes(run_file.read_bytes()[:100])
    with pytest.raises(HistoryError, match=f"{run_file} is truncated or not a lightning_xai run file"):
        load_run(tmp_path, entry)
    summary = tmp_path / "summary.json"
    summary.write_text(summary.read_text()[:40])
    with pytest.raises(HistoryError, match=f"{summary} is truncated or not JSON"):
        read_summary(tmp_path)
    summary.write_text('{"format": "someone-else/2", "runs": []}')
    with pytest.raises(HistoryError, match=r"is not a lightning_xai history \(format 'someone-else/2', expected 'lightning_xai.history/1'\)"):
        read_summary(tmp_path)
    with pytest.raises(HistoryError, match="does not exist: not a lightning_xai history folder"):
        read_summary(tmp_path / "elsewhere")
