"""Bad input fails at setup with a clear message, before any training step."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, GradCAM, Occlusion
from lightning_xai.demos import LitClassifier
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def _fit_expecting(tmp_path, digits, monitor, message, model=None, **trainer_kwargs):
    trainer = make_trainer(tmp_path, [monitor], **trainer_kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.fit(model or tiny_model(), *loaders(digits))
    assert trainer.global_step == 0


def test_probes_of_the_wrong_shape(tmp_path, digits16):
    monitor = cheap_monitor(probes=torch.rand(2, 3, 16, 16))
    _fit_expecting(
        tmp_path, digits16, monitor, "`probes` of shape [2, 3, 16, 16] were rejected by LitClassifier.forward:"
    )


def test_probe_target_outside_the_model_classes(tmp_path, digits16):
    monitor = cheap_monitor(probes=(torch.rand(2, 1, 16, 16), [3, 12]))
    _fit_expecting(
        tmp_path, digits16, monitor, "probe targets must be classes in [0, 9] for a model with 10 outputs, got [12]."
    )


def test_grad_cam_on_a_model_without_a_4d_layer(tmp_path, digits16):
    mlp = LitClassifier(nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10)))
    message = "Grad-CAM needs a layer with a 4-D output [N, C, h, w] larger than 1x1, and LitClassifier has none"
    _fit_expecting(
        tmp_path, digits16, AttributionMonitor([GradCAM()], probes=torch.rand(2, 1, 16, 16)), message, model=mlp
    )
    # with probes picked from validation data, the sanity check's images reveal it before training
    _fit_expecting(tmp_path / "picked", digits16, AttributionMonitor([GradCAM()]), message, model=mlp)


def test_occlusion_window_larger_than_the_probes(tmp_path, digits16):
    monitor = AttributionMonitor([Occlusion(window=20)], probes=torch.rand(2, 1, 16, 16))
    _fit_expecting(tmp_path, digits16, monitor, "`window` must fit in the image (16x16), got 20x20.")


def test_no_validation_data_and_no_probes_leaves_the_monitor_idle(tmp_path, digits16):
    train, _ = loaders(digits16)
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor])
    with pytest.warns(
        UserWarning,
        match=re.escape("AttributionMonitor stays idle for stage 'fit': it picks its probes from validation data"),
    ) as caught:
        trainer.fit(tiny_model(), train)
    assert trainer.global_step == 8 and monitor.history == []
    assert [str(w.message) for w in caught if "stays idle" in str(w.message)][0].endswith(
        "but the Trainer has no validation dataloader. Give the Trainer validation data, or pass `probes=` and run `trainer.validate()`."
    )
    disabled_monitor = cheap_monitor()
    disabled = make_trainer(tmp_path / "disabled", [disabled_monitor], limit_val_batches=0)
    with pytest.warns(UserWarning, match=re.escape("but validation is disabled (limit_val_batches=0)")):
        disabled.fit(tiny_model(), *loaders(digits16))
    assert disabled.global_step == 8 and disabled_monitor.history == []
    assert not (tmp_path / "disabled" / "version_0" / "xai").exists()


def test_two_settings_of_one_method_run_side_by_side(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Occlusion(window=4, stride=4), Occlusion(window=8, stride=8)], shortcuts=None)
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    keys = ["occlusion(window=4,stride=4)", "occlusion(window=8,stride=8)"]
    assert monitor.history[0]["methods"] == sorted(keys)
    assert "occlusion(window=8, stride=8, baseline=0.0, batch_size=auto)" in monitor.state_key


class _ReadsTokens(LitClassifier):
    def validation_step(self, batch, batch_idx):
        return None


def test_unreadable_validation_batches(tmp_path):
    tokens = DataLoader([{"tokens": torch.zeros(5, dtype=torch.long)}] * 4, batch_size=2)
    trainer = make_trainer(tmp_path, [cheap_monitor()])
    message = "could not find images [B, C, H, W] (a 4-D tensor) in a batch of type dict with keys ['tokens']; batches may be a tensor"
    with pytest.raises(TypeError, match=re.escape(message)):
        trainer.validate(_ReadsTokens(), tokens)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"methods": ["grad_cam"]},
            TypeError,
            "`methods` must hold method objects such as GradCAM(), Occlusion(), ExpectedGradients(), got str.",
        ),
        (
            {"methods": [GradCAM(), GradCAM()]},
            ValueError,
            "`methods` must be a non-empty list with each setting at most once, got ['grad_cam', 'grad_cam'].",
        ),
        ({"sanity": True}, TypeError, "`sanity` must be a SanityCheck(...) or None, got bool."),
        ({"num_probes": 0}, ValueError, "`num_probes` must be an int >= 1, got 0."),
        ({"every_n_epochs": 1.5}, TypeError, "`every_n_epochs` must be an int >= 1, got 1.5 (float)."),
        ({"max_seconds": -1}, ValueError, "`max_seconds` must be a positive number of seconds or None, got -1."),
        (
            {"max_overhead": 0},
            ValueError,
            "`max_overhead` must be a positive share of the fit time (e.g. 0.1 for 10%) or None, got 0.",
        ),
        (
            {"max_overhead": "10%"},
            ValueError,
            "`max_overhead` must be a positive share of the fit time (e.g. 0.1 for 10%) or None, got '10%'.",
        ),
        (
            {"display_mean": (0.5,)},
            ValueError,
            "`display_mean` and `display_std` must be given together with one value per channel, got (0.5,) and None.",
        ),
        (
            {"probes": torch.rand(3, 16, 16)},
            ValueError,
            "`probes` images must be a float tensor [P, C, H, W] with P >= 1, got torch.float32 of shape [3, 16, 16].",
        ),
        (
            {"probes": (torch.rand(2, 1, 4, 4), [1])},
            ValueError,
            "`probes` targets must be 2 ints, one per image, got [1].",
        ),
        ({"stability": 0.9}, TypeError, "`stability` must be a Stability(...) or None, got float."),
        ({"shortcuts": True}, TypeError, "`shortcuts` must be a Shortcuts(...) or None, got bool."),
        ({"faithfulness": "on"}, TypeError, "`faithfulness` must be a Faithfulness(...) or None, got str."),
        ({"on_shortcut": "print"}, TypeError, "`on_shortcut` must be a callable taking a Finding, or None, got str."),
        (
            {"probes": "digits"},
            TypeError,
            "`probes` must be None, a tensor [P, C, H, W], a pair (images, targets) or a pair (dataset, indices), got str.",
        ),
        (
            {"methods": GradCAM()},
            TypeError,
            "`methods` must be a list of method objects such as [GradCAM(), Occlusion()], got "
            f"{GradCAM()!r}; pass one method as a list of one.",
        ),
        (
            {"seed": 2**70},
            ValueError,
            f"`seed` must be an int in [0, 2**63 - 1] (a torch generator's seed), got {2**70}.",
        ),
        ({"strict": "no"}, TypeError, "`strict` must be True or False, got 'no'."),
        ({"stop_on_shortcut": 1}, TypeError, "`stop_on_shortcut` must be True or False, got 1."),
        (
            {"display_mean": (0.5,), "display_std": (0.0,)},
            ValueError,
            "`display_std` must hold positive numbers (the data's standard deviations), got (0.0,).",
        ),
        (
            {"probes": (TensorDataset(torch.rand(4, 1, 4, 4), torch.arange(4)), [0, 9, -5])},
            ValueError,
            "`probes` indices must be ints in [0, 3] (the dataset holds 4 items), got [9, -5].",
        ),
        (
            {"probes": (TensorDataset(torch.rand(4, 1, 4, 4), torch.arange(4)), [0.5])},
            ValueError,
            "`probes` indices must be ints in [0, 3] (the dataset holds 4 items), got [0.5].",
        ),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        AttributionMonitor(**kwargs)


def test_method_settings_are_checked_at_construction():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`baseline` must be a number, a tensor or one of ['zero', 'mean', 'blur', 'max_distance', 'inpaint', 'inpaint_ns'], got 'black'."
        ),
    ):
        Occlusion(baseline="black")
    with pytest.raises(TypeError, match=re.escape("`layer` must be a dotted module name (str) or None, got Linear.")):
        GradCAM(layer=nn.Linear(1, 1))


def test_unknown_submodule(tmp_path, digits16):
    monitor = cheap_monitor(probes=torch.rand(2, 1, 16, 16), submodule="backbone")
    _fit_expecting(tmp_path, digits16, monitor, "`submodule` must name a submodule of LitClassifier, got 'backbone'.")


def test_display_normalization_for_other_channels_than_the_given_probes_fails_before_training(tmp_path, digits16):
    monitor = cheap_monitor(probes=torch.rand(2, 1, 16, 16), display_mean=(0.5, 0.5, 0.5), display_std=(0.2, 0.2, 0.2))
    message = "`display_mean` and `display_std` must hold one value per channel of the images (1) or one for all, got 3 values."
    _fit_expecting(tmp_path, digits16, monitor, message)


def test_display_normalization_for_other_channels_than_the_chosen_probes_fails_in_the_sanity_check(tmp_path, digits16):
    monitor = cheap_monitor(display_mean=(0.5, 0.5), display_std=(0.2, 0.2))
    message = "`display_mean` and `display_std` must hold one value per channel of the images (1) or one for all, got 2 values."
    _fit_expecting(tmp_path, digits16, monitor, message)


def test_display_normalization_that_does_not_fit_draws_min_max_scaled_once_training_has_started(tmp_path, digits16):
    monitor = cheap_monitor(display_mean=(0.5, 0.5), display_std=(0.2, 0.2))
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=0)
    with pytest.warns(
        UserWarning, match=re.escape("got 2 values. The images are drawn min-max scaled, each on its own.")
    ):
        trainer.fit(tiny_model(), *loaders(digits16))
    assert trainer.state.finished and monitor.cost["runs"] == 2 and monitor.cost["failed"] == 0


class _Squeezes(LitClassifier):
    def forward(self, images):
        return self.net(images).squeeze()  # [1, K] -> [K] for one image


def test_a_model_that_drops_the_batch_of_one_image_fails_before_training(tmp_path, digits16):
    message = (
        "_Squeezes.forward on one probe (as methods that sample pass it) must return class scores of shape "
        "[N, K] = [1, K] for 1 images"
    )
    _fit_expecting(tmp_path, digits16, cheap_monitor(), message, model=_Squeezes(tiny_model().net))


class _ForwardWithoutGradient(LitClassifier):
    """Trains through its network; ``forward`` (what the monitor calls) detaches its scores."""

    def forward(self, images):
        with torch.no_grad():
            return self.net(images)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)


def test_a_forward_without_gradient_fails_before_training_for_gradient_methods(tmp_path, digits16):
    message = (
        "_ForwardWithoutGradient.forward returns scores without a gradient (torch.no_grad() or .detach() inside it?), "
        "and grad_cam, expected_gradients need one. Let gradients through forward, or pass `methods=` without them "
        "(e.g. [Occlusion()])."
    )
    _fit_expecting(tmp_path, digits16, cheap_monitor(), message, model=_ForwardWithoutGradient(tiny_model().net))
    occlusion_only = cheap_monitor(methods=[Occlusion(window=4, stride=4)], shortcuts=None)
    trainer = make_trainer(tmp_path / "occlusion", [occlusion_only], max_epochs=1)
    trainer.fit(_ForwardWithoutGradient(tiny_model().net), *loaders(digits16))
    assert occlusion_only.cost["runs"] == 1 and occlusion_only.cost["failed"] == 0


def test_dataset_indices_of_numpy_or_tensor_ints_are_accepted():
    dataset = TensorDataset(torch.rand(4, 1, 4, 4), torch.arange(4))
    for indices in (list(np.arange(1, 3)), [torch.tensor(1), torch.tensor(2)], torch.tensor([1, 2])):
        monitor = AttributionMonitor(probes=(dataset, indices))
        assert monitor.probes is not None and monitor.probes.labels.tolist() == [1, 2]
