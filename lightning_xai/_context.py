"""The conditions attributions run under inside a Lightning hook (see DESIGN.md, "Traps")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Puts ``module`` in eval mode, then restores *each* submodule's own ``training`` flag.

    A blanket ``.train()`` afterwards would unfreeze batch norm layers that were frozen on
    purpose; this restores exactly what was there.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
        >>> _ = net[1].eval()
        >>> with evaluation_mode(net):
        ...     net.training
        False
        >>> net.training, net[1].training
        (True, False)
    """
    flags = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for child, flag in flags:
            child.training = flag


@contextlib.contextmanager
def attribution_conditions(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, float32 without autocast, eager execution, gradients allowed.

    - autocast wraps only Lightning's ``*_step`` calls, but a user may call hooks under it:
      it is switched off so that maps are computed at the model's own precision;
    - a ``torch.compile``-d forward would skip the hooks Grad-CAM registers, so compiled code
      runs eagerly here (``torch.compiler.set_stance("force_eager")``);
    - gradients are enabled even inside ``torch.inference_mode`` (``trainer.validate``).
    """
    stance = _force_eager() if hasattr(torch.compiler, "set_stance") else contextlib.nullcontext()
    with contextlib.ExitStack() as stack:
        stack.enter_context(evaluation_mode(module))
        stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        stack.enter_context(stance)
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        yield


def _force_eager() -> contextlib.AbstractContextManager[None]:
    return torch.compiler.set_stance("force_eager")  # type: ignore[return-value]
