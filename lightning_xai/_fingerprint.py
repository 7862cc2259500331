"""The probe and reference files beside a history, read back safely, and the resume check on probes.

A resumed fit must explain the same images as before, whatever its number of processes: the
monitor restores its probes from ``<history>/probes.pt`` and checks them against the fingerprint
saved in the checkpoint (:meth:`lightning_xai.probes.ProbeSet.fingerprint`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_xai._history_checks import HistoryError, first_line

__all__ = ["check_probe_fingerprint", "load_probes", "load_references"]


def check_probe_fingerprint(saved: float | None, current: float, *, folder: str | Path) -> None:
    """Refuses restored probes that are not the ones the checkpoint was explaining.

    Args:
        saved: the checkpoint's ``probe_fingerprint`` (``None`` for checkpoints without one: accepted).
        current: ``ProbeSet.fingerprint()`` of the probes restored from ``folder``.
        folder: the history folder the probes came from (named in the message).

    Raises:
        HistoryError: when the fingerprints differ, or ``saved`` is not a number.

    Example:
        >>> check_probe_fingerprint(0.25, 0.25, folder="logs/xai")
        >>> check_probe_fingerprint(0.25, 0.5, folder="logs/xai")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        lightning_xai.history.HistoryError: the probes in logs/xai/probes.pt are not the ones the checkpoint was
        explaining (fingerprint 0.5, the checkpoint saved 0.25): maps after the resume would not be comparable with
        earlier ones. Resume with the log directory the checkpoint was written with, or pass the original probes.
    """
    if saved is None:
        return
    if not isinstance(saved, (int, float)) or isinstance(saved, bool):
        raise HistoryError(
            f"the checkpoint's probe_fingerprint must be a number or None, got {type(saved).__name__} ({saved!r})."
        )
    saved, current = float(saved), float(current)
    if (
        saved == current
        or (math.isnan(saved) and math.isnan(current))
        or math.isclose(saved, current, rel_tol=1e-9, abs_tol=1e-12)
    ):
        return
    raise HistoryError(
        f"the probes in {Path(folder) / 'probes.pt'} are not the ones the checkpoint was explaining (fingerprint "
        f"{current!r}, the checkpoint saved {saved!r}): maps after the resume would not be comparable with earlier "
        "ones. Resume with the log directory the checkpoint was written with, or pass the original probes."
    )


def load_probes(folder: str | Path) -> dict[str, Any]:
    """Reads ``<folder>/probes.pt`` (``weights_only=True``) and checks it.

    Args:
        folder: the history folder, or the probes file itself.

    Returns:
        ``{"images": Tensor[P, C, H, W] (floating), "labels": LongTensor[P] or None, "source": str}``.

    Raises:
        HistoryError: naming the file when it is missing, damaged or not a probes file.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> saved = {"images": torch.zeros(2, 1, 4, 4), "labels": torch.tensor([0, 1]), "source": "given"}
        >>> torch.save(saved, folder / "probes.pt")
        >>> probes = load_probes(folder)
        >>> probes["images"].shape, probes["labels"].tolist(), probes["source"]
        (torch.Size([2, 1, 4, 4]), [0, 1], 'given')
    """
    path = _file(folder, "probes.pt")
    payload = _load(path, what="probes")
    images, labels, source = payload["images"], payload.get("labels"), payload.get("source", "given")
    if labels is not None and (
        not isinstance(labels, Tensor)
        or labels.ndim != 1
        or labels.shape[0] != images.shape[0]
        or labels.is_floating_point()
    ):
        raise HistoryError(
            f"{path} is not a lightning_xai probes file: "
            f"'labels' must be None or an integer tensor [{images.shape[0]}]."
        )
    if not isinstance(source, str):
        raise HistoryError(
            f"{path} is not a lightning_xai probes file: 'source' must be a string, got {type(source).__name__}."
        )
    return {"images": images, "labels": labels, "source": source}


def load_references(folder: str | Path) -> Tensor | None:
    """The reference images ``[R, C, H, W]`` of ``<folder>/references.pt``, or ``None`` when there is no such file.

    Args:
        folder: the history folder, or the references file itself.

    Raises:
        HistoryError: naming the file when it is damaged or not a references file.
    """
    path = _file(folder, "references.pt")
    if not path.exists():
        return None
    return _load(path, what="references")["images"]


def _file(folder: str | Path, name: str) -> Path:
    path = Path(folder)
    return path if path.is_file() else path / name


def _load(path: Path, *, what: str) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HistoryError(f"{path} does not exist: no {what} were saved in this history folder.") from None
    except Exception as error:  # torch raises several types for damaged files
        raise HistoryError(f"{path} is truncated or not a lightning_xai {what} file ({first_line(error)}).") from None
    images = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise HistoryError(
            f"{path} is not a lightning_xai {what} file: no floating 'images' tensor [N, C, H, W] in it."
        )
    return payload
