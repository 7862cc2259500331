"""Batch-size tuning while the work runs: coverage of the work, the choice, the cliff, identical maps, errors."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai import functional as F
from lightning_xai.functional import BatchSizeTuner, batching
from lightning_xai.functional.batching import chunk_ranges
from tests.conftest import build_model


class FakeClock:
    """Stands in for ``time.perf_counter`` in the tuner: the consumer advances it by each batch's cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(batching.time, "perf_counter", fake)
    return fake


def work(
    tuner: BatchSizeTuner, total: int, clock: FakeClock, seconds_per_image: dict[int, float]
) -> list[tuple[int, int]]:
    """Consumes ``chunk_ranges(total, tuner)`` as a method would, each batch costing its size's time per image."""
    handed = []
    for start, stop in chunk_ranges(total, tuner):
        handed.append((start, stop))
        clock.now += seconds_per_image.get(stop - start, 1e-3) * (stop - start)
    return handed


@pytest.mark.parametrize("totals", [[1], [13], [5, 40, 3, 100], [250, 250]])
def test_batches_cover_the_work_exactly_in_order_across_calls(totals, clock):
    tuner = BatchSizeTuner("cpu", candidates=[2, 4, 8, 16])
    for total in totals:
        handed = work(tuner, total, clock, {})
        assert handed[0][0] == 0 and handed[-1][1] == total
        assert all(stop > start and stop == next_start for (start, stop), (next_start, _) in zip(handed, handed[1:]))


def test_the_fastest_size_wins_and_is_used_from_then_on(clock):
    tuner = BatchSizeTuner("cpu", candidates=[2, 4, 8, 16])
    costs = {2: 4e-3, 4: 2e-3, 8: 1e-3, 16: 1.5e-3}  # 8 images per batch run fastest
    handed = work(tuner, 200, clock, costs)
    sizes = [stop - start for start, stop in handed]
    # each size: one warm-up batch and two timed ones, then the best size only
    assert sizes[:12] == [2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    assert tuner.best == 8 and not tuner.exploring and set(sizes[12:-1]) == {8}
    assert tuner.rates == pytest.approx({2: 250.0, 4: 500.0, 8: 1000.0, 16: 1000.0 / 1.5})
    assert work(tuner, 24, clock, costs) == [(0, 8), (8, 16), (16, 24)]


def test_exploring_stops_at_the_cache_cliff(clock):
    tuner = BatchSizeTuner("cpu", candidates=[2, 4, 8, 16, 32])
    handed = work(tuner, 300, clock, {2: 2e-3, 4: 1e-3, 8: 3e-3, 16: 1e-4, 32: 1e-4})  # 8 is 3x slower than 4
    sizes = {stop - start for start, stop in handed}
    assert tuner.best == 4 and 16 not in sizes and 32 not in sizes


def test_the_warm_up_batch_does_not_count(clock):
    tuner = BatchSizeTuner("cpu", candidates=[2, 4], timed_batches=1)
    first = iter(chunk_ranges(100, tuner))
    for index, (start, stop) in enumerate(first):
        clock.now += 1.0 if index in (0, 2) else 1e-3 * (stop - start)  # each size's first batch is very slow
        if not tuner.exploring:
            break
    assert tuner.rates == pytest.approx({2: 1000.0, 4: 1000.0}) and tuner.best in (2, 4)


def test_partial_batches_are_not_timed(clock):
    tuner = BatchSizeTuner("cpu", candidates=[4, 8])
    work(tuner, 3, clock, {3: 10.0})  # a batch of 3 (smaller than the size) is never taken for a rate
    assert tuner.rates == {} and tuner.size == 4


def test_maps_are_the_same_with_a_tuner_as_with_a_fixed_batch_size():
    torch.manual_seed(0)
    model, images = build_model("tiny").eval(), torch.rand(3, 3, 12, 10)
    forward, backward = BatchSizeTuner("cpu", candidates=[2, 4, 8]), BatchSizeTuner("cpu", candidates=[2, 4, 8])
    for _ in range(2):  # the first call explores, the second runs at the chosen size
        tuned = F.occlusion(model, images, 1, window=3, stride=2, batch_size=forward)
        torch.testing.assert_close(
            tuned, F.occlusion(model, images, 1, window=3, stride=2, batch_size=5), rtol=1e-5, atol=1e-6
        )
        tuned = F.expected_gradients(model, images, 1, baselines="gaussian", n_samples=24, batch_size=backward)
        fixed = F.expected_gradients(model, images, 1, baselines="gaussian", n_samples=24, batch_size=7)
        torch.testing.assert_close(tuned, fixed, rtol=1e-5, atol=1e-6)
    assert forward.rates and backward.rates


def test_default_candidates_per_device():
    assert BatchSizeTuner("cpu").candidates == [8, 16, 32, 64, 128, 256]
    assert BatchSizeTuner.for_images(torch.zeros(1, 3, 32, 32), backward=True).candidates == [8, 16, 32, 64, 128, 256]


@pytest.mark.parametrize(("side", "default", "expected"), [(224, 4, [4, 8, 16]), (64, 21, [8, 16, 32, 64])])
def test_cpu_candidates_stop_at_four_times_the_default_batch_size(side, default, expected):
    """Forward+backward batches of 64 images of 224x224 take 5 GB with the small ResNetStyle."""
    images = torch.zeros(1, 3, side, side)
    assert batching.default_batch_size(images, backward=True) == default
    assert BatchSizeTuner.for_images(images, backward=True).candidates == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_candidates_stop_at_four_times_the_default_batch_size():
    images = torch.zeros(1, 3, 224, 224, device="cuda")
    largest = 4 * batching.default_batch_size(images, backward=True)
    candidates = BatchSizeTuner.for_images(images, backward=True).candidates
    assert candidates[0] == min(16, largest // 4) and max(candidates) <= largest < 2 * max(candidates)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidates": []}, "`candidates` must be a non-empty list of positive ints, got []."),
        ({"candidates": [4, 0]}, "`candidates` must be a non-empty list of positive ints, got [4, 0]."),
        ({"timed_batches": 0}, "`timed_batches` must be an int >= 1, got 0."),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        BatchSizeTuner("cpu", **kwargs)


def test_a_batch_size_that_is_neither_int_nor_tuner_is_refused():
    with pytest.raises(TypeError, match=r"^`batch_size` must be an int >= 1, got 'auto' \(str\)\.$"):
        F.occlusion(build_model("tiny"), torch.rand(1, 3, 12, 10), 0, window=3, batch_size="auto")
