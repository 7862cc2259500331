"""Which layer Grad-CAM explains in a model with token blocks (vision transformers, Swin).

With a class-token head, only the class token of the *last* block's output feeds the classifier,
so the gradient there is zero on every patch token and Grad-CAM maps are empty. pytorch-grad-cam
therefore explains ViTs at ``model.blocks[-1].norm1`` and Swin at ``layers[-1].blocks[-1].norm1``:
the input of the last block's attention, where every patch token still matters. This module finds
that layer by tracing one forward pass:

1. token blocks are ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer`` and any module
   with an attention child (``nn.MultiheadAttention``, a class named ``*Attention*``, or a child
   named ``attn``/``self_attn``/``attention``) and a normalization child;
2. the candidate is the module whose output *is* the tensor the last block passes to its
   attention: the block's first norm for pre-norm blocks (``norm_first=True``, timm, Hugging Face),
   the previous block for post-norm ones; then the block's first normalization child (Swin
   partitions ``norm1``'s output into windows before its attention);
3. the gradient of the top class's score must be non-zero on the patch tokens there; otherwise
   the latest layer with token-shaped output (``[N, S, C]`` or ``[N, h, w, C]``) that started
   after the first block and has such a gradient is taken. Modules that finish before the first
   block (the patch embedding) and channels-first outputs are never chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_scores
from lightning_xai.functional.grad_cam_layers import auto_layout, batch_size_of, channels_last, is_sequence_first

__all__ = ["find_token_layer", "token_blocks"]

_ATTENTION_NAMES = ("attn", "self_attn", "attention")
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d)


def token_blocks(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """Each token block of ``model`` (see the module docstring), mapped to its attention module.

    Example:
        >>> layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        >>> blocks = token_blocks(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
        >>> len(blocks), all(isinstance(a, nn.MultiheadAttention) for a in blocks.values())
        (2, True)
    """
    blocks: dict[nn.Module, nn.Module] = {}
    for module in model.modules():
        attention = next((c for n, c in module.named_children() if _is_attention(n, c)), None)
        has_norm = any(isinstance(c, _NORMS) or type(c).__name__.endswith("Norm") for c in module.children())
        if attention is not None and has_norm and module is not model:
            blocks[module] = attention
    return blocks


def _is_attention(name: str, child: nn.Module) -> bool:
    return (
        isinstance(child, nn.MultiheadAttention)
        or "attention" in type(child).__name__.lower()
        or name in _ATTENTION_NAMES
    )


@dataclass
class _Trace:
    """What one forward pass did: outputs in finishing order, start/end times, attention inputs."""

    finished: list[tuple[nn.Module, object]] = field(default_factory=list)
    started: dict[nn.Module, int] = field(default_factory=dict)
    ended: dict[nn.Module, int] = field(default_factory=dict)
    calls: dict[nn.Module, int] = field(default_factory=dict)
    attention_inputs: dict[nn.Module, object] = field(default_factory=dict)
    clock: int = 0

    def start(self, module: nn.Module) -> None:
        self.started.setdefault(module, self.clock)
        self.clock += 1

    def end(self, module: nn.Module, output: object) -> None:
        self.finished.append((module, output))
        self.ended[module] = self.clock
        self.calls[module] = self.calls.get(module, 0) + 1
        self.clock += 1


@contextmanager
def _tracing(modules: list[nn.Module], attentions: set[nn.Module]) -> Iterator[_Trace]:
    trace = _Trace()

    def record_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
        values = list(args) + list(kwargs.values())
        trace.attention_inputs[module] = next((v for v in values if isinstance(v, Tensor)), None)

    handles = [m.register_forward_pre_hook(lambda m, _args: trace.start(m)) for m in modules]
    handles += [m.register_forward_hook(lambda m, _args, out: trace.end(m, out)) for m in modules]
    handles += [m.register_forward_pre_hook(record_input, with_kwargs=True) for m in attentions]
    try:
        yield trace
    finally:
        for handle in handles:
            handle.remove()


def find_token_layer(forward: nn.Module, root: nn.Module, example: Tensor) -> str | None:
    """Dotted name (in ``root``) of the layer Grad-CAM explains in a model with token blocks.

    Runs one forward and one backward pass of ``example`` (with gradients, so that
    ``nn.TransformerEncoderLayer`` takes its ordinary path and its submodules' hooks fire).

    Args:
        forward: the module that maps images to scores ``[N, K]`` (``root`` or a wrapper of it).
        root: the module whose layers are searched and named.
        example: images ``[B, C, H, W]``.

    Returns:
        The name, or ``None`` when ``root`` has no token block that runs, or no layer with
        token-shaped output after its first block (a CNN with attention-like modules over
        ``[N, C, h, w]`` maps): the caller then uses the convolutional rule.

    Raises:
        ValueError: token blocks ran but no layer after the patch embedding has a non-zero
            gradient on the patch tokens.
    """
    blocks = token_blocks(root)
    if not blocks:
        return None
    names = {module: name for name, module in root.named_modules() if module is not root}
    images = example.detach().clone().requires_grad_(True)
    with _tracing(list(names), set(blocks.values())) as trace:
        scores = check_scores(forward(images), images.shape[0])
    ran = [block for block in blocks if block in trace.ended]
    if not ran:
        return None
    last = max(ran, key=lambda block: trace.ended[block])
    candidates = _candidates(trace, (last, blocks[last]), min(trace.started[b] for b in ran))
    usable = _token_shaped(root, candidates, scores.shape[0], (example.shape[-2], example.shape[-1]))
    if not usable:
        return None
    chosen = _first_with_patch_gradient(usable, scores)
    if chosen is None:
        raise ValueError(
            f"Grad-CAM found transformer blocks in {type(root).__name__} (the last is {names[last]!r}) "
            "but no token layer after the patch embedding whose gradient is non-zero on the patch tokens; "
            "pass `layer=` (e.g. the last block's first norm) and, unless its output is [N, 1 + h*w, C], "
            "[N, h*w, C] or [N, h, w, C], `reshape=`."
        )
    return names[chosen]


def _candidates(trace: _Trace, block: tuple[nn.Module, nn.Module], first_start: int) -> list[tuple[nn.Module, Tensor]]:
    """The attention input's producer, the block's first norm, then later-started token-shaped outputs, latest first."""
    once = [
        (m, out) for m, out in trace.finished if trace.calls[m] == 1 and isinstance(out, Tensor) and out.requires_grad
    ]
    feeding = trace.attention_inputs.get(block[1])
    first_norm = next(
        (c for c in block[0].children() if isinstance(c, _NORMS) or type(c).__name__.endswith("Norm")), None
    )
    primary = [(m, out) for m, out in once if out is feeding][-1:] + [(m, out) for m, out in once if m is first_norm]
    later = [(m, out) for m, out in reversed(once) if trace.started[m] > first_start and out.ndim in (3, 4)]
    ordered = primary + later
    return [(m, out) for index, (m, out) in enumerate(ordered) if all(m is not p for p, _ in ordered[:index])]


_Usable = tuple[nn.Module, Tensor, Callable[[Tensor], Tensor]]


def _token_shaped(
    root: nn.Module, candidates: list[tuple[nn.Module, Tensor]], batch: int, image_size: tuple[int, int]
) -> list[_Usable]:
    """The candidates whose output ``reshape="auto"`` reads as tokens or a channels-last map, with their layouts."""
    usable = []
    for module, output in candidates:
        sequence_first = is_sequence_first(root, module, tuple(output.shape), batch)
        if batch_size_of(tuple(output.shape), sequence_first=sequence_first) != batch:
            continue  # e.g. attention over windows: [N * windows, tokens, C]
        layout = auto_layout(tuple(output.shape), image_size, sequence_first=sequence_first)
        if layout is not None and (output.ndim == 3 or layout is channels_last):
            usable.append((module, output, layout))
    return usable


def _first_with_patch_gradient(usable: list[_Usable], scores: Tensor) -> nn.Module | None:
    top = scores.gather(1, scores.argmax(dim=1, keepdim=True)).sum()
    gradients = torch.autograd.grad(top, [output for _, output, _ in usable], allow_unused=True)
    for (module, _, layout), gradient in zip(usable, gradients):
        if gradient is not None and bool(layout(gradient).ne(0).any()):
            return module
    return None
