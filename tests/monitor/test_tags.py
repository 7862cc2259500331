"""The tag schema is the documented contract: docs/reference.md's tables and tags.py name the same tags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lightning_xai.monitor import tags

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def _documented_tags() -> set[str]:
    text = REFERENCE.read_text()
    section = text[text.index("## Tags") : text.index("## Files")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([^`]+)`", row).group(1) for row in rows}  # type: ignore[union-attr]


def test_every_documented_tag_is_in_the_schema_and_every_schema_tag_is_documented():
    schema = set(tags.SCALAR_PATTERNS) | set(tags.IMAGE_PATTERNS) | set(tags.TEXT_PATTERNS)
    documented = _documented_tags()
    assert documented - schema == set(), "documented but not in monitor/tags.py"
    assert schema - documented == set(), "in monitor/tags.py but not documented in docs/reference.md"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("xai_stability/grad_cam/spearman_mean", True),
        ("xai_stability/occlusion(window=4,stride=4)/topk_iou_worst", True),
        ("xai_agreement/grad_cam~occlusion/spearman_worst", True),
        ("xai/maps/expected_gradients", True),
        ("xai_stability/grad_cam/extra/spearman_mean", False),
        ("xai/stability/grad_cam/spearman_mean", False),
        ("xai_cost/seconds", False),
    ],
)
def test_tags_match_the_schema_patterns_exactly(tag, expected):
    assert tags.matches_pattern(tag) is expected


def test_the_custom_scalars_layout_only_names_sections_of_the_schema():
    layout = tags.custom_scalars_layout()["lightning_xai"]
    sections = {regex.split("/")[0] for _, (_, regexes) in layout.items() for regex in regexes}
    assert sections == {"xai_stability", "xai_agreement", "xai_probes", "xai_shortcuts", "xai_faithfulness", "xai_cost"}
