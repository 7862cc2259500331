"""Every TensorBoard tag and ``summary.json`` metric name the monitor writes: the documented contract.

Scalars sit in sections that TensorBoard shows as separate groups (the part before the first
``/``): ``xai_probes``, ``xai_stability``, ``xai_agreement``, ``xai_shortcuts``,
``xai_faithfulness``, ``xai_masks``, ``xai_sanity``, ``xai_robustness`` and ``xai_cost``. Images and text sit under ``xai/``. A run's
``metrics`` in ``summary.json`` use the same names as its scalars. ``<method>`` is a method's key
(its name, e.g. ``grad_cam``, or its name with its settings when one method is used twice).

``docs/reference.md`` lists :data:`SCALAR_PATTERNS`, :data:`IMAGE_PATTERNS` and :data:`TEXT_PATTERNS`;
a test checks the two against each other and against what a real run logs.

Example:
    >>> maps_image("grad_cam"), stability("occlusion", "spearman_mean")
    ('xai/maps/grad_cam', 'xai_stability/occlusion/spearman_mean')
    >>> matches_pattern("xai_cost/seconds_grad_cam")
    True
"""

from __future__ import annotations

import re

__all__ = [
    "FAILED_RUNS",
    "IMAGE_PATTERNS",
    "OVERHEAD",
    "PREDICTIONS",
    "PROBES_IMAGE",
    "PROBE_ACCURACY",
    "SCALAR_PATTERNS",
    "SECONDS_TOTAL",
    "TARGET_PROBABILITY",
    "TEXT_PATTERNS",
    "agreement",
    "completeness",
    "custom_scalars_layout",
    "faithfulness",
    "faithfulness_image",
    "filmstrip_image",
    "mask",
    "mask_image",
    "maps_image",
    "matches_pattern",
    "phase_seconds",
    "robustness",
    "sanity",
    "seconds",
    "settled",
    "shortcut",
    "shortcut_image",
    "stability",
]

# ---------------------------------------------------------------- images and text
PROBES_IMAGE = "xai/probes"
PREDICTIONS = "xai/predictions"


def maps_image(method: str) -> str:
    """One grid per run: the method's maps over the probes, with probability bars."""
    return f"xai/maps/{method}"


def filmstrip_image(method: str) -> str:
    """One image per method: probes as rows, the last runs as columns, each labelled with its epoch."""
    return f"xai/filmstrip/{method}"


def shortcut_image(method: str) -> str:
    """The probes with the regions of a confirmed shortcut outlined."""
    return f"xai/shortcut/{method}"


def mask_image(method: str) -> str:
    """The probes with each one's smallest sufficient mask outlined (``Mask()``)."""
    return f"xai/mask/{method}"


def faithfulness_image(method: str) -> str:
    """Mean deletion and insertion curves of the method's maps with their random controls."""
    return f"xai/faithfulness/{method}"


# ---------------------------------------------------------------- scalars
PROBE_ACCURACY = "xai_probes/accuracy"
TARGET_PROBABILITY = "xai_probes/target_probability"
SECONDS_TOTAL = "xai_cost/seconds_total"
OVERHEAD = "xai_cost/overhead"
FAILED_RUNS = "xai_cost/failed_runs"


def seconds(method: str) -> str:
    """Wall time of one method's maps in a run."""
    return f"xai_cost/seconds_{method}"


def phase_seconds(phase: str) -> str:
    """Wall time of an analysis in a run: ``shortcuts``, ``faithfulness``, ``stability`` or ``recording``."""
    return f"xai_cost/seconds_{phase}"


def stability(method: str, metric: str) -> str:
    """``metric`` is ``<spearman|topk_iou|ssim|cosine>_<mean|worst>``: this run's maps against the last run's."""
    return f"xai_stability/{method}/{metric}"


def settled(method: str) -> str:
    """1 once the method's maps have settled, else 0."""
    return f"xai_stability/{method}/settled"


def agreement(first: str, second: str, metric: str) -> str:
    """Rank correlation between two methods' maps in the same run (``spearman_mean``/``spearman_worst``)."""
    return f"xai_agreement/{first}~{second}/{metric}"


def shortcut(method: str, key: str) -> str:
    """Evidence of the shortcut check for the method's candidate regions (keys: see docs/reference.md)."""
    return f"xai_shortcuts/{method}/{key}"


def faithfulness(method: str, key: str) -> str:
    """Deletion/insertion areas and mass-centre drops; ``method`` is ``random`` for the control."""
    return f"xai_faithfulness/{method}/{key}"


def completeness(method: str, key: str) -> str:
    """``gap_mean`` or ``relative_gap_mean`` of a path method (integrated or expected gradients)."""
    return f"xai_faithfulness/{method}/completeness_{key}"


def sanity(method: str, key: str) -> str:
    """Model-randomisation sanity check: ``spearman`` or ``ssim`` between trained and randomised maps."""
    return f"xai_sanity/{method}/{key}"


def mask(method: str, key: str) -> str:
    """``Mask()``: ``smallest_area_mean``/``smallest_area_max`` (fraction of the image a mask needs to keep the
    score) and ``sufficient`` (share of probes for which a tried area sufficed)."""
    return f"xai_masks/{method}/{key}"


def robustness(method: str, key: str) -> str:
    """Robustness checks: ``input_invariance_spearman``, ``fragility_topk_iou`` or ``fragility_spearman``."""
    return f"xai_robustness/{method}/{key}"


# ---------------------------------------------------------------- the documented patterns
SCALAR_PATTERNS: tuple[str, ...] = (
    PROBE_ACCURACY,
    TARGET_PROBABILITY,
    SECONDS_TOTAL,
    OVERHEAD,
    FAILED_RUNS,
    seconds("<method>"),
    phase_seconds("shortcuts"),
    phase_seconds("faithfulness"),
    phase_seconds("stability"),
    phase_seconds("recording"),
    stability("<method>", "<metric>_mean"),
    stability("<method>", "<metric>_worst"),
    settled("<method>"),
    agreement("<a>", "<b>", "spearman_mean"),
    agreement("<a>", "<b>", "spearman_worst"),
    shortcut("<method>", "<key>"),
    faithfulness("<method>", "<key>"),
    faithfulness("random", "<key>"),
    completeness("<method>", "gap_mean"),
    completeness("<method>", "relative_gap_mean"),
    sanity("<method>", "spearman"),
    sanity("<method>", "ssim"),
    mask("<method>", "smallest_area_mean"),
    mask("<method>", "smallest_area_max"),
    mask("<method>", "sufficient"),
    robustness("<method>", "input_invariance_spearman"),
    robustness("<method>", "fragility_topk_iou"),
    robustness("<method>", "fragility_spearman"),
)
IMAGE_PATTERNS: tuple[str, ...] = (
    PROBES_IMAGE,
    maps_image("<method>"),
    filmstrip_image("<method>"),
    shortcut_image("<method>"),
    faithfulness_image("<method>"),
    mask_image("<method>"),
)
TEXT_PATTERNS: tuple[str, ...] = (PREDICTIONS,)

_PLACEHOLDER = re.compile(r"<[a-z]+>")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(pattern)
    return re.compile("[^/]+".join(re.escape(part) for part in parts) + r"\Z")


_ALL_REGEXES = [_pattern_regex(p) for p in (*SCALAR_PATTERNS, *IMAGE_PATTERNS, *TEXT_PATTERNS)]


def matches_pattern(tag: str) -> bool:
    """Whether ``tag`` is one the schema documents (a pattern with its placeholders filled in)."""
    return any(regex.match(tag) for regex in _ALL_REGEXES)


def custom_scalars_layout() -> dict[str, dict[str, list[object]]]:
    """TensorBoard's CUSTOM SCALARS layout: related curves on one chart (regexes over the tags above)."""
    return {
        "lightning_xai": {
            "stability: rank correlation with the last run (mean and worst)": [
                "Multiline",
                [r"xai_stability/.*/spearman_(mean|worst)"],
            ],
            "stability: top-k IoU with the last run (mean and worst)": [
                "Multiline",
                [r"xai_stability/.*/topk_iou_(mean|worst)"],
            ],
            "agreement between methods (rank correlation)": ["Multiline", [r"xai_agreement/.*"]],
            "probes: accuracy and target probability": ["Multiline", [r"xai_probes/.*"]],
            "shortcuts: predictions changed by the region vs elsewhere": [
                "Multiline",
                [r"xai_shortcuts/.*/(flip_rate|random_flip_rate)"],
            ],
            "faithfulness: deletion AUC (lower is better)": ["Multiline", [r"xai_faithfulness/.*/deletion_auc_.*"]],
            "faithfulness: insertion AUC (higher is better)": ["Multiline", [r"xai_faithfulness/.*/insertion_auc_.*"]],
            "cost: seconds per run": ["Multiline", [r"xai_cost/seconds_.*"]],
        }
    }
