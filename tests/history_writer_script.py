"""Writes runs into a history folder forever (until killed); used by test_history.py's kill test."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lightning_xai.history import AttributionHistory

if __name__ == "__main__":
    history = AttributionHistory(Path(sys.argv[1]))
    step = 0
    while True:
        step += 1
        history.record(
            global_step=step,
            epoch=step,
            stage="fit",
            maps={"occlusion": torch.rand(64, 3, 64, 64)},
            targets=torch.zeros(64, dtype=torch.long),
            predictions=torch.zeros(64, dtype=torch.long),
            probabilities=torch.rand(64),
            metrics={"seconds/total": 0.1},
        )
        print(step, flush=True)
