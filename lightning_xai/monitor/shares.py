"""One rank's share of a run's maps, and the shares put back together (see :mod:`~lightning_xai.monitor.sharding`).

:class:`ShareRun` runs every method on the probes of one rank's share (methods that draw one
probe at a time, each with its own generator); :func:`put_together` turns every rank's share
into the run's maps, the same on every rank. In one process the share is every probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lightning_xai.functional.batching import BatchSize, TimeBudgetExceeded
from lightning_xai.methods import AttributionMethod, MethodContext
from lightning_xai.monitor.budget import Deadline
from lightning_xai.monitor.sharding import Team, attribute_rows, gather_maps, probe_seed, shard_indices

if TYPE_CHECKING:
    from lightning_xai.monitor.engine import MapsReport

__all__ = ["ShareError", "ShareRun", "describe_error", "put_together", "scatter"]


def describe_error(error: BaseException) -> str:
    """``"TypeName: message"`` (first line of the message)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


class ShareError(RuntimeError):
    """A rank's share of the maps failed as a whole (raised on every rank after the exchange)."""


@dataclass
class ShareRun:
    """One rank's share of a run's maps: its images ``[S, C, H, W]``, targets, and the probes' global ``rows``."""

    model: nn.Module
    images: Tensor
    targets: Tensor
    rows: list[int]
    seed: int
    references: Tensor | None
    batch_sizes: Mapping[bool, BatchSize] | None
    team: Team

    def context(self, passed: Callable[[], bool] | None) -> Callable[[int | None], MethodContext]:
        """A method's context for probe ``row`` (its own generator), or for all probes (``None``: the run seed)."""
        device = self.images.device

        def make(row: int | None) -> MethodContext:
            seed = self.seed if row is None else probe_seed(self.seed, row)
            generator = torch.Generator(device=device).manual_seed(seed)
            return MethodContext(generator, self.references, dict(self.batch_sizes or {}), passed)

        return make

    def explain(
        self,
        share: MapsReport,
        methods: Mapping[str, AttributionMethod],
        deadline: Deadline | None,
        with_gaps: bool,
        strict: bool,
        first_starts: bool,
    ) -> None:
        """Each method on the share, into ``share``; with a collective forward pass rank 0's deadline decides for all."""
        capped = deadline is not None and deadline.max_seconds is not None and not self.team.collective
        context = self.context(deadline.passed if capped and deadline is not None else None)
        for key, method in methods.items():
            started_any = bool(share.maps or share.cut or share.failures) or not first_starts
            passed = deadline is not None and deadline.passed()
            if self.team.collective:  # every rank must make the same passes: rank 0's clock decides
                passed = self.team.agree(passed)
            if not self.rows or (started_any and passed):
                share.skipped.append(key)
                continue
            method_started = time.perf_counter()
            try:
                attributions, details = attribute_rows(
                    method, self.model, self.images, self.targets, self.rows, context, with_gap=with_gaps
                )
            except TimeBudgetExceeded:
                share.cut.append(key)
                share.seconds[key] = time.perf_counter() - method_started
                continue
            except Exception as error:
                if strict:
                    raise
                share.failures[key] = describe_error(error)
                continue
            share.maps[key] = attributions.detach().float().cpu()
            gap = details.pop("completeness_gap", None)
            if gap is not None:
                share.gaps[key] = gap.detach().float().cpu()
            if details:
                share.details[key] = {name: values.detach().float().cpu() for name, values in details.items()}
            share.seconds[key] = time.perf_counter() - method_started


def put_together(
    shares: list[MapsReport | str], methods: Mapping[str, AttributionMethod], *, strict: bool = False
) -> MapsReport:
    """Every rank's share (or the error that ended it) as the run's maps, the same on every rank: maps in
    probe order, padding dropped; a method skipped, cut or failed on any rank has no maps.

    Raises:
        ShareError: a share failed as a whole (naming its rank when there are several).
    """
    several = len(shares) > 1
    failed = [
        f"rank {rank}: {share}" if several else share for rank, share in enumerate(shares) if isinstance(share, str)
    ]
    if failed:
        raise ShareError("; ".join(failed))
    parts = [share for share in shares if not isinstance(share, str)]
    report = type(parts[0])(predictions=parts[0].predictions)
    for rank, share in enumerate(parts):
        for key, error in share.failures.items():
            report.failures.setdefault(key, f"rank {rank}: {error}" if several else error)
    if strict and report.failures:
        raise RuntimeError(f"attribution failed: {report.failures}")
    kept = report.predictions.explained
    shards = [shard_indices(int(kept.sum()), rank, len(parts)) for rank in range(len(parts))]
    gathered = gather_maps([share.maps for share in parts], shards)
    gaps = gather_maps([share.gaps for share in parts], shards)
    for key in methods:
        if key in gathered and not any(key in share.skipped for share in parts):
            report.maps[key] = scatter(gathered[key], kept)
            report.displays[key] = methods[key].display(report.maps[key]).cpu()
        if key in report.maps and key in gaps:
            report.gaps[key] = gaps[key]
        if key in report.maps and all(key in share.details for share in parts):
            report.details[key] = gather_maps([share.details[key] for share in parts], shards)
        if key in report.maps or any(key in share.cut for share in parts):
            report.seconds[key] = max(share.seconds.get(key, 0.0) for share in parts)
    report.skipped = [key for key in methods if any(key in share.skipped for share in parts)]
    report.cut = [key for key in methods if any(key in share.cut for share in parts) and key not in report.skipped]
    return report


def scatter(attributions: Tensor, kept: Tensor) -> Tensor:
    """Maps of the explained probes ``[P', ...]`` back at their places among all ``[P, ...]`` (zeros elsewhere).

    Example:
        >>> scatter(torch.ones(1, 2), torch.tensor([False, True]))
        tensor([[0., 0.],
                [1., 1.]])
    """
    if bool(kept.all()):
        return attributions
    full = torch.zeros(kept.shape[0], *attributions.shape[1:], dtype=attributions.dtype)
    full[kept] = attributions
    return full
