"""The model-randomisation sanity check: which layers each copy randomises, that nothing else moves,
and that it tells a method that explains the model from one that explains only the image."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.demos import SmallCNN
from lightning_xai.functional import saliency
from lightning_xai.sanity import (
    parametrized_layers,
    randomization_scores,
    randomized_copies,
    randomized_model,
)

LAYERS = ["classifier.2", "features.9", "features.8", "features.5", "features.4", "features.1", "features.0"]


def _trained_cnn() -> nn.Module:
    """A SmallCNN whose every parameter (batch norm included) is away from its initial value."""
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=3, width=4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _changed_layers(model: nn.Module, copy: nn.Module) -> list[str]:
    """Layers (in LAYERS order) whose own parameters differ between ``model`` and ``copy``."""
    changed = []
    for name in parametrized_layers(model):
        ours = dict(model.get_submodule(name).named_parameters(recurse=False))
        theirs = dict(copy.get_submodule(name).named_parameters(recurse=False))
        if any(not torch.equal(ours[key], theirs[key]) for key in ours):
            changed.append(name)
    return changed


def test_layers_with_parameters_are_listed_from_the_output_down():
    assert parametrized_layers(_trained_cnn()) == LAYERS


def test_cascading_copies_randomise_the_top_layers_one_more_at_a_time():
    model = _trained_cnn()
    copies = randomized_copies(model)
    assert [name for name, _ in copies] == LAYERS
    for index, (_, copy) in enumerate(copies):
        assert _changed_layers(model, copy) == LAYERS[: index + 1]


def test_independent_copies_randomise_one_layer_each():
    model = _trained_cnn()
    copies = randomized_copies(model, cascade=False)
    assert [name for name, _ in copies] == LAYERS
    for name, copy in copies:
        assert _changed_layers(model, copy) == [name]


def test_a_layer_gets_the_same_new_weights_in_every_copy():
    model = _trained_cnn()
    cascade = dict(randomized_copies(model))
    independent = dict(randomized_copies(model, cascade=False))
    fully = randomized_model(model)
    chosen = dict(randomized_copies(model, layers=["features.0", "classifier.2"]))
    for name in LAYERS:
        weight = independent[name].get_submodule(name).weight
        assert torch.equal(cascade[name].get_submodule(name).weight, weight)
        assert torch.equal(cascade["features.0"].get_submodule(name).weight, weight)
        assert torch.equal(fully.get_submodule(name).weight, weight)
    assert list(chosen) == ["classifier.2", "features.0"]  # from the output down, whatever order given
    assert _changed_layers(model, chosen["features.0"]) == ["classifier.2", "features.0"]
    assert _changed_layers(model, randomized_model(model, layers=["features.4"])) == ["features.4"]


def test_the_fully_randomized_model_is_the_last_cascading_copy():
    model = _trained_cnn()
    last = randomized_copies(model)[-1][1].state_dict()
    for key, value in randomized_model(model).state_dict().items():
        assert torch.equal(value, last[key]), key


def test_seed_decides_the_new_weights():
    model = _trained_cnn()
    again = randomized_model(model, seed=0).classifier[2].weight
    assert torch.equal(randomized_model(model, seed=0).classifier[2].weight, again)
    assert not torch.equal(randomized_model(model, seed=1).classifier[2].weight, again)


def test_reset_parameters_is_used_where_a_module_has_it():
    model = _trained_cnn()
    random_model = randomized_model(model)
    linear = random_model.classifier[2]
    bound = 1 / linear.in_features**0.5  # nn.Linear's default initialisation is uniform in +-bound
    assert bool((linear.weight.abs() <= bound).all())
    batch_norm = random_model.features[1]
    assert torch.equal(batch_norm.weight, torch.ones(4)) and torch.equal(batch_norm.bias, torch.zeros(4))
    assert torch.equal(batch_norm.running_mean, torch.zeros(4))


class _RawParameters(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spread = nn.Parameter(3.0 * torch.randn(10_000, generator=torch.Generator().manual_seed(0)) + 5.0)
        self.constant = nn.Parameter(torch.full((10_000,), -2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.spread[0] + self.constant[0]


def test_parameters_without_reset_parameters_get_noise_of_the_same_spread():
    model = _RawParameters()
    random_model = randomized_model(model)
    assert parametrized_layers(model) == [""]
    assert abs(random_model.spread.std().item() - 3.0) < 0.1 and abs(random_model.spread.mean().item()) < 0.1
    assert abs(random_model.constant.std().item() - 2.0) < 0.1  # std 0: the mean magnitude instead


def test_live_model_and_global_rng_are_untouched():
    model = _trained_cnn()
    model.classifier.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    copies = randomized_copies(model) + randomized_copies(model, cascade=False)
    randomized_model(model)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert [m.training for m in model.modules()] == flags
    assert all([m.training for m in copy.modules()] == flags for _, copy in copies)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])
    assert before[2] == random.getstate()


def test_works_under_inference_mode():
    model = _trained_cnn()
    expected = randomized_model(model).state_dict()
    with torch.inference_mode():
        copies = randomized_copies(model)
    for key, value in copies[-1][1].state_dict().items():
        assert torch.equal(value, expected[key]), key


def _centre_reader() -> nn.Module:
    """A conv net whose classifier reads only the centre of the feature map: its maps sit at the centre."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 12 * 12, 2)
    )
    centre = torch.zeros(4, 12, 12)
    centre[:, 5:7, 5:7] = 1.0
    with torch.no_grad():
        model[4].weight.mul_(centre.flatten())
    return model.eval()


def test_saliency_of_a_randomized_model_differs_from_the_trained_one():
    model = _centre_reader()
    images = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    trained = saliency(model, images, target=0)
    copies = randomized_copies(model)
    for _, copy in (copies[0], copies[-1]):  # only the classifier randomized, and everything
        scores = randomization_scores(trained, saliency(copy, images, target=0))
        assert bool((scores["spearman"] < 0.5).all()), scores


def test_a_map_that_ignores_the_model_passes_unchanged():
    # An "edge detector": computed from the image alone, so identical for any weights. Insensitive.
    def edges(images: torch.Tensor) -> torch.Tensor:
        return (images[..., 1:, 1:] - images[..., :-1, :-1]).abs()

    images = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    scores = randomization_scores(edges(images), edges(images.clone()))
    torch.testing.assert_close(scores["spearman"], torch.ones(4))
    torch.testing.assert_close(scores["ssim"], torch.ones(4))


def test_maps_are_compared_by_absolute_value_of_the_channel_sum():
    maps = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(2))
    scores = randomization_scores(maps, -maps.sum(dim=1, keepdim=True))
    torch.testing.assert_close(scores["spearman"], torch.ones(3))
    reversed_ranks = randomization_scores(maps[:, :1], 1 - maps[:, :1])
    torch.testing.assert_close(reversed_ranks["spearman"], -torch.ones(3))


def test_argument_errors():
    model = _trained_cnn()
    allowed = str(LAYERS)
    cases = [
        (
            lambda: randomized_copies(model, layers=["features.2"]),
            ValueError,
            f"`layers` must name modules with parameters of their own, from {allowed}, got ['features.2'].",
        ),
        (
            lambda: randomized_copies(model, layers=[]),
            ValueError,
            f"`layers` must name modules with parameters of their own, from {allowed}, got [].",
        ),
        (
            lambda: randomized_copies(model, layers="features.0"),
            TypeError,
            "`layers` must be a sequence of dotted module names or None, got 'features.0'.",
        ),
        (lambda: randomized_copies(model, cascade="yes"), TypeError, "`cascade` must be a bool, got 'yes' (str)."),
        (lambda: randomized_copies(model, seed=1.5), TypeError, "`seed` must be an int, got 1.5 (float)."),
        (lambda: randomized_model(model, seed=None), TypeError, "`seed` must be an int, got None (NoneType)."),
        (
            lambda: randomized_copies(nn.ReLU()),
            ValueError,
            "`model` must hold parameters to randomise, got a ReLU without any.",
        ),
        (lambda: randomized_copies("model"), TypeError, "`model` must be a torch.nn.Module, got str."),
        (
            lambda: randomization_scores(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 6)),
            ValueError,
            "`maps_trained` and `maps_random` must hold maps of the same images at the same size [N, *, H, W], "
            "got [2, 1, 8, 8] and [2, 1, 8, 6].",
        ),
        (
            lambda: randomization_scores(torch.rand(8, 8), torch.rand(2, 1, 8, 8)),
            ValueError,
            "`maps_trained` must have 4 dimensions [N, C, H, W], got 2 dimensions with shape [8, 8].",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
