"""Quick start: train a small CNN on handwritten digits, then explain eight test digits.

Computes every attribution method of ``lightning_xai.functional`` for the same probes and
saves, under ``--out`` (default ``maps/``): one PNG grid per method (heat maps over the
digits), ``probes.png``, and ``maps.pt`` with the raw maps. Runs on a CPU in under a minute;
needs scikit-learn for the bundled digits (no download).

    python examples/quickstart.py --out maps
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.demos import SmallCNN, load_digits
from lightning_xai.render import make_grid, overlay, save_png, to_rgb


def train(model: nn.Module, images: Tensor, labels: Tensor, *, epochs: int, seed: int) -> None:
    """Plain mini-batch training with Adam."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()


def one_probe_per_class(labels: Tensor, count: int) -> Tensor:
    """Index of the first image of each class 0..count-1."""
    return torch.stack([(labels == digit).nonzero()[0, 0] for digit in range(count)])


def attribution_methods(model: nn.Module, references: Tensor) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Every method, configured for 32x32 digits."""
    return {
        "occlusion": lambda x, t: F.occlusion(model, x, t, window=8, stride=4),
        "grad_cam": lambda x, t: F.grad_cam(model, x, t),
        "integrated_gradients": lambda x, t: F.integrated_gradients(model, x, t, baseline="zero", n_steps=32),
        "expected_gradients": lambda x, t: F.expected_gradients(model, x, t, baselines=references, n_samples=64),
        "saliency": lambda x, t: F.saliency(model, x, t),
        "smooth_grad": lambda x, t: F.smooth_grad(model, x, t, n_samples=32),
    }


def main(out: Path, epochs: int, probes: int, seed: int) -> dict[str, Tensor]:
    """Trains, explains, saves; returns the raw maps by method name."""
    torch.manual_seed(seed)
    images, labels = load_digits(32)
    train_idx, test_idx = torch.arange(0, 1500), torch.arange(1500, len(images))
    model = SmallCNN(in_channels=1, num_classes=10, width=16)
    started = time.perf_counter()
    train(model, images[train_idx], labels[train_idx], epochs=epochs, seed=seed)
    with torch.no_grad():
        accuracy = (model(images[test_idx]).argmax(1) == labels[test_idx]).float().mean().item()
    print(f"trained {epochs} epochs in {time.perf_counter() - started:.1f}s; test accuracy {accuracy:.1%}")
    chosen = test_idx[one_probe_per_class(labels[test_idx], probes)]
    x, t = images[chosen], labels[chosen]
    rgb = to_rgb(x, mean=(0.0,), std=(1.0,))
    save_png(make_grid(rgb), out / "probes.png")
    maps: dict[str, Tensor] = {}
    for name, method in attribution_methods(model, images[train_idx][:64]).items():
        started = time.perf_counter()
        maps[name] = method(x, t)
        seconds = time.perf_counter() - started
        save_png(make_grid(overlay(rgb, F.display_map(maps[name]))), out / f"{name}.png")
        print(f"{name:>22}: {seconds * 1000:7.1f} ms -> {out / (name + '.png')}")
    torch.save({"probes": x, "targets": t, **maps}, out / "maps.pt")
    print(f"raw maps: {out / 'maps.pt'}")
    return maps


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("maps"), help="folder for the PNG grids and maps.pt")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--probes", type=int, default=8, help="digits to explain, one per class (1-10)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    main(arguments.out, arguments.epochs, arguments.probes, arguments.seed)
