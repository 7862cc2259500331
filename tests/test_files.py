"""Atomic writes under disk faults: no temporary file left behind, the umask followed, errors naming the file."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lightning_xai import _files
from lightning_xai._files import atomic_copy, atomic_write_bytes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


def _mount_tmpfs(folder: Path, options: str) -> None:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    folder.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: writes past that fail with ENOSPC."""
    folder = tmp_path / "tiny"
    _mount_tmpfs(folder, "size=64k")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only_folder(tmp_path):
    """A tmpfs remounted read-only (chmod 0555 does not stop root), holding one file written before."""
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=1m")
    (folder / "summary.json").write_bytes(b"old")
    if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(folder)], check=False)
        pytest.skip("cannot remount a tmpfs read-only here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    written = atomic_write_bytes(tmp_path / "a.json", b"{}")
    copied = atomic_copy(written, tmp_path / "copy" / "b.json")
    assert written.stat().st_mode & 0o777 == mode
    assert copied.read_bytes() == b"{}" and copied.stat().st_mode & 0o777 == mode


def test_a_replaced_file_gets_the_umask_too(tmp_path, umask):
    umask(0o077)
    atomic_write_bytes(tmp_path / "a.json", b"1")
    umask(0o022)
    atomic_write_bytes(tmp_path / "a.json", b"2")
    assert (tmp_path / "a.json").read_bytes() == b"2" and (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_a_write_failing_half_way_leaves_no_temporary_file_and_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "runs" / "step-00000001.pt"
    atomic_write_bytes(target, b"old")
    real_write = os.write

    def full_after_some_bytes(handle: int, data: bytes) -> int:
        real_write(handle, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "write", full_after_some_bytes)
    with pytest.raises(
        OSError, match=re.escape(f"[Errno {errno.ENOSPC}] No space left on device: '{target}'")
    ) as raised:
        atomic_write_bytes(target, b"new" * 1000)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), PermissionError(errno.EACCES, "Permission denied"), RuntimeError("boom")]
)
def test_any_failure_at_the_rename_removes_the_temporary_file(tmp_path, monkeypatch, error):
    def failing_replace(source: object, destination: object) -> None:
        raise error

    monkeypatch.setattr(_files.os, "replace", failing_replace)
    with pytest.raises(type(error)):
        atomic_write_bytes(tmp_path / "summary.json", b"{}")
    with pytest.raises(type(error)):
        atomic_copy(__file__, tmp_path / "copy.py")
    assert list(tmp_path.iterdir()) == []


def test_a_permission_error_keeps_its_type_and_names_the_file(tmp_path, monkeypatch):
    def refused(*args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/.summary.json.abc.tmp")

    monkeypatch.setattr(_files.os, "open", refused)
    target = tmp_path / "summary.json"
    with pytest.raises(PermissionError, match=re.escape(f"[Errno {errno.EACCES}] Permission denied: '{target}'")):
        atomic_write_bytes(target, b"{}")


def test_a_full_disk_raises_enospc_naming_the_file_and_leaves_nothing(tiny_disk):
    target = tiny_disk / "runs" / "step-00000001.pt"
    with pytest.raises(OSError, match=re.escape(f"No space left on device: '{target}'")) as raised:
        atomic_write_bytes(target, os.urandom(256 * 1024))
    assert raised.value.errno == errno.ENOSPC
    assert not target.exists() and _leftovers(tiny_disk) == []
    atomic_write_bytes(tiny_disk / "small.json", b"{}")  # the space was given back
    assert (tiny_disk / "small.json").read_bytes() == b"{}"


def test_a_read_only_folder_raises_an_oserror_naming_the_file(read_only_folder):
    for target in (read_only_folder / "summary.json", read_only_folder / "runs" / "step-00000001.pt"):
        with pytest.raises(OSError, match=re.escape(f"Read-only file system: '{target}'")) as raised:
            atomic_write_bytes(target, b"new")
        assert raised.value.errno == errno.EROFS
    assert (read_only_folder / "summary.json").read_bytes() == b"old" and _leftovers(read_only_folder) == []
