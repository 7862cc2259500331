"""The sanity and robustness checks of every method on the digits example: which methods fail them.

Trains the examples' SmallCNN on scikit-learn's digits (32x32, a few epochs, CPU), then runs
``monitor.sanity_check`` (cascading model randomization) and ``monitor.robustness_check`` (input
invariance, fragility) for every method, and prints one markdown table. docs/methods.md quotes it.

    python benchmarks/method_checks.py --epochs 4 --probes 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_xai import (
    AttributionMonitor,
    DeconvNet,
    ExpectedGradients,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    Mask,
    Occlusion,
    RobustnessCheck,
    Saliency,
    SmoothGrad,
)
from lightning_xai.demos import LitClassifier, digits_loaders

METHODS = [
    Saliency(),
    SmoothGrad(n_samples=16),
    IntegratedGradients(n_steps=16),
    ExpectedGradients(n_samples=16, reference_count=32),
    Occlusion(),
    GradCAM(),
    GuidedBackprop(),
    DeconvNet(),
    GuidedGradCAM(),
    Mask(steps=60),
]


def main(epochs: int, probes: int, seed: int) -> None:
    """Trains, checks, prints the table."""
    pl.seed_everything(seed, verbose=False)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, val = digits_loaders(32, batch_size=64)
    model = LitClassifier(in_channels=1, width=8)
    monitor = AttributionMonitor(METHODS, num_probes=probes, shortcuts=None, stability=None, every_n_epochs=epochs)
    root = Path(tempfile.mkdtemp())
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=[monitor],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train, val)
    started = time.perf_counter()
    sanity = monitor.sanity_check(trainer, model)
    robust = monitor.robustness_check(trainer, model, RobustnessCheck(steps=4))
    print(f"checks took {time.perf_counter() - started:.0f}s on {probes} probes after {epochs} epochs (seed {seed})\n")
    print(
        "| method | sanity: rank corr. trained vs randomized (lower is better) | insensitive "
        "| input invariance (rank corr.) | fragility top-10% IoU | fragility rank corr. | fails |"
    )
    print("|---|---|---|---|---|---|---|")
    for key in sanity:
        s, r = sanity[key], robust[key]
        print(
            f"| {key} | {s['spearman']:.2f} | {'yes' if s['insensitive'] else 'no'} "
            f"| {r['input_invariance_spearman']:.2f} "
            f"| {r['fragility_topk_iou']:.2f} | {r['fragility_spearman']:.2f} | {', '.join(r['fails']) or '-'} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    main(arguments.epochs, arguments.probes, arguments.seed)
