"""The test images' gradient x input heat: made once per image, in inference mode too, zero where it cannot be."""

from __future__ import annotations

import torch
from torch import nn

from lightning_xai.functional.shortcut_gradients import gradient_heat
from tests.conftest import without_backward
from tests.functional.test_shortcut_moving import SIZE, ReadsBorderMark, _bench, _marked


def test_gradient_heat_is_made_once_and_works_under_inference_mode():
    images, _, boxes = _marked()
    with torch.inference_mode():  # trainer.validate() runs its hooks in inference mode
        bench = _bench(ReadsBorderMark(), images)
        heat = gradient_heat(bench)
    assert gradient_heat(bench) is heat and heat.shape == (96, 1, SIZE, SIZE)
    top, left, bottom, right = boxes[0]
    assert float(heat[0, 0, top:bottom, left:right].sum()) > 0  # the mark the model reads has gradient


def test_gradient_heat_is_zero_where_it_is_not_finite_and_for_a_model_without_gradients():
    images, _, _ = _marked()
    images[3, :, 0, 0] = float("nan")
    heat = gradient_heat(_bench(ReadsBorderMark(), images))
    assert torch.isfinite(heat).all() and heat[3].sum() == 0 and heat[4].sum() > 0

    class WithoutGradient(ReadsBorderMark):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return super().forward(x)

    assert gradient_heat(_bench(WithoutGradient(), images)).sum() == 0


def test_gradient_heat_makes_each_images_heat_once():
    images, _, _ = _marked()
    seen: list[int] = []
    model = ReadsBorderMark()

    class Counting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return model(x)

    bench = _bench(Counting(), images)
    seen.clear()  # the bench's prediction pass
    part = gradient_heat(bench, torch.tensor([5, 2, 5]))
    assert sum(seen) == 2 and part.shape == (3, 1, SIZE, SIZE)  # image 5 asked twice, made once
    whole = gradient_heat(bench)
    assert sum(seen) == images.shape[0] and torch.equal(whole[[5, 2]], part[:2])
    alone = gradient_heat(_bench(model, images[[2]]))
    assert torch.allclose(alone[0], whole[2], atol=1e-6)


def test_a_failing_backward_pass_warns_once_and_every_image_shows_nothing(recwarn):
    images, _, _ = _marked()

    class FailingBackward(ReadsBorderMark):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(without_backward(x))

    bench = _bench(FailingBackward(), images)
    assert gradient_heat(bench, torch.tensor([0, 1])).sum() == 0
    assert gradient_heat(bench).sum() == 0  # not tried again for the other images
    assert [str(w.message) for w in recwarn].count(str(recwarn[0].message)) == len(recwarn) == 1
