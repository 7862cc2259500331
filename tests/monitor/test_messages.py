"""The monitor's lines to the user: a moving region outlined again says by which epoch's model, and how many
probes read it only when that was measured."""

from __future__ import annotations

from lightning_xai.monitor import messages
from lightning_xai.shortcuts import Finding


def _outlined(read: list[bool]) -> Finding:
    return Finding(
        0,
        10,
        "test_gradients",
        [0, 0, 4, 4],
        1.0,
        True,
        "",
        kind="moving_region",
        boxes=[[0, 0, 4, 4]] * 4,
        boxes_read=read,
        outlined_after=2,
    )


def test_a_moving_region_outlined_again_is_said_with_the_probes_that_read_it_when_known():
    said = messages.outlined_again(_outlined([True, False, True, False]))
    assert "moving region found after epoch 0 was confirmed again after epoch 2" in said
    assert "(in 2 of 4 probes filling the box lowers the predicted class)" in said
    unmeasured = messages.outlined_again(_outlined([]))  # no probe images: no read flags
    assert "probes" in unmeasured and "of 4 probes" not in unmeasured and "reads them." in unmeasured
