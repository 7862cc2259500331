"""Cost of occlusion with the inpainting baselines against the mean baseline.

Run from the repository root (needs ``pip install "lightning-xai[inpaint]"``)::

    python benchmarks/bench_inpaint.py            # 4 probes, SmallCNN, 3 x 32 x 32, window 4, stride 2
    python benchmarks/bench_inpaint.py --size 64

Each baseline runs the same occlusion (the same windows and forward passes); the inpainting
baselines add one ``cv2.inpaint`` call per window and channel on the CPU. The table prints the
median wall and CPU seconds of a few repeats (after a warm-up call) and their ratios to
``"mean"``; on a shared machine the CPU-time ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from lightning_xai.demos import SmallCNN
from lightning_xai.functional import occlusion


def median_seconds(baseline: str, model: torch.nn.Module, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median wall and CPU time (this process, all threads) of ``repeats`` occlusion calls, after a warm-up call."""
    run = lambda: occlusion(model, images, 0, window=4, stride=2, baseline=baseline)
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=32, help="image side (default 32)")
    parser.add_argument("--probes", type=int, default=4, help="images (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, num_classes=10, width=16).eval()
    images = torch.rand(args.probes, 3, args.size, args.size)
    rows = {name: median_seconds(name, model, images, args.repeats) for name in ("mean", "inpaint", "inpaint_ns")}
    windows = ((args.size - 4 + 1) // 2 + 1) ** 2
    print(
        f"occlusion of {args.probes} images 3x{args.size}x{args.size}, {windows} windows each, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'baseline':<12}{'wall s':>10}{'x mean':>10}{'cpu s':>10}{'x mean':>10}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<12}{wall:>10.3f}{wall / rows['mean'][0]:>10.2f}{cpu:>10.3f}{cpu / rows['mean'][1]:>10.2f}")


if __name__ == "__main__":
    main()
