"""Restored probes are checked against the checkpoint's fingerprint; probes/references files are read safely."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai._fingerprint import check_probe_fingerprint, load_probes, load_references
from lightning_xai.history import HistoryError
from lightning_xai.probes import ProbeSet


def _probes(seed: int) -> ProbeSet:
    generator = torch.Generator().manual_seed(seed)
    return ProbeSet(torch.rand(4, 1, 8, 8, generator=generator), torch.tensor([0, 1, 2, 3]), "validation")


def test_the_same_probes_pass_and_others_are_refused(tmp_path):
    saved = _probes(0).fingerprint()
    torch.save(
        {"images": _probes(0).images, "labels": _probes(0).labels, "source": "validation"}, tmp_path / "probes.pt"
    )
    restored = load_probes(tmp_path)
    check_probe_fingerprint(
        saved, ProbeSet(restored["images"], restored["labels"], restored["source"]).fingerprint(), folder=tmp_path
    )
    check_probe_fingerprint(None, _probes(1).fingerprint(), folder=tmp_path)  # checkpoints without a fingerprint
    other = _probes(1).fingerprint()
    message = (
        f"the probes in {tmp_path / 'probes.pt'} are not the ones the checkpoint was explaining (fingerprint {other!r}, "
        f"the checkpoint saved {saved!r}): maps after the resume would not be comparable with earlier ones."
    )
    with pytest.raises(HistoryError, match=re.escape(message)):
        check_probe_fingerprint(saved, other, folder=tmp_path)


def test_a_reordered_subset_is_refused_and_nan_probes_still_match():
    probes = _probes(0)
    reordered = ProbeSet(probes.images.flip(0), probes.labels, probes.source)
    with pytest.raises(HistoryError, match="are not the ones the checkpoint was explaining"):
        check_probe_fingerprint(probes.fingerprint(), reordered.fingerprint(), folder="xai")
    images = probes.images.clone()
    images[0, 0, 0, 0] = float("nan")
    with_nan = ProbeSet(images, None, "given").fingerprint()
    check_probe_fingerprint(with_nan, with_nan, folder="xai")
    with pytest.raises(
        HistoryError, match=re.escape("the checkpoint's probe_fingerprint must be a number or None, got str ('0.5').")
    ):
        check_probe_fingerprint("0.5", 0.5, folder="xai")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not a torch file", "is truncated or not a lightning_xai probes file"),
        (
            {"pictures": torch.zeros(2, 1, 4, 4)},
            "is not a lightning_xai probes file: no floating 'images' tensor [N, C, H, W] in it.",
        ),
        (
            {"images": torch.zeros(2, 4, 4)},
            "is not a lightning_xai probes file: no floating 'images' tensor [N, C, H, W] in it.",
        ),
        (
            {"images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8)},
            "is not a lightning_xai probes file: no floating 'images' tensor [N, C, H, W] in it.",
        ),
        (
            {"images": torch.zeros(2, 1, 4, 4), "labels": torch.zeros(3, dtype=torch.long)},
            "is not a lightning_xai probes file: 'labels' must be None or an integer tensor [2].",
        ),
        (
            {"images": torch.zeros(2, 1, 4, 4), "labels": torch.zeros(2)},
            "is not a lightning_xai probes file: 'labels' must be None or an integer tensor [2].",
        ),
        (
            {"images": torch.zeros(2, 1, 4, 4), "source": 3},
            "is not a lightning_xai probes file: 'source' must be a string, got int.",
        ),
    ],
)
def test_damaged_or_foreign_probe_files_name_the_file(tmp_path, payload, message):
    path = tmp_path / "probes.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(HistoryError, match=re.escape(f"{path} {message}")):
        load_probes(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(
        HistoryError,
        match=re.escape(f"{tmp_path / 'probes.pt'} does not exist: no probes were saved in this history folder."),
    ):
        load_probes(tmp_path)
    assert load_references(tmp_path) is None
    torch.save({"images": torch.ones(3, 1, 4, 4)}, tmp_path / "references.pt")
    assert load_references(tmp_path).shape == (3, 1, 4, 4) and load_references(tmp_path / "references.pt").shape == (
        3,
        1,
        4,
        4,
    )
    (tmp_path / "references.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(
        HistoryError,
        match=re.escape(f"{tmp_path / 'references.pt'} is truncated or not a lightning_xai references file"),
    ):
        load_references(tmp_path)
