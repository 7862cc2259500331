"""Smoke test of the monitor-cost benchmark's row (one short fit each way), so the script does not rot."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_monitor_cost_row_fits_with_and_without_the_monitor(tmp_path):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_monitor.py"))
    messages: list[str] = []
    cells = bench["row"](bench["Setting"]("digits", 1, 1, 0.1), tmp_path, messages.append)
    (
        label,
        epochs,
        monitor,
        without,
        with_monitor,
        added,
        runs,
        skipped,
        per_run,
        maps,
        shortcuts,
        rest,
        ten_percent_at,
    ) = cells
    assert (label, epochs, monitor, runs, skipped) == ("digits", "1", "cap 10%", "1", "0")
    assert float(without) > 0 and float(with_monitor) > 0 and added.endswith("%")
    assert float(per_run) >= float(maps) > 0 and float(shortcuts) > 0
    assert abs(float(maps) + float(shortcuts) + float(rest) - float(per_run)) <= 0.02  # the phases add up (rounding)
    assert abs(float(ten_percent_at) - 10 * float(per_run)) <= 0.06  # ten times the rounded per-run cost
    assert len(messages) == 2
    assert bench["Setting"]("decoy", 1, 4, None, batch_size=32).label == "decoy b32"  # the example's own batch
