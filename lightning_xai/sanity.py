"""The model-randomisation sanity check for attribution maps (Adebayo et al., 2018).

"Sanity Checks for Saliency Maps" re-initialises a trained network's weights, from the output
layer downwards (*cascading* randomisation), and asks whether the explanation changes. A
method whose maps stay the same for a network that no longer knows anything (an edge
detector does) explains the image, not the model. :func:`randomized_copies` builds the
randomised networks (deep copies: the live model is never touched) and
:func:`randomization_scores` measures how much the maps moved.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_images
from lightning_xai.functional.stability import rank_correlation, reduce_channels, structural_similarity


def parametrised_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules that hold parameters of their own, from the output layer down.

    The order is the reverse of the order in which the modules were registered, which is
    the forward order for the usual ``__init__`` that defines layers as it uses them.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
        >>> parametrised_layers(net)
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
    """Deep copies of ``model`` with layers re-initialised, for the model-randomisation check.

    With ``cascade=True`` copy ``i`` has the top ``i + 1`` layers randomised (the output layer
    first, then also the one below, ...), so the last copy is fully randomised. With
    ``cascade=False`` copy ``i`` has only layer ``i`` randomised (independent randomisation).
    A layer is re-initialised by its ``reset_parameters()`` (batch norm: weight 1, bias 0,
    fresh running statistics), or, without one, each of its own parameters is replaced by
    normal noise with the parameter's standard deviation (its mean magnitude, or 1, where
    that is 0). Each layer's new values depend only on ``seed`` and the layer's position, so a
    layer gets the same values in every copy. The global RNG is forked and left as it was;
    copies keep the model's device, dtype and training flags.

    Args:
        model: the network; never modified.
        cascade: cascading (``True``) or independent (``False``) randomisation.
        seed: seed of the new weights.
        layers: dotted names of the layers to randomise (each must hold parameters of its
            own); ``None`` takes all of them (see :func:`parametrised_layers`). They are
            randomised from the output down whatever order they are given in.

    Returns:
        ``[(name, copy), ...]`` from the top layer down; ``name`` is the layer randomised last.
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
    positions = {name: index for index, name in enumerate(parametrised_layers(model))}
    copies: list[tuple[str, nn.Module]] = []
    previous = model
    for name in chosen:
        randomised = _deep_copy(previous if cascade else model)
        _reinitialise(randomised.get_submodule(name), seed=_layer_seed(seed, positions[name]))
        copies.append((name, randomised))
        previous = randomised
    return copies


def randomized_model(model: nn.Module, *, seed: int = 0, layers: Sequence[str] | None = None) -> nn.Module:
    """One deep copy of ``model`` with every (chosen) layer re-initialised.

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
    positions = {name: index for index, name in enumerate(parametrised_layers(model))}
    randomised = _deep_copy(model)
    for name in chosen:
        _reinitialise(randomised.get_submodule(name), seed=_layer_seed(seed, positions[name]))
    return randomised


def randomization_scores(maps_trained: Tensor, maps_random: Tensor) -> dict[str, Tensor]:
    """How similar each image's map is between the trained and a randomised model.

    As Adebayo et al., the maps are compared by absolute value: ``|sum over channels|``.
    High similarity means the method is *insensitive* to the model's weights (it fails
    the check); a method that explains the model gives low values.

    Args:
        maps_trained: maps of the trained model ``[N, C, H, W]``.
        maps_random: maps of the randomised model for the same images, same shape.

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
    available = parametrised_layers(model)
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
    # cannot be re-initialised in place.
    with torch.inference_mode(False):
        return copy.deepcopy(model)


def _layer_seed(seed: int, position: int) -> int:
    return (seed * 1_000_003 + position) % (2**63)


def _reinitialise(module: nn.Module, *, seed: int) -> None:
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
