"""Several processes: ``ddp_spawn`` hands rank 0's results to the main process; sharded strategies are refused, never hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning_xai.history import read_summary

SCRIPT = Path(__file__).with_name("processes_script.py")
ROOT = Path(__file__).resolve().parents[2]


def _run_script(mode: str, out: Path, timeout: int) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_ddp_spawn_with_the_defaults_hands_findings_and_history_to_the_main_process(tmp_path):
    _run_script("spawn", tmp_path, timeout=300)
    seen = json.loads((tmp_path / "spawn.json").read_text())
    assert seen["runs"] == [2, 4] and seen["files"] == ["runs/step-00000002.pt", "runs/step-00000004.pt"]
    assert seen["findings"] == ["planted"]
    assert sorted(seen["settled"]) == ["expected_gradients", "grad_cam", "occlusion"]
    assert all(value == {"epoch": 1, "global_step": 4} for value in seen["settled"].values())
    assert not seen["channel_left"]  # the hand-over file was read and removed
    summary = read_summary(tmp_path / "version_0" / "xai")
    assert [run["global_step"] for run in summary["runs"]] == [2, 4] and summary["findings"][0]["message"] == "planted"


def test_fsdp2_is_refused_at_setup_on_every_rank_and_never_hangs(tmp_path):
    _run_script("fsdp2", tmp_path, timeout=240)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"fsdp2-rank-{rank}.json").read_text())
        assert seen["global_step"] == 0
        assert seen["error"].startswith(
            "AttributionMonitor cannot explain a model sharded by ModelParallelStrategy yet: with a sharded model every rank "
            "must take part in each forward pass"
        )


def test_a_run_near_the_process_group_timeout_is_warned_about_with_the_figures(tmp_path):
    _run_script("timeout", tmp_path, timeout=300)
    rank0 = json.loads((tmp_path / "timeout-rank-0.json").read_text())
    rank1 = json.loads((tmp_path / "timeout-rank-1.json").read_text())
    assert rank0["runs"] == 2 and rank1["said"] == []
    assert [text for text in rank0["said"] if "timeout" in text] == [
        "AttributionMonitor: its run at step 2 took 200s on rank 0 while the other 1 rank waited: 67% of the process "
        "group's timeout (300s). A run longer than the timeout ends the fit on every rank: pass `max_seconds=` (e.g. 75), "
        "use fewer probes or cheaper methods, or raise the strategy's `timeout`. This warning is shown once."
    ]
