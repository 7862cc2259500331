"""Train a small CNN on handwritten digits with the AttributionMonitor watching.

Every validation epoch the monitor explains 16 fixed validation digits with Grad-CAM, occlusion
and expected gradients, and logs the maps to TensorBoard. Runs on a CPU in about a minute
(scikit-learn's bundled digits, no download):

    python examples/monitor_digits.py --root runs/digits
    tensorboard --logdir runs/digits        # then open the IMAGES and SCALARS tabs

``--compare`` trains the same model a second time without the monitor and prints how much the
monitor added to the fit time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytorch_lightning as pl

from lightning_xai import AttributionMonitor, ExpectedGradients, GradCAM, IntegratedGradients, Occlusion, SanityCheck
from lightning_xai.demos import LitClassifier, SmallCNN, digits_loaders
from lightning_xai.faithfulness import Faithfulness
from lightning_xai.monitor import tags


def fit(root: Path, *, epochs: int, monitor: AttributionMonitor | None, seed: int) -> tuple[float, pl.Trainer]:
    """Trains from scratch and returns (fit wall time in seconds, trainer)."""
    pl.seed_everything(seed, verbose=False)
    train, val = digits_loaders(size=32, batch_size=64)
    model = LitClassifier(SmallCNN(in_channels=1, num_classes=10, width=16, dropout=0.1))
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=[monitor] if monitor is not None else [],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        enable_checkpointing=True,
    )
    started = time.perf_counter()
    trainer.fit(model, train, val)
    return time.perf_counter() - started, trainer


def main(root: Path, *, epochs: int = 6, compare: bool = False, seed: int = 0, faithfulness: bool = False) -> dict:
    """Trains with the monitor (and, with ``compare``, without) and prints where the results are."""
    monitor = AttributionMonitor(
        [GradCAM(), Occlusion(), ExpectedGradients(), IntegratedGradients()],
        display_mean=(0.0,),
        display_std=(1.0,),
        faithfulness=Faithfulness() if faithfulness else None,
        sanity=SanityCheck() if faithfulness else None,
    )
    seconds, trainer = fit(root, epochs=epochs, monitor=monitor, seed=seed)
    runs = monitor.history
    print(f"fit with the monitor: {seconds:.1f}s, validation accuracy {float(trainer.callback_metrics['val_acc']):.1%}")
    for run in runs:
        timings = ", ".join(
            f"{k.removeprefix('xai_cost/seconds_')} {v:.2f}s"
            for k, v in run["metrics"].items()
            if k.startswith("xai_cost/seconds_")
        )
        print(
            f"  epoch {run['epoch']} step {run['global_step']}: "
            f"probe accuracy {run['metrics'][tags.PROBE_ACCURACY]:.0%}; {timings}"
        )
    log_dir = Path(trainer.logger.log_dir)
    print(
        f"TensorBoard: tensorboard --logdir {root}  "
        "(images xai/probes, xai/maps/<method>, xai/filmstrip/<method>; scalars in the xai_* sections)"
    )
    print(f"raw maps and summary: {log_dir / 'xai'}")
    if faithfulness:
        last = runs[-1]["metrics"]
        for name in ("grad_cam", "occlusion", "expected_gradients", "integrated_gradients"):
            print(
                f"  {name:>22}: deletion AUC {last[tags.faithfulness(name, 'deletion_auc_mean')]:.2f} "
                f"(random {last[tags.faithfulness('random', 'deletion_auc_mean')]:.2f}), insertion AUC "
                f"{last[tags.faithfulness(name, 'insertion_auc_mean')]:.2f} "
                f"(random {last[tags.faithfulness('random', 'insertion_auc_mean')]:.2f})"
            )
    result = {"seconds_with": seconds, "runs": runs, "log_dir": log_dir}
    if compare:
        baseline, _ = fit(root / "without_monitor", epochs=epochs, monitor=None, seed=seed)
        monitor_seconds = monitor.cost["seconds"]
        print(
            f"fit without the monitor: {baseline:.1f}s; the monitor added {seconds - baseline:+.1f}s "
            f"({seconds / baseline - 1:+.1%}); its own runs took {monitor_seconds:.1f}s (maps, checks, logging)"
        )
        result["seconds_without"] = baseline
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/digits"), help="log folder (default runs/digits)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--compare", action="store_true", help="also train without the monitor and compare fit time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faithfulness", action="store_true", help="also judge the maps: deletion/insertion curves, sanity check"
    )
    arguments = parser.parse_args()
    main(
        arguments.root,
        epochs=arguments.epochs,
        compare=arguments.compare,
        seed=arguments.seed,
        faithfulness=arguments.faithfulness,
    )
