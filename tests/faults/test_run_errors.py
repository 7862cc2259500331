"""A failure inside a monitor run never ends the fit: one warning, a record, the next run tried again."""

from __future__ import annotations

import json
import re
import threading
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import Saliency
from lightning_xai.loggers import XaiLogger
from lightning_xai.methods import AttributionMethod, MethodContext
from lightning_xai.monitor import engine as engine_module
from lightning_xai.monitor import lifecycle as lifecycle_module
from lightning_xai.monitor import recorder as recorder_module
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


@dataclass(frozen=True)
class Flaky(AttributionMethod):
    """Saliency that raises on the calls listed in ``failing`` (counted over the whole test)."""

    name: ClassVar[str] = "flaky"
    calls: ClassVar[list[int]] = [0]
    failing: tuple[int, ...] = (1,)

    def attribute(self, model, images, targets, context: MethodContext):
        Flaky.calls[0] += 1
        if Flaky.calls[0] in self.failing:
            raise RuntimeError("boom inside the method")
        return Saliency().attribute(model, images, targets, context)


@pytest.fixture(autouse=True)
def _reset_calls():
    Flaky.calls[0] = 0


def _fit(root, digits, monitor, **kwargs):
    trainer = make_trainer(root, [monitor], **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny_model(), *loaders(digits))
    ours = [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]
    return trainer, ours


def _summary(root):
    return json.loads((root / "version_0" / "xai" / "summary.json").read_text())


def test_a_failing_method_is_left_out_of_its_run_and_tried_again(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency(), Flaky()], stability=None, shortcuts=None)
    trainer, said = _fit(tmp_path, digits16, monitor)
    assert trainer.global_step == 8 and trainer.state.finished
    first, second = monitor.history
    assert first["failures"] == {"flaky": "RuntimeError: boom inside the method"}
    assert first["methods"] == ["saliency"] and second["methods"] == ["flaky", "saliency"]  # tried again, worked
    assert "failures" not in second
    failed = [text for text in said if "boom" in text]
    assert len(failed) == 1
    assert failed[0].startswith(
        "AttributionMonitor: at step 4 these parts of its run failed and were left out (training goes on): "
    )
    assert "flaky: RuntimeError: boom inside the method" in failed[0] and "strict=True" in failed[0]
    assert _summary(tmp_path)["runs"][0]["failures"] == {"flaky": "RuntimeError: boom inside the method"}


def test_a_failing_analysis_is_left_out_of_its_run(tmp_path, digits16, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("analysis broke")

    monkeypatch.setattr(engine_module, "check_shortcuts", broken)
    monitor = cheap_monitor(methods=[Saliency()], stability=None)
    trainer, said = _fit(tmp_path, digits16, monitor)
    assert trainer.global_step == 8
    assert [run["failures"] for run in monitor.history] == [{"shortcuts": "ValueError: analysis broke"}] * 2
    assert all(run["methods"] == ["saliency"] and run["file"] for run in monitor.history)  # the maps were kept
    assert len([text for text in said if "analysis broke" in text]) == 1  # once per cause


def _first_call_fails(monkeypatch) -> list[str]:
    """``maps_grid`` raises on its first call; returns the names of the threads that drew each grid."""
    real, threads = recorder_module.maps_grid, []

    def first_call_fails(*args, **kwargs):
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise RuntimeError("cannot draw")
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder_module, "maps_grid", first_call_fails)
    return threads


def _as_on_an_accelerator(monkeypatch) -> None:
    """The images go to the worker thread as they do when the model trains on a GPU (here it trains on the CPU)."""
    monkeypatch.setattr(lifecycle_module, "draw_in_background", lambda trainer, *, strict: not strict)


def test_draw_in_background_only_on_an_accelerator_and_never_under_strict():
    def trainer_on(kind: str) -> SimpleNamespace:
        return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(kind)))

    assert lifecycle_module.draw_in_background(trainer_on("cuda"), strict=False)
    assert not lifecycle_module.draw_in_background(trainer_on("cuda"), strict=True)
    assert not lifecycle_module.draw_in_background(trainer_on("cpu"), strict=False)  # training uses every core


def test_on_the_cpu_a_fits_images_are_drawn_in_the_hook(tmp_path, digits16, monkeypatch):
    threads = _first_call_fails(monkeypatch)
    monitor = cheap_monitor(methods=[Saliency()], stability=None, shortcuts=None)
    trainer, said = _fit(tmp_path, digits16, monitor)
    assert trainer.global_step == 8 and threads == [threading.current_thread().name] * 2
    failed, worked = monitor.history  # drawn in the hook: a drawing error fails its run, the next is tried again
    assert failed["error"] == "RuntimeError: cannot draw" and failed["file"] is None and worked["file"]
    assert len([text for text in said if "cannot draw" in text]) == 1


def test_a_failing_rendering_in_the_background_loses_those_images_only(tmp_path, digits16, monkeypatch):
    _as_on_an_accelerator(monkeypatch)
    threads = _first_call_fails(monkeypatch)
    monitor = cheap_monitor(methods=[Saliency()], stability=None, shortcuts=None)
    trainer, said = _fit(tmp_path, digits16, monitor)
    assert trainer.global_step == 8 and monitor.cost["failed"] == 0
    assert all(run["file"] and "error" not in run for run in monitor.history)  # both runs' maps kept
    assert len(threads) == 2 and all(name.startswith("lightning_xai-images") for name in threads)  # off the hook
    assert [text for text in said if "cannot draw" in text] == [
        "AttributionMonitor could not draw or log a run's images (RuntimeError: cannot draw); training is not "
        "affected and the run's scalars, maps and summary.json are kept. This warning is shown once."
    ]
    events = EventAccumulator(str(tmp_path / "version_0"), size_guidance={"images": 0})
    events.Reload()
    (grid,) = events.Images("xai/maps/saliency")  # the second run's grid only (logged at step 7; the first at 3)
    assert grid.step > monitor.history[0]["global_step"]


def test_a_failing_rendering_under_strict_fails_the_run_from_the_hook(tmp_path, digits16, monkeypatch):
    _as_on_an_accelerator(monkeypatch)
    threads = _first_call_fails(monkeypatch)
    monitor = cheap_monitor(methods=[Saliency()], stability=None, shortcuts=None, strict=True)
    with pytest.raises(RuntimeError, match="cannot draw"):
        _fit(tmp_path, digits16, monitor)
    assert threads == [threading.current_thread().name]  # drawn in the hook: the error reached the fit


def test_a_failing_rendering_in_validate_fails_the_run_not_the_call(tmp_path, digits16, monkeypatch):
    _as_on_an_accelerator(monkeypatch)
    threads = _first_call_fails(monkeypatch)
    monitor = cheap_monitor(methods=[Saliency()], stability=None, shortcuts=None)
    trainer = make_trainer(tmp_path, [monitor])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(tiny_model(), loaders(digits16)[1])
    assert threads == [threading.current_thread().name]  # validate(): images are there when it returns
    (failed,) = monitor.history
    assert failed["error"] == "RuntimeError: cannot draw" and failed["file"] is None
    said = [str(w.message) for w in caught if "cannot draw" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(
        "AttributionMonitor: its run at epoch 0 (step 0) failed and was skipped"
    )


def test_a_logger_that_always_fails_never_ends_the_fit(tmp_path, digits16, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("event file gone")

    monkeypatch.setattr(XaiLogger, "scalars", broken)
    monitor = cheap_monitor(methods=[Saliency()], stability=None, shortcuts=None)
    trainer, said = _fit(tmp_path, digits16, monitor)
    assert trainer.global_step == 8 and trainer.state.finished
    assert [run["error"] for run in monitor.history] == ["RuntimeError: event file gone"] * 2
    gone = [text for text in said if "event file gone" in text]
    assert len(gone) == 2  # each once over two runs: the failed run, and the logger failing while recording it
    assert gone[0].startswith(
        "AttributionMonitor: its run at epoch 0 (step 4) failed and was skipped; training goes on."
    )
    assert gone[1].startswith(
        "AttributionMonitor could not log to TensorBoard (RuntimeError: event file gone); training is not affected"
    )


def test_strict_raises_the_failure(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency(), Flaky()], stability=None, shortcuts=None, strict=True)
    trainer = make_trainer(tmp_path, [monitor])
    with pytest.raises(RuntimeError, match=re.escape("boom inside the method")):
        trainer.fit(tiny_model(), *loaders(digits16))
    assert trainer.global_step == 4


def test_checks_before_the_first_step_stay_strict(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()], probes=torch.rand(2, 3, 16, 16))
    trainer = make_trainer(tmp_path, [monitor])
    with pytest.raises(
        ValueError, match=re.escape("`probes` of shape [2, 3, 16, 16] were rejected by LitClassifier.forward:")
    ):
        trainer.fit(tiny_model(), *loaders(digits16))
    assert trainer.global_step == 0


class _FailsInSecondEpoch(type(tiny_model())):  # type: ignore[misc]
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("training broke")
        return super().training_step(batch, batch_idx)


def test_a_fit_ending_with_an_error_still_writes_the_images_drawn_in_the_background(tmp_path, digits16, monkeypatch):
    drawn: list[str] = []
    real = recorder_module.maps_grid

    def slow_grid(*args, **kwargs):
        time.sleep(0.3)  # still drawing when the training step raises
        drawn.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder_module, "maps_grid", slow_grid)
    _as_on_an_accelerator(monkeypatch)
    monitor = cheap_monitor(methods=[Saliency()], stability=None, shortcuts=None)
    trainer = make_trainer(tmp_path, [monitor])
    model = _FailsInSecondEpoch(tiny_model().net, lr=1e-2)
    with pytest.raises(RuntimeError, match="training broke"):
        trainer.fit(model, *loaders(digits16))
    assert len(monitor.history) == 1 and drawn and drawn[0].startswith("lightning_xai-images")
    events = EventAccumulator(str(tmp_path / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert len(events.Images("xai/maps/saliency")) == 1  # drawn on the worker, written before the loggers closed
