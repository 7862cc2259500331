"""Measured batch sizes: the fastest candidate, the early stop at the cache cliff, memory per model, errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lightning_xai.functional import batching, measure_batch_size, tuning
from tests.conftest import build_model


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake clock for the tuner and the sweep: it only moves when a test's forward pass says so.

    The measured times are then exactly the chosen ones, however loaded the machine is (no sleeping,
    no timing in the assertions).
    """
    now = [0.0]
    fake = SimpleNamespace(perf_counter=lambda: now[0])
    monkeypatch.setattr(batching, "time", fake)
    monkeypatch.setattr(tuning, "time", fake)
    return now


def _timed_model(seconds_per_image: dict[int, float], clock: list[float]):
    """A forward function whose pass takes a chosen time per image for each batch size, and records the sizes."""
    seen: list[int] = []
    weight = torch.ones(3 * 4 * 4, 2)

    def forward(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.shape[0])
        clock[0] += seconds_per_image[images.shape[0]] * images.shape[0]
        return images.flatten(1) @ weight

    return forward, seen


def test_the_fastest_candidate_wins_and_the_sweep_stops_past_the_cliff(clock):
    # 8 and 16 images are cheap per image, 32 falls off a cliff (4x slower per image): 64 is never tried
    forward, seen = _timed_model({8: 0.0004, 16: 0.0002, 32: 0.0008, 64: 0.0001}, clock)
    assert measure_batch_size(forward, torch.rand(2, 3, 4, 4), backward=False, candidates=[8, 16, 32, 64]) == 16
    assert sorted(set(seen)) == [8, 16, 32] and seen.count(16) == 3  # one warm-up, two timed passes


def test_backward_passes_are_timed_too(clock):
    forward, seen = _timed_model({4: 0.0001, 8: 0.0001}, clock)
    assert measure_batch_size(forward, torch.rand(1, 3, 4, 4), backward=True, candidates=[4, 8]) in (4, 8)
    assert sorted(set(seen)) == [4, 8]


def test_the_result_is_remembered_per_model_image_size_and_pass_type():
    model = build_model("tiny")
    passes: list[int] = []
    model.register_forward_pre_hook(lambda _module, inputs: passes.append(inputs[0].shape[0]))
    images = torch.rand(2, 3, 12, 10)
    first = measure_batch_size(model, images, backward=False, candidates=[2, 4])
    counted = len(passes)
    assert counted == 6 and measure_batch_size(model, images, backward=False, candidates=[2, 4]) == first
    assert len(passes) == counted  # remembered: no pass at all
    measure_batch_size(model, images, backward=True, candidates=[2, 4])
    measure_batch_size(model, images[..., :8, :8], backward=False, candidates=[2, 4])
    assert len(passes) == counted + 12  # another pass type and another image size are measured


def test_large_images_are_never_tried_in_batches_past_four_times_the_default(clock):
    seen: list[int] = []

    def forward(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.shape[0])
        clock[0] += 0.005  # the same time per batch: larger batches are faster, so only the cap ends the sweep
        return images.mean(dim=(2, 3))

    assert measure_batch_size(forward, torch.rand(1, 3, 224, 224), backward=True) == 16
    assert sorted(set(seen)) == [4, 8, 16]


def test_the_budget_stops_the_sweep_after_the_first_candidate(clock):
    forward, seen = _timed_model({2: 0.01, 4: 0.001}, clock)
    assert measure_batch_size(forward, torch.rand(1, 3, 4, 4), backward=False, candidates=[2, 4], max_seconds=1e-6) == 2
    assert set(seen) == {2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidates": [0, 8]}, "`candidates` must be a non-empty list of positive ints, got [0, 8]."),
        ({"candidates": []}, "`candidates` must be a non-empty list of positive ints, got []."),
        ({"max_seconds": 0}, "`max_seconds` must be a positive number of seconds, got 0."),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError) as error:
        measure_batch_size(build_model("tiny"), torch.rand(1, 3, 12, 10), backward=False, **kwargs)
    assert str(error.value) == message
