"""Several processes: ``ddp_spawn`` hands rank 0's results to the main process; the probes are sharded over the ranks
(DDP, FSDP2) with the one-process maps, and a sharded model runs to the end without hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_xai.history import read_summary

SCRIPT = Path(__file__).with_name("processes_script.py")
ROOT = Path(__file__).resolve().parents[2]


def _run_script(mode: str, out: Path, timeout: int, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out), *(extra or [])],
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


def test_fsdp2_runs_to_the_end_on_every_rank_records_once_and_stops_together(tmp_path):
    _run_script("fsdp2", tmp_path, timeout=240)
    rank0, rank1 = (json.loads((tmp_path / f"fsdp2-rank-{rank}.json").read_text()) for rank in (0, 1))
    assert rank0["runs"] == [2] and rank0["failures"] == [{}] and rank1["runs"] == []  # rank 0 records, nothing failed
    assert rank0["findings"] == rank1["findings"] == ["planted"]  # the analyses ran on both ranks
    assert rank0["global_step"] == rank1["global_step"] == 2 and rank0["should_stop"] and rank1["should_stop"]
    summary = read_summary(tmp_path / "version_0" / "xai")
    assert [run["global_step"] for run in summary["runs"]] == [2] and [f["message"] for f in summary["findings"]] == [
        "planted"
    ]


@pytest.fixture(scope="module")
def one_process_maps(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("one")
    _run_script("maps", out, timeout=240, extra=["one"])
    return torch.load(out / "maps-one.pt")["maps"]


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_maps_sharded_over_two_processes_equal_the_one_process_maps(tmp_path, one_process_maps, kind):
    _run_script("maps", tmp_path, timeout=240, extra=[kind])
    saved = torch.load(tmp_path / f"maps-{kind}.pt")
    assert saved["runs"] == 1 and sorted(saved["maps"]) == ["expected_gradients", "grad_cam", "occlusion"]
    for key, expected in one_process_maps.items():
        assert saved["maps"][key].shape == expected.shape == (5, 1, 16, 16)
        assert float((saved["maps"][key] - expected).abs().max()) <= 1e-5, key
        assert float(expected.abs().sum()) > 0, key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_maps_on_one_gpu_equal_the_cpu_maps_and_under_fsdp_the_plain_gpu_maps(tmp_path, one_process_maps):
    """Lightning's FSDPStrategy needs a GPU (one rank here: the lent machines have one). The GPU draws other
    random numbers than the CPU, so expected gradients is compared between the two GPU runs only."""
    seen = {}
    for kind in ("cuda", "fsdp_cuda"):
        (tmp_path / kind).mkdir()
        _run_script("maps", tmp_path / kind, timeout=240, extra=[kind])
        seen[kind] = torch.load(tmp_path / kind / f"maps-{kind}.pt")
        assert seen[kind]["runs"] == 1 and sorted(seen[kind]["maps"]) == sorted(one_process_maps), kind
    for key in ("grad_cam", "occlusion"):
        assert float((seen["cuda"]["maps"][key] - one_process_maps[key]).abs().max()) <= 1e-5, key
    for key, plain in seen["cuda"]["maps"].items():
        assert plain.shape == (5, 1, 16, 16) and bool(plain.isfinite().all()) and float(plain.abs().sum()) > 0, key
        assert float((seen["fsdp_cuda"]["maps"][key] - plain).abs().max()) <= 1e-5, key


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


def test_a_model_failing_on_one_rank_only_in_the_first_checks_is_recorded_and_no_rank_waits(tmp_path):
    _run_script("one_rank_fails", tmp_path, timeout=240)  # it hung before: rank 0 waited in an exchange forever
    rank0 = json.loads((tmp_path / "one-rank-fails-rank-0.json").read_text())
    rank1 = json.loads((tmp_path / "one-rank-fails-rank-1.json").read_text())
    assert rank0["global_step"] == rank1["global_step"] == 3 * 2
    assert len(rank0["runs"]) == 3  # each run's checks failed on rank 1 alone: recorded, and taken again by every rank
    assert all("rank 1: RuntimeError: out of memory on rank 1" in error for error in rank0["runs"])
