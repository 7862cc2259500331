"""The public shortcut types: the settings are checked and the findings survive JSON and checkpoints."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lightning_xai.shortcuts import Finding, Shortcuts


def test_finding_round_trips_through_json_and_checkpoints(tmp_path):
    finding = Finding(
        epoch=1,
        global_step=5,
        method="m",
        box=[0, 0, 4, 4],
        score=0.9,
        confirmed=True,
        message="x",
        kind="moving_region",
        boxes=[[0, 0, 4, 4], [12, 12, 16, 16]],
        classes=[3],
        p_value=1e-6,
    )
    assert Finding(**json.loads(json.dumps(finding.to_dict()))) == finding
    torch.save(finding.to_dict(), tmp_path / "f.pt")
    assert Finding(**torch.load(tmp_path / "f.pt", weights_only=True)) == finding
    old = {
        k: v
        for k, v in finding.to_dict().items()
        if k in ("epoch", "global_step", "method", "box", "score", "confirmed", "message")
    }
    assert Finding(**old).kind == "region"  # findings saved before kinds existed still load
    before_outlines_were_redrawn = {k: v for k, v in finding.to_dict().items() if k != "outlined_after"}
    assert Finding(**before_outlines_were_redrawn).outlined_after == 1  # outlined when found, at epoch 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match=re.escape("`false_alarm_rate` must be a probability in (0, 1), got 0.")):
        Shortcuts(false_alarm_rate=0)
    with pytest.raises(ValueError, match=re.escape("`test_images` must be an int >= 2, got 1.")):
        Shortcuts(test_images=1)
    with pytest.raises(
        ValueError,
        match=re.escape("`suspect_regions` must hold (top, left, bottom, right) boxes or 'border', got 'corners'."),
    ):
        Shortcuts(suspect_regions=["corners"])
    with pytest.raises(ValueError, match=re.escape("`fill` must be one of ['mean', 'blur', 'inpaint'], got 'zero'.")):
        Shortcuts(fill="zero")
