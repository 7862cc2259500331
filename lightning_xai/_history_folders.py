"""Choosing the folder a history writes to: a fresh one, the one it resumes, or the next numbered one.

Rules (documented in :meth:`lightning_xai.history.AttributionHistory.open`):

* a folder is *free* when it does not exist or is empty; a new fit writes to ``xai/`` when it is
  free, otherwise to the first free ``xai-1/``, ``xai-2/``... beside it (nothing is overwritten);
* a resumed fit continues in place when ``xai/summary.json`` holds exactly the checkpoint's runs
  (same fit, same files); otherwise the checkpoint's history is looked for in the given folders
  and beside ``xai/`` (other versions of the same logger, numbered histories), and its files are
  copied (hard-linked where possible) into the free folder the resumed fit writes to;
* a damaged or foreign ``summary.json`` is never rebuilt: it is renamed ``summary.json.damaged-<n>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from lightning_xai._files import atomic_copy
from lightning_xai._history_checks import RESERVED_KEYS, HistoryError, check_entry, parse_summary, run_path

__all__ = [
    "check_state",
    "find_resume_source",
    "free_folder",
    "import_history",
    "is_free",
    "sections_of",
    "set_aside_damaged",
]

ARTEFACTS = ("probes.pt", "references.pt")


def is_free(folder: Path) -> bool:
    """True when ``folder`` does not exist or is an empty folder."""
    if not folder.exists():
        return True
    return folder.is_dir() and next(folder.iterdir(), None) is None


def free_folder(base: Path) -> Path:
    """``base`` when it is free, else the first free ``<base>-1``, ``<base>-2``..."""
    number = 0
    folder = base
    while not is_free(folder):
        number += 1
        folder = base.with_name(f"{base.name}-{number}")
    return folder


def set_aside_damaged(folder: Path) -> str | None:
    """Renames an unreadable ``<folder>/summary.json`` to ``summary.json.damaged-<n>``; says so, or ``None``."""
    path = folder / "summary.json"
    try:
        parse_summary(path.read_bytes(), path)
    except FileNotFoundError:
        return None
    except HistoryError as error:
        number = 1
        while path.with_name(f"summary.json.damaged-{number}").exists():
            number += 1
        kept = path.with_name(f"summary.json.damaged-{number}")
        os.replace(path, kept)
        return f"{path} could not be read ({error}); it is kept as {kept.name} and not rebuilt."
    return None


def check_state(state: object, folder: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """The fit id and checked run entries of a history ``state_dict()`` from a checkpoint.

    Run files written by older versions as absolute paths are reduced to ``runs/<name>``: they are
    looked up inside the history folder chosen on resume, never at the recorded place.

    Raises:
        HistoryError: when the state is not a history state or an entry is malformed.
    """
    where = "the checkpoint's monitor state"
    if not isinstance(state, dict) or not isinstance(state.get("runs", []), list):
        raise HistoryError(f"{where} is not a lightning_xai history state (expected a dict with a 'runs' list).")
    fit = state.get("fit")
    if fit is not None and not isinstance(fit, str):
        raise HistoryError(f"{where}: 'fit' must be a string, got {type(fit).__name__}.")
    runs = []
    for index, entry in enumerate(state.get("runs", [])):
        if isinstance(entry, dict) and isinstance(entry.get("file"), str) and PurePath(entry["file"]).is_absolute():
            recorded = PurePath(entry["file"])
            entry = {**entry, "file": f"runs/{recorded.name}" if recorded.parent.name == "runs" else recorded.name}
        runs.append(check_entry(entry, where=f"{where}, run {index}", folder=folder))
    return fit, runs


def find_resume_source(
    base: Path, fit: str | None, runs: list[dict[str, Any]], search: Sequence[Path]
) -> tuple[Path, dict[str, Any]] | None:
    """The first history folder holding the checkpoint's runs (same fit, files present) and its summary.

    Looks in ``base``, then each of ``search`` and its ``<folder>-<n>``, then beside ``base``
    (``<base>-<n>`` and ``../*/<base name>*``).
    """
    for candidate in _candidates(base, search):
        try:
            summary = parse_summary((candidate / "summary.json").read_bytes(), candidate / "summary.json")
        except (HistoryError, OSError):
            continue
        if summary.get("fit") == fit and _holds(candidate, summary["runs"], runs):
            return candidate, summary
    return None


def import_history(source: Path, destination: Path, runs: list[dict[str, Any]]) -> None:
    """Copies the files of ``runs`` and the probe/reference files from ``source`` into ``destination``."""
    for run in runs:
        if run["file"] is not None:
            where = f"{source / 'summary.json'}, step {run['global_step']}"
            atomic_copy(run_path(source, run["file"], where=where), run_path(destination, run["file"], where=where))
    for name in ARTEFACTS:
        if (source / name).is_file():
            atomic_copy(source / name, destination / name)


def sections_of(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The extra top-level sections of a summary (findings, settled, sanity check...)."""
    return {key: value for key, value in (summary or {}).items() if key not in RESERVED_KEYS}


def _candidates(base: Path, search: Sequence[Path]) -> list[Path]:
    given = [
        numbered
        for folder in map(Path, search)
        for numbered in [folder, *sorted(folder.parent.glob(f"{folder.name}-*"))]
    ]
    beside = sorted(base.parent.glob(f"{base.name}-*")) + sorted(base.parent.parent.glob(f"*/{base.name}*"))
    seen: dict[Path, Path] = {}
    for folder in [base, *given, *beside]:
        key = folder.resolve()
        if key not in seen and (folder / "summary.json").is_file():
            seen[key] = folder
    return list(seen.values())


def _holds(folder: Path, listed: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """True when ``folder``'s runs begin with ``wanted`` (same steps and files) and those files exist."""
    if len(listed) < len(wanted):
        return False
    for have, want in zip(listed, wanted):
        if (have["global_step"], have["file"]) != (want["global_step"], want["file"]):
            return False
        if want["file"] is not None and not run_path(folder, want["file"], where=str(folder)).is_file():
            return False
    return True
