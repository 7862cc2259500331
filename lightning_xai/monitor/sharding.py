"""Probes sharded over the ranks of a multi-process fit: who explains which probes, and how the parts come back.

Under every multi-process strategy (``ddp``, ``ddp_spawn``, FSDP, FSDP2 through
``ModelParallelStrategy``, DeepSpeed) each rank explains a contiguous, equal share of the probes
(:func:`shard_indices`; the last shares are padded by repeating a probe, so every rank makes the
same number of passes), and every rank receives every rank's share (:meth:`Team.all_gather`);
the padding is dropped when the shares are put together (:func:`gather_maps`). Global rank 0
then records and logs as in one process.

A probe's random draws (expected gradients' baselines and interpolation points, SmoothGrad's
noise, a mask's initial noise, Captum's sampling) come from a private generator seeded by the
run seed and the probe's *global* index only (:func:`probe_seed`): methods that draw
(:func:`draws_per_probe`) are called one probe at a time, so a probe's map is the same on any
rank, in any shard, and with any other probes beside it.

With a *collective* forward pass (:func:`collective_forward`: FSDP, FSDP2, DeepSpeed) every rank
takes part in every forward and backward: batch sizes are fixed (no timing), rank 0 takes every
run/skip decision and broadcasts it (:meth:`Team.agree`), and the unsharded analyses run on
every rank with identical inputs and seeds (only rank 0 records).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from lightning_xai.methods import AttributionMethod, CaptumMethod, ExpectedGradients, Mask, MethodContext, SmoothGrad

__all__ = [
    "COLLECTIVE_STRATEGIES",
    "Shard",
    "Team",
    "attribute_rows",
    "collective_forward",
    "draws_per_probe",
    "gather_maps",
    "probe_seed",
    "shard_indices",
    "team_for",
]

T = TypeVar("T")

COLLECTIVE_STRATEGIES = ("FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy")


class Shard(NamedTuple):
    """One rank's share: ``indices`` (positions it explains, padding included) and ``real`` (how many are not padding)."""

    indices: list[int]
    real: int


def shard_indices(count: int, rank: int, world_size: int) -> Shard:
    """The contiguous share of ``count`` probes that ``rank`` explains, padded to the common size.

    Every rank gets ``ceil(count / world_size)`` positions; where too few probes are left, the
    share is padded by repeating the last probe (so every rank runs the same number of passes).

    Args:
        count: how many probes there are (``>= 0``).
        rank: this rank, ``0 <= rank < world_size``.
        world_size: how many ranks share the probes.

    Returns:
        The positions (in ``range(count)``) and how many of them are real.

    Example:
        >>> [shard_indices(5, rank, 2) for rank in (0, 1)]
        [Shard(indices=[0, 1, 2], real=3), Shard(indices=[3, 4, 4], real=2)]
        >>> shard_indices(1, 1, 2), shard_indices(0, 0, 2)
        (Shard(indices=[0], real=0), Shard(indices=[], real=0))
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be in [0, {world_size - 1}] and `world_size` >= 1, got {rank} and {world_size}.")
    size = math.ceil(count / world_size)
    start = min(rank * size, count)
    stop = min(start + size, count)
    real = list(range(start, stop))
    return Shard(real + [count - 1] * (size - len(real)), len(real))


def probe_seed(seed: int, index: int) -> int:
    """The seed of probe ``index``'s private generator in a run seeded ``seed`` (the same in every process).

    Example:
        >>> probe_seed(0, 3) == probe_seed(0, 3), probe_seed(0, 3) == probe_seed(0, 4)
        (True, False)
    """
    digest = hashlib.blake2b(f"lightning_xai:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def draws_per_probe(method: AttributionMethod) -> bool:
    """Whether ``method`` draws random numbers (or looks at the other images of its batch): it is then
    called one probe at a time, each with its own generator (:func:`probe_seed`).

    Example:
        >>> from lightning_xai import ExpectedGradients, GradCAM
        >>> draws_per_probe(ExpectedGradients()), draws_per_probe(GradCAM())
        (True, False)
    """
    return isinstance(method, ExpectedGradients | SmoothGrad | Mask | CaptumMethod)


def attribute_rows(
    method: AttributionMethod,
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    rows: Sequence[int],
    context: Callable[[int | None], MethodContext],
    *,
    with_gap: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``method``'s attributions and details for ``images`` ``[S, C, H, W]`` (global probe indices ``rows``).

    Methods that draw (:func:`draws_per_probe`) run one probe at a time with ``context(row)``; the
    others run once on all ``images`` with ``context(None)``.

    Example:
        >>> from lightning_xai import Saliency
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
        >>> context = lambda row: MethodContext(torch.Generator().manual_seed(probe_seed(0, row or 0)))
        >>> maps, _ = attribute_rows(Saliency(), net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), [4, 5], context)
        >>> maps.shape
        torch.Size([2, 1, 2, 2])
    """
    if not draws_per_probe(method):
        return method.attribute_with_details(model, images, targets, context(None), with_gap=with_gap)
    pieces = [
        method.attribute_with_details(model, images[i : i + 1], targets[i : i + 1], context(row), with_gap=with_gap)
        for i, row in enumerate(rows)
    ]
    details = {name: torch.cat([piece[1][name] for piece in pieces]) for name in pieces[0][1]}
    return torch.cat([piece[0] for piece in pieces]), details


def gather_maps(parts: Sequence[Mapping[str, Tensor]], shards: Sequence[Shard]) -> dict[str, Tensor]:
    """Every rank's per-probe tensors ``[S, ...]`` put back in probe order, padding dropped: ``[count, ...]``.

    A key is kept only when every rank has it (a method cut or failed on one rank has no maps).

    Example:
        >>> shards = [shard_indices(3, rank, 2) for rank in (0, 1)]
        >>> parts = [{"a": torch.tensor([0.0, 1.0])}, {"a": torch.tensor([2.0, 2.0]), "b": torch.zeros(2)}]
        >>> gather_maps(parts, shards)
        {'a': tensor([0., 1., 2.])}
    """
    if len(parts) != len(shards):
        raise ValueError(f"`parts` and `shards` must have one entry per rank, got {len(parts)} and {len(shards)}.")
    keys = [key for key in parts[0] if all(key in part for part in parts)] if parts else []
    return {key: torch.cat([part[key][: shard.real] for part, shard in zip(parts, shards)]) for key in keys}


def _alone_gather(value: Any) -> list[Any]:
    return [value]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Team:
    """The ranks of a fit as the monitor sees them (one process: rank 0 of 1, nothing to exchange).

    Attributes:
        rank: global rank of this process.
        world_size: how many processes explain.
        collective: whether a forward pass is collective (every rank must make every pass).
        broadcast: ``value -> rank 0's value`` on every rank (a collective).
        gather: ``value -> [every rank's value]`` on every rank (a collective).

    Example:
        >>> team = Team()
        >>> team.agree(True), team.all_gather("part"), team.shard(3)
        (True, ['part'], Shard(indices=[0, 1, 2], real=3))
    """

    rank: int = 0
    world_size: int = 1
    collective: bool = False
    broadcast: Callable[[Any], Any] = field(default=_same, repr=False)
    gather: Callable[[Any], list[Any]] = field(default=_alone_gather, repr=False)

    @property
    def is_zero(self) -> bool:
        """Whether this is global rank 0 (the one that records)."""
        return self.rank == 0

    def agree(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a decision taken once, for all)."""
        return self.broadcast(value) if self.world_size > 1 else value

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        return self.gather(value) if self.world_size > 1 else [value]

    def shard(self, count: int) -> Shard:
        """This rank's share of ``count`` probes."""
        return shard_indices(count, self.rank, self.world_size)

    def shards(self, count: int) -> list[Shard]:
        """Every rank's share of ``count`` probes, in rank order."""
        return [shard_indices(count, rank, self.world_size) for rank in range(self.world_size)]


def collective_forward(strategy: object) -> bool:
    """Whether ``strategy`` shards the model so that each forward pass needs every rank (FSDP, FSDP2, DeepSpeed).

    Example:
        >>> collective_forward(object())
        False
    """
    return any(kind.__name__ in COLLECTIVE_STRATEGIES for kind in type(strategy).__mro__)


def team_for(strategy: Any, *, rank: int, world_size: int) -> Team:
    """The :class:`Team` of a Lightning ``strategy`` (``trainer.strategy``, ``trainer.global_rank``, ``trainer.world_size``).

    Objects are exchanged through ``torch.distributed`` when its process group is up, else through
    the strategy's own ``broadcast`` (one per rank for a gather).
    """
    if world_size <= 1:
        return Team()

    def broadcast(value: Any) -> Any:
        return strategy.broadcast(value, src=0)

    def gather(value: Any) -> list[Any]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(parts, value)
            return parts
        return [strategy.broadcast(value, src=source) for source in range(world_size)]

    return Team(rank, world_size, collective_forward(strategy), broadcast, gather)
