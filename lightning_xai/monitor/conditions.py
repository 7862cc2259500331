"""The conditions every forward pass of the monitor runs under inside a Lightning hook (DESIGN.md, "Traps").

:func:`attribution_conditions` leaves no trace on the model, the random state or the logged
values, whatever the model's ``forward`` does itself (forcing train mode, MC dropout,
``self.log``): module flags, buffers and every global RNG are restored on exit, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["attribution_conditions", "evaluation_mode", "muted_logging", "restored_buffers"]


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Puts ``module`` in eval mode, then restores *each* submodule's own ``training`` flag.

    A blanket ``.train()`` afterwards would unfreeze batch norm layers that were frozen on
    purpose; this restores exactly what was there, also when ``forward`` changed the flags.

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
def restored_buffers(module: nn.Module) -> Iterator[None]:
    """Restores every buffer of ``module`` (batch-norm statistics, counters) on exit.

    Example:
        >>> bn = nn.BatchNorm1d(1)
        >>> with restored_buffers(bn):
        ...     _ = bn.train()(torch.randn(4, 1) + 5)
        >>> float(bn.running_mean)
        0.0
    """
    with torch.inference_mode(False):
        saved: dict[str, Tensor] = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    try:
        yield
    finally:
        with torch.inference_mode(False), torch.no_grad():
            for name, buffer in module.named_buffers():
                if name in saved and buffer.shape == saved[name].shape:
                    buffer.copy_(saved[name])


@contextlib.contextmanager
def muted_logging(module: nn.Module) -> Iterator[None]:
    """Makes ``self.log``/``self.log_dict`` of every LightningModule inside ``module`` do nothing.

    Lightning refuses ``self.log`` from most callback hooks, and a value logged from the monitor's
    forward passes would change the user's curves: both are avoided (DESIGN.md, trap 13).
    """
    patched = [m for m in module.modules() if callable(getattr(m, "log", None)) and hasattr(m, "log_dict")]
    for owner in patched:
        owner.__dict__["log"] = _ignore
        owner.__dict__["log_dict"] = _ignore
    try:
        yield
    finally:
        for owner in patched:
            owner.__dict__.pop("log", None)
            owner.__dict__.pop("log_dict", None)


def _ignore(*_args: object, **_kwargs: object) -> None:
    return None


@contextlib.contextmanager
def attribution_conditions(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no autocast, eager execution, gradients allowed, and no trace left behind.

    - autocast wraps only Lightning's ``*_step`` calls, but a user may call hooks under it:
      it is switched off so that maps are computed at the model's own precision;
    - a ``torch.compile``-d forward would skip the hooks Grad-CAM registers, so compiled code
      runs eagerly here (``torch.compiler.set_stance("force_eager")``);
    - gradients are enabled even inside ``torch.inference_mode`` (``trainer.validate``);
    - the CPU and ``device`` RNGs are forked, buffers and module flags restored, ``self.log`` muted.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
        >>> state = torch.get_rng_state()
        >>> with attribution_conditions(net, torch.device("cpu")):
        ...     _ = torch.nn.functional.dropout(net(torch.ones(1, 2)), training=True)
        >>> torch.equal(state, torch.get_rng_state()), net.training
        (True, True)
    """
    stance = _force_eager() if hasattr(torch.compiler, "set_stance") else contextlib.nullcontext()
    cuda_devices = [device] if device.type == "cuda" else []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=cuda_devices))
        stack.enter_context(restored_buffers(module))
        stack.enter_context(evaluation_mode(module))
        stack.enter_context(muted_logging(module))
        stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        stack.enter_context(stance)
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        yield


def _force_eager() -> contextlib.AbstractContextManager[None]:
    return torch.compiler.set_stance("force_eager")  # type: ignore[return-value]
