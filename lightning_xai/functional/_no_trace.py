"""Running attribution work without leaving a trace on the model or the random state."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = [
    "leave_no_trace",
    "owning_module",
]


def owning_module(forward_fn: object) -> nn.Module | None:
    """Returns the ``nn.Module`` behind ``forward_fn`` (the module itself or a bound method), if any.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> owning_module(net) is net, owning_module(net.forward) is net, owning_module(print)
        (True, True, None)
    """
    if isinstance(forward_fn, nn.Module):
        return forward_fn
    owner = getattr(forward_fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@contextmanager
def leave_no_trace(forward_fn: object, device: torch.device) -> Iterator[None]:
    """Lets attribution code run forward and backward passes that leave no trace behind.

    Inside the block gradients are enabled even under ``torch.no_grad()`` or
    ``torch.inference_mode()`` (as Lightning uses during validation). On exit, also
    on error, the global RNG state of the CPU and of ``device`` is restored (dropout in
    a model left in training mode draws from it) and so are the module's buffers (batch
    norm running statistics). Parameter ``.grad`` is never touched because the callers
    use ``torch.autograd.grad`` rather than ``.backward()``.

    Example:
        >>> net = nn.Linear(2, 2).eval()
        >>> state = torch.get_rng_state()
        >>> with torch.inference_mode(), leave_no_trace(net, torch.device("cpu")):
        ...     _ = torch.rand(3)  # draws from the global RNG, undone on exit
        ...     torch.is_grad_enabled()
        True
        >>> torch.equal(state, torch.get_rng_state())
        True
    """
    module = owning_module(forward_fn)
    saved_buffers = _snapshot_buffers_if_training(module)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), torch.inference_mode(False), torch.enable_grad():
        try:
            yield
        finally:
            _restore_buffers(module, saved_buffers)


def _snapshot_buffers_if_training(module: nn.Module | None) -> dict[str, Tensor]:
    if module is None or not any(m.training for m in module.modules()):
        return {}
    warnings.warn(
        f"{type(module).__name__} is in training mode: dropout and batch statistics make attribution "
        "maps random and dependent on the batch size. Call `.eval()` first for deterministic maps "
        "(and restore the mode afterwards).",
        stacklevel=4,
    )
    with torch.inference_mode(False):
        return {name: buffer.detach().clone() for name, buffer in module.named_buffers()}


def _restore_buffers(module: nn.Module | None, saved: dict[str, Tensor]) -> None:
    if module is None or not saved:
        return
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])
