"""Defaults sized to the image: the pure decisions, explicit settings kept, stored maps on disk, said once."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ExpectedGradients, GradCAM, Occlusion, Saliency, Stability
from lightning_xai.compare import compare_runs
from lightning_xai.demos import LitClassifier, SmallCNN
from lightning_xai.history import AttributionHistory
from lightning_xai.methods import default_methods
from lightning_xai.monitor import sizing
from lightning_xai.monitor.collector import Collector
from lightning_xai.monitor.engine import RunMoment, RunReport, explain_maps
from lightning_xai.monitor.images import display_rgb
from lightning_xai.monitor.recorder import Recorder
from lightning_xai.monitor.settings import check_methods
from lightning_xai.monitor.stability_tracker import StabilityTracker
from lightning_xai.probes import ProbeSet
from tests.callback.conftest import cheap_monitor, make_trainer

DEFAULTS = check_methods(default_methods())


def _run_cost(side: int) -> sizing.Sizing:
    return sizing.choose_sizing((3, side, side), DEFAULTS, num_probes=None)


@pytest.mark.parametrize("side", [32, 64])
def test_small_images_keep_the_full_defaults(side):
    chosen = _run_cost(side)
    assert chosen.num_probes == 16
    assert chosen.methods["occlusion"] == {
        "window": [side // 8] * 2,
        "stride": [side // 16] * 2,
        "placements": [15, 15],
    }
    assert chosen.methods["expected_gradients"] == {"n_samples": 32}
    assert chosen.stored_size == (side, side) and not chosen.reduced
    # 16 probes: 225 placements + the unperturbed image, one prediction; 32 samples + Grad-CAM's pass
    assert chosen.total == sizing.PassCount(forward=16 * 226 + 16, forward_backward=16 * 33)


def test_large_images_get_less_work_as_hand_computed():
    # side 224: scale (64/224)**0.75 = 0.3911 -> 6 probes, 13 samples, 9 placements per axis: window
    # ceil(2 * 224 / 10) = 45, stride 23 -> ceil((224 - 45) / 23) + 1 = 9
    large = _run_cost(224)
    assert (large.num_probes, large.stored_size) == (6, (128, 128))
    assert large.methods == {
        "occlusion": {"window": [45, 45], "stride": [23, 23], "placements": [9, 9]},
        "expected_gradients": {"n_samples": 13},
    }
    # side 512: scale 0.2102 -> 3 probes, 7 samples, 7 placements: window ceil(1024 / 8) = 128, stride 64
    huge = _run_cost(512)
    assert (huge.num_probes, huge.stored_size) == (3, (128, 128))
    assert huge.methods["occlusion"] == {"window": [128, 128], "stride": [64, 64], "placements": [7, 7]}
    assert huge.total == sizing.PassCount(forward=3 * 50 + 3, forward_backward=3 * 8)
    assert huge.reduced


def test_a_default_run_costs_a_bounded_number_of_passes_whatever_the_size():
    sides = [32, 64, 96, 128, 224, 256, 384, 512, 1024, 2048]
    passes = [_run_cost(side).total.forward_equivalents for side in sides]
    assert passes[0] == passes[1] == max(passes)  # never more than at 64 x 64
    assert all(later <= earlier for earlier, later in zip(passes, passes[1:]))
    assert passes[sides.index(512)] < passes[1] / 10
    # a pass costs about the pixels: the pixel-weighted work grows about as sqrt(side), 2.8x from 64 to 512
    pixel_work = {side: cost * side * side for side, cost in zip(sides, passes)}
    assert pixel_work[512] / pixel_work[64] < 3.5
    assert pixel_work[224] / pixel_work[64] < 2.2
    # the floors hold for very large images
    floor = _run_cost(4096)
    assert floor.num_probes == 2 and floor.methods["expected_gradients"]["n_samples"] == 4
    assert floor.methods["occlusion"]["placements"] == [5, 5]


def test_explicit_settings_are_kept():
    methods = check_methods([Occlusion(window=8), ExpectedGradients(n_samples=16), GradCAM()])
    chosen = sizing.choose_sizing((3, 512, 512), methods, num_probes=16)
    assert chosen.methods == {} and chosen.num_probes == 16 and not chosen.probes_auto
    assert chosen.passes["occlusion"] == sizing.PassCount(forward=16 * (127 * 127 + 1))
    assert chosen.passes["expected_gradients"] == sizing.PassCount(forward_backward=16 * 16)
    assert Occlusion(window=8).window_for((512, 512)) == (8, 8)
    assert ExpectedGradients(n_samples=16).samples_for((512, 512)) == 16
    # a stride given without a window: the window is sized, the stride kept
    strided = sizing.choose_sizing((3, 512, 512), {"occlusion": Occlusion(stride=32)}, num_probes=1)
    assert strided.methods["occlusion"] == {"window": [128, 128], "stride": [32, 32], "placements": [13, 13]}
    # unknown costs are named, not guessed
    assert sizing.method_passes(object(), (8, 8)) is None


def test_the_sized_settings_are_what_the_methods_run():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 160 * 160, 2)).eval()
    images, targets = torch.rand(1, 3, 160, 160), torch.tensor([1])
    window = sizing.occlusion_window((160, 160))
    maps = explain_maps(net, ProbeSet(images, targets, "given"), {"occlusion": Occlusion()}).maps["occlusion"]
    expected = explain_maps(
        net, ProbeSet(images, targets, "given"), {"occlusion": Occlusion(window=window, stride=(window[0] + 1) // 2)}
    ).maps["occlusion"]
    assert window != (20, 20)  # not an eighth of the side any more
    torch.testing.assert_close(maps, expected)


def test_collector_sizes_the_probe_count_only_when_not_given():
    batch = (torch.rand(12, 3, 256, 256), torch.arange(12) % 4)
    auto = Collector(num_probes=None, test_images=0, reference_count=0, seed=0)
    given = Collector(num_probes=2, test_images=0, reference_count=0, seed=0)
    for collector in (auto, given):
        collector.offer_validation(batch, dataloader_idx=0)
    assert len(auto.choose_probes().images) == sizing.default_num_probes((256, 256)) == 6
    assert len(given.choose_probes().images) == 2


def test_stored_maps_are_block_means():
    maps = torch.rand(2, 3, 512, 256)
    stored = sizing.downsample_map(maps)
    assert stored.shape == (2, 3, 128, 64)
    torch.testing.assert_close(stored[0, 0, 0, 0], maps[0, 0, :4, :4].mean())
    torch.testing.assert_close(stored.mean(), maps.mean())
    small = torch.rand(1, 1, 128, 100)
    assert sizing.downsample_map(small) is small


def test_recorder_stores_small_maps_and_a_resume_compares_as_the_live_run_did(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1 * 160 * 160, 3)).eval()
    probes = ProbeSet(torch.rand(2, 1, 160, 160), torch.tensor([0, 2]), "given")
    methods = {"saliency": Saliency()}
    history = AttributionHistory(tmp_path / "xai")
    recorder = Recorder(history, None, methods, stability=Stability())
    report = RunReport(RunMoment(0, 5, 5, "fit"), explain_maps(net, probes, methods))
    entry = recorder.record_run(report, probes, display_rgb(probes.images, None, None))
    assert entry is not None and entry["map_full_size"] == {"saliency": [160, 160]}
    assert history.load_run(entry)["maps"]["saliency"].shape == (2, 1, 128, 128)
    tracker = StabilityTracker(Stability(), methods)
    resumed = Recorder(AttributionHistory(tmp_path / "xai"), None, methods, stability=Stability())
    resumed.history.runs = list(history.runs)
    resumed.resume(recorder.state_dict(), tracker)
    # stability is measured at the stored size, live and after a resume alike: the same maps compare as equal
    assert tracker.previous["saliency"].shape == (2, 1, 128, 128)
    assert tracker.correlation_with_previous("saliency", report.maps.maps["saliency"]) == pytest.approx(1.0)


def _large_loaders(side: int) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(16, 3, side, side, generator=generator), torch.arange(16) % 2
    data = TensorDataset(images, labels)
    return DataLoader(data, batch_size=8), DataLoader(data, batch_size=8)


def test_large_inputs_store_small_maps_and_say_the_sizing_once(tmp_path, caplog):
    model = LitClassifier(SmallCNN(in_channels=3, num_classes=2, width=2), lr=1e-2)
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion()], num_probes=2, shortcuts=None)
    trainer = make_trainer(tmp_path, [monitor], limit_train_batches=1, limit_val_batches=1)
    with caplog.at_level(logging.INFO):
        trainer.fit(model, *_large_loaders(160))
    folder = tmp_path / "version_0" / "xai"
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["runs"]) == 2
    for run in summary["runs"]:
        payload = torch.load(folder / run["file"], weights_only=True)
        assert {key: tuple(value.shape) for key, value in payload["maps"].items()} == {
            "grad_cam": (2, 1, 128, 128),
            "occlusion": (2, 1, 128, 128),
        }
        assert run["map_full_size"] == {"grad_cam": [160, 160], "occlusion": [160, 160]}
    section = summary["sizing"]
    assert section["image_size"] == [3, 160, 160] and section["stored_map_size"] == [128, 128]
    assert (section["num_probes"], section["num_probes_auto"]) == (2, False)
    # side 160: scale 0.503 -> 11 placements per axis: window ceil(320 / 12) = 27, stride 14
    assert section["methods"] == {"occlusion": {"window": [27, 27], "stride": [14, 14], "placements": [11, 11]}}
    assert section["passes"]["occlusion"] == [2 * 122, 0]
    assert caplog.text.count("so the default work is sized to them") == 1
    assert "occlusion window 27x27 with stride 14x14 (11x11 placements)" in caplog.text
    said = next(line for line in caplog.text.splitlines() if "default work is sized" in line)
    assert "sized to them: occlusion window" in said  # the probe count was given: not said as chosen
    # the history readers work on the stored maps
    compared = compare_runs(folder, folder)
    assert set(compared["methods"]) == {"grad_cam", "occlusion"}
    assert all(math.isclose(values["spearman_mean"], 1.0, abs_tol=1e-6) for values in compared["methods"].values())


def test_small_inputs_say_nothing_about_sizing(tmp_path, caplog):
    model = LitClassifier(SmallCNN(in_channels=3, num_classes=2, width=2), lr=1e-2)
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion()], num_probes=2, shortcuts=None, stability=None)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    with caplog.at_level(logging.INFO):
        trainer.fit(model, *_large_loaders(32))
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    assert summary["sizing"]["scale"] == 1.0 and "map_full_size" not in summary["runs"][0]
    assert "default work is sized" not in caplog.text
