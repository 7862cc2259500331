"""Evidence for shortcut detection: decoy vs clean digits over many seeds, and other planted shortcuts.

For each setting and seed, trains examples/decoy_digits.py's model with the monitor and records
whether a shortcut was flagged by epoch 3 (0-based epoch index <= 2) with the reported box
overlapping the true swatch (IoU >= 0.5). Prints one table. Takes about 15 s per run on 2 CPU cores.

    python benchmarks/shortcut_evidence.py --seeds 10
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import runpy
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "decoy shade, top-left (the example)": {"clean": False, "kind": "shade", "corner": "top_left"},
    "clean (control)": {"clean": True, "kind": "shade", "corner": "top_left"},
    "decoy pattern, top-left": {"clean": False, "kind": "pattern", "corner": "top_left"},
    "decoy shade, bottom-right": {"clean": False, "kind": "shade", "corner": "bottom_right"},
    "watermark on class 0 only, top-left": {"clean": False, "kind": "watermark", "corner": "top_left"},
}


def run(setting: dict, seed: int, epochs: int) -> dict:
    example = runpy.run_path(str(ROOT / "examples" / "decoy_digits.py"))
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return example["main"](Path(root), epochs=epochs, seed=seed, **setting)


def summarise(name: str, results: list[dict]) -> str:
    flagged = [r for r in results if r["first_epoch"] is not None and r["first_epoch"] <= 2]
    on_target = [r for r in flagged if r["iou"] >= 0.5]
    mean = lambda values: sum(values) / max(1, len(values))  # noqa: E731
    epochs = sorted(r["first_epoch"] for r in flagged)
    return (
        f"{name:<38} {len(results):>5} {len(flagged):>8} {len(on_target):>10} {str(epochs):>24} "
        f"{mean([r['val_accuracy'] for r in results]):>8.1%} {mean([r['accuracy_without_decoy'] for r in results]):>10.1%} "
        f"{mean([r['seconds'] for r in results]):>6.0f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", nargs="*", help="names of settings to run (default: all)")
    arguments = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"{'setting':<38} {'runs':>5} {'flagged':>8} {'IoU>=0.5':>10} {'first epoch (0-based)':>24} {'val acc':>8} {'no-decoy':>10} {'time':>7}")
    for name, setting in SETTINGS.items():
        if arguments.only and not any(o in name for o in arguments.only):
            continue
        results = [run(setting, seed, arguments.epochs) for seed in range(arguments.seeds)]
        print(summarise(name, results), flush=True)


if __name__ == "__main__":
    main()
