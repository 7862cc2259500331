"""The on-disk record of every validation run: raw maps in one file per run, and summary.json.

Layout under ``<log_dir>/xai/``::

    summary.json              {"format": ..., "fit": <id>, <sections>..., "runs": [{"global_step", "epoch",
                               "stage", "methods", "metrics", "skipped", "file"}, ...]}
    runs/step-00000120.pt     {"maps": {method: [P, C|1, H, W] float32}, "targets", "predictions",
                               "probabilities", "global_step", "epoch", "stage"}
    probes.pt, references.pt  the probe and reference images (written by the monitor)

``file`` is relative to the history folder, so a moved or copied folder keeps working and never
reads another folder's files; paths read back are checked to stay inside the folder. Every file
is written to a temporary name and renamed into place, so a crash never leaves a half-written
file, and earlier runs stay readable. ``fit`` identifies one training run across its resumes.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_xai._files import atomic_write_bytes, remove_stale_temporaries
from lightning_xai._history_checks import (
    RESERVED_KEYS,
    SUMMARY_FORMAT,
    HistoryError,
    check_entry,
    check_run_payload,
    first_line,
    parse_summary,
    run_path,
)
from lightning_xai._history_folders import (
    check_state,
    find_resume_source,
    free_folder,
    import_history,
    sections_of,
    set_aside_damaged,
)

__all__ = ["AttributionHistory", "HistoryError", "SUMMARY_FORMAT", "find_history_folder", "load_run", "read_summary"]


def find_history_folder(path: str | Path) -> Path:
    """The folder holding ``summary.json``: ``path`` itself, the only ``xai``/``xai-<n>`` in it, or the
    only one in a sub-folder (``path/*/xai``, ``path/*/*/xai``).

    Raises:
        HistoryError: when there is none or more than one at the nearest level.
    """
    path = Path(path)
    if (path / "summary.json").is_file():
        return path
    for pattern in ("xai*", "*/xai*", "*/*/xai*"):
        found = [folder for folder in sorted(path.glob(pattern)) if (folder / "summary.json").is_file()]
        if len(found) == 1:
            return found[0]
        if found:
            raise HistoryError(f"{path} holds several histories ({', '.join(map(str, found))}); name one of them.")
    raise HistoryError(f"{path} holds no lightning_xai history (no summary.json in it, in xai/ or in */xai/).")


def read_summary(folder: str | Path) -> dict[str, Any]:
    """Reads and checks ``<folder>/summary.json``; run ``file`` values come back relative to ``folder``.

    Raises:
        HistoryError: naming the file, when it is missing, truncated, of another format, holds a
            malformed run entry or a run file outside the folder.
    """
    path = Path(folder) / "summary.json"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise HistoryError(f"{path} does not exist: not a lightning_xai history folder.") from None
    except OSError as error:
        raise HistoryError(f"{path} cannot be read ({error.strerror or error}).") from None
    return parse_summary(text, path)


def load_run(folder: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Loads one run's file (``weights_only``: tensors, numbers and strings only).

    Args:
        folder: the history folder.
        entry: the run's entry in ``summary.json`` (its ``file`` must lie inside ``folder``).

    Returns:
        ``{"maps": {method: Tensor[P, C, H, W]}, "targets": LongTensor[P], "predictions": LongTensor[P],
        "probabilities": Tensor[P], "global_step": int, "epoch": int, ...}``.

    Raises:
        HistoryError: naming the file, when the entry is malformed or has no file (a failed run),
            the path leaves the folder, or the file is missing, truncated or not a run file.
    """
    folder = Path(folder)
    where = f"{folder / 'summary.json'}, step {entry.get('global_step') if isinstance(entry, dict) else '?'}"
    entry = check_entry(entry, where=where, folder=folder)
    if entry["file"] is None:
        raise HistoryError(
            f"{where}: this run has no maps file "
            f"({entry.get('error') or 'its file was not found when the fit resumed'})."
        )
    path = run_path(folder, entry["file"], where=where)
    try:
        payload = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise HistoryError(f"{path} is listed in summary.json but does not exist.") from None
    except Exception as error:  # torch raises several types for damaged files
        raise HistoryError(f"{path} is truncated or not a lightning_xai run file ({first_line(error)}).") from None
    payload = check_run_payload(payload, path)
    if payload["global_step"] != entry["global_step"]:
        raise HistoryError(
            f"{path} holds step {payload['global_step']} but summary.json lists it for step {entry['global_step']}."
        )
    return payload


class AttributionHistory:
    """Appends validation runs to ``folder`` and keeps their summary.

    Use :meth:`open` to start or resume a history under a log directory: it never overwrites
    another fit's history. The constructor writes to ``folder`` as it is.

    Args:
        folder: the ``xai`` folder under the run's log directory.

    Attributes:
        folder: where this history writes.
        runs: the summary entries so far, oldest first (``file`` relative to ``folder``).
        notice: one sentence saying what :meth:`open` decided (another folder, a resume, a damaged
            summary kept aside), or ``None`` when it simply started in the folder it was given.

    Example:
        >>> import tempfile
        >>> history = AttributionHistory(Path(tempfile.mkdtemp()))
        >>> entry = history.record(global_step=10, epoch=0, stage="fit", maps={"saliency": torch.zeros(2, 1, 4, 4)},
        ...                        targets=torch.tensor([0, 1]), predictions=torch.tensor([0, 0]),
        ...                        probabilities=torch.tensor([0.9, 0.6]), metrics={"seconds/saliency": 0.01})
        >>> entry["file"], [run["global_step"] for run in history.load_summary()["runs"]]
        ('runs/step-00000010.pt', [10])
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.runs: list[dict[str, Any]] = []
        self.notice: str | None = None
        self._fit = secrets.token_hex(8)
        self._sections: dict[str, Any] = {}

    @classmethod
    def open(
        cls, base_folder: str | Path, *, resume_state: dict[str, Any] | None = None, search: Sequence[str | Path] = ()
    ) -> AttributionHistory:
        """Starts a new history, or continues a checkpoint's, without overwriting another fit's.

        * New fit: writes to ``base_folder`` when it is missing or empty; otherwise to the first
          free ``<base>-1``, ``<base>-2``... beside it (``xai-1/``).
        * Resume (``resume_state`` from :meth:`state_dict`): continues in ``base_folder`` when its
          ``summary.json`` holds exactly the checkpoint's runs. Otherwise the checkpoint's history is
          looked for in ``base_folder``, ``search`` and beside ``base_folder`` (other versions of the
          same logger), and its run, probe and reference files are copied (hard-linked where
          possible) into the first free folder as above, with its ``findings``/``settled``/other
          sections. If it is nowhere, the runs stay listed with ``"file": None``.
        * A ``summary.json`` that cannot be read is renamed ``summary.json.damaged-<n>``, never rebuilt.

        ``notice`` says what was done, in one sentence for an info line.

        Raises:
            HistoryError: when ``resume_state`` is not a history state.
            OSError: when copying the checkpoint's files or setting a damaged summary aside fails.

        Example:
            >>> import tempfile
            >>> base = Path(tempfile.mkdtemp()) / "xai"
            >>> first = AttributionHistory.open(base)
            >>> first.folder == base, first.notice
            (True, None)
            >>> first.write_summary(findings=[])
            >>> second = AttributionHistory.open(base)
            >>> second.folder.name, second.notice.endswith("this fit writes to " + str(base) + "-1.")
            ('xai-1', True)
        """
        base = Path(base_folder)
        notes = [note] if (note := set_aside_damaged(base)) else []
        if resume_state is None:
            history = cls(free_folder(base))
            if history.folder != base:
                notes.append(f"{base} already holds {_describe(base)}: this fit writes to {history.folder}.")
        else:
            history = cls._resumed(base, resume_state, [Path(p) for p in search], notes)
        history.notice = " ".join(notes) or None
        return history

    @classmethod
    def _resumed(cls, base: Path, state: dict[str, Any], search: list[Path], notes: list[str]) -> AttributionHistory:
        fit, runs = check_state(state, base)
        found = find_resume_source(base, fit, runs, search)
        in_place = found is not None and found[0] == base and len(found[1]["runs"]) == len(runs)
        history = cls(base if in_place else free_folder(base))
        note = history._continue(fit, runs, found, looked_in=base)
        notes.extend([note] if note else [])
        if found is None and history.folder != base:
            notes.append(f"{base} already holds {_describe(base)}: this fit writes to {history.folder}.")
        history.write_summary()
        return history

    def _continue(
        self, fit: str | None, runs: list[dict[str, Any]], found: tuple[Path, dict[str, Any]] | None, *, looked_in: Path
    ) -> str | None:
        """Takes over a checkpoint's runs (copying their files from ``found`` when elsewhere); returns a note."""
        self._fit = fit or self._fit
        if found is None:
            self.runs = [{**run, "file": None} for run in runs]
            if not runs:
                return None
            return (
                f"the checkpoint's history ({_count(len(runs), 'run')}) was not found in {looked_in} or beside it: "
                "they stay listed without their maps."
            )
        source, summary = found
        self.runs = runs
        self._sections = {**sections_of(summary), **self._sections}
        if source.resolve() == self.folder.resolve():
            for folder in (self.folder, self.folder / "runs"):  # a killed writer's leftovers
                remove_stale_temporaries(folder)
            return None
        import_history(source, self.folder, runs)
        later = len(summary["runs"]) - len(runs)
        kept = f", {_count(later, 'later run')} left there" if later else ""
        return (
            f"resuming the history in {source}: {_count(len(runs), 'run')} up to the checkpoint copied into "
            f"{self.folder}{kept}."
        )

    @property
    def summary_path(self) -> Path:
        """``<folder>/summary.json``."""
        return self.folder / "summary.json"

    @property
    def fit(self) -> str:
        """The id of the training run this history belongs to (kept across resumes)."""
        return self._fit

    def record(
        self,
        *,
        global_step: int,
        epoch: int,
        stage: str,
        maps: dict[str, Tensor],
        targets: Tensor,
        predictions: Tensor,
        probabilities: Tensor,
        metrics: dict[str, float],
        skipped: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Writes one run's raw maps (``maps``: ``{method: Tensor[P, C, H, W]}``, ``targets``,
        ``predictions``, ``probabilities``: ``[P]``), then appends it to ``summary.json``.

        Returns:
            The summary entry.

        Raises:
            OSError: naming the file when a write fails (nothing half-written is left). When only
                the summary fails, the run stays in ``runs`` and the next summary write lists it.
            ValueError: when ``extra`` uses a key of the entry itself.
        """
        relative = self._free_name(global_step)
        payload = {
            "global_step": int(global_step),
            "epoch": int(epoch),
            "stage": stage,
            "maps": {name: value.detach().float().cpu() for name, value in maps.items()},
            "targets": targets.detach().cpu(),
            "predictions": predictions.detach().cpu(),
            "probabilities": probabilities.detach().float().cpu(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        entry = self._entry(global_step, epoch, stage, sorted(maps), metrics, skipped, extra, file=relative)
        atomic_write_bytes(self.folder / relative, buffer.getvalue())
        self.runs.append(entry)
        self.write_summary()
        return entry

    def record_failure(
        self,
        *,
        global_step: int,
        epoch: int,
        stage: str,
        error: str,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Appends a run that failed (no maps file: ``"file": None``, ``"error": error``) to ``summary.json``.

        Example:
            >>> import tempfile
            >>> history = AttributionHistory(Path(tempfile.mkdtemp()))
            >>> history.record_failure(global_step=3, epoch=0, stage="fit", error="OSError: disk full")["file"] is None
            True
        """
        entry = self._entry(
            global_step, epoch, stage, [], metrics or {}, None, {**(extra or {}), "error": error}, file=None
        )
        self.runs.append(entry)
        self.write_summary()
        return entry

    def write_summary(self, **sections: Any) -> None:
        """Rewrites ``summary.json`` atomically with every run so far and every section given so far.

        Sections not given in this call are kept (``findings`` survives a ``settled`` update).

        Raises:
            ValueError: when a section is named ``format``, ``fit`` or ``runs``.
            OSError: naming the file when the write fails.
        """
        reserved = sorted(set(sections) & set(RESERVED_KEYS))
        if reserved:
            raise ValueError(f"`sections` may not be named {', '.join(RESERVED_KEYS)}; got {reserved}.")
        self._sections = {**self._sections, **sections}
        document = {"format": SUMMARY_FORMAT, "fit": self._fit, **self._sections, "runs": self.runs}
        atomic_write_bytes(self.summary_path, json.dumps(document, indent=2).encode())

    def load_summary(self) -> dict[str, Any]:
        """Reads ``summary.json`` back (see :func:`read_summary`)."""
        return read_summary(self.folder)

    def load_run(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Loads one run's raw maps (see :func:`load_run`)."""
        return load_run(self.folder, entry)

    def state_dict(self) -> dict[str, Any]:
        """``{"fit": id, "runs": [entries]}`` with ``file`` relative to the folder (``weights_only`` safe)."""
        return {"fit": self._fit, "runs": [dict(run) for run in self.runs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues the run list of a checkpoint in this folder (other keys of ``state`` are ignored).

        As in :meth:`open`, the checkpoint's history is looked for here and beside this folder: its
        sections are kept and, when it lies elsewhere, its files are copied here; runs whose files
        are nowhere stay listed with ``"file": None``. ``notice`` says what was done. Unlike
        :meth:`open`, the folder is not changed even when it holds another fit's history.

        Raises:
            HistoryError: when ``state`` is not a history state.
            OSError: when copying the checkpoint's files fails.
        """
        fit, runs = check_state(state, self.folder)
        self.notice = self._continue(fit, runs, find_resume_source(self.folder, fit, runs, ()), looked_in=self.folder)

    def _entry(
        self,
        global_step: int,
        epoch: int,
        stage: str,
        methods: list[str],
        metrics: dict[str, float],
        skipped: list[str] | None,
        extra: dict[str, Any] | None,
        *,
        file: str | None,
    ) -> dict[str, Any]:
        entry = {
            "global_step": int(global_step),
            "epoch": int(epoch),
            "stage": stage,
            "methods": list(methods),
            "metrics": {key: float(value) for key, value in metrics.items()},
            "skipped": list(skipped or []),
            "file": file,
        }
        clashes = sorted(set(extra or {}) & set(entry))
        if clashes:
            raise ValueError(f"`extra` may not use the keys of the entry itself ({', '.join(entry)}); got {clashes}.")
        return {**entry, **(extra or {})}

    def _free_name(self, global_step: int) -> str:
        used = {run["file"] for run in self.runs}
        name = f"runs/step-{global_step:08d}.pt"
        suffix = 1
        while name in used or (self.folder / name).exists():
            name = f"runs/step-{global_step:08d}-{suffix}.pt"
            suffix += 1
        return name


def _describe(folder: Path) -> str:
    try:
        return f"the history of another fit ({_count(len(read_summary(folder)['runs']), 'run')} in summary.json)"
    except HistoryError:
        return "files of another fit"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
