"""Adaptive occlusion and bfloat16 autocast against exact float32 occlusion: time, passes, fidelity.

Run from the repository root::

    python benchmarks/bench_adaptive.py             # about a minute on a 2-core CPU
    python benchmarks/bench_adaptive.py --repeats 3 --heads fitted

How to read the table
---------------------
One row per network, input size and classifier head; 8 probe digits (grey, copied to 3 channels),
the fine grid is window 8 / stride 4 at 32 x 32 and window 16 / stride 8 at 64 x 64 (7 x 7
placements either way). Times are the best of ``--repeats`` rounds after one warm-up round, the
methods interleaved within each round, all at the default batch size.

* ``head``: ``random`` keeps the seeded random weights; ``fitted`` replaces the last linear layer
  by a ridge regression on 1000 digits' features (random convolutions, a trained classifier), so
  that occlusion drops have a realistic size relative to the scores. With random weights the
  drops are about 1% of the scores, below bfloat16's resolution: its maps are then mostly noise.
* ``exact s``: :func:`occlusion` in float32, the reference for every other column.
* ``adaptive``: :func:`adaptive_occlusion` with its defaults (``coarse_mode="subsample"``,
  ``coarse_factor=2``, ``refine_fraction=0.25``); ``enlarge``: ``coarse_mode="enlarge"``.
  ``x`` is the speed-up (exact time / its time), ``passes`` the images the model evaluated
  relative to exact occlusion, ``rho`` the Spearman rank correlation with the exact map (mean
  over the probes), ``err`` the largest absolute difference divided by the exact map's largest
  absolute value (per probe; the worst probe).
* ``bf16``: :func:`occlusion` with ``autocast_dtype=torch.bfloat16`` (same passes), same columns.

The CPU's load average is printed before and after: timings taken while other work runs are
not trustworthy.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_xai.demos import ResNetStyle, SmallCNN, load_digits
from lightning_xai.functional import occlusion
from lightning_xai.functional.adaptive_occlusion import adaptive_occlusion, adaptive_occlusion_with_counts
from lightning_xai.functional.stability import rank_correlation


@dataclass(frozen=True)
class Config:
    name: str
    build: Callable[[], nn.Module]
    size: int
    window: int
    stride: int


CONFIGS = [
    Config("ResNetStyle w16 b2", lambda: ResNetStyle(width=16, blocks_per_stage=2), 32, 8, 4),
    Config("ResNetStyle w16 b2", lambda: ResNetStyle(width=16, blocks_per_stage=2), 64, 16, 8),
    Config("SmallCNN w16", lambda: SmallCNN(width=16), 32, 8, 4),
]


def _head(model: nn.Module) -> tuple[nn.Linear, Callable[[Tensor], Tensor]]:
    """The last linear layer and a function giving its input features."""
    if isinstance(model, SmallCNN):
        return model.classifier[-1], lambda x: model.pool(model.features(x)).flatten(1)
    body = lambda x: model.layer4(model.layer3(model.layer2(model.layer1(model.stem(x)))))
    return model.fc, lambda x: model.pool(body(x)).flatten(1)


def fit_head(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Ridge regression of one-hot (+-1) labels on the features; returns held-out accuracy."""
    head, features_of = _head(model)
    with torch.no_grad():
        features = torch.cat(
            [torch.cat([features_of(chunk) for chunk in images[:1000].split(100)]), torch.ones(1000, 1)], 1
        )
        targets = nn.functional.one_hot(labels[:1000], 10).float() * 2 - 1
        ridge = features.T @ features + 0.1 * torch.eye(features.shape[1])
        solution = torch.linalg.solve(ridge, features.T @ targets)
        head.weight.copy_(solution[:-1].T)
        head.bias.copy_(solution[-1])
        predicted = torch.cat([model(chunk).argmax(1) for chunk in images[1000:1400].split(100)])
    return float((predicted == labels[1000:1400]).float().mean())


def timed(functions: dict[str, Callable[[], Tensor]], repeats: int) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Best time of each function over ``repeats`` rounds, the functions interleaved within a
    round (so that a burst of load from elsewhere hits them alike), after one warm-up round."""
    results = {name: function() for name, function in functions.items()}
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            results[name] = function()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}, results


def fidelity(approx: Tensor, exact: Tensor) -> tuple[float, float]:
    """Mean Spearman correlation and worst per-probe max |error| / max |exact|."""
    relative = (approx - exact).flatten(1).abs().amax(1) / exact.flatten(1).abs().amax(1)
    return float(rank_correlation(approx, exact).mean()), float(relative.max())


def run_config(config: Config, head: str, digits: tuple[Tensor, Tensor], repeats: int) -> str:
    images = load_digits(config.size)[0].expand(-1, 3, -1, -1) if config.size != 32 else digits[0].expand(-1, 3, -1, -1)
    torch.manual_seed(0)
    model = config.build().eval()
    accuracy = fit_head(model, images, digits[1]) if head == "fitted" else float("nan")
    probes = images[1500:1508].contiguous()
    kwargs = {"window": config.window, "stride": config.stride}
    functions = {
        "exact": lambda: occlusion(model, probes, **kwargs),
        "subsample": lambda: adaptive_occlusion(model, probes, coarse_mode="subsample", **kwargs),
        "enlarge": lambda: adaptive_occlusion(model, probes, coarse_mode="enlarge", **kwargs),
        "bf16": lambda: occlusion(model, probes, autocast_dtype=torch.bfloat16, **kwargs),
    }
    seconds, maps = timed(functions, repeats)
    cells = [f"{config.name:18} {config.size:3d}px {head:6} {accuracy:4.2f} | {seconds['exact']:6.2f}"]
    for mode in ("subsample", "enlarge"):
        counts = adaptive_occlusion_with_counts(model, probes, coarse_mode=mode, **kwargs)
        rho, err = fidelity(maps[mode], maps["exact"])
        passes = counts.forward_passes / counts.exact_forward_passes
        cells.append(
            f"{seconds[mode]:5.2f} {seconds['exact'] / seconds[mode]:4.2f} {passes:4.2f} {rho:5.3f} {err:5.3f}"
        )
    rho, err = fidelity(maps["bf16"], maps["exact"])
    cells.append(f"{seconds['bf16']:5.2f} {seconds['exact'] / seconds['bf16']:4.2f} {rho:5.3f} {err:5.3f}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per measurement (the best is reported)")
    parser.add_argument("--heads", nargs="+", choices=["random", "fitted"], default=["random", "fitted"])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} (1 min)"
    )
    digits = load_digits(32)
    groups = "exact s | adaptive (subsample): s x passes rho err | enlarge: s x passes rho err | bf16: s x rho err"
    print(f"{'model':18} {'size':5} {'head':6} {'acc':4} | {groups}")
    for head in args.heads:
        for config in CONFIGS:
            print(run_config(config, head, digits, args.repeats), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
