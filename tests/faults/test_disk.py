"""Disk faults under ``<log_dir>/xai``: the fit finishes, one warning, TensorBoard goes on, no temporary file is left.

The read-only and full folders are real mounts (a read-only tmpfs, a tiny tmpfs filled up);
the tests skip with the reason when this process may not mount (not root, no tmpfs).
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import GradCAM, Occlusion
from lightning_xai.history import read_summary
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


@pytest.fixture
def mount_tmpfs():
    mounted: list[Path] = []

    def mount(folder: Path, options: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}): needs root and tmpfs"
            )
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fit(root, digits, **kwargs):
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4)], stability=None, shortcuts=None)
    trainer = make_trainer(root, [monitor], limit_train_batches=2, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny_model(), *loaders(digits))
    assert trainer.state.finished and trainer.global_step == 4
    return monitor, [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


def _tensorboard_tags(folder: Path) -> list[str]:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator.Tags()["images"] + accumulator.Tags()["scalars"]


def _leftovers(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob("*.tmp")]


def test_a_read_only_history_folder(tmp_path, digits16, mount_tmpfs):
    xai = mount_tmpfs(tmp_path / "version_0" / "xai", "ro,size=1m")
    monitor, said = _fit(tmp_path, digits16)
    disk = [text for text in said if "could not write" in text]
    assert len(disk) == 1 and len(said) == 1
    assert disk[0].startswith(f"AttributionMonitor could not write {xai}")
    assert "Read-only file system" in disk[0] and "training is not affected" in disk[0]
    assert list(xai.iterdir()) == []
    assert len(monitor.history) == 2  # still listed in memory
    tags = _tensorboard_tags(tmp_path / "version_0")
    assert "xai/maps/grad_cam" in tags and "xai/maps/occlusion" in tags
    assert "goes on logging to its loggers" in disk[0]


def test_a_read_only_history_folder_without_a_logger(tmp_path, digits16, mount_tmpfs):
    xai = mount_tmpfs(tmp_path / "xai", "ro,size=1m")  # logger=False: the history goes under default_root_dir
    monitor, said = _fit(tmp_path, digits16, logger=False)
    assert len(said) == 1 and said[0].startswith(f"AttributionMonitor could not write {xai}")
    assert "has no logger to go on with, so it records nothing more (training is not affected)" in said[0]
    assert len(monitor.history) == 2 and all(run["file"] is None for run in monitor.history)


def test_a_full_disk_leaves_no_temporary_file(tmp_path, digits16, mount_tmpfs):
    disk = mount_tmpfs(tmp_path / "small_disk", "size=256k")
    xai = disk / "xai"
    xai.mkdir()
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_0" / "xai").symlink_to(xai)
    filler = disk / "filler"
    with open(filler, "wb") as handle:  # leave a few pages: the first small files fit, a run's maps do not
        try:
            handle.write(b"\0" * (256 - 12) * 1024)
        except OSError:
            pass
    monitor, said = _fit(tmp_path, digits16)
    disk = [text for text in said if "could not write" in text]
    assert len(disk) == 1 and "No space left on device" in disk[0], said
    assert "runs/step-00000002.pt" in disk[0]  # the first run file did not fit: it was cut short and removed
    if (xai / "summary.json").exists():  # what was written before the disk filled up stays consistent
        assert all((xai / run["file"]).is_file() for run in read_summary(xai)["runs"] if run["file"])
    assert _leftovers(xai) == []
    assert len(monitor.history) == 2
    assert "xai/maps/grad_cam" in _tensorboard_tags(tmp_path / "version_0")


def test_files_follow_the_umask(tmp_path, digits16):
    previous = os.umask(0o027)
    try:
        monitor, said = _fit(tmp_path, digits16)
    finally:
        os.umask(previous)
    files = [path for path in (tmp_path / "version_0" / "xai").rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"summary.json", "probes.pt", "step-00000002.pt", "step-00000004.pt"}
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in files} == {path.name: oct(0o640) for path in files}
    assert not said and _leftovers(tmp_path) == []
