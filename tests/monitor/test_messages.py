"""The monitor's lines to the user: a moving region outlined again says by which epoch's model, and how many
probes read it only when that was measured."""

from __future__ import annotations

from lightning_xai.monitor import messages
from tests.monitor.test_shortcut_messages import moving_finding


def test_a_moving_region_outlined_again_is_said_with_the_probes_that_read_it_when_known():
    outlined = moving_finding(0, [True, False, True, False])
    outlined.outlined_after = 2
    said = messages.outlined_again(outlined)
    assert "moving region found after epoch 0 was confirmed again after epoch 2" in said
    assert "(in 2 of 4 probes filling the box lowers the predicted class)" in said
    outlined.boxes_read = []  # no probe images: no read flags
    unmeasured = messages.outlined_again(outlined)
    assert "of 4 probes" not in unmeasured and unmeasured.endswith(
        "reads them. monitor.findings and summary.json hold the new outlines."
    )
