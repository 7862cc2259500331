"""DDP with two CPU processes (gloo): no hang, rank 0 computes and logs, rank 1 stays idle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("ddp_script.py")
ROOT = Path(__file__).resolve().parents[2]


def test_ddp_two_cpu_processes(tmp_path):
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank-0.json").read_text())
    rank1 = json.loads((tmp_path / "rank-1.json").read_text())
    assert rank0["runs"] == [3, 6] and rank0["has_session"]
    assert rank1["runs"] == [] and not rank1["has_session"]
    assert rank0["probe_labels"] == rank1["probe_labels"]  # rank 0's choice, broadcast to all
    assert rank0["global_step"] == rank1["global_step"] == 6
    runs = sorted(p.name for p in (tmp_path / "version_0" / "xai" / "runs").iterdir())
    assert runs == ["step-00000003.pt", "step-00000006.pt"]


def test_ddp_stop_on_shortcut_stops_every_rank_together(tmp_path):
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "decoy"],
        capture_output=True,
        text=True,
        timeout=400,
        env=environment,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((tmp_path / "decoy-rank-0.json").read_text())
    rank1 = json.loads((tmp_path / "decoy-rank-1.json").read_text())
    assert rank0["findings"] >= 1 and rank1["findings"] == 0  # only rank 0 computes
    assert (
        rank0["global_step"] == rank1["global_step"] and rank0["epoch"] == rank1["epoch"] < 9
    )  # stopped early, together
