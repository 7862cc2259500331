"""The logger's image path: TensorBoard summaries it encodes itself, and the PNG file fallback."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_xai.loggers import XaiLogger


def _picture() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 7, 11), generator=generator).float() / 255


def _pixels(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_images_reach_tensorboard_pixel_exact_at_their_step(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    logger = XaiLogger(writer, tmp_path / "xai")
    picture = _picture()
    logger.image("xai/picture", picture, 3)
    logger.image("xai/picture", 1 - picture, 5)
    logger.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    logged = events.Images("xai/picture")
    assert [(e.step, e.width, e.height) for e in logged] == [(3, 11, 7), (5, 11, 7)]
    for event, expected in zip(logged, (picture, 1 - picture)):
        decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        assert np.array_equal(decoded, _pixels(expected))
    writer.close()


def test_without_tensorboard_images_are_png_files(tmp_path):
    logger = XaiLogger(None, tmp_path / "xai")
    picture = _picture()
    logger.image("xai/picture", picture, 3)
    saved = tmp_path / "xai" / "images" / "xai_picture" / "step-00000003.png"
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), _pixels(picture))


def test_every_logger_kind_gets_its_backend_and_csv_none(tmp_path):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from lightning_xai.loggers import CometBackend, MLflowBackend, TensorBoardBackend, WandbBackend, backends_for

    kinds = {name: type(name, (), {}) for name in ("WandbLogger", "MLFlowLogger", "CometLogger")}
    loggers = [CSVLogger(tmp_path), TensorBoardLogger(tmp_path), *(kind() for kind in kinds.values())]
    assert [type(b) for b in backends_for(loggers)] == [TensorBoardBackend, WandbBackend, MLflowBackend, CometBackend]
    assert backends_for([CSVLogger(tmp_path)]) == []


def test_markdown_tables_become_columns_and_rows():
    from lightning_xai.loggers import markdown_table

    table = "| probe | label | sigmoid |\n|---|---|---|\n| 0 | 3 | 91.0% |\n| 1 | ? | 12.5% |"
    assert markdown_table(table) == (["probe", "label", "sigmoid"], [["0", "3", "91.0%"], ["1", "?", "12.5%"]])
    assert markdown_table("plain words") == (["text"], [["plain words"]])
