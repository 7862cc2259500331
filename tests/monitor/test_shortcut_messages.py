"""Shortcut findings in words: a moving region outlined again says so, once, in its last sentence."""

from __future__ import annotations

from lightning_xai.monitor.shortcut_messages import finding_message, outlined_again_message
from lightning_xai.shortcuts import Finding


def moving_finding(epoch: int, read: list[bool]) -> Finding:
    """A moving region found after ``epoch``, one box per entry of ``read`` (its read flags)."""
    return Finding(
        epoch,
        10 * epoch,
        "test_gradients",
        [0, 0, 4, 4],
        1.0,
        True,
        "",
        kind="moving_region",
        boxes=[[0, 0, 4, 4]] * len(read),
        boxes_read=read,
        classes=[2],
        trials=16,
    )


def test_each_redrawing_replaces_the_sentence_on_where_the_region_is_read():
    found = moving_finding(0, [True, False, False, False])
    found.message = finding_message(found, (16, 16), None, 0.1)
    evidence = found.message.split(" Filling it")[0]
    assert found.message.endswith(
        "in 1 of 4 probes; in the others the model does not read it there and its outline is drawn thin, in grey."
    )
    found.message = outlined_again_message(found, moving_finding(1, [True, True, False, False]), 0.1)
    found.boxes_read = [True, True, False, False]
    assert found.message.startswith(
        evidence
        + " Outlined again after epoch 1: filling it lowers the predicted class by 10% or more in 2 of 4 probes"
    )
    found.message = outlined_again_message(
        found, moving_finding(2, [True] * 4), 0.05
    )  # another min_effect after a resume
    assert (
        found.message
        == evidence
        + " Outlined again after epoch 2: filling it lowers the predicted class by 5% or more in every probe."
    )
    assert outlined_again_message(found, moving_finding(3, []), 0.1) == evidence + " Outlined again after epoch 3."
