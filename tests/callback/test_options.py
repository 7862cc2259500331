"""Options: the time budget, the overhead cap, a submodule, display normalization, and the unified `lightning` package."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from lightning_xai import GradCAM, Occlusion, Saliency, SmoothGrad
from lightning_xai import methods as methods_module
from lightning_xai.functional import batching
from lightning_xai.monitor.engine import explain_maps
from lightning_xai.probes import ProbeSet
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def test_time_budget_skips_methods_and_warns_once(tmp_path, digits16):
    monitor = cheap_monitor(
        methods=[Saliency(), SmoothGrad(n_samples=50), Occlusion(window=2, stride=1)], max_seconds=1e-9
    )
    with pytest.warns(
        UserWarning, match=r"AttributionMonitor exceeded its time budget \(max_seconds=1e-09\)"
    ) as caught:
        make_trainer(tmp_path, [monitor], max_epochs=2).fit(tiny_model(), *loaders(digits16))
    assert len([w for w in caught if "time budget" in str(w.message)]) == 1
    for run in monitor.history:
        assert run["methods"] == ["saliency"] and run["skipped"] == ["smooth_grad", "occlusion"]


def test_overhead_cap_skips_runs_and_warns_once(tmp_path, digits16):
    monitor = cheap_monitor(max_overhead=1e-6)  # no run after the first fits in this cap
    with pytest.warns(
        UserWarning,
        match=r"AttributionMonitor skipped its run at epoch 1 \(step \d+\) to keep its cost within max_overhead=1e-06",
    ) as caught:
        make_trainer(tmp_path, [monitor], max_epochs=4).fit(tiny_model(), *loaders(digits16))
    assert len([w for w in caught if "max_overhead" in str(w.message)]) == 1
    assert [run["epoch"] for run in monitor.history] == [0]  # the first run always happens
    cost = monitor.cost
    assert cost["runs"] == 1 and cost["skipped"] == 3 and cost["seconds"] > 0 and cost["training_seconds"] > 0
    assert cost["overhead"] == pytest.approx(cost["seconds"] / cost["training_seconds"])


def test_generous_overhead_cap_skips_nothing_and_the_cost_is_reported(tmp_path, digits16, caplog):
    monitor = cheap_monitor(max_overhead=1e6)
    with caplog.at_level(logging.INFO):
        make_trainer(tmp_path, [monitor], max_epochs=3).fit(tiny_model(), *loaders(digits16))
    assert [run["epoch"] for run in monitor.history] == [0, 1, 2]
    assert monitor.cost["runs"] == 3 and monitor.cost["skipped"] == 0
    assert re.search(r"AttributionMonitor: 3 runs took \d+\.\ds, \d+% on top of the rest of the fit", caplog.text)


def test_batch_sizes_are_tuned_during_the_first_runs_and_said_once(tmp_path, digits16, caplog, monkeypatch):
    monkeypatch.setattr(batching, "CPU_BATCH_CANDIDATES", (2, 4, 8))
    seen: list[object] = []
    monkeypatch.setattr(methods_module.F, "occlusion", spy(methods_module.F.occlusion, seen))
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4), SmoothGrad(n_samples=4)], shortcuts=None)
    with caplog.at_level(logging.INFO):
        make_trainer(tmp_path, [monitor], max_epochs=3).fit(tiny_model(), *loaders(digits16))
    forward, backward = monitor._run.engine.tuners[False], monitor._run.engine.tuners[True]
    assert seen == [forward] * 3  # occlusion ran its batches through the monitor's forward tuner
    assert forward.best in (2, 4, 8) and backward.best in (2, 4, 8) and set(forward.rates) <= {2, 4, 8}
    message = f"AttributionMonitor: tuned the batch sizes on cpu while explaining: forward {forward.best}, forward+backward {backward.best}"
    assert caplog.text.count("AttributionMonitor: tuned the batch sizes") == 1 and message in caplog.text
    assert len(monitor.history) == 3


def test_methods_with_their_own_batch_size_keep_it(tmp_path, digits16, caplog, monkeypatch):
    seen: list[object] = []
    monkeypatch.setattr(methods_module.F, "occlusion", spy(methods_module.F.occlusion, seen))
    monitor = cheap_monitor(
        methods=[GradCAM(), Occlusion(window=4, stride=4, batch_size=7), Saliency()], shortcuts=None
    )
    with caplog.at_level(logging.INFO):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    assert seen == [7] and monitor._run.engine.tuners == {}
    assert "tuned the batch sizes" not in caplog.text


def spy(function, seen: list[object]):
    """``function``, recording in ``seen`` the ``batch_size`` of each call that gives one (the
    one-image checks before training give none)."""

    def wrapper(*args, **kwargs):
        if kwargs.get("batch_size") is not None:
            seen.append(kwargs["batch_size"])
        return function(*args, **kwargs)

    return wrapper


def test_submodule_is_explained_with_layer_names_relative_to_it(tmp_path, digits16):
    monitor = cheap_monitor(methods=[GradCAM(layer="features.3")], submodule="net")
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    assert monitor.history[0]["methods"] == ["grad_cam"]


def test_each_submodule_keeps_its_own_mode():
    model = tiny_model()
    model.train()
    model.net.features[1].eval()  # a deliberately frozen batch norm
    probes = ProbeSet(torch.rand(2, 1, 16, 16), torch.tensor([1, 2]), "given")
    modes = [m.training for m in model.modules()]
    explain_maps(model, probes, {"grad_cam": GradCAM()})
    assert [m.training for m in model.modules()] == modes


def test_unified_lightning_package(tmp_path, digits16):
    lightning = pytest.importorskip("lightning.pytorch")
    monitor = cheap_monitor()

    class UnifiedClassifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model()

        def forward(self, images):
            return self.inner(images)

        def training_step(self, batch, batch_idx):
            images, labels = batch
            return torch.nn.functional.cross_entropy(self(images), labels)

        def validation_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = lightning.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        callbacks=[monitor],
        logger=lightning.loggers.TensorBoardLogger(tmp_path, name="", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(UnifiedClassifier(), *loaders(digits16))
    assert [run["global_step"] for run in monitor.history] == [2, 4]
    assert (tmp_path / "version_0" / "xai" / "runs" / "step-00000004.pt").exists()
    event_files = list((tmp_path / "version_0").glob("events.out.tfevents.*"))
    assert event_files, "the unified package's TensorBoardLogger was not used"


def test_max_seconds_holds_inside_a_method_between_batches(tmp_path, digits16):
    # occlusion with 1-pixel windows on 16x16 probes takes 256 placements per probe, in batches of 8:
    # the deadline passes during its first batches and it stops there (cut), instead of finishing
    monitor = cheap_monitor(
        methods=[Occlusion(window=1, stride=1, batch_size=8), Saliency()], max_seconds=1e-9, shortcuts=None
    )
    with pytest.warns(UserWarning, match=r"did not run or stopped between two batches"):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    run = monitor.history[0]
    assert run["cut"] == ["occlusion"] and run["skipped"] == ["saliency"] and run["methods"] == []
