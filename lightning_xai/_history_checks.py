"""Checks on everything read back from a history folder: nothing read from a file is trusted.

``summary.json`` and the run files may be truncated, garbled, written by another program or
crafted; every problem becomes a :class:`HistoryError` naming the file, and no path read from
a file may lead outside the history folder.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from torch import Tensor

__all__ = [
    "HistoryError",
    "SUMMARY_FORMAT",
    "check_entry",
    "check_run_payload",
    "first_line",
    "parse_summary",
    "relative_run_file",
    "run_path",
]

SUMMARY_FORMAT = "lightning_xai.history/1"
RESERVED_KEYS = ("format", "fit", "runs")
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "global_step": (int,),
    "epoch": (int,),
    "stage": (str,),
    "methods": (list,),
    "metrics": (dict,),
    "skipped": (list,),
}


class HistoryError(ValueError):
    """A history folder or one of its files is missing, damaged, not written by lightning_xai, or
    names a path outside the history folder."""

    __module__ = "lightning_xai.history"


def parse_summary(text: str | bytes, path: Path) -> dict[str, Any]:
    """The checked content of ``summary.json`` (``path`` is only used in messages).

    Every run entry is checked with :func:`check_entry`; absolute run paths inside the folder
    (summaries of older versions) are made relative.

    Raises:
        HistoryError: naming ``path`` when it is not JSON, too deeply nested, of another format, or
            when an entry is malformed or names a file outside the folder.
    """
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise HistoryError(f"{path} is truncated or not JSON ({error}); it was not written by lightning_xai.") from None
    except RecursionError:
        raise HistoryError(
            f"{path} is nested too deeply to be a lightning_xai summary; it was not written by lightning_xai."
        ) from None
    if (
        not isinstance(document, dict)
        or document.get("format") != SUMMARY_FORMAT
        or not isinstance(document.get("runs"), list)
    ):
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise HistoryError(f"{path} is not a lightning_xai history (format {found!r}, expected {SUMMARY_FORMAT!r}).")
    if "fit" in document and not isinstance(document["fit"], str):
        raise HistoryError(f"{path}: 'fit' must be a string, got {type(document['fit']).__name__}.")
    folder = path.parent
    document["runs"] = [
        check_entry(entry, where=f"{path}, run {index}", folder=folder) for index, entry in enumerate(document["runs"])
    ]
    return document


def check_entry(entry: object, *, where: str, folder: Path) -> dict[str, Any]:
    """A copy of one run entry, checked: keys, types, and a safe relative ``file`` (or ``None``).

    Args:
        entry: one item of ``summary.json``'s ``runs`` (or of a checkpoint's history state).
        where: what to name in messages, e.g. ``"/logs/xai/summary.json, run 3"``.
        folder: the history folder that ``file`` must stay inside.

    Raises:
        HistoryError: naming ``where``, the key, what is expected and what was found.

    Example:
        >>> entry = {"global_step": 4, "epoch": 0, "stage": "fit", "methods": ["grad_cam"], "metrics": {},
        ...          "skipped": [], "file": "runs/step-00000004.pt"}
        >>> check_entry(entry, where="summary.json, run 0", folder=Path("/logs/xai"))["file"]
        'runs/step-00000004.pt'
        >>> check_entry({**entry, "epoch": "0"}, where="summary.json, run 0", folder=Path("/logs/xai"))
        Traceback (most recent call last):
        ...
        lightning_xai.history.HistoryError: summary.json, run 0: 'epoch' must be int, got str ('0').
    """
    if not isinstance(entry, dict):
        raise HistoryError(f"{where}: a run must be a JSON object, got {type(entry).__name__}.")
    for key, types in _ENTRY_TYPES.items():
        if key not in entry:
            raise HistoryError(f"{where}: the key {key!r} is missing; not a lightning_xai run entry.")
        value = entry[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise HistoryError(
                f"{where}: {key!r} must be {types[0].__name__}, got {type(value).__name__} ({_short(value)})."
            )
    _check_items(entry, where)
    checked = dict(entry)
    checked["file"] = (
        None if entry.get("file") is None else relative_run_file(entry["file"], folder=folder, where=where)
    )
    return checked


def _check_items(entry: dict[str, Any], where: str) -> None:
    for key in ("methods", "skipped"):
        if not all(isinstance(item, str) for item in entry[key]):
            raise HistoryError(f"{where}: {key!r} must be a list of strings, got {_short(entry[key])}.")
    for name, value in entry["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise HistoryError(
                f"{where}: metric {name!r} must be a number, got {type(value).__name__} ({_short(value)})."
            )
    if "file" not in entry:
        raise HistoryError(f"{where}: the key 'file' is missing; not a lightning_xai run entry.")


def relative_run_file(file: object, *, folder: Path, where: str) -> str:
    """``file`` as a POSIX path relative to ``folder``, refusing anything that could lead outside it.

    Absolute paths (written by older versions) are accepted only when they lie inside ``folder``.

    Raises:
        HistoryError: naming ``where``, the file and the folder, for a non-string, an absolute
            path outside the folder, a path with ``..``, or one that leaves the folder through a
            symbolic link.

    Example:
        >>> relative_run_file("/logs/xai/runs/step-00000004.pt", folder=Path("/logs/xai"), where="summary.json")
        'runs/step-00000004.pt'
        >>> relative_run_file("../other/xai/runs/step-00000004.pt", folder=Path("/logs/xai"),
        ...                   where="summary.json")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        lightning_xai.history.HistoryError: summary.json: the run file '../other/xai/runs/step-00000004.pt'
        is not inside the history folder /logs/xai; refusing to read it.
    """
    refused = HistoryError(
        f"{where}: the run file {file!r} is not inside the history folder {folder}; refusing to read it."
    )
    if not isinstance(file, str) or not file or "\x00" in file:
        raise HistoryError(
            f"{where}: 'file' must be a path relative to the history folder {folder}, got {_short(file)}."
        )
    posix = PurePosixPath(file.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(file).is_absolute():
        try:
            posix = PurePosixPath(Path(file).relative_to(folder).as_posix())
        except ValueError:
            try:
                posix = PurePosixPath(Path(file).resolve().relative_to(folder.resolve()).as_posix())
            except (ValueError, OSError):
                raise refused from None
    if ".." in posix.parts or not posix.parts:
        raise refused
    resolved = (folder / posix).resolve()
    try:
        resolved.relative_to(folder.resolve())
    except ValueError:
        raise refused from None
    return posix.as_posix()


def run_path(folder: Path, file: str, *, where: str) -> Path:
    """The path to read for ``file`` (checked with :func:`relative_run_file`)."""
    return folder.joinpath(*PurePosixPath(relative_run_file(file, folder=folder, where=where)).parts)


def check_run_payload(payload: object, path: Path) -> dict[str, Any]:
    """Checks what ``torch.load`` returned for a run file: maps of tensors, targets, predictions.

    Raises:
        HistoryError: naming ``path`` and what is missing or wrong.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("maps"), dict):
        raise HistoryError(f"{path} is not a lightning_xai run file (no 'maps' in it).")
    for name, value in payload["maps"].items():
        if not isinstance(name, str) or not isinstance(value, Tensor) or value.ndim != 4:
            raise HistoryError(f"{path} is not a lightning_xai run file: map {name!r} is not a [P, C, H, W] tensor.")
    for key in ("targets", "predictions", "probabilities"):
        if not isinstance(payload.get(key), Tensor):
            raise HistoryError(f"{path} is not a lightning_xai run file: {key!r} is missing or not a tensor.")
    for key in ("global_step", "epoch"):
        if not isinstance(payload.get(key), int) or isinstance(payload.get(key), bool):
            raise HistoryError(f"{path} is not a lightning_xai run file: {key!r} is missing or not an integer.")
    return payload


def first_line(error: BaseException) -> str:
    """``"<Type>: <first line of the message>"``, for one-line messages about errors raised by torch.load.

    Example:
        >>> first_line(RuntimeError("Weights only load failed.\\nPlease file an issue."))
        'RuntimeError: Weights only load failed.'
    """
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
