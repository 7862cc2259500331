"""Any Captum attribution run inside the monitor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from lightning_xai.methods.base import AttributionMethod, MethodContext

__all__ = ["CaptumMethod"]


class _Kwargs(tuple):
    """Keyword arguments as sorted ``(name, value)`` items: a picklable tuple whose repr shows tensors by shape."""

    def __repr__(self) -> str:
        shown = (
            f"{key!r}: tensor{list(value.shape)}" if isinstance(value, Tensor) else f"{key!r}: {value!r}"
            for key, value in self
        )
        return "{" + ", ".join(shown) + "}"


def _items(value: object, name: str) -> tuple[tuple[str, object], ...]:
    if isinstance(value, Mapping):
        value = tuple(sorted(value.items()))
    if not isinstance(value, tuple) or not all(
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in value
    ):
        raise TypeError(f"`{name}` must be a dict of keyword arguments, got {type(value).__name__}.")
    return _Kwargs(value)


@dataclass(frozen=True)
class CaptumMethod(AttributionMethod):
    """Any Captum attribution (DeepLift, LRP, Lime, KernelShap, LayerConductance...) run on the probes.

    ``attribution_class(model, **init_kwargs).attribute(images, target=targets, **attribute_kwargs)``
    runs with gradients enabled, the model in the monitor's eval mode, the global RNGs (which
    Captum's sampling methods draw from) seeded from the monitor's private generator and restored
    afterwards, and ``internal_batch_size`` / ``perturbations_per_eval`` set from the monitor's
    batch sizes where the class takes them and ``attribute_kwargs`` does not. A ``layer`` in
    ``init_kwargs`` may be a dotted module name, relative to the LightningModule (``"net.features.3"``);
    layer attributions are upsampled bilinearly to the input size. Needs ``pip install "lightning-xai[captum]"``.

    Args:
        attribution_class: a ``captum.attr`` class or its name (``"DeepLift"``).
        init_kwargs: keyword arguments of the class besides the model (a dict; stored as sorted items).
        attribute_kwargs: keyword arguments of ``attribute`` besides the inputs and ``target``.

    Example:
        >>> conductance = CaptumMethod("LayerConductance", init_kwargs={"layer": "net.features.3"})
        >>> CaptumMethod("DeepLift").name, conductance.name
        ('captum_DeepLift', 'captum_LayerConductance')
    """

    attribution_class: type | str = "Saliency"
    init_kwargs: tuple[tuple[str, object], ...] = ()
    attribute_kwargs: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attribution_class, (type, str)):
            raise TypeError(
                "`attribution_class` must be a captum.attr attribution class or its name, "
                f"got {type(self.attribution_class).__name__}."
            )
        object.__setattr__(self, "init_kwargs", _items(self.init_kwargs, "init_kwargs"))
        object.__setattr__(self, "attribute_kwargs", _items(self.attribute_kwargs, "attribute_kwargs"))
        for key in ("inputs", "target"):
            if key in dict(self.attribute_kwargs):
                raise ValueError(
                    f"`attribute_kwargs` must not set {key!r}: the monitor passes the probes and their classes."
                )

    @property
    def name(self) -> str:  # type: ignore[override]
        """``"captum_"`` and the class name, e.g. ``"captum_DeepLift"``."""
        spec = self.attribution_class
        return "captum_" + (spec if isinstance(spec, str) else spec.__name__)

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        from lightning_xai._captum import run_captum

        return run_captum(
            model,
            images,
            targets,
            spec=self.attribution_class,
            init_kwargs=dict(self.init_kwargs),
            attribute_kwargs=dict(self.attribute_kwargs),
            generator=context.generator,
            batch_sizes={
                True: context.batch_size(None, backward=True),
                False: context.batch_size(None, backward=False),
            },
        )

    def validate(self, model: nn.Module, images: Tensor) -> None:
        from lightning_xai._captum import attribution_class, resolve_init_kwargs

        attribution_class(self.attribution_class)
        resolve_init_kwargs(model, dict(self.init_kwargs))
