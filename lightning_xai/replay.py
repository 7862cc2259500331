"""Replay saved checkpoints: the same maps and metrics as the live monitor, after the fact.

Given a run's Lightning checkpoints, the LightningModule class, probes and methods, each
checkpoint is loaded (safely: ``weights_only=True``) in training order and explained exactly as
the monitor does at validation time; results go to TensorBoard and to the same on-disk history.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from lightning_xai._fingerprint import load_probes, load_references
from lightning_xai._history_checks import first_line
from lightning_xai.history import AttributionHistory
from lightning_xai.methods import AttributionMethod, default_methods
from lightning_xai.monitor.budget import Deadline
from lightning_xai.monitor.engine import Engine, RunMoment
from lightning_xai.monitor.images import display_rgb
from lightning_xai.monitor.recorder import Recorder
from lightning_xai.monitor.settings import check_methods
from lightning_xai.probes import ProbeSet, probes_from_argument
from lightning_xai.stability import Stability

__all__ = ["find_checkpoints", "load_checkpoint", "replay"]

PathLike = str | Path


def find_checkpoints(checkpoints: PathLike | Sequence[PathLike]) -> list[Path]:
    """The ``.ckpt`` files of a folder (recursively) or an explicit list, checked to exist.

    Example:
        >>> find_checkpoints([])
        Traceback (most recent call last):
        ...
        ValueError: `checkpoints` must name at least one .ckpt file or a folder holding some, got [].
    """
    if isinstance(checkpoints, (str, Path)):
        root = Path(checkpoints)
        paths = sorted(root.rglob("*.ckpt")) if root.is_dir() else [root]
    else:
        paths = [Path(p) for p in checkpoints]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"`checkpoints`: no such file: {', '.join(missing)}.")
    if not paths:
        raise ValueError(
            f"`checkpoints` must name at least one .ckpt file or a folder holding some, got {checkpoints!r}."
        )
    return paths


def load_checkpoint(path: Path, *, allow_unsafe_pickle: bool = False) -> dict[str, Any]:
    """Loads a Lightning checkpoint on the CPU, refusing arbitrary unpickling unless allowed.

    Raises:
        ValueError: when the file needs objects that ``weights_only`` loading refuses, saying how
            to opt in (only for checkpoints you trust: unpickling can run arbitrary code), or when it
            is truncated or not a checkpoint (naming the file).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"checkpoint {path} holds Python objects that safe loading (weights_only=True) refuses: {reason}. "
            "If you trust the file, replay it with allow_unsafe_pickle=True (command line: --unsafe-load); "
            "unpickling can run arbitrary code."
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError, RecursionError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"checkpoint {path} is truncated or not a PyTorch checkpoint ({first_line(error)}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not a Lightning checkpoint (no 'state_dict').")
    return checkpoint


def replay(
    checkpoints: PathLike | Sequence[PathLike],
    module_class: Callable[..., nn.Module],
    *,
    probes: Any,
    out_dir: PathLike,
    methods: Sequence[AttributionMethod] | None = None,
    references: Tensor | PathLike | None = None,
    module_kwargs: dict[str, Any] | None = None,
    stability: Stability | None = Stability(),
    submodule: str | None = None,
    device: str | torch.device = "cpu",
    allow_unsafe_pickle: bool = False,
    seed: int = 0,
    display_mean: Sequence[float] | None = None,
    display_std: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Explains the probes at every checkpoint, in training order, like the live monitor.

    Args:
        checkpoints: a folder (searched recursively for ``*.ckpt``) or a list of files. Files
            with the same ``global_step`` (``last.ckpt`` beside ``epoch=...ckpt``) count once.
        module_class: the LightningModule class (or any callable building the module).
        probes: as for the monitor (tensor, ``(images, targets)``, ``(dataset, indices)``), or
            the ``probes.pt`` a live monitor saved under ``<log_dir>/xai/``.
        out_dir: where TensorBoard events and the history (``out_dir/xai``) are written. When
            ``out_dir/xai`` already holds a history, it is kept and the replay writes to the first
            free ``out_dir/xai-<n>`` (and says so).
        methods: as for the monitor; default Grad-CAM, occlusion, expected gradients.
        references: reference images for ``ExpectedGradients(baselines="training")``, or the
            ``references.pt`` the live monitor saved; default: ``references.pt`` beside a probes
            file, if there is one.
        module_kwargs: arguments for ``module_class``; default: the checkpoint's
            ``hyper_parameters`` (what ``save_hyperparameters()`` stored).
        stability: stability tracking across the replayed checkpoints, or ``None``.
        submodule: as for the monitor.
        device: where to compute.
        allow_unsafe_pickle: load checkpoints with full unpickling (trusted files only).
        seed: seed of the private generator; the monitor's default is 0, so replays reproduce it.
        display_mean, display_std: undo input normalisation for display.

    Returns:
        The summary entries written, one per checkpoint, in training order.

    Raises:
        HistoryError: naming the file, when a probes or references file is damaged or foreign.
        ValueError: when a checkpoint is damaged, unsafe (see ``allow_unsafe_pickle``) or does not fit.
    """
    probe_set, default_references = _probes_and_references(probes)
    reference_images = _references(references) if references is not None else default_references
    methods = list(methods) if methods is not None else default_methods()
    loaded = _ordered(find_checkpoints(checkpoints), allow_unsafe_pickle)
    history = AttributionHistory.open(Path(out_dir) / "xai")
    if history.notice:
        print(f"replay: {history.notice}")
    writer = SummaryWriter(str(out_dir))
    keyed = check_methods(methods)
    engine = Engine(keyed, seed=seed, stability=stability, shortcuts=None, faithfulness=None, strict=True)
    recorder = Recorder(history, writer, keyed, stability=stability)
    rgb = display_rgb(probe_set.images, _tuple(display_mean), _tuple(display_std))
    entries: list[dict[str, Any]] = []
    try:
        for path, checkpoint in loaded:
            model = _build(module_class, checkpoint, module_kwargs, device, path)
            target = model.get_submodule(submodule) if submodule else model
            step, epoch = int(checkpoint.get("global_step", 0)), int(checkpoint.get("epoch", 0))
            report = engine.run(
                target,
                probe_set,
                RunMoment(epoch, step, step, "replay"),
                convert_input=None,
                references=reference_images,
                test_images=None,
                deadline=Deadline(0.0, None),
            )
            # the recorder lists a run it could not write with an entry in memory: never None here
            entry = cast(dict[str, Any], recorder.record_run(report, probe_set, rgb, reference_images))
            entries.append(entry)
            print(f"replayed {path.name}: epoch {epoch}, step {step}, {report.maps.total_seconds:.2f}s")
    finally:
        writer.close()
    return entries


def _ordered(paths: list[Path], allow_unsafe_pickle: bool) -> list[tuple[Path, dict[str, Any]]]:
    loaded = [(path, load_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)) for path in paths]
    loaded.sort(key=lambda item: (int(item[1].get("global_step", 0)), item[0].name == "last.ckpt", item[0].name))
    seen: set[int] = set()
    unique = []
    for path, checkpoint in loaded:
        step = int(checkpoint.get("global_step", 0))
        if step not in seen:
            seen.add(step)
            unique.append((path, checkpoint))
    return unique


def _build(
    module_class: Callable[..., nn.Module],
    checkpoint: dict[str, Any],
    kwargs: dict[str, Any] | None,
    device: Any,
    path: Path,
) -> nn.Module:
    arguments = dict(kwargs) if kwargs is not None else dict(checkpoint.get("hyper_parameters", {}) or {})
    try:
        model = module_class(**arguments)
    except TypeError as error:
        raise ValueError(
            f"could not build {getattr(module_class, '__name__', module_class)} for {path.name} with arguments "
            f"{sorted(arguments)}: {error}. Pass `module_kwargs` (command line: --module-kwargs '{{...}}')."
        ) from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(
            f"checkpoint {path.name} does not fit "
            f"{type(model).__name__}({', '.join(f'{k}={v!r}' for k, v in arguments.items())}): "
            f"{reason} Check --module / --module-kwargs."
        ) from None
    return model.to(device).eval()


def _probes_and_references(probes: Any) -> tuple[ProbeSet, Tensor | None]:
    if isinstance(probes, (str, Path)):
        path = Path(probes)
        payload = load_probes(path)
        images, labels = payload["images"], payload["labels"]
        probe_set = probes_from_argument((images, labels) if labels is not None else images)
        return probe_set, load_references(path.parent if path.is_file() else path)  # type: ignore[return-value]
    return probes_from_argument(probes), None  # type: ignore[return-value]


def _references(references: Tensor | PathLike) -> Tensor:
    if isinstance(references, Tensor):
        return references.detach().cpu()
    images = load_references(references)
    if images is None:
        raise FileNotFoundError(f"`references`: no such file: {references}.")
    return images


def _tuple(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in values) if values is not None else None
