"""The model-randomization sanity check for attribution maps (Adebayo et al., 2018).

"Sanity Checks for Saliency Maps" re-initialises a trained network's weights, from the output
layer downwards (*cascading* randomization), and asks whether the explanation changes. A
method whose maps stay the same for a network that no longer knows anything (an edge
detector does) explains the image, not the model. :func:`randomized_copies` builds the
randomized networks (deep copies: the live model is never touched) and
:func:`randomization_scores` measures how much the maps moved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_images, is_real_number
from lightning_xai.functional.stability import rank_correlation, reduce_channels, structural_similarity
from lightning_xai.methods import AttributionMethod, MethodContext

__all__ = [
    "SanityCheck",
    "parametrized_layers",
    "randomization_scores",
    "randomized_copies",
    "randomized_model",
    "sanity_check",
]


@dataclass(frozen=True)
class SanityCheck:
    """Settings of the model-randomization sanity check (``AttributionMonitor(sanity=SanityCheck())``).

    Args:
        at_end: run it when ``fit`` ends (else only when ``monitor.sanity_check(...)`` is called).
        cascade: cascading randomization from the top layer (``True``) or one layer at a time.
        insensitive_above: rank correlation between trained and randomized maps above which a
            method is reported as insensitive to the model.

    Example:
        >>> SanityCheck().insensitive_above
        0.5
    """

    at_end: bool = True
    cascade: bool = True
    insensitive_above: float = 0.5

    def __post_init__(self) -> None:
        if not is_real_number(self.insensitive_above) or not -1 <= self.insensitive_above <= 1:
            raise ValueError(
                f"`insensitive_above` must be a rank correlation in [-1, 1], got {self.insensitive_above!r}."
            )


def sanity_check(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    methods: Mapping[str, AttributionMethod],
    make_context: Callable[[], MethodContext],
    *,
    settings: SanityCheck,
    seed: int = 0,
) -> dict[str, Any]:
    """Compares each method's maps of the trained model with those of randomized copies.

    Args:
        model: the trained model; only read.
        images: ``[P, C, H, W]`` model inputs; targets: ``[P]`` classes.
        methods: the methods by key.
        make_context: a fresh :class:`~lightning_xai.methods.MethodContext` per call (same draws each time).
        settings: cascade and threshold.
        seed: seed of the random weights.

    Returns:
        ``{key: {"spearman": ..., "ssim": ..., "insensitive": bool, "layers": [{"layer",
        "spearman", "ssim"}, ...]}}``; the top-level values are for the fully randomized copy
        (the last cascade step, or an extra ``"all"`` entry with ``cascade=False``).

    Example:
        >>> from lightning_xai import Saliency
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> context = lambda: MethodContext(torch.Generator().manual_seed(0))
        >>> report = sanity_check(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), {"saliency": Saliency()}, context,
        ...                       settings=SanityCheck())
        >>> [layer["layer"] for layer in report["saliency"]["layers"]]
        ['3', '1']
    """
    copies = randomized_copies(model, cascade=settings.cascade, seed=seed)
    if not settings.cascade:  # one layer at a time; the headline numbers still come from a fully randomized copy
        copies.append(("all", randomized_model(model, seed=seed)))
    report: dict[str, Any] = {}
    for key, method in methods.items():
        trained = method.attribute(model, images, targets, make_context())
        layers: list[dict[str, object]] = []
        spearman, ssim = 1.0, 1.0  # the last layer's, or these without one
        for layer, randomized in copies:
            scores = randomization_scores(trained, method.attribute(randomized.eval(), images, targets, make_context()))
            spearman, ssim = float(scores["spearman"].mean()), float(scores["ssim"].mean())
            layers.append({"layer": layer, "spearman": spearman, "ssim": ssim})
        report[key] = {
            "spearman": spearman,
            "ssim": ssim,
            "insensitive": spearman > settings.insensitive_above,
            "layers": layers,
        }
    return report


def parametrized_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules that hold parameters of their own, from the output layer down.

    The order is the reverse of the order in which the modules were registered, which is
    the forward order for the usual ``__init__`` that defines layers as it uses them.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
        >>> parametrized_layers(net)
        ['3', '0']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    names = [name for name, module in model.named_modules() if next(module.parameters(recurse=False), None) is not None]
    return names[::-1]


def randomized_copies(
    model: nn.Module,
    *,
    cascade: bool = True,
    seed: int = 0,
    layers: Sequence[str] | None = None,
) -> list[tuple[str, nn.Module]]:
    """Deep copies of ``model`` with layers re-initialized, for the model-randomization check.

    With ``cascade=True`` copy ``i`` has the top ``i + 1`` layers randomized (the output layer
    first, then also the one below, ...), so the last copy is fully randomized. With
    ``cascade=False`` copy ``i`` has only layer ``i`` randomized (independent randomization).
    A layer is re-initialized by its ``reset_parameters()`` (batch norm: weight 1, bias 0,
    fresh running statistics), or, without one, each of its own parameters is replaced by
    normal noise with the parameter's standard deviation (its mean magnitude, or 1, where
    that is 0). Each layer's new values depend only on ``seed`` and the layer's position, so a
    layer gets the same values in every copy. The global RNG is forked and left as it was;
    copies keep the model's device, dtype and training flags.

    Args:
        model: the network; never modified.
        cascade: cascading (``True``) or independent (``False``) randomization.
        seed: seed of the new weights.
        layers: dotted names of the layers to randomise (each must hold parameters of its
            own); ``None`` takes all of them (see :func:`parametrized_layers`). They are
            randomized from the output down whatever order they are given in.

    Returns:
        ``[(name, copy), ...]`` from the top layer down; ``name`` is the layer randomized last.
        Each copy holds a full set of weights: for a large model consider
        :func:`randomized_model`, or ``layers`` to pick a few stages.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> [name for name, _ in randomized_copies(net)]
        ['2', '0']
        >>> copies = randomized_copies(net, cascade=False)
        >>> torch.equal(copies[0][1][0].weight, net[0].weight), torch.equal(copies[0][1][2].weight, net[2].weight)
        (True, False)
    """
    chosen = _choose_layers(model, layers)
    if not isinstance(cascade, bool):
        raise TypeError(f"`cascade` must be a bool, got {cascade!r} ({type(cascade).__name__}).")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int, got {seed!r} ({type(seed).__name__}).")
    positions = {name: index for index, name in enumerate(parametrized_layers(model))}
    copies: list[tuple[str, nn.Module]] = []
    previous = model
    for name in chosen:
        randomized = _deep_copy(previous if cascade else model)
        _reinitialize(randomized.get_submodule(name), seed=_layer_seed(seed, positions[name]))
        copies.append((name, randomized))
        previous = randomized
    return copies


def randomized_model(model: nn.Module, *, seed: int = 0, layers: Sequence[str] | None = None) -> nn.Module:
    """One deep copy of ``model`` with every (chosen) layer re-initialized.

    The same network as the last of :func:`randomized_copies` with ``cascade=True``, without
    the intermediate copies.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> random_net = randomized_model(net)
        >>> torch.equal(random_net[2].weight, randomized_copies(net)[-1][1][2].weight)
        True
    """
    chosen = _choose_layers(model, layers)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int, got {seed!r} ({type(seed).__name__}).")
    positions = {name: index for index, name in enumerate(parametrized_layers(model))}
    randomized = _deep_copy(model)
    for name in chosen:
        _reinitialize(randomized.get_submodule(name), seed=_layer_seed(seed, positions[name]))
    return randomized


def randomization_scores(maps_trained: Tensor, maps_random: Tensor) -> dict[str, Tensor]:
    """How similar each image's map is between the trained and a randomized model.

    As Adebayo et al., the maps are compared by absolute value: ``|sum over channels|``.
    High similarity means the method is *insensitive* to the model's weights (it fails
    the check); a method that explains the model gives low values.

    Args:
        maps_trained: maps of the trained model ``[N, C, H, W]``.
        maps_random: maps of the randomized model for the same images, same shape.

    Returns:
        ``{"spearman": [N], "ssim": [N]}``: Spearman rank correlation in [-1, 1] and SSIM of
        the min-max normalised maps, float32 on the CPU.

    Example:
        >>> maps = torch.rand(2, 3, 8, 8)
        >>> {name: [round(v, 4) for v in values.tolist()] for name, values in randomization_scores(maps, maps).items()}
        {'spearman': [1.0, 1.0], 'ssim': [1.0, 1.0]}
    """
    check_images(maps_trained, "maps_trained")
    check_images(maps_random, "maps_random")
    if maps_trained.shape[0] != maps_random.shape[0] or maps_trained.shape[-2:] != maps_random.shape[-2:]:
        raise ValueError(
            f"`maps_trained` and `maps_random` must hold maps of the same images at the same size [N, *, H, W], "
            f"got {list(maps_trained.shape)} and {list(maps_random.shape)}."
        )
    trained = reduce_channels(maps_trained, "abs_sum")
    random = reduce_channels(maps_random, "abs_sum")
    return {"spearman": rank_correlation(trained, random), "ssim": structural_similarity(trained, random)}


def _choose_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    available = parametrized_layers(model)
    if not available:
        raise ValueError(f"`model` must hold parameters to randomise, got a {type(model).__name__} without any.")
    if layers is None:
        return available
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise TypeError(f"`layers` must be a sequence of dotted module names or None, got {layers!r}.")
    unknown = [name for name in layers if name not in available]
    if unknown or not layers:
        raise ValueError(
            f"`layers` must name modules with parameters of their own, from {available}, got {list(layers)!r}."
        )
    return [name for name in available if name in set(layers)]


def _deep_copy(model: nn.Module) -> nn.Module:
    # Outside inference mode, or the copied parameters would be inference tensors that
    # cannot be re-initialized in place.
    with torch.inference_mode(False):
        return copy.deepcopy(model)


def _layer_seed(seed: int, position: int) -> int:
    return (seed * 1_000_003 + position) % (2**63)


def _reinitialize(module: nn.Module, *, seed: int) -> None:
    """Re-initialises ``module``'s own parameters in place, drawing from a seeded, forked global RNG."""
    devices = sorted({p.device.index or 0 for p in module.parameters(recurse=False) if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        for parameter in module.parameters(recurse=False):
            parameter.normal_(0.0, _noise_scale(parameter))


def _noise_scale(parameter: Tensor) -> float:
    values = parameter.detach().float()
    spread = float(values.std()) if values.numel() > 1 else 0.0
    if spread > 0:
        return spread
    magnitude = float(values.abs().mean()) if values.numel() else 0.0
    return magnitude if magnitude > 0 else 1.0
