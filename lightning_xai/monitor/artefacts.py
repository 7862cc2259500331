"""The files saved once beside the history: the probes and the reference images (for replay and comparisons)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_xai._files import atomic_write_bytes
from lightning_xai.probes import ProbeSet

__all__ = ["save_artefacts", "save_tensors"]


def save_tensors(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of a dict of tensors, numbers and strings, written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_artefacts(folder: Path, probes: ProbeSet, references: Tensor | None) -> None:
    """``probes.pt`` (images, labels, source, fingerprint) and, when there are any, ``references.pt``."""
    save_tensors(
        folder / "probes.pt",
        {
            "images": probes.images,
            "labels": probes.labels,
            "source": probes.source,
            "fingerprint": probes.fingerprint(),
        },
    )
    if references is not None:
        save_tensors(folder / "references.pt", {"images": references})
