"""Where a moving mark sits, by what recurs in one class's images: hand-made boxes, marks the model does not read,
and the per-image test of a moving region with those boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_xai.functional.shortcut import box_iou
from lightning_xai.functional.shortcut_descriptions import fill_drops
from lightning_xai.functional.shortcut_gradients import gradient_heat
from lightning_xai.functional.shortcut_interventions import Bench
from lightning_xai.functional.shortcut_moving import (
    band_positions,
    locate,
    moving_votes,
    rivals,
    spots_of,
)
from lightning_xai.functional.shortcut_recurrence import recurrence_scores, recurring_boxes, recurring_own
from tests.functional.test_shortcut_moving import (
    BAND,
    CLASSES,
    SIDE,
    SIZE,
    ReadsCentredObject,
    _objects_with_border_marks,
    _with_heat,
)


def _hits(found: list, truth: list) -> float:
    return sum(box_iou(a, b) >= 0.5 for a, b in zip(found, truth)) / len(truth)


def _labels(count: int) -> torch.Tensor:
    return torch.arange(count) % CLASSES


def test_content_that_one_class_holds_at_varying_places_recurs_and_noise_does_not():
    images, boxes = _objects_with_border_marks(count=60)
    found, scores = recurring_boxes(images, SIDE, BAND, images, _labels(60), exclude=range(60))
    assert _hits(found, boxes) >= 0.95
    noise_only, _ = _objects_with_border_marks(count=60, marked=False)
    _, quiet = recurring_boxes(noise_only, SIDE, BAND, noise_only, _labels(60), exclude=range(60))
    assert float(quiet.median()) < 0.5 * float(scores.median())  # nothing recurs in one class more than elsewhere


def test_a_mark_every_class_holds_does_not_recur_in_one_class():
    images, boxes = _objects_with_border_marks(count=60)
    for image in images:
        image[:, 1:5, 14:18] = 0.9  # the same watermark on every image, whatever its class
    positions = band_positions((SIZE, SIZE), SIDE, BAND).flatten().nonzero().flatten()
    patches = F.unfold(images, SIDE)[:, :, positions].transpose(1, 2)
    watermark = int((positions == 1 * (SIZE - SIDE + 1) + 14).nonzero())
    apart = [i for i in range(20) if box_iou(boxes[i], (1, 14, 5, 18)) == 0]  # marks the watermark left whole
    scores = recurrence_scores(patches[apart], patches, _labels(60), exclude=torch.tensor(apart))
    own_marks = [int((positions == boxes[i][0] * (SIZE - SIDE + 1) + boxes[i][1]).nonzero()) for i in apart]
    assert len(apart) >= 15
    assert float(scores[:, watermark].max()) < 0.05 < float(scores[torch.arange(len(apart)), own_marks].min())


def test_a_few_images_of_another_class_that_carry_the_mark_do_not_hide_it():
    images, _ = _objects_with_border_marks(count=60)
    classes = _labels(60)
    mislabelled = classes.clone()
    mislabelled[[0, 5]] = 1  # two images of class 0 (their mark included) predicted as class 1
    positions = band_positions((SIZE, SIZE), SIDE, BAND).flatten().nonzero().flatten()
    patches = F.unfold(images, SIDE)[:, :, positions].transpose(1, 2)
    query = 10  # a class-0 image
    _, boxes = _objects_with_border_marks(count=60)
    mark = int((positions == boxes[query][0] * (SIZE - SIDE + 1) + boxes[query][1]).nonzero())
    exclude = torch.tensor([query])
    robust = recurrence_scores(patches[query : query + 1], patches, mislabelled, exclude=exclude)[0, mark]
    fragile = recurrence_scores(patches[query : query + 1], patches, mislabelled, exclude=exclude, nearest=1)[0, mark]
    assert float(fragile) == 0.0 and float(robust) > 0.3  # the closest copy alone would put it in class 1 too


def test_with_fewer_than_two_classes_of_enough_images_nothing_recurs():
    images, _ = _objects_with_border_marks(count=12)
    _, scores = recurring_boxes(images[:2], SIDE, BAND, images[:6], torch.tensor([0, 0, 0, 1, 1, 2]))
    assert scores.tolist() == [0.0, 0.0]  # only class 0 has 3 references


class ReadsObjectAndTopMark(ReadsCentredObject):
    """The object's evidence plus that of a mark in the top 5 rows only: the mark is at a random place along any
    edge, so the model can read it only in the images whose mark is near the top, and beside the object it seldom
    moves their prediction (a shortcut learnt where it was easiest, and used only in part)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = F.avg_pool2d(x.mean(dim=1, keepdim=True)[:, :, :BAND], SIDE, stride=1).flatten(1).amax(dim=1)
        code, is_mark = (level - 0.4) / 0.6 * (CLASSES - 1), torch.sigmoid((level - 0.35) * 40)
        return (
            super().forward(x)
            - ((code[:, None] - torch.arange(float(CLASSES), device=x.device)) ** 2) * is_mark[:, None]
        )


def test_the_mark_is_placed_also_where_the_model_does_not_read_it():
    images, boxes = _objects_with_border_marks()
    bench = _with_heat(ReadsObjectAndTopMark().eval(), images)
    read = fill_drops(bench, boxes) > 0.05
    assert float(read.float().mean()) < 0.25  # beside the object, the mark seldom moves the prediction
    located = locate(bench, boxes[:2], band=BAND)
    own = recurring_own(bench, located, BAND, smallest_side=SIDE)
    test = bench.test.tolist()
    unread = [i for i in test if not read[i]]
    assert _hits([own[i] for i in unread], [boxes[i] for i in unread]) >= 0.9
    assert _hits([located[i] for i in unread], [boxes[i] for i in unread]) < 0.5  # nothing the model does says where
    assert [own[i] for i in bench.selection.tolist()] == [located[i] for i in bench.selection.tolist()]


def test_with_the_marks_placed_the_per_image_test_confirms_a_mark_read_in_a_few_images_and_not_an_ignored_one():
    images, boxes = _objects_with_border_marks()
    found = {}
    for name, model in (("top only", ReadsObjectAndTopMark()), ("ignored", ReadsCentredObject())):
        bench = _with_heat(model.eval(), images)
        heat = gradient_heat(bench)
        own = recurring_own(bench, locate(bench, boxes[:2], band=BAND, heat=heat), BAND, smallest_side=SIDE)
        found[name] = moving_votes(bench, own, rivals(bench, own, heat), spots_of(heat, own, BAND), alpha=1e-4)
    assert found["top only"].decided and found["top only"].p_value <= 1e-4
    assert not found["ignored"].decided and found["ignored"].wins <= found["ignored"].losses + 2


def test_larger_images_are_searched_shrunk_to_the_search_side_and_the_boxes_come_back_at_full_scale():
    images, boxes = _objects_with_border_marks(count=60)
    large = F.interpolate(images, scale_factor=2, mode="nearest")  # 64 x 64, the marks 8 x 8
    found, _ = recurring_boxes(large, 2 * SIDE, 2 * BAND, large, _labels(60), exclude=range(60))
    doubled = [tuple(2 * v for v in box) for box in boxes]
    assert all(box[2] - box[0] == 2 * SIDE and box[3] - box[1] == 2 * SIDE for box in found)
    assert _hits(found, doubled) >= 0.9


def test_within_restricts_the_boxes_to_the_places_given():
    images, boxes = _objects_with_border_marks(count=60)
    places = [(0, 0, 16, 32)]  # the top half: marks elsewhere cannot be chosen
    found, _ = recurring_boxes(images, SIDE, BAND, images, _labels(60), exclude=range(60), within=places)
    assert all(box[2] <= 16 for box in found)
    upper = [i for i, box in enumerate(boxes) if box[2] <= 16]
    assert _hits([found[i] for i in upper], [boxes[i] for i in upper]) >= 0.9


def test_own_boxes_of_a_larger_side_hold_the_mark_found_at_the_search_side():
    images, boxes = _objects_with_border_marks()
    bench = _with_heat(ReadsCentredObject().eval(), images)
    own = recurring_own(bench, [(0, 0, 6, 6)] * 128, BAND + 1, smallest_side=SIDE)
    test = bench.test.tolist()
    assert all(own[i][2] - own[i][0] == 6 for i in test)
    inside = [
        own[i][0] <= boxes[i][0] and own[i][1] <= boxes[i][1] and own[i][2] >= boxes[i][2] and own[i][3] >= boxes[i][3]
        for i in test
    ]
    assert sum(inside) >= 0.9 * len(test)


def test_where_nothing_can_recur_the_images_keep_the_boxes_they_had():
    images, _ = _objects_with_border_marks(count=32)
    bench = Bench.build(lambda x: torch.zeros(x.shape[0], CLASSES), images, seed=0, batch_size=32, fill="mean")
    before = [(0, 0, SIDE, SIDE)] * 32
    assert recurring_own(bench, before, BAND, smallest_side=SIDE) == before  # one class predicted for every image


def test_a_box_searched_shrunk_at_an_uneven_scale_still_holds_the_smaller_box_it_must_hold():
    images = torch.rand(40, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    small, _ = recurring_boxes(images, SIDE, 8, images, _labels(40), exclude=range(40))
    larger, _ = recurring_boxes(images, 6, 8, images, _labels(40), exclude=range(40), around=small)  # scale 1.5
    held = [a[0] <= b[0] and a[1] <= b[1] and a[2] >= b[2] and a[3] >= b[3] for a, b in zip(larger, small)]
    assert all(held) and all(box[2] - box[0] == 6 for box in larger)


def test_places_shrunk_at_an_uneven_scale_still_bound_the_boxes():
    images, _ = _objects_with_border_marks(count=40)
    large = F.interpolate(images, size=(100, 100), mode="bilinear", align_corners=False)
    place = (0, 44, 12, 56)  # at a scale of 3 (a side of 12 searched at 4), rounding would leave it 3 pixels wide
    found, _ = recurring_boxes(large, 12, 12, large, _labels(40), exclude=range(40), within=[place])
    assert all(box_iou(box, place) > 0 for box in found)
