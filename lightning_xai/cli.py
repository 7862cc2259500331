"""Command line: ``lightning-xai replay`` (explain saved checkpoints) and ``lightning-xai compare`` (two runs).

Exit status 0 on success, 2 on a usage error or a missing, damaged or foreign file (one line on
stderr naming it: ``lightning-xai compare: error: ...``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_xai.compare import compare_runs, format_comparison
from lightning_xai.history import HistoryError
from lightning_xai.methods import (
    AttributionMethod,
    DeconvNet,
    ExpectedGradients,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    Mask,
    Occlusion,
    Saliency,
    SmoothGrad,
)
from lightning_xai.replay import replay

__all__ = ["build_parser", "import_object", "main", "parse_method"]

METHOD_CLASSES: dict[str, type[AttributionMethod]] = {
    cls.name: cls
    for cls in (
        GradCAM,
        Occlusion,
        ExpectedGradients,
        IntegratedGradients,
        Saliency,
        SmoothGrad,
        GuidedBackprop,
        DeconvNet,
        GuidedGradCAM,
        Mask,
    )
}


def parse_method(text: str) -> AttributionMethod:
    """``"occlusion:window=8,stride=4"`` → ``Occlusion(window=8, stride=4)``.

    Example:
        >>> parse_method("occlusion:window=8,stride=4")
        Occlusion(window=8, stride=4, baseline=0.0, batch_size=None)
    """
    name, _, settings = text.partition(":")
    if name not in METHOD_CLASSES:
        raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose from {', '.join(METHOD_CLASSES)}")
    kwargs = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    try:
        return METHOD_CLASSES[name](**kwargs)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def import_object(spec: str) -> object:
    """``"package.module:Name"`` → the object."""
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise argparse.ArgumentTypeError(f"--module must look like package.module:ClassName, got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise argparse.ArgumentTypeError(f"cannot import {spec!r}: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-xai`` argument parser with its ``replay`` and ``compare`` sub-commands.

    Example:
        >>> build_parser().parse_args(["compare", "a", "b", "--k", "0.2"]).k
        0.2
    """
    parser = argparse.ArgumentParser(prog="lightning-xai", description="Explanations over a training run.")
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("replay", help="explain saved checkpoints in training order")
    rep.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files or folders of them")
    rep.add_argument(
        "--module", required=True, type=import_object, help="LightningModule class, package.module:ClassName"
    )
    rep.add_argument(
        "--probes", required=True, type=Path, help="probes.pt saved by the monitor (<log_dir>/xai/probes.pt)"
    )
    rep.add_argument("--out", required=True, type=Path, help="output folder for TensorBoard events and the history")
    rep.add_argument(
        "--methods", nargs="+", type=parse_method, help="e.g. grad_cam occlusion:window=8 expected_gradients"
    )
    rep.add_argument(
        "--module-kwargs", type=json.loads, help="JSON arguments for the module (default: saved hyper-parameters)"
    )
    rep.add_argument("--submodule", help="dotted name of the network inside the module")
    rep.add_argument("--device", default="cpu")
    rep.add_argument("--unsafe-load", action="store_true", help="allow full unpickling of trusted checkpoints")
    cmp = commands.add_parser("compare", help="agreement between the final maps of two runs")
    cmp.add_argument("run_a", type=Path)
    cmp.add_argument("run_b", type=Path)
    cmp.add_argument("--k", type=float, default=0.1, help="top-k fraction for the IoU (default 0.1)")
    cmp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-xai``; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    try:
        if arguments.command == "replay":
            checkpoints = arguments.checkpoints[0] if len(arguments.checkpoints) == 1 else arguments.checkpoints
            entries = replay(
                checkpoints,
                arguments.module,
                probes=arguments.probes,
                out_dir=arguments.out,
                methods=arguments.methods,
                module_kwargs=arguments.module_kwargs,
                submodule=arguments.submodule,
                device=arguments.device,
                allow_unsafe_pickle=arguments.unsafe_load,
            )
            print(
                f"{len(entries)} checkpoints replayed into {arguments.out} (history in its xai folder); "
                f"tensorboard --logdir {arguments.out}"
            )
        else:
            result = compare_runs(arguments.run_a, arguments.run_b, k=arguments.k)
            print(json.dumps(result, indent=2) if arguments.json else format_comparison(result))
    except (HistoryError, ValueError, OSError) as error:
        print(f"lightning-xai {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
