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
from lightning_xai.monitor.sharding import Shard, Team, attribute_rows, gather_maps, probe_seed

if TYPE_CHECKING:
    from lightning_xai.monitor.engine import MapsReport

__all__ = ["SHARE_FAILED", "ShareError", "ShareRun", "describe_error", "put_together", "scatter"]


def describe_error(error: BaseException) -> str:
    """``"TypeName: message"`` (first line of the message)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


SHARE_FAILED = "<share>"


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
        """Each method on the share, into ``share``; the deadline is asked once per method on every rank."""
        capped = deadline is not None and deadline.max_seconds is not None and not self.team.collective
        context = self.context(deadline.passed if capped and deadline is not None else None)
        for key, method in methods.items():
            started_any = bool(share.maps or share.cut or share.failures) or not first_starts
            passed = self.team.agree(deadline.passed()) if deadline is not None else False
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
    report: MapsReport,
    shares: list[MapsReport],
    shards: list[Shard],
    methods: Mapping[str, AttributionMethod],
    *,
    strict: bool,
) -> None:
    """Every rank's share into ``report`` (the same on every rank): maps in probe order, padding dropped."""
    several = len(shares) > 1
    failed = [
        f"rank {rank}: {share.failures[SHARE_FAILED]}"
        for rank, share in enumerate(shares)
        if SHARE_FAILED in share.failures
    ]
    if failed:
        raise ShareError("; ".join(failed) if several else shares[0].failures[SHARE_FAILED])
    for rank, share in enumerate(shares):
        for key, error in share.failures.items():
            report.failures.setdefault(key, f"rank {rank}: {error}" if several else error)
    if strict and report.failures:
        raise RuntimeError(f"attribution failed: {report.failures}")
    kept = report.predictions.finite
    gathered = gather_maps([share.maps for share in shares], shards)
    gaps = gather_maps([share.gaps for share in shares], shards)
    for key in methods:
        if key in gathered:
            report.maps[key] = scatter(gathered[key], kept)
            report.displays[key] = methods[key].display(report.maps[key]).cpu()
            report.seconds[key] = max(share.seconds.get(key, 0.0) for share in shares)
        if key in gaps:
            report.gaps[key] = gaps[key]
        if all(key in share.details for share in shares):
            report.details[key] = gather_maps([share.details[key] for share in shares], shards)
    report.skipped = [key for key in methods if any(key in share.skipped for share in shares)]
    report.cut = [key for key in methods if any(key in share.cut for share in shares)]
    for key in report.cut:
        report.seconds[key] = max(share.seconds.get(key, 0.0) for share in shares)


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
