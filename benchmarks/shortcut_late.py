"""A shortcut learnt late: how many epochs after it appears does each schedule flag it?

The adaptive schedule (the default) leaves the expensive methods out once their maps settle, and the
shortcut checks with them in the runs that draw only Grad-CAM. This measures what that costs a user
who relies on the flags: each fit trains on clean shifted digits (``benchmarks/shortcut_suite.py``)
until epoch ``switch``; from then on each training image carries a class-coded shade in the top-left
corner (the "shade, fixed corner" setting), and a share ``--leak`` of them (half by default) over the
digit of another, randomly chosen, training image, as when a data pipeline starts leaking the label:
a model that reads its digits well turns to the shade, gradually. Validation images are the shaded
digits throughout (digit and shade agree). Each epoch passes the training images ``--repeat`` times
(8: epochs of about 3 s, as in ``bench_monitor.py``'s 20-epoch row, whose maps settle within 4
epochs). Each fit is run with ``AttributionMonitor()`` and with
``AttributionMonitor(schedule="every_run")``.

    python benchmarks/shortcut_late.py                       # switches 6 and 10, seeds 0-2, SmallCNN (~20 min on 2 cores)
    python benchmarks/shortcut_late.py --seeds 5 --models SmallCNN ResNetStyle

How to read the table: one row per fit. ``flagged``: the first epoch with a finding whose box has
IoU >= 0.5 with the shade's (``-``: none); ``after switch``: epochs from the switch to that flag (0:
the first validation after training on shaded images); ``wrong``: findings that are not the shade
(before or after the switch); ``checks at``: the epochs whose runs ran the shortcut checks (``full``:
those that ran more than Grad-CAM);
``drop``: validation accuracy lost when the shade is shuffled over the images at the end (the model
really uses it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import sys
import tempfile
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shortcut_evidence import MODELS, accuracy, quiet_trainer, quiet_worker
from shortcut_suite import SETTINGS, Data

from lightning_xai import AttributionMonitor
from lightning_xai.demos import LitClassifier
from lightning_xai.functional.shortcut import box_iou

CLEAN = "clean: shifted digits"
PLANTED = "shade, fixed corner (shifted digits)"


class SwitchingData(pl.LightningDataModule):
    """Clean training images before epoch ``switch``, shades over shuffled digits from then on; shaded validation images."""

    def __init__(self, clean: Data, planted: Data, switch: int, seed: int, leak: float, repeat: int) -> None:
        super().__init__()
        self.clean, self.planted, self.switch, self.repeat = clean, planted, switch, repeat
        images, labels = planted.train
        top, left, bottom, right = planted.boxes[0]
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(labels), generator=generator)
        shuffled = torch.rand(len(labels), generator=generator) < leak
        leaking = images.clone()
        leaking[shuffled] = images[order][shuffled]  # another image's digit ...
        leaking[:, :, top:bottom, left:right] = images[:, :, top:bottom, left:right]  # ... under its label's shade
        self.leaking = (leaking, labels)

    def train_dataloader(self) -> DataLoader:
        late = self.trainer is not None and self.trainer.current_epoch >= self.switch
        images, labels = self.leaking if late else self.clean.train
        data = TensorDataset(images.repeat(self.repeat, 1, 1, 1), labels.repeat(self.repeat))
        return DataLoader(data, batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.planted.val), batch_size=64)


def fit(model_name: str, seed: int, switch: int, schedule: str, epochs_after: int, leak: float, repeat: int) -> dict:
    """One fit and what its monitor reported."""
    quiet_worker()
    clean, planted = SETTINGS[CLEAN](seed), SETTINGS[PLANTED](seed)
    pl.seed_everything(seed, verbose=False)
    model = LitClassifier(MODELS[model_name](planted.channels, planted.num_classes), lr=3e-3)
    monitor = AttributionMonitor(schedule=schedule)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = quiet_trainer(Path(root), monitor, switch + epochs_after, reload_dataloaders_every_n_epochs=1)
        trainer.fit(model, datamodule=SwitchingData(clean, planted, switch, seed, leak, repeat))
    shade = planted.boxes[0]
    on_shade = [f["kind"] == "region" and box_iou(f["box"], shade) >= 0.5 for f in monitor.findings]
    right = [f["epoch"] for f, hit in zip(monitor.findings, on_shade) if hit]
    return {
        "model": model_name,
        "seed": seed,
        "switch": switch,
        "schedule": schedule,
        "flagged": min(right) if right else None,
        "wrong": on_shade.count(False),
        "checks": [r["epoch"] for r in monitor.history if "xai_cost/seconds_shortcuts" in r.get("metrics", {})],
        "full": [r["epoch"] for r in monitor.history if len(r["methods"]) > 1],
        "drop": accuracy(model, *planted.val) - accuracy(model, planted.shuffled_val, planted.val[1]),
        "monitor_seconds": monitor.cost["seconds"],
    }


def _job(task: tuple[str, int, int, str, int, float, int]) -> dict:
    return fit(*task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--switches", type=int, nargs="+", default=[6, 10])
    parser.add_argument("--after", type=int, default=6, help="epochs trained on shaded images")
    parser.add_argument("--leak", type=float, default=0.5, help="share of shaded images over another's digit")
    parser.add_argument("--repeat", type=int, default=8, help="passes over the training images per epoch")
    parser.add_argument("--models", nargs="+", default=["SmallCNN"], choices=sorted(MODELS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    tasks = [
        (model, seed, switch, schedule, args.after, args.leak, args.repeat)
        for model in args.models
        for switch in args.switches
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for schedule in ("adaptive", "every_run")
    ]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(_job, tasks)
    print("| model | seed | switch | schedule | flagged | after switch | wrong | checks at | full | drop | monitor s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        after = "-" if r["flagged"] is None else r["flagged"] - r["switch"]
        flagged = "-" if r["flagged"] is None else r["flagged"]
        checks, full = (",".join(str(epoch) for epoch in r[key]) for key in ("checks", "full"))
        print(
            f"| {r['model']} | {r['seed']} | {r['switch']} | {r['schedule']} | {flagged} | {after} | {r['wrong']} "
            f"| {checks} | {full} | {r['drop']:.1%} | {r['monitor_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
