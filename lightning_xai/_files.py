"""Writing files so that a crash, a full disk or a read-only folder never leaves half a file behind.

Every file goes to a hidden temporary name beside its destination (``.<name>.<random>.tmp``),
is flushed to disk, then renamed into place: readers see the old file or the new one, never
half of one. On any failure (``ENOSPC``, ``EACCES``, ``KeyboardInterrupt``...) the temporary
file is removed before the error goes on. Files are created with mode ``0o666`` and the
process umask applies, like any file a program opens for writing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import NoReturn

__all__ = ["atomic_copy", "atomic_write_bytes", "remove_stale_temporaries"]

_CHUNK = 1 << 24
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes ``data`` to ``path`` through a temporary file and a rename.

    Args:
        path: the destination; missing parent folders are created.
        data: the file's whole content.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the subclass matching the cause (``PermissionError``, ``OSError`` with
            ``errno.ENOSPC``...), its message naming ``path``. No temporary file is left.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(folder / "a" / "b.txt", b"hello").read_bytes()
        b'hello'
        >>> sorted(p.name for p in (folder / "a").iterdir())
        ['b.txt']
    """
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            _write_all(handle, data)
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except BaseException as error:
        _remove_quietly(temporary)
        _raise_naming(error, path)
    _sync_folder(path.parent)
    return path


def atomic_copy(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Copies ``source`` to ``destination`` through a temporary file and a rename.

    A hard link is used where the file system allows one (files under a history are only ever
    replaced by a rename, never changed in place, so sharing them is safe); otherwise the bytes
    are copied. Errors and clean-up as for :func:`atomic_write_bytes`.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = atomic_write_bytes(folder / "a.bin", b"data")
        >>> atomic_copy(folder / "a.bin", folder / "copy" / "b.bin").read_bytes()
        b'data'
    """
    destination = Path(destination)
    temporary = _temporary_name(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except BaseException as error:
        _remove_quietly(temporary)
        _raise_naming(error, destination)
    return destination


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Removes the temporary files a killed writer left in ``folder`` (not below it); returns them.

    Only names of the form :func:`atomic_write_bytes` uses (``.<name>.<12 hex digits>.tmp``) are
    touched. Call it only where no other process is writing.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".summary.json.0123456789ab.tmp").write_bytes(b"half")
        >>> _ = (folder / ".hidden").write_bytes(b"a user's file")
        >>> [p.name for p in remove_stale_temporaries(folder)], sorted(p.name for p in folder.iterdir())
        (['.summary.json.0123456789ab.tmp'], ['.hidden'])
    """
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp")):
        if _TEMPORARY.match(path.name) and path.is_file():
            _remove_quietly(path)
            removed.append(path)
    return removed


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(handle, view[:_CHUNK])
        view = view[written:]


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _raise_naming(error: BaseException, path: Path) -> NoReturn:
    """Raises an ``OSError`` of the same kind (``OSError(errno, ...)`` picks the subclass) naming the
    destination, e.g. ``[Errno 28] No space left on device: '/logs/xai/summary.json'``; other errors unchanged."""
    if isinstance(error, OSError) and error.errno is not None:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    raise error


def _sync_folder(folder: Path) -> None:
    """Makes the rename itself durable where the platform allows it (a no-op elsewhere)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
