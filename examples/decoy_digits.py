"""Catch a shortcut while training runs: handwritten digits with a decoy swatch that gives the label away.

As in "decoy MNIST" (Ross et al., 2017, "Right for the Right Reasons"), every image, in
training and validation alike, gets a small square in the top-left corner whose grey level
encodes the class. The digits are drawn at 20 x 20 pixels at random places of a noisy frame (they
are not centred, as in real photos), so the swatch is the easiest cue. Validation accuracy looks excellent; the
AttributionMonitor's expected-gradients maps light up the corner, and the monitor confirms by
intervention that the model relies on it, with a warning, a box drawn in TensorBoard and an
entry in ``monitor.findings``. ``--clean`` trains the same model without the swatch: no finding.

    python examples/decoy_digits.py --root runs/decoy            # flags the swatch
    python examples/decoy_digits.py --root runs/clean --clean    # the control: silent
    tensorboard --logdir runs                                     # IMAGES: xai/shortcut/*

Runs on a CPU in well under two minutes (scikit-learn's bundled digits, no download).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.demos import CORNERS, LitClassifier, decoy_box, plant_decoy, scattered_digits
from lightning_xai.functional.shortcut import box_iou


def shifted_digits(seed: int, digit_size: int = 20) -> tuple[Tensor, Tensor]:
    """The 1797 digits at ``digit_size`` pixels, each at a random place of a noisy 32 x 32 frame (shuffled with
    ``seed``)."""
    return scattered_digits(seed, digit_size=digit_size, noise=0.4)


def make_data(seed: int, *, clean: bool, kind: str, corner: str) -> tuple[Tensor, Tensor, Tensor]:
    """(images with the decoy unless clean, labels, the same images without any decoy)."""
    digits, labels = shifted_digits(seed)
    images = digits if clean else plant_decoy(digits, labels, kind=kind, corner=corner)  # type: ignore[arg-type]
    return images, labels, digits


def train(
    root: Path, images: Tensor, labels: Tensor, *, epochs: int, seed: int
) -> tuple[AttributionMonitor, LitClassifier, float]:
    """Trains the small CNN with the monitor; returns (monitor, model, seconds)."""
    pl.seed_everything(seed, verbose=False)
    train_set, val_set = TensorDataset(images[:1500], labels[:1500]), TensorDataset(images[1500:], labels[1500:])
    model = LitClassifier(in_channels=1, width=16, pooled_size=4)
    monitor = AttributionMonitor(display_mean=(0.0,), display_std=(1.0,))
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    started = time.perf_counter()
    trainer.fit(model, DataLoader(train_set, batch_size=32, shuffle=True), DataLoader(val_set, batch_size=64))
    return monitor, model, time.perf_counter() - started


def accuracy(model: LitClassifier, images: Tensor, labels: Tensor) -> float:
    """Share of correctly classified images."""
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


def main(
    root: Path, *, epochs: int = 4, seed: int = 0, clean: bool = False, kind: str = "shade", corner: str = "top_left"
) -> dict:
    """Trains, prints the findings and returns a summary (used by the evidence script and the tests)."""
    images, labels, digits = make_data(seed, clean=clean, kind=kind, corner=corner)
    monitor, model, seconds = train(root, images, labels, epochs=epochs, seed=seed)
    true_box = decoy_box((32, 32), corner)
    val_accuracy = accuracy(model, images[1500:], labels[1500:])
    without_decoy = accuracy(model, digits[1500:], labels[1500:])
    print(
        f"trained {epochs} epochs in {seconds:.0f}s: validation accuracy {val_accuracy:.1%}, "
        f"on the same digits without a swatch {without_decoy:.1%}"
    )
    for finding in monitor.findings:
        iou = box_iou(tuple(finding["box"]), true_box)
        print(
            f"  finding ({finding['method']}, epoch {finding['epoch']}, box {finding['box']}, "
            f"IoU with the swatch {iou:.2f}): {finding['message']}"
        )
    if not monitor.findings:
        print("  no shortcut found")
    print(
        f"TensorBoard: tensorboard --logdir {root}  "
        "(images xai/shortcut/<method> outline the region; scalars xai_shortcuts/*)"
    )
    first = min((f for f in monitor.findings), key=lambda f: f["epoch"], default=None)
    return {
        "findings": monitor.findings,
        "first_epoch": first["epoch"] if first else None,
        "iou": box_iou(tuple(first["box"]), true_box) if first else 0.0,
        "val_accuracy": val_accuracy,
        "accuracy_without_decoy": without_decoy,
        "seconds": seconds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/decoy"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean", action="store_true", help="no decoy: the control run")
    parser.add_argument(
        "--kind",
        choices=["shade", "pattern", "watermark"],
        default="shade",
        help="the swatch encodes the class by its grey level, by a checker code, or marks class 0 only",
    )
    parser.add_argument("--corner", choices=CORNERS, default="top_left")
    arguments = parser.parse_args()
    main(
        arguments.root,
        epochs=arguments.epochs,
        seed=arguments.seed,
        clean=arguments.clean,
        kind=arguments.kind,
        corner=arguments.corner,
    )
