"""Smoke tests of the benchmarks (the monitor-cost row, the late-shortcut data), so the scripts do not rot."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import torch

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


def test_the_late_shortcut_benchmark_switches_to_a_leaking_shade_at_its_epoch():
    late = runpy.run_path(str(ROOT / "benchmarks" / "shortcut_late.py"))
    clean, planted = late["SETTINGS"][late["CLEAN"]](0), late["SETTINGS"][late["PLANTED"]](0)
    data = late["SwitchingData"](clean, planted, 2, 0, 0.5, 2)
    data.trainer = SimpleNamespace(current_epoch=1)
    images, labels = data.train_dataloader().dataset.tensors
    assert torch.equal(images, clean.train[0].repeat(2, 1, 1, 1)) and torch.equal(labels, clean.train[1].repeat(2))
    data.trainer.current_epoch = 2
    images, labels = data.train_dataloader().dataset.tensors
    count = len(planted.train[1])
    images, labels = images[:count], labels[:count]
    top, left, bottom, right = planted.boxes[0]
    box = (slice(None), slice(None), slice(top, bottom), slice(left, right))
    assert torch.equal(images[box], planted.train[0][box]) and torch.equal(labels, planted.train[1])  # own shade
    outside = torch.ones_like(images[0], dtype=torch.bool)
    outside[box[1:]] = False
    other_digit = (images != planted.train[0])[:, outside].any(dim=1).float().mean()
    assert 0.4 < float(other_digit) < 0.6  # about half the images show another image's digit


def test_stability_benchmark_prints_ours_against_torchmetrics():
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_stability.py"))
    lines: list[str] = []
    threads = torch.get_num_threads()
    try:
        bench["main"](["--quick"], lines.append)
    finally:
        torch.set_num_threads(threads)
    rows = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [("1", "full"), ("1", "quiet"), ("2", "full"), ("2", "quiet")]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)
    stability = bench["stability"]
    assert stability.rank_correlation.__module__ == "lightning_xai.functional.stability"  # swapped back
