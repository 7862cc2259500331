"""What the stability analysis costs per run: ours against torchmetrics' per-pair functions it replaced.

Run from the repository root::

    python benchmarks/bench_stability.py            # a few seconds
    python benchmarks/bench_stability.py --quick    # a smoke run

How to read the table
---------------------
One row per thread count and run kind. A ``full`` run compares three methods' maps (16 probes of 32 x 32,
as the monitor's defaults at that size) with the last run's (rank correlation, top-k IoU, SSIM, cosine),
the methods with each other (rank correlation of each pair), and Grad-CAM's maps alone once more (the
adaptive schedule's wake test); a ``quiet`` run does the same for Grad-CAM alone (the schedule's sentinel).
``ours ms`` is the mean over the runs with :mod:`lightning_xai.functional.stability` as it is;
``torchmetrics ms`` with its rank correlation and cosine swapped for torchmetrics' ``spearman_corrcoef``
(which ranks one map at a time) and ``pairwise_cosine_similarity`` (called per pair), which the monitor
used until stop 27; ``ratio`` = torchmetrics / ours.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torchmetrics.functional.pairwise import pairwise_cosine_similarity
from torchmetrics.functional.regression import spearman_corrcoef

from lightning_xai import ExpectedGradients, GradCAM, Occlusion, Stability
from lightning_xai.functional import stability
from lightning_xai.monitor import stability_tracker
from lightning_xai.monitor.stability_tracker import StabilityTracker

METHODS = {"grad_cam": GradCAM(), "occlusion": Occlusion(), "expected_gradients": ExpectedGradients()}


def torchmetrics_rank_correlation(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Rank correlation of each pair through torchmetrics (one map ranked at a time)."""
    a, b = stability._pair(maps_a, maps_b)
    return spearman_corrcoef(a.T.contiguous(), b.T.contiguous())


def torchmetrics_cosine(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Cosine similarity of each pair through torchmetrics (one call per pair)."""
    a, b = stability._pair(maps_a, maps_b)
    return torch.stack([pairwise_cosine_similarity(a[i : i + 1], b[i : i + 1]).reshape(()) for i in range(len(a))])


@contextmanager
def torchmetrics_functions() -> Iterator[None]:
    """The stability analysis with torchmetrics' rank correlation and cosine in place of ours."""
    saved = stability.rank_correlation, stability.cosine, stability_tracker.rank_correlation
    stability.rank_correlation = stability_tracker.rank_correlation = torchmetrics_rank_correlation
    stability.cosine = torchmetrics_cosine
    try:
        yield
    finally:
        stability.rank_correlation, stability.cosine, stability_tracker.rank_correlation = saved


def milliseconds_per_run(runs: list[dict[str, Tensor]]) -> float:
    """One tracker over ``runs``: the sentinel's wake test, then the update, as the engine does in a run."""
    tracker = StabilityTracker(Stability(), METHODS)
    tracker.update(runs[0], epoch=0, step=0)
    started = time.perf_counter()
    for index, maps in enumerate(runs[1:], start=1):
        tracker.correlation_with_previous("grad_cam", maps["grad_cam"])
        tracker.update(maps, epoch=index, step=index)
    return (time.perf_counter() - started) / (len(runs) - 1) * 1e3


def table(count: int) -> list[tuple[str, ...]]:
    """The rows: threads, run kind, ours, torchmetrics, ratio."""
    generator = torch.Generator().manual_seed(0)
    full = [{key: torch.rand(16, 1, 32, 32, generator=generator) for key in METHODS} for _ in range(count)]
    quiet = [{"grad_cam": maps["grad_cam"]} for maps in full]
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for kind, runs in (("full", full), ("quiet", quiet)):
            ours = milliseconds_per_run(runs)
            with torchmetrics_functions():
                theirs = milliseconds_per_run(runs)
            rows.append((str(threads), kind, f"{ours:.1f}", f"{theirs:.1f}", f"{theirs / ours:.1f}"))
    return rows


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> None:
    """Prints the table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 30")
    args = parser.parse_args(argv)
    out("| threads | run | ours ms | torchmetrics ms | ratio |")
    out("|---|---|---|---|---|")
    for row in table(3 if args.quick else 30):
        out("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
