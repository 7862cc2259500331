"""The on-disk history: atomic files, summary.json, sections, state round trip, moved and copied folders."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from lightning_xai.history import (
    SUMMARY_FORMAT,
    AttributionHistory,
    HistoryError,
    find_history_folder,
    load_run,
    read_summary,
)


def _record(history: AttributionHistory, step: int) -> dict:
    return history.record(
        global_step=step,
        epoch=step // 10,
        stage="fit",
        maps={"grad_cam": torch.rand(2, 1, 4, 4, dtype=torch.float64)},
        targets=torch.tensor([0, 1]),
        predictions=torch.tensor([0, 0]),
        probabilities=torch.tensor([0.9, 0.4]),
        metrics={"seconds/total": 0.5},
        skipped=["occlusion"],
    )


def test_runs_are_written_and_listed(tmp_path):
    history = AttributionHistory(tmp_path)
    _record(history, 10)
    _record(history, 10)  # e.g. trainer.validate() after fit, at the same step
    _record(history, 20)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["format"] == SUMMARY_FORMAT and summary["fit"] == history.fit
    assert [run["file"] for run in summary["runs"]] == [
        "runs/step-00000010.pt",
        "runs/step-00000010-1.pt",
        "runs/step-00000020.pt",
    ]
    assert summary["runs"][0]["skipped"] == ["occlusion"] and summary["runs"][0]["metrics"] == {"seconds/total": 0.5}
    loaded = history.load_run(summary["runs"][2])
    assert loaded["maps"]["grad_cam"].dtype == torch.float32 and loaded["global_step"] == 20
    assert not [p for p in tmp_path.rglob(".*")], "temporary files left behind"


def test_every_write_keeps_the_sections_it_was_not_given(tmp_path):
    history = AttributionHistory(tmp_path)
    history.write_summary(findings=[{"method": "grad_cam", "box": [0, 0, 2, 2]}])
    history.write_summary(settled={"grad_cam": None})
    _record(history, 1)
    history.write_summary(sanity_check={"passed": True})
    summary = read_summary(tmp_path)
    assert summary["findings"] == [{"method": "grad_cam", "box": [0, 0, 2, 2]}]
    assert summary["settled"] == {"grad_cam": None} and summary["sanity_check"] == {"passed": True}
    assert len(summary["runs"]) == 1
    with pytest.raises(ValueError, match=re.escape("`sections` may not be named format, fit, runs; got ['runs'].")):
        history.write_summary(runs=[])
    with pytest.raises(ValueError, match=re.escape("`extra` may not use the keys of the entry itself")):
        history.record(
            global_step=2,
            epoch=0,
            stage="fit",
            maps={},
            targets=torch.zeros(1),
            predictions=torch.zeros(1),
            probabilities=torch.zeros(1),
            metrics={},
            extra={"file": "/etc/passwd"},
        )


def test_state_round_trip_is_relative_and_weights_only_safe(tmp_path):
    history = AttributionHistory(tmp_path / "first")
    _record(history, 5)
    history.write_summary(findings=[{"step": 5}])
    state = history.state_dict()
    assert state == {"fit": history.fit, "runs": [read_summary(tmp_path / "first")["runs"][0]]}
    assert state["runs"][0]["file"] == "runs/step-00000005.pt"
    torch.save(state, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True) == state
    resumed = AttributionHistory(tmp_path / "first")
    resumed.load_state_dict(
        {**state, "stability": {}, "probe_fingerprint": 0.5}
    )  # the monitor's other keys are ignored
    _record(resumed, 6)
    summary = resumed.load_summary()
    assert [run["global_step"] for run in summary["runs"]] == [5, 6] and summary["fit"] == history.fit
    assert summary["findings"] == [{"step": 5}], "a resume must keep the sections already in summary.json"


def test_failed_runs_are_listed_without_maps(tmp_path):
    history = AttributionHistory(tmp_path)
    entry = history.record_failure(
        global_step=7, epoch=1, stage="fit", error="OSError: [Errno 28] No space left on device"
    )
    assert read_summary(tmp_path)["runs"] == [entry] and entry["methods"] == [] and entry["file"] is None
    message = (
        f"{tmp_path / 'summary.json'}, step 7: this run has no maps file (OSError: [Errno 28] No space left on device)."
    )
    with pytest.raises(HistoryError, match=re.escape(message)):
        load_run(tmp_path, entry)


def test_killing_the_writer_leaves_every_listed_run_readable(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    writer = subprocess.Popen(
        [sys.executable, str(root / "tests" / "history_writer_script.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    written = 0
    while written < 5:  # let it write a few runs, then kill it mid-write
        line = writer.stdout.readline()
        assert line, "the writer script stopped before writing five runs"
        written = int(line)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    runs = read_summary(tmp_path)["runs"]
    assert len(runs) >= 5
    assert [run["global_step"] for run in runs] == list(range(1, len(runs) + 1))
    for run in runs:
        assert load_run(tmp_path, run)["maps"]["occlusion"].shape == (64, 3, 64, 64)
    resumed = AttributionHistory.open(tmp_path, resume_state={"fit": read_summary(tmp_path)["fit"], "runs": runs})
    assert resumed.folder == tmp_path and not [p for p in tmp_path.rglob(".*")], (
        "a resume removes a killed writer's temporary file"
    )


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_moved_or_copied_folder_keeps_working_without_the_original(tmp_path, how):
    original = tmp_path / "run" / "xai"
    history = AttributionHistory(original)
    steps = [_record(history, step)["global_step"] for step in (4, 8)]
    maps = [history.load_run(run)["maps"]["grad_cam"] for run in history.runs]
    elsewhere = tmp_path / "elsewhere" / "xai"
    if how == "copy":
        shutil.copytree(tmp_path / "run", tmp_path / "elsewhere")
        shutil.rmtree(tmp_path / "run")
    else:
        shutil.move(tmp_path / "run", tmp_path / "elsewhere")
    runs = read_summary(find_history_folder(tmp_path / "elsewhere"))["runs"]
    assert [run["global_step"] for run in runs] == steps
    for run, expected in zip(runs, maps):
        torch.testing.assert_close(load_run(elsewhere, run)["maps"]["grad_cam"], expected)


def test_a_copied_folder_never_reads_the_original_files(tmp_path):
    original = tmp_path / "run" / "xai"
    _record(AttributionHistory(original), 4)
    shutil.copytree(original, tmp_path / "copy")
    (original / "runs" / "step-00000004.pt").write_bytes(b"the original was changed afterwards")
    run = read_summary(tmp_path / "copy")["runs"][0]
    assert load_run(tmp_path / "copy", run)["global_step"] == 4
    with pytest.raises(HistoryError, match="is truncated or not a lightning_xai run file"):
        load_run(original, run)


def test_find_history_folder_with_numbered_histories(tmp_path):
    AttributionHistory(tmp_path / "version_0" / "xai-1").write_summary()
    assert find_history_folder(tmp_path / "version_0") == tmp_path / "version_0" / "xai-1"
    assert find_history_folder(tmp_path) == tmp_path / "version_0" / "xai-1"
    AttributionHistory(tmp_path / "version_0" / "xai").write_summary()
    message = f"{tmp_path / 'version_0'} holds several histories ({tmp_path / 'version_0' / 'xai'}, {tmp_path / 'version_0' / 'xai-1'}); name one of them."
    with pytest.raises(HistoryError, match=re.escape(message)):
        find_history_folder(tmp_path / "version_0")
    assert find_history_folder(tmp_path / "version_0" / "xai") == tmp_path / "version_0" / "xai"
    with pytest.raises(HistoryError, match=re.escape(f"{tmp_path / 'nowhere'} holds no lightning_xai history")):
        find_history_folder(tmp_path / "nowhere")
