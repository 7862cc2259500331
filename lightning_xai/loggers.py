"""The one place that talks to Lightning loggers and TensorBoard.

Images and scalars go to the first ``TensorBoardLogger`` among ``trainer.loggers``; with none
(a CSVLogger, ``logger=False``) images are written as PNG files under ``<log_dir>/xai/`` and
scalars only to ``summary.json``, and the user is told so once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from lightning_xai.render import encode_png, save_png

__all__ = ["PNG_COMPRESS_LEVEL", "XaiLogger", "find_tensorboard_writer", "resolve_log_dir"]

PNG_COMPRESS_LEVEL = 1
"""zlib level of the monitor's images: three times faster to encode than TensorBoard's own (6), a fifth larger."""


def _tensorboard_logger_types() -> tuple[type, ...]:
    """TensorBoardLogger of ``pytorch_lightning``, and of the unified ``lightning`` package when it
    is in use: a trainer of that package has imported it already (importing it here would cost
    0.1-0.4 s inside the user's fit for nothing)."""
    types: list[type] = [TensorBoardLogger]
    unified = sys.modules.get("lightning.pytorch.loggers")
    if unified is not None:
        types.append(unified.TensorBoardLogger)
    return tuple(types)


def find_tensorboard_writer(trainer: Any) -> Any | None:
    """The ``SummaryWriter`` of the first TensorBoard logger in ``trainer.loggers``, or ``None``."""
    types = _tensorboard_logger_types()
    for logger in getattr(trainer, "loggers", []) or []:
        if isinstance(logger, types):
            return logger.experiment
    return None


def resolve_log_dir(trainer: Any) -> Path:
    """Where the run logs: the first logger's ``log_dir`` (or ``save_dir``), else ``default_root_dir``.

    Computed without ``trainer.log_dir``, which broadcasts and so must not be called from one rank.
    """
    for logger in getattr(trainer, "loggers", []) or []:
        for attribute in ("log_dir", "save_dir"):
            value = getattr(logger, attribute, None)
            if value:
                return Path(value)
    return Path(trainer.default_root_dir)


class XaiLogger:
    """Writes the monitor's images, scalars and text to TensorBoard, or to PNG files.

    Args:
        writer: a TensorBoard ``SummaryWriter``, or ``None`` for the file fallback.
        folder: ``<log_dir>/xai``; PNG files go under ``<folder>/images/``.
    """

    def __init__(self, writer: Any | None, folder: Path) -> None:
        self.writer = writer
        self.folder = folder

    def layout(self, layout: dict[str, Any]) -> None:
        """Writes TensorBoard's custom-scalars layout (charts that group related curves)."""
        if self.writer is not None and hasattr(self.writer, "add_custom_scalars"):
            self.writer.add_custom_scalars(layout)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Logs an RGB image ``[3, H, W]`` in [0, 1] under ``tag`` at ``step``."""
        if self.writer is None:
            save_png(image, self.folder / "images" / tag.replace("/", "_") / f"step-{step:08d}.png", compress_level=PNG_COMPRESS_LEVEL)
        elif isinstance(self.writer, SummaryWriter):
            self.writer._get_file_writer().add_summary(_image_summary(tag, image), step)  # what add_image does, with faster PNG encoding
        else:  # another writer class (tensorboardX): its own add_image
            self.writer.add_image(tag, image.clamp(0, 1), global_step=step, dataformats="CHW")

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs each scalar under its tag at ``step`` (TensorBoard only)."""
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Logs a markdown text under ``tag`` (TensorBoard only)."""
        if self.writer is not None:
            self.writer.add_text(tag, markdown, global_step=step)

    def flush(self) -> None:
        """Makes everything logged so far visible to readers of the event file."""
        if self.writer is not None:
            self.writer.flush()


def _image_summary(tag: str, image: Tensor) -> Summary:
    """A TensorBoard image summary of an RGB image ``[3, H, W]`` in [0, 1]."""
    png = encode_png(image, compress_level=PNG_COMPRESS_LEVEL)
    encoded = Summary.Image(height=image.shape[-2], width=image.shape[-1], colorspace=3, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])
