"""The one place that talks to Lightning loggers: TensorBoard, Weights & Biases, MLflow, Comet.

Images, scalars and the predictions table go to every logger in ``trainer.loggers`` that can
take them, each through a small backend: the first ``TensorBoardLogger`` (its ``SummaryWriter``),
``WandbLogger`` (``log_image``/``log_metrics``/``log_text``), ``MLFlowLogger`` (metrics, and
images and tables as run artifacts) and ``CometLogger`` (its experiment). With none of them (a
CSVLogger, ``logger=False``) images are written as PNG files under ``<log_dir>/xai/`` and scalars
only to ``summary.json``, and the user is told so once.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from lightning_xai.render import encode_png, save_png

__all__ = [
    "CometBackend",
    "MLflowBackend",
    "PNG_COMPRESS_LEVEL",
    "TensorBoardBackend",
    "WandbBackend",
    "XaiLogger",
    "backends_for",
    "find_tensorboard_writer",
    "resolve_log_dir",
]

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
            return getattr(logger, "experiment", None)
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


class TensorBoardBackend:
    """A TensorBoard ``SummaryWriter`` (or tensorboardX's): images, scalars, text, the custom-scalars layout."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def layout(self, layout: dict[str, Any]) -> None:
        """Writes TensorBoard's custom-scalars layout (charts that group related curves)."""
        if hasattr(self.writer, "add_custom_scalars"):
            self.writer.add_custom_scalars(layout)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Logs an RGB image ``[3, H, W]`` in [0, 1]."""
        if isinstance(self.writer, SummaryWriter):
            self.writer._get_file_writer().add_summary(
                _image_summary(tag, image), step
            )  # what add_image does, with faster PNG encoding
        else:  # another writer class (tensorboardX): its own add_image
            self.writer.add_image(tag, image.clamp(0, 1), global_step=step, dataformats="CHW")

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs each scalar under its tag."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Logs a markdown text."""
        self.writer.add_text(tag, markdown, global_step=step)

    def flush(self) -> None:
        """Makes everything visible to readers of the event file."""
        self.writer.flush()


class WandbBackend:
    """A Lightning ``WandbLogger``: images with ``log_image``, scalars with ``log_metrics``, tables with ``log_text``.

    Steps go in as the ``trainer/global_step`` value Lightning's own metrics use, never as W&B's
    own step (which must only grow).
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def layout(self, layout: dict[str, Any]) -> None:
        """W&B groups charts by the part of the name before ``/`` by itself."""

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Logs an RGB image ``[3, H, W]`` in [0, 1] as a ``wandb.Image``."""
        self.logger.log_image(key=tag, images=[_uint8_hwc(image)], step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs the scalars at ``step``."""
        self.logger.log_metrics(dict(values), step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Logs a markdown table as a ``wandb.Table``."""
        columns, rows = markdown_table(markdown)
        self.logger.log_text(key=tag, columns=columns, data=rows, step=step)

    def flush(self) -> None:
        """W&B sends in the background."""


class MLflowBackend:
    """A Lightning ``MLFlowLogger``: scalars as metrics, images and tables as artifacts ``<tag>/step-<step>.png|.md``."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def layout(self, layout: dict[str, Any]) -> None:
        """MLflow has no chart layout to write."""

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Logs an RGB image ``[3, H, W]`` in [0, 1] as a PNG artifact."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"step-{step:08d}.png"
            path.write_bytes(encode_png(image, compress_level=PNG_COMPRESS_LEVEL))
            self.logger.experiment.log_artifact(self.logger.run_id, str(path), artifact_path=tag)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs the scalars as metrics at ``step``."""
        self.logger.log_metrics(dict(values), step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Logs a markdown text as an artifact."""
        self.logger.experiment.log_text(self.logger.run_id, markdown, f"{tag}/step-{step:08d}.md")

    def flush(self) -> None:
        """MLflow writes each call at once."""


class CometBackend:
    """A Lightning ``CometLogger``: its experiment's ``log_image``, ``log_metrics`` and ``log_text``."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def layout(self, layout: dict[str, Any]) -> None:
        """Comet has no chart layout to write."""

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Logs an RGB image ``[3, H, W]`` in [0, 1]."""
        self.logger.experiment.log_image(_uint8_hwc(image), name=tag, step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs the scalars at ``step``."""
        self.logger.experiment.log_metrics(dict(values), step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Logs a markdown text."""
        self.logger.experiment.log_text(markdown, step=step, metadata={"tag": tag})

    def flush(self) -> None:
        """Comet sends in the background."""


_BACKENDS = {"WandbLogger": WandbBackend, "MLFlowLogger": MLflowBackend, "CometLogger": CometBackend}


def backends_for(loggers: Sequence[Any]) -> list[Any]:
    """A backend for the first TensorBoard logger and for every W&B, MLflow and Comet logger among ``loggers``.

    Loggers of other kinds (CSV) are left out. Matched by class name, so the ``lightning`` and
    ``pytorch_lightning`` packages' loggers both count and neither package is imported here.

    Example:
        >>> backends_for([])
        []
    """
    backends: list[Any] = []
    writer = find_tensorboard_writer(type("Trainer", (), {"loggers": list(loggers)})())
    if writer is not None:
        backends.append(TensorBoardBackend(writer))
    for logger in loggers:
        for kind in type(logger).__mro__:
            if kind.__name__ in _BACKENDS:
                backends.append(_BACKENDS[kind.__name__](logger))
                break
    return backends


class XaiLogger:
    """Writes the monitor's images, scalars and text to every backend, or images to PNG files without any.

    Args:
        writer: a TensorBoard ``SummaryWriter``, or ``None``.
        folder: ``<log_dir>/xai``; PNG files go under ``<folder>/images/`` when there is no backend.
        backends: more backends (see :func:`backends_for`).

    Example:
        >>> from pathlib import Path
        >>> XaiLogger(None, Path("xai")).active
        False
    """

    def __init__(self, writer: Any | None, folder: Path, *, backends: Sequence[Any] = ()) -> None:
        self.writer = writer
        self.folder = folder
        self.backends = ([TensorBoardBackend(writer)] if writer is not None else []) + list(backends)

    @classmethod
    def for_trainer(cls, trainer: Any, folder: Path) -> XaiLogger:
        """A logger for every logger of ``trainer.loggers`` that can take images and scalars."""
        backends = backends_for(getattr(trainer, "loggers", []) or [])
        writer = next((b.writer for b in backends if isinstance(b, TensorBoardBackend)), None)
        return cls(writer, folder, backends=[b for b in backends if not isinstance(b, TensorBoardBackend)])

    @property
    def active(self) -> bool:
        """Whether any logger takes the monitor's output (else images become PNG files)."""
        return bool(self.backends)

    @property
    def thread_safe(self) -> bool:
        """Whether images may be logged from another thread: only TensorBoard writers (their events
        go through a queue to the writer's own thread); other clients are called from the hook's."""
        return all(isinstance(backend, TensorBoardBackend) for backend in self.backends)

    def layout(self, layout: dict[str, Any]) -> None:
        """Writes TensorBoard's custom-scalars layout (charts that group related curves)."""
        for backend in self.backends:
            backend.layout(layout)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Logs an RGB image ``[3, H, W]`` in [0, 1] under ``tag`` at ``step`` (a PNG file without any backend)."""
        if not self.backends:
            save_png(
                image,
                self.folder / "images" / tag.replace("/", "_") / f"step-{step:08d}.png",
                compress_level=PNG_COMPRESS_LEVEL,
            )
        for backend in self.backends:
            backend.image(tag, image, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logs each scalar under its tag at ``step``."""
        for backend in self.backends:
            backend.scalars(values, step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Logs a markdown text under ``tag``."""
        for backend in self.backends:
            backend.text(tag, markdown, step)

    def flush(self) -> None:
        """Makes everything logged so far visible to readers."""
        for backend in self.backends:
            backend.flush()


def markdown_table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The columns and rows of a markdown table (``| a | b |`` lines; the ``|---|`` line skipped).

    Example:
        >>> markdown_table("| probe | label |\\n|---|---|\\n| 0 | 3 |")
        (['probe', 'label'], [['0', '3']])
    """
    lines = [line.strip().strip("|") for line in markdown.splitlines() if line.strip().startswith("|")]
    cells = [
        [cell.strip() for cell in line.split("|")]
        for line in lines
        if not set(line.replace("|", "").strip()) <= {"-", ":"}
    ]
    if not cells:
        return ["text"], [[markdown]]
    return cells[0], cells[1:]


def _uint8_hwc(image: Tensor) -> Any:
    """An RGB image ``[3, H, W]`` in [0, 1] as a NumPy ``uint8`` array ``[H, W, 3]``."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _image_summary(tag: str, image: Tensor) -> Summary:
    """A TensorBoard image summary of an RGB image ``[3, H, W]`` in [0, 1]."""
    png = encode_png(image, compress_level=PNG_COMPRESS_LEVEL)
    encoded = Summary.Image(height=image.shape[-2], width=image.shape[-1], colorspace=3, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])
