"""Probes sharded over ranks: shares, the exchange, and maps equal to one process's (two "ranks" as threads)."""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from lightning_xai import ExpectedGradients, GradCAM, Occlusion, Shortcuts, SmoothGrad, Stability
from lightning_xai.methods import AttributionMethod, CaptumMethod, MethodContext
from lightning_xai.monitor import engine as engine_module
from lightning_xai.monitor.analyses import ShortcutReport
from lightning_xai.monitor.budget import Deadline
from lightning_xai.monitor.engine import Engine, MapsReport, RunMoment, RunReport, ShareError, explain_maps
from lightning_xai.monitor.settings import check_strategy
from lightning_xai.monitor.sharding import (
    Shard,
    Team,
    collective_forward,
    draws_per_probe,
    gather_maps,
    probe_seed,
    shard_indices,
)
from lightning_xai.probes import ProbeSet


class ThreadRanks:
    """``world_size`` ranks as threads: their broadcast and gather meet at a barrier, as collectives do.

    A rank that skipped a collective the others entered breaks the barrier (after 20 s) instead of hanging.
    """

    def __init__(self, world_size: int, *, collective: bool = False) -> None:
        self.world_size = world_size
        self.collective = collective
        self.barrier = threading.Barrier(world_size, timeout=20)
        self.slots: list[object] = [None] * world_size
        self.entered: list[list[str]] = [[] for _ in range(world_size)]

    def _exchange(self, rank: int, value: object) -> list[object]:
        self.slots[rank] = value
        self.barrier.wait()
        parts = list(self.slots)
        self.barrier.wait()
        return parts

    def team(self, rank: int) -> Team:
        def broadcast(value: object) -> object:
            self.entered[rank].append("broadcast")
            return self._exchange(rank, value)[0]

        def gather(value: object) -> list[object]:
            self.entered[rank].append("gather")
            return self._exchange(rank, value)

        return Team(rank, self.world_size, self.collective, broadcast, gather)

    def run(self, work) -> list[object]:  # type: ignore[no-untyped-def]
        """``work(team)`` on every rank at once; each rank's result or the exception it raised."""
        results: list[object] = [None] * self.world_size

        def main(rank: int) -> None:
            try:
                results[rank] = work(self.team(rank))
            except Exception as error:  # handed back to the test
                results[rank] = error

        threads = [threading.Thread(target=main, args=(rank,), name=f"rank-{rank}") for rank in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return results


NET = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
with torch.no_grad():
    for parameter in NET.parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)) * 0.3)


def tiny_net() -> nn.Module:
    """The same net for every rank, each its own copy (hooks of one thread never see another's passes)."""
    return copy.deepcopy(NET).eval()


def probe_set(count: int = 5) -> ProbeSet:
    images = torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return ProbeSet(images, torch.arange(count) % 3, "given")


METHODS = {
    "grad_cam": GradCAM(layer="0"),
    "occlusion": Occlusion(window=4, stride=2),
    "expected_gradients": ExpectedGradients(n_samples=6, baselines="uniform"),
    "smooth_grad": SmoothGrad(n_samples=4),
}


# ------------------------------------------------------------------ shares
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 2, 5, 7, 8])
def test_shares_are_contiguous_equal_and_cover_every_probe_once(count, world_size):
    shards = [shard_indices(count, rank, world_size) for rank in range(world_size)]
    assert len({len(shard.indices) for shard in shards}) == 1  # every rank makes the same number of passes
    real = [index for shard in shards for index in shard.indices[: shard.real]]
    assert real == list(range(count))
    padding = [index for shard in shards for index in shard.indices[shard.real :]]
    assert all(0 <= index < count for index in padding)


def test_a_share_of_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match=re.escape("`rank` must be in [0, 1] and `world_size` >= 1, got 2 and 2.")):
        shard_indices(4, 2, 2)


def test_gathering_drops_the_padding_and_the_keys_some_rank_lacks():
    shards = [Shard([0, 1], 2), Shard([2, 2], 1)]
    parts = [{"a": torch.tensor([1.0, 2.0]), "b": torch.zeros(2)}, {"a": torch.tensor([3.0, 9.0])}]
    assert {key: value.tolist() for key, value in gather_maps(parts, shards).items()} == {"a": [1.0, 2.0, 3.0]}
    with pytest.raises(ValueError, match=re.escape("`parts` and `shards` must have one entry per rank, got 1 and 2.")):
        gather_maps(parts[:1], shards)


def test_a_probe_seed_depends_on_the_run_seed_and_the_index_only():
    seeds = {probe_seed(seed, index) for seed in range(3) for index in range(50)}
    assert len(seeds) == 150 and all(0 <= seed < 2**63 for seed in seeds)
    assert probe_seed(7, 11) == probe_seed(7, 11)


def test_methods_that_draw_are_told_apart():
    assert [draws_per_probe(method) for method in METHODS.values()] == [False, False, True, True]


def test_a_collective_forward_is_recognized_through_subclasses():
    class FSDPStrategy:
        pass

    class MyFSDP(FSDPStrategy):
        pass

    assert collective_forward(MyFSDP()) and not collective_forward(object())


def test_one_process_team_exchanges_nothing():
    team = Team()
    assert team.agree("mine") == "mine" and team.all_gather(3) == [3] and team.shards(2) == [Shard([0, 1], 2)]


# ------------------------------------------------------------------ strategies
def test_xla_fsdp_is_refused_with_the_strategies_that_are_served():
    class XLAFSDPStrategy:
        pass

    with pytest.raises(ValueError) as raised:
        check_strategy(XLAFSDPStrategy())
    assert str(raised.value) == (
        "AttributionMonitor cannot explain a model sharded by XLAFSDPStrategy: its collectives are not supported. "
        "Use FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy or strategy='ddp', or replay the checkpoints "
        "afterwards with lightning_xai.replay."
    )


def test_checks_on_copies_of_the_model_are_refused_under_a_collective_forward_only():
    class ModelParallelStrategy:
        pass

    check_strategy(ModelParallelStrategy())
    check_strategy(object(), checks=["sanity"])
    with pytest.raises(ValueError) as raised:
        check_strategy(ModelParallelStrategy(), checks=["sanity", "robustness"])
    assert str(raised.value) == (
        "AttributionMonitor cannot run the sanity and robustness check under ModelParallelStrategy: it explains "
        "randomized or shifted copies of the model, which a sharded model cannot give. Pass sanity=None and "
        "robustness=None, or run the checks on a checkpoint in one process (lightning_xai.replay)."
    )


# ------------------------------------------------------------------ maps over two ranks
def explain(team: Team, methods=METHODS, **options) -> MapsReport:  # type: ignore[no-untyped-def]
    return explain_maps(tiny_net(), probe_set(), methods, seed=3, team=team, **options)


@pytest.mark.parametrize("world_size", [2, 3])
def test_maps_over_several_ranks_equal_the_one_process_maps(world_size):
    alone = explain(Team())
    ranks = ThreadRanks(world_size)
    reports = ranks.run(explain)
    for report in reports:
        assert isinstance(report, MapsReport) and list(report.maps) == list(METHODS) and report.failures == {}
        for key, expected in alone.maps.items():
            assert report.maps[key].shape == expected.shape == (5, *expected.shape[1:])
            assert float((report.maps[key] - expected).abs().max()) <= 1e-5, key
            assert torch.equal(report.displays[key], alone.displays[key])
    assert all(float(alone.maps[key].abs().sum()) > 0 for key in alone.maps)
    assert ranks.entered[0] == ranks.entered[1]


def test_a_probes_draws_do_not_depend_on_the_other_probes_of_its_call():
    method = {"expected_gradients": METHODS["expected_gradients"]}
    everything = explain_maps(tiny_net(), probe_set(), method, seed=3).maps["expected_gradients"]
    probes = probe_set()
    first_three = ProbeSet(probes.images[:3], probes.labels[:3], "given")  # type: ignore[index]
    alone = explain_maps(tiny_net(), first_three, method, seed=3).maps["expected_gradients"]
    assert torch.allclose(everything[:3], alone, atol=1e-6)
    other_seed = explain_maps(tiny_net(), probe_set(), method, seed=4).maps["expected_gradients"]
    assert not torch.allclose(everything, other_seed)


@dataclass(frozen=True)
class FailsOnBrightImages(AttributionMethod):
    """Raises when any image it is given is all ones (the last probe below)."""

    name: ClassVar[str] = "fails_on_bright"

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        if bool((images.flatten(1).min(dim=1).values >= 1.0).any()):
            raise RuntimeError("too bright")
        return images.clone()


def bright_probes() -> ProbeSet:
    probes = probe_set()
    probes.images[4] = 1.0
    return probes


def test_a_method_failing_on_one_ranks_share_is_recorded_for_every_rank_without_maps():
    methods = {"fails_on_bright": FailsOnBrightImages(), "grad_cam": GradCAM(layer="0")}
    ranks = ThreadRanks(2)
    reports = ranks.run(lambda team: explain_maps(tiny_net(), bright_probes(), methods, team=team))
    for report in reports:
        assert isinstance(report, MapsReport)
        assert report.failures == {"fails_on_bright": "rank 1: RuntimeError: too bright"}
        assert list(report.maps) == ["grad_cam"]
    assert ranks.entered[0] == ranks.entered[1] == ["gather"]


def test_a_share_failing_as_a_whole_raises_on_every_rank_after_the_exchange(monkeypatch):
    real = engine_module.ShareRun.explain

    def explain_or_fail(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.team.rank == 1:
            raise RuntimeError("lost")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine_module.ShareRun, "explain", explain_or_fail)
    ranks = ThreadRanks(2)
    results = ranks.run(lambda team: explain(team, {"grad_cam": GradCAM(layer="0")}))
    assert [str(result) for result in results] == ["rank 1: RuntimeError: lost"] * 2
    assert all(isinstance(result, ShareError) for result in results)
    assert ranks.entered[0] == ranks.entered[1] == ["gather"]


def test_a_rank_failing_before_its_share_still_meets_the_others_at_the_exchange(monkeypatch):
    real = engine_module.predict

    def predict_or_fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "rank-1":
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "predict", predict_or_fail)
    ranks = ThreadRanks(2)
    deadline = Deadline(0.0, 1.0)  # long past: under DDP each rank reads its own clock, no exchange per method
    results = ranks.run(lambda team: explain(team, deadline=deadline))
    assert [str(result) for result in results] == ["rank 1: RuntimeError: out of memory"] * 2
    assert all(isinstance(result, ShareError) for result in results)
    assert ranks.entered == [["gather"], ["gather"]]


def test_rank_zeros_deadline_decides_for_every_rank():
    methods = {"grad_cam": GradCAM(layer="0"), "occlusion": Occlusion(window=4, stride=2)}

    def work(team: Team) -> MapsReport:
        # rank 0's run is long past its deadline, rank 1's has hours left: both skip what rank 0 skips
        deadline = Deadline(0.0, 1.0) if team.is_zero else Deadline(float("inf"), 1.0)
        return explain_maps(tiny_net(), probe_set(), methods, team=team, deadline=deadline)

    ranks = ThreadRanks(2, collective=True)
    reports = ranks.run(work)
    for report in reports:
        assert isinstance(report, MapsReport) and list(report.maps) == ["grad_cam"] and report.skipped == ["occlusion"]
    assert ranks.entered[0] == ranks.entered[1] == ["broadcast", "broadcast", "gather"]


def _run_with_checks(
    monkeypatch: pytest.MonkeyPatch, methods: dict[str, AttributionMethod], *, collective: bool
) -> tuple[Engine, RunReport, dict[str, object]]:
    """One engine run on 5 probes (8x8) with shortcut checks; the engine, its report and the options the checks got."""
    seen: dict[str, object] = {}

    def spy(detector, model, displays, images, **options):  # type: ignore[no-untyped-def]
        seen.update(options)
        return ShortcutReport()

    monkeypatch.setattr(engine_module, "check_shortcuts", spy)
    engine = Engine(methods, seed=0, stability=None, shortcuts=Shortcuts(), faithfulness=None)
    engine.team = Team(collective=collective)
    probes = probe_set()
    report = engine.run(
        tiny_net(),
        probes,
        RunMoment(0, 1, 1, "fit"),
        convert_input=None,
        references=None,
        test_images=probes.images,
        deadline=Deadline(0.0, None),
    )
    return engine, report, seen


@pytest.mark.parametrize("collective", [False, True])
def test_under_a_collective_forward_nothing_in_a_run_follows_a_clock(monkeypatch, collective):
    methods = {"grad_cam": GradCAM(layer="0"), "occlusion": Occlusion(window=4, stride=2)}
    engine, _, seen = _run_with_checks(monkeypatch, methods, collective=collective)
    # the checks' budget is counted in images: the same on every rank, so a collective forward has one too
    assert seen["maps_work"] == 5 + 5 * (3 * 3 + 1) + 5 * 3 and seen["unsized_seconds"] == 0.0  # 5 probes, 8x8
    assert (engine.tuners == {}) == collective  # fixed batch sizes, no timing


@pytest.mark.parametrize("collective", [False, True])
def test_maps_of_unknown_cost_give_the_checks_a_clock_budget_in_one_process_and_none_under_a_collective_forward(
    monkeypatch, collective
):
    pytest.importorskip("captum")
    methods = {"grad_cam": GradCAM(layer="0"), "deep_lift": CaptumMethod("DeepLift")}
    _, report, seen = _run_with_checks(monkeypatch, methods, collective=collective)
    seconds = report.maps.seconds
    assert "deep_lift" in seconds
    if collective:  # each rank's clock differs: no budget rather than one that could differ between ranks
        assert seen["maps_work"] is None and seen["unsized_seconds"] == 0.0
    else:  # DeepLift's passes are unknown: its time, converted by the detector at its own pass's rate
        assert seen["maps_work"] == 5 + 5 * 3 and seen["unsized_seconds"] == seconds["deep_lift"] > 0


def test_whether_the_shortcut_checks_wait_is_rank_zeros_decision_under_a_collective_forward():
    methods = {"grad_cam": GradCAM(layer="0"), "occlusion": Occlusion(window=4, stride=2)}

    def work(team: Team) -> bool:
        engine = Engine(methods, seed=0, stability=Stability(), shortcuts=Shortcuts(), faithfulness=None)
        engine.team = team
        engine.checks_pending = not team.is_zero  # rank 1 alone would run its checks again
        engine.detector.sees_news = lambda *args: False  # type: ignore[method-assign,union-attr]
        predictions = SimpleNamespace(predicted=None)
        maps = MapsReport(predictions=predictions, scheduled_out={"occlusion": "settled"})  # type: ignore[arg-type]
        return engine._checks_wait(maps, torch.zeros(1, 1, 8, 8))

    ranks = ThreadRanks(2, collective=True)
    assert ranks.run(work) == [True, True]  # every rank waits, as rank 0 does: none enters the checks alone
    assert ranks.entered[0] == ranks.entered[1] == ["broadcast"]
