"""Train a small vision transformer on handwritten digits with ``AttributionMonitor()`` and no arguments.

The model (``lightning_xai.demos.TinyViT``) has a conv patch embedding, a class token and a
pre-norm ``nn.TransformerEncoder``. The monitor's defaults explain 16 fixed validation digits each
epoch with Grad-CAM, occlusion and expected gradients; Grad-CAM explains the input of the last
block's attention (``net.encoder.layers.1.norm1``), where every patch token still matters, and
reads its ``[N, 1 + 4*4, 32]`` tokens (a class token, then 4x4 patches of 4x4 pixels of the 16x16
digits) as a 4x4 grid. Runs on a CPU in well under a minute (scikit-learn's bundled digits, no
download):

    python examples/vit_digits.py --root runs/vit_digits
    tensorboard --logdir runs/vit_digits        # then open the IMAGES tab
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytorch_lightning as pl

from lightning_xai import AttributionMonitor
from lightning_xai.demos import LitClassifier, TinyViT, digits_loaders


def main(root: Path, *, epochs: int = 3, seed: int = 0) -> dict:
    """Trains with the monitor and prints where the maps are; returns what a test needs."""
    pl.seed_everything(seed, verbose=False)
    train, val = digits_loaders(size=16, batch_size=32)
    model = LitClassifier(TinyViT(in_channels=1, num_classes=10, image_size=16, patch_size=4, dim=32, heads=2), lr=2e-3)
    monitor = AttributionMonitor()
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        enable_checkpointing=False,
    )
    started = time.perf_counter()
    trainer.fit(model, train, val)
    seconds = time.perf_counter() - started
    log_dir = Path(trainer.logger.log_dir)
    summary = json.loads((log_dir / "xai" / "summary.json").read_text())
    layer = summary["methods"]["grad_cam"]["layer"]  # the layer the monitor chose and explained, as it reported
    print(f"fit with the monitor: {seconds:.1f}s, validation accuracy {float(trainer.callback_metrics['val_acc']):.1%}")
    print(f"Grad-CAM layer: {layer} (the input of the last transformer block's attention)")
    for run in monitor.history:
        print(
            f"  epoch {run['epoch']} step {run['global_step']}: "
            f"probe accuracy {run['metrics']['xai_probes/accuracy']:.0%}"
        )
    print(
        f"TensorBoard: tensorboard --logdir {root}  "
        "(images xai/probes, xai/grad_cam, xai/occlusion, xai/expected_gradients)"
    )
    print(f"raw maps and summary: {log_dir / 'xai'}")
    return {
        "seconds": seconds,
        "runs": monitor.history,
        "log_dir": log_dir,
        "layer": layer,
        "model": model,
        "monitor": monitor,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=Path("runs/vit_digits"), help="log folder (default runs/vit_digits)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    main(arguments.root, epochs=arguments.epochs, seed=arguments.seed)
