"""Throughput of the functional attribution methods, against the model's own limit and against Captum.

Run from the repository root::

    python benchmarks/bench_functional.py            # full run (a few minutes on a 2-core CPU)
    python benchmarks/bench_functional.py --quick    # smoke run, under a minute
    python benchmarks/bench_functional.py --device cuda
    python benchmarks/bench_functional.py --quick --large   # adds ResNet-style at 224x224 (reduced batch)

How to read the table
---------------------
One block of rows per model and input size. Every figure is an *effective throughput*: images
evaluated by the model per second (perturbed images for occlusion, path points for integrated
gradients, baseline draws for expected gradients, noisy copies for SmoothGrad, the probe images
themselves for Grad-CAM), from the median of several timed repeats after one warm-up call.
The candidates of one comparison (the sizes of a sweep; ours at both batch sizes and Captum
at each knob setting) are timed in turns, so that drifts of a shared machine hit them alike,
and a repeat during which other processes took the CPU is rerun (see the footer).

* ``raw fwd`` / ``raw fwd+bwd`` rows are the model alone: a forward pass under ``torch.no_grad()``,
  and a forward pass plus ``torch.autograd.grad`` of the summed target scores with respect to the
  input. ``best bs`` is the batch size that did best in the sweep; ``def bs`` is the batch size
  our default heuristic (``default_batch_size``) picks for that pass type, measured alongside
  (``def xraw`` above 1 means it beat every size in the sweep). The whole sweep is printed to
  stderr with the progress lines. At 64x64 on a CPU the sweep stops at 64: from 128 on a pass
  runs several times slower (the cache cliff in DESIGN.md).
* ``tuned fwd`` / ``tuned fwd+bwd`` rows: the batch size a ``BatchSizeTuner`` settles on while
  occlusion (forward) and integrated gradients (forward+backward) run through it, as the monitor
  tunes the methods without a batch size of their own, in the ``def bs`` column, and the sweep's
  throughput at that size (``-`` when the sweep did not try it).
* Method rows: ``def`` columns run our function with ``batch_size=None`` (the default), ``best``
  columns with ``batch_size=`` the best raw batch size for the matching pass type, and ``cap``
  columns run Captum at the best of a small sweep of its batching knob (``cap bs`` = images per
  model pass, with the knob in brackets: ``ppe`` = ``perturbations_per_eval``, ``ibs`` =
  ``internal_batch_size``, ``nsbs`` = ``nt_samples_batch_size``; GradientShap and LayerGradCam
  have no knob and run everything in one batch).
* ``xraw`` is that throughput divided by the best raw throughput of the matching pass
  (occlusion: forward; integrated/expected gradients, SmoothGrad and Grad-CAM: forward+backward).
  1.00 means the method runs at the model's limit; Grad-CAM evaluates only the probe images, so
  its batch is small and its ratio is expected to be lower.
* ``guided_backprop``, ``deconvnet`` (one gradient per probe, like saliency), ``guided_grad_cam``
  (a Grad-CAM pass plus a guided pass: ``images`` counts both), ``vargrad`` (SmoothGrad samples,
  against ``NoiseTunnel(nt_type="vargrad")``) and ``extremal_mask`` (steps x probes x 3 areas,
  forward+backward, all masks in one pass per step; no Captum counterpart, so ``-``) compare to
  the forward+backward limit the same way.
* ``us/cap`` is Captum's time divided by ours at our default batch size: above 1 we are faster.
* ``max|diff|`` is the largest absolute difference between our map and Captum's for the exact
  methods (occlusion, integrated gradients, Grad-CAM); the sampled methods (expected gradients,
  SmoothGrad) draw different random numbers, so there is nothing to compare (``-``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from captum.attr import (
    Deconvolution,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from lightning_xai.demos import ResNetStyle, SmallCNN
from lightning_xai.functional import (
    BatchSizeTuner,
    deconvnet,
    expected_gradients,
    extremal_mask,
    find_grad_cam_layer,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    integrated_gradients,
    occlusion,
    smooth_grad,
)
from lightning_xai.functional.batching import default_batch_size

NUM_CLASSES = 10
CHANNELS = 3
K = TypeVar("K")


@dataclass(frozen=True)
class Settings:
    """How much work each measurement does.

    Attributes:
        device: where the model and the images live.
        n_images: probe images explained per call.
        n_samples: integrated-gradients steps, and expected-gradients and SmoothGrad samples.
        n_references: reference images expected gradients draws its baselines from.
        repeats: timed calls per measurement (after one warm-up call); the median is reported.
        min_repeat_s: a timed repeat calls a fast function several times, to last at least this long.
        budget_s: a measurement whose calls are slow gets fewer repeats, so that the timed
            repeats take about this long (at least one always runs).
        sweep: batch sizes tried for the raw throughput and the Captum knobs, ascending.
        monitor: reruns timed repeats that other processes disturbed.
    """

    device: torch.device
    n_images: int
    n_samples: int
    n_references: int
    repeats: int
    min_repeat_s: float
    budget_s: float
    sweep: tuple[int, ...]
    monitor: CpuMonitor


@dataclass(frozen=True)
class Case:
    """One model at one input size.

    Attributes:
        name: shown in the table.
        build: makes the (untrained) model; called after ``torch.manual_seed(0)``.
        size: image height and width.
        window: occlusion window side.
        stride: occlusion stride.
        max_batch: largest batch size swept for this case (past it the CPU falls off a cliff).
    """

    name: str
    build: Callable[[], nn.Module]
    size: int
    window: int
    stride: int
    max_batch: int


@dataclass(frozen=True)
class Method:
    """One attribution method, ours and Captum's, on the same probe images.

    Attributes:
        name: shown in the table.
        backward: whether its passes are forward+backward (else forward only).
        work: images the model evaluates per call (perturbed, interpolated or noisy images).
        default_batch: the batch size our function picks with ``batch_size=None``.
        ours: runs our function with the given ``batch_size`` (``None`` for the default).
        captum: runs Captum with the given number of images per model pass (``None``: no Captum
            counterpart, its cells show ``-``).
        captum_batches: images per pass to try for Captum.
        knob: label of Captum's knob for a number of images per pass.
        exact: whether our map should equal Captum's (else the ``max|diff|`` column is empty).
    """

    name: str
    backward: bool
    work: int
    default_batch: int
    ours: Callable[[int | None], Tensor]
    captum: Callable[[int], Tensor] | None
    captum_batches: tuple[int, ...]
    knob: Callable[[int], str]
    exact: bool


@dataclass(frozen=True)
class Raw:
    """The model's raw throughput for one pass type: the best over the sweep, our default's, and all."""

    best_batch: int
    best_rate: float
    default_batch: int
    default_rate: float
    rates: dict[int, float]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options: ``--quick`` and ``--device``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with little work per measurement")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
    parser.add_argument(
        "--large",
        action="store_true",
        help="add the ResNet-style net at 224x224 (batch capped at 16 on a CPU; there, combine with --quick)",
    )
    return parser.parse_args(argv)


def make_settings(quick: bool, device: torch.device) -> Settings:
    """The work sizes of a full or a ``--quick`` run on ``device``."""
    on_gpu = device.type == "cuda"
    if quick:
        sweep = (16, 64, 256) if on_gpu else (8, 32)
        return Settings(
            device,
            n_images=2,
            n_samples=8,
            n_references=4,
            repeats=1,
            min_repeat_s=0.05,
            budget_s=0.5,
            sweep=sweep,
            monitor=CpuMonitor(attempts=2, max_wait_s=5.0, total_wait_s=20.0),
        )
    sweep = (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if on_gpu else (8, 16, 32, 64, 128, 256)
    return Settings(
        device,
        n_images=8,
        n_samples=32,
        n_references=16,
        repeats=3,
        min_repeat_s=0.2,
        budget_s=4.0,
        sweep=sweep,
        monitor=CpuMonitor(),
    )


def make_cases(device: torch.device, large: bool = False) -> list[Case]:
    """The benchmarked models: a ResNet-style net at 32x32 and 64x64 (and 224x224 if ``large``), and the small CNN
    at 32x32."""
    cap_64 = 2048 if device.type == "cuda" else 64
    cap_224 = 256 if device.type == "cuda" else 16

    def resnet() -> nn.Module:
        return ResNetStyle(CHANNELS, NUM_CLASSES, width=16, blocks_per_stage=2)

    def small() -> nn.Module:
        return SmallCNN(CHANNELS, NUM_CLASSES)

    return [
        Case("ResNetStyle(16,2)", resnet, 32, window=8, stride=4, max_batch=4096),
        Case("ResNetStyle(16,2)", resnet, 64, window=16, stride=8, max_batch=cap_64),
        *([Case("ResNetStyle(16,2)", resnet, 224, window=56, stride=28, max_batch=cap_224)] if large else []),
        Case("SmallCNN", small, 32, window=8, stride=4, max_batch=4096),
    ]


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds one call of ``fn`` takes, and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def calls_per_repeat(fn: Callable[[], object], settings: Settings) -> tuple[int, float, object]:
    """Warms ``fn`` up and picks how many calls one timed repeat makes (at least ``min_repeat_s`` long).

    Returns:
        Calls per repeat, the estimated seconds per call, and a result of ``fn``.
    """
    seconds, result = timed(fn, settings.device)
    if seconds < settings.min_repeat_s:  # fast: the warm-up call overestimates, time one more
        seconds, result = timed(fn, settings.device)
    return max(1, math.ceil(settings.min_repeat_s / max(seconds, 1e-9))), seconds, result


Ticks = tuple[int, int, int]


def cpu_ticks() -> Ticks | None:
    """Clock ticks so far: the machine's total and busy ones, and this process's; ``None`` off Linux."""
    try:
        with open("/proc/stat") as stat:
            machine = [int(v) for v in stat.readline().split()[1:9]]
        with open("/proc/self/stat") as stat:
            own = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    idle = machine[3] + machine[4]
    return sum(machine), sum(machine) - idle, int(own[11]) + int(own[12])


def others_share(before: Ticks | None, after: Ticks | None) -> float | None:
    """Share of the machine's CPU time that other processes used between two readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    total, busy, own = (a - b for a, b in zip(after, before))
    return max(0.0, (busy - own) / total)


class CpuMonitor:
    """Reruns timed repeats during which other processes used the CPU (a shared machine).

    A repeat is *disturbed* when other processes used more than ``threshold`` of the
    machine's CPU time while it ran; it is then rerun after waiting for a quiet second
    (at most ``max_wait_s``), up to ``attempts`` times in all, until the run has spent
    ``total_wait_s`` waiting; after that disturbed repeats are only counted.
    """

    def __init__(
        self, threshold: float = 0.10, attempts: int = 4, max_wait_s: float = 60.0, total_wait_s: float = 600.0
    ) -> None:
        self.threshold, self.attempts, self.max_wait_s, self.total_wait_s = (
            threshold,
            attempts,
            max_wait_s,
            total_wait_s,
        )
        self.reruns, self.kept_disturbed, self.waited_s = 0, 0, 0.0

    def time_quietly(self, fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
        """Like :func:`timed`, rerunning disturbed calls."""
        for attempt in range(self.attempts):
            before = cpu_ticks()
            seconds, result = timed(fn, device)
            share = others_share(before, cpu_ticks())
            if share is None or share <= self.threshold:
                return seconds, result
            if attempt + 1 < self.attempts and self.waited_s < self.total_wait_s:
                self.reruns += 1
                self.wait_for_quiet()
            else:
                break
        self.kept_disturbed += 1
        return seconds, result

    def wait_for_quiet(self) -> None:
        """Sleeps until other processes leave the CPU alone for a second (or ``max_wait_s`` passes)."""
        start = time.perf_counter()
        while time.perf_counter() - start < self.max_wait_s:
            before = cpu_ticks()
            time.sleep(1.0)
            share = others_share(before, cpu_ticks())
            if share is None or share <= self.threshold / 2:
                break
        self.waited_s += time.perf_counter() - start

    def summary(self) -> str:
        """One sentence on the disturbances met, for the table's footer."""
        if cpu_ticks() is None:
            return "CPU use of other processes not monitored (no /proc)."
        kept = f"; {self.kept_disturbed} kept disturbed -- rerun on a quiet machine" if self.kept_disturbed else ""
        return (
            f"{self.reruns} timed repeats rerun because other processes used the CPU "
            f"({self.waited_s:.0f} s waiting){kept}."
        )


def interleaved_medians(fns: Mapping[K, Callable[[], object]], settings: Settings) -> dict[K, tuple[float, object]]:
    """Median seconds per call of each function, timing them in turns.

    Each function is warmed up first; then rounds of timed repeats visit every function in turn,
    so that slow drifts of a shared machine hit all candidates alike. A repeat of a fast function
    calls it several times (``Settings.min_repeat_s``); a slow one gets fewer than
    ``Settings.repeats`` repeats (``Settings.budget_s``).

    Returns:
        Per key: the median seconds per call and the result of its last call.
    """
    plans = {key: calls_per_repeat(fn, settings) for key, fn in fns.items()}
    wanted = {
        key: max(1, min(settings.repeats, int(settings.budget_s / (calls * estimate))))
        for key, (calls, estimate, _) in plans.items()
    }
    times: dict[K, list[float]] = {key: [] for key in fns}
    results = {key: plan[2] for key, plan in plans.items()}
    for round_ in range(max(wanted.values())):
        for key, fn in fns.items():
            if round_ < wanted[key]:
                calls = plans[key][0]
                seconds, results[key] = settings.monitor.time_quietly(
                    lambda fn=fn, calls=calls: [fn() for _ in range(calls)][-1], settings.device
                )
                times[key].append(seconds / calls)
    return {key: (statistics.median(times[key]), results[key]) for key in fns}


def raw_pass(model: nn.Module, images: Tensor, targets: Tensor, backward: bool) -> Callable[[], object]:
    """One forward (under ``no_grad``) or forward+backward pass of ``model`` on ``images``."""
    if not backward:

        def forward() -> object:
            with torch.no_grad():
                return model(images)

        return forward
    points = images.detach().requires_grad_(True)

    def forward_backward() -> object:
        scores = model(points).gather(1, targets.view(-1, 1)).sum()
        return torch.autograd.grad(scores, points)

    return forward_backward


def raw_throughput(model: nn.Module, case: Case, backward: bool, settings: Settings) -> Raw:
    """Images per second of a raw pass over the batch-size sweep, and at our default batch size."""
    example = torch.zeros(1, CHANNELS, case.size, case.size, device=settings.device)
    default = default_batch_size(example, backward=backward)
    batches = sorted({b for b in settings.sweep if b <= case.max_batch} | {default})
    generator = torch.Generator().manual_seed(0)
    passes = {}
    for batch in batches:
        images = torch.rand(batch, CHANNELS, case.size, case.size, generator=generator).to(settings.device)
        targets = torch.arange(batch, device=settings.device) % NUM_CLASSES
        passes[batch] = raw_pass(model, images, targets, backward)
    rates = {batch: batch / seconds for batch, (seconds, _) in interleaved_medians(passes, settings).items()}
    best = max((b for b in rates if b in settings.sweep), key=rates.__getitem__)
    return Raw(best, rates[best], default, rates[default], rates)


def multiples(settings: Settings, case: Case, lowest: int, work: int) -> tuple[int, ...]:
    """Swept batch sizes that are whole multiples of the probe count, at least ``lowest``, at most ``work``."""
    n = settings.n_images
    fitting = (b for b in settings.sweep if b % n == 0 and lowest <= b <= min(case.max_batch, work))
    return tuple(fitting) or (max(lowest, n),)


def occlusion_method(model: nn.Module, images: Tensor, targets: Tensor, case: Case, settings: Settings) -> Method:
    """Occlusion with a square window, zero baseline; Captum's ``Occlusion``."""
    placements = ((case.size - case.window) + case.stride - 1) // case.stride + 1
    captum = Occlusion(model)
    n = images.shape[0]

    def ours(batch: int | None) -> Tensor:
        return occlusion(model, images, targets, window=case.window, stride=case.stride, batch_size=batch)

    def theirs(batch: int) -> Tensor:
        return captum.attribute(
            images,
            sliding_window_shapes=(CHANNELS, case.window, case.window),
            strides=(CHANNELS, case.stride, case.stride),
            baselines=0.0,
            target=targets,
            perturbations_per_eval=batch // n,
        )

    return Method(
        name="occlusion",
        backward=False,
        work=n * placements**2,
        default_batch=default_batch_size(images, backward=False),
        ours=ours,
        captum=theirs,
        captum_batches=multiples(settings, case, n, n * placements**2),
        knob=lambda batch: f"ppe={batch // n}",
        exact=True,
    )


def integrated_gradients_method(
    model: nn.Module, images: Tensor, targets: Tensor, case: Case, settings: Settings
) -> Method:
    """Integrated gradients from a black baseline, Gauss-Legendre; Captum's ``IntegratedGradients``."""
    captum = IntegratedGradients(model)
    steps = settings.n_samples

    def ours(batch: int | None) -> Tensor:
        return integrated_gradients(model, images, targets, n_steps=steps, batch_size=batch)  # type: ignore[return-value]

    def theirs(batch: int) -> Tensor:
        return captum.attribute(images, baselines=0.0, target=targets, n_steps=steps, internal_batch_size=batch)

    return Method(
        name="integrated_gradients",
        backward=True,
        work=images.shape[0] * steps,
        default_batch=default_batch_size(images, backward=True),
        ours=ours,
        captum=theirs,
        # Captum evaluates at least two steps of every image per pass.
        captum_batches=multiples(settings, case, 2 * images.shape[0], images.shape[0] * steps),
        knob=lambda batch: f"ibs={batch}",
        exact=True,
    )


def expected_gradients_method(
    model: nn.Module, images: Tensor, targets: Tensor, references: Tensor, settings: Settings
) -> Method:
    """Expected gradients over a reference set; Captum's ``GradientShap`` (all draws in one batch)."""
    captum = GradientShap(model)
    samples = settings.n_samples
    work = images.shape[0] * samples

    def ours(batch: int | None) -> Tensor:
        return expected_gradients(model, images, targets, baselines=references, n_samples=samples, batch_size=batch)  # type: ignore[return-value]

    def theirs(_batch: int) -> Tensor:
        np.random.seed(0)  # GradientShap draws its baselines from NumPy's global RNG
        return captum.attribute(images, baselines=references, n_samples=samples, stdevs=0.0, target=targets)

    return Method(
        name="expected_gradients",
        backward=True,
        work=work,
        default_batch=default_batch_size(images, backward=True),
        ours=ours,
        captum=theirs,
        captum_batches=(work,),
        knob=lambda _batch: "all",
        exact=False,
    )


def smooth_grad_method(model: nn.Module, images: Tensor, targets: Tensor, case: Case, settings: Settings) -> Method:
    """SmoothGrad of absolute gradients, noise sd 0.15; Captum's ``NoiseTunnel(Saliency)``."""
    captum = NoiseTunnel(Saliency(model))
    samples = settings.n_samples
    n = images.shape[0]

    def ours(batch: int | None) -> Tensor:
        return smooth_grad(
            model, images, targets, n_samples=samples, stdev=0.15, stdev_mode="absolute", batch_size=batch
        )

    def theirs(batch: int) -> Tensor:
        return captum.attribute(
            images,
            nt_type="smoothgrad",
            nt_samples=samples,
            stdevs=0.15,
            nt_samples_batch_size=batch // n,
            target=targets,
        )

    return Method(
        name="smooth_grad",
        backward=True,
        work=n * samples,
        default_batch=default_batch_size(images, backward=True),
        ours=ours,
        captum=theirs,
        captum_batches=multiples(settings, case, n, n * samples),
        knob=lambda batch: f"nsbs={batch // n}",
        exact=False,
    )


def grad_cam_method(model: nn.Module, images: Tensor, targets: Tensor) -> Method:
    """Grad-CAM at the automatically found layer, upsampled; Captum's ``LayerGradCam`` + ``interpolate``."""
    layer = model.get_submodule(find_grad_cam_layer(model, images[:1]))
    captum = LayerGradCam(model, layer)
    n = images.shape[0]

    def ours(batch: int | None) -> Tensor:
        return grad_cam(model, images, targets, batch_size=batch)

    def theirs(_batch: int) -> Tensor:
        cam = captum.attribute(images, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), "bilinear")

    return Method(
        name="grad_cam",
        backward=True,
        work=n,
        default_batch=n,
        ours=ours,
        captum=theirs,
        captum_batches=(n,),
        knob=lambda _batch: "all",
        exact=True,
    )


def relu_rule_methods(model: nn.Module, images: Tensor, targets: Tensor) -> list[Method]:
    """Guided backprop and DeconvNet (one gradient per image), and guided Grad-CAM; Captum runs each in one batch."""
    n = images.shape[0]
    layer_name = find_grad_cam_layer(model, images[:1])
    captum_guided_grad_cam = GuidedGradCam(model, model.get_submodule(layer_name))
    rows = [
        ("guided_backprop", guided_backprop, lambda _b: GuidedBackprop(model).attribute(images, target=targets)),
        ("deconvnet", deconvnet, lambda _b: Deconvolution(model).attribute(images, target=targets)),
    ]
    methods = [
        Method(
            name,
            True,
            n,
            default_batch_size(images, backward=True),
            (lambda b, fn=fn: fn(model, images, targets, batch_size=b)),
            theirs,
            (n,),
            lambda _b: "all",
            True,
        )
        for name, fn, theirs in rows
    ]
    methods.append(
        Method(
            "guided_grad_cam", True, 2 * n, default_batch_size(images, backward=True),
            lambda b: guided_grad_cam(model, images, targets, layer=layer_name, batch_size=b),
            lambda _b: captum_guided_grad_cam.attribute(images, target=targets, interpolate_mode="bilinear"),
            (n,), lambda _b: "all", True,
        )
    )  # fmt: skip
    return methods


def noise_tunnel_and_mask_methods(
    model: nn.Module, images: Tensor, targets: Tensor, case: Case, settings: Settings
) -> list[Method]:
    """VarGrad (Captum's ``NoiseTunnel(nt_type="vargrad")``) and extremal masks (no Captum counterpart)."""
    n, samples = images.shape[0], settings.n_samples
    tunnel = NoiseTunnel(Saliency(model))
    steps, areas = max(2, samples // 2), (0.05, 0.1, 0.2)
    vargrad = Method(
        "vargrad", True, n * samples, default_batch_size(images, backward=True),
        lambda b: smooth_grad(
            model, images, targets, n_samples=samples, stdev=0.15, stdev_mode="absolute", kind="vargrad", batch_size=b
        ),
        lambda b: tunnel.attribute(
            images, nt_type="vargrad", nt_samples=samples, stdevs=0.15, nt_samples_batch_size=b // n, target=targets
        ),
        multiples(settings, case, n, n * samples), lambda b: f"nsbs={b // n}", False,
    )  # fmt: skip
    # extremal_mask runs all N * len(areas) masks in one pass per step; its batch_size argument does not exist
    mask = Method(
        f"extremal_mask({steps} steps)", True, steps * n * len(areas), n * len(areas),
        lambda _b: extremal_mask(model, images, targets, areas=areas, steps=steps).best,
        None, (), lambda _b: "-", False,
    )  # fmt: skip
    return [vargrad, mask]


def rate_cells(rate: float, limit: Raw) -> list[str]:
    """Images per second, and as a fraction of the best raw throughput."""
    return [f"{rate:,.0f}", f"{rate / limit.best_rate:.2f}"]


def method_row(method: Method, raw: dict[bool, Raw], settings: Settings) -> list[str]:
    """Table cells for one method: ours at the default and at the best batch size, and Captum at its best."""
    limit = raw[method.backward]
    calls: dict[tuple[str, int | None], Callable[[], object]] = {
        ("ours", None): lambda: method.ours(None),
        ("ours", limit.best_batch): lambda: method.ours(limit.best_batch),
    }
    if method.captum is None:
        timings = interleaved_medians(calls, settings)
        (default_s, _), (best_s, _) = timings["ours", None], timings["ours", limit.best_batch]
        ours_cells = [
            *rate_cells(method.work / default_s, limit),
            str(min(limit.best_batch, method.work)),
            *rate_cells(method.work / best_s, limit),
        ]
        return [method.name, str(method.work), str(min(method.default_batch, method.work)), *ours_cells, *["-"] * 5]
    calls.update({("captum", b): (lambda b=b: method.captum(b)) for b in method.captum_batches})  # type: ignore[misc,union-attr]
    timings = interleaved_medians(calls, settings)
    captum_batch = min(method.captum_batches, key=lambda b: timings["captum", b][0])
    (default_s, ours_map), (best_s, _), (captum_s, captum_map) = (
        timings[key] for key in (("ours", None), ("ours", limit.best_batch), ("captum", captum_batch))
    )
    diff = f"{(ours_map - captum_map).abs().max().item():.1e}" if method.exact else "-"  # type: ignore[operator]
    return [
        method.name,
        str(method.work),
        str(min(method.default_batch, method.work)),
        *rate_cells(method.work / default_s, limit),
        str(min(limit.best_batch, method.work)),
        *rate_cells(method.work / best_s, limit),
        f"{captum_batch} ({method.knob(captum_batch)})",
        *rate_cells(method.work / captum_s, limit),
        f"{captum_s / default_s:.2f}",
        diff,
    ]


def raw_row(name: str, raw: Raw) -> list[str]:
    """Table cells for a raw pass: our default batch size and the best one."""
    return [
        name,
        "-",
        str(raw.default_batch),
        *rate_cells(raw.default_rate, raw),
        str(raw.best_batch),
        *rate_cells(raw.best_rate, raw),
        *["-"] * 5,
    ]


def chosen_row(name: str, raw: Raw, size: int) -> list[str]:
    """Table cells for a batch size chosen automatically, at the sweep's throughput for it."""
    rate = raw.rates.get(size)
    return [
        name,
        "-",
        str(size),
        *(rate_cells(rate, raw) if rate is not None else ["-", "-"]),
        str(raw.best_batch),
        *rate_cells(raw.best_rate, raw),
        *["-"] * 5,
    ]


def tuned_batch_size(methods: list[Method], images: Tensor, backward: bool, max_calls: int = 50) -> int:
    """The size a ``BatchSizeTuner`` settles on while the first method of the pass type runs through it."""
    tuner = BatchSizeTuner.for_images(images, backward=backward)
    method = next(m for m in methods if m.backward == backward)
    for _ in range(max_calls):
        if not tuner.exploring:
            break
        method.ours(tuner)  # type: ignore[arg-type]
    return tuner.best if tuner.best is not None else tuner.size


def probe_data(case: Case, settings: Settings) -> tuple[Tensor, Tensor]:
    """The probe images and the reference set, uniform in [0, 1], from a private generator."""
    generator = torch.Generator().manual_seed(1)
    shape = (CHANNELS, case.size, case.size)
    images = torch.rand(settings.n_images, *shape, generator=generator)
    references = torch.rand(settings.n_references, *shape, generator=generator)
    return images.to(settings.device), references.to(settings.device)


def case_rows(case: Case, settings: Settings) -> list[list[str]]:
    """All table rows of one model at one input size."""
    print(f"measuring {case.name} at {case.size}x{case.size} ...", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    model = case.build().to(settings.device).eval()
    images, references = probe_data(case, settings)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    raw = {backward: raw_throughput(model, case, backward, settings) for backward in (False, True)}
    for backward, name in ((False, "fwd"), (True, "fwd+bwd")):
        sweep = "  ".join(f"{batch}: {rate:,.0f}" for batch, rate in raw[backward].rates.items())
        print(f"  raw {name} images/s by batch size -- {sweep}", file=sys.stderr, flush=True)
    methods = [
        occlusion_method(model, images, targets, case, settings),
        integrated_gradients_method(model, images, targets, case, settings),
        expected_gradients_method(model, images, targets, references, settings),
        smooth_grad_method(model, images, targets, case, settings),
        grad_cam_method(model, images, targets),
        *relu_rule_methods(model, images, targets),
        *noise_tunnel_and_mask_methods(model, images, targets, case, settings),
    ]
    tuned = {backward: tuned_batch_size(methods, images, backward) for backward in (False, True)}
    rows = [raw_row("raw fwd", raw[False]), raw_row("raw fwd+bwd", raw[True])]
    rows += [chosen_row("tuned fwd", raw[False], tuned[False]), chosen_row("tuned fwd+bwd", raw[True], tuned[True])]
    rows += [method_row(method, raw, settings) for method in methods]
    label = [case.name, f"{case.size}x{case.size}"]
    return [label + row for row in rows]


HEADER = [
    "model", "input", "row", "images",
    "def bs", "def img/s", "def xraw",
    "best bs", "best img/s", "best xraw",
    "cap bs", "cap img/s", "cap xraw",
    "us/cap", "max|diff|",
]  # fmt: skip


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: text columns left-aligned, numeric columns right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    left = {0, 1, 2, 10}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(header))
    body = []
    for index, row in enumerate(rows):
        if index and row[:2] != rows[index - 1][:2]:
            body.append(rule)
        body.append(line(row))
    return "\n".join([line(header), rule, *body])


def main(argv: Sequence[str] | None = None) -> None:
    """Runs every case and prints the table and the run's settings."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available.")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    settings = make_settings(args.quick, device)
    start = time.perf_counter()
    for case in make_cases(device, args.large):  # one block per case, printed as it ends
        print(format_table(HEADER, case_rows(case, settings)), end="\n\n", flush=True)
    print(
        f"\n{settings.n_images} probe images; IG steps / EG / SmoothGrad samples = {settings.n_samples}; "
        f"EG references = {settings.n_references}; "
        f"median of <= {settings.repeats} timed repeats of >= {settings.min_repeat_s} s after a warm-up; "
        f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"wall time {time.perf_counter() - start:.0f} s; {settings.monitor.summary()}"
    )


if __name__ == "__main__":
    main()
