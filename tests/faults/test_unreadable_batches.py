"""Batches the monitor cannot read, images of several sizes, too few images: the fit goes on, with one clear line.

Before training (Lightning's sanity check) a validation batch that cannot be read is a set-up error; once the fit
has trained, nothing raises out of a hook: the training reservoir falls back to blurred baselines and the
validation runs explain nothing until their batches can be read.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.demos import LitClassifier, SmallCNN
from lightning_xai.monitor.collector import Collector
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


class _TwoTrainingLoaders(LitClassifier):
    """Trains on a dict of two loaders (Lightning's CombinedLoader): the batch is ``{"a": (x, y), "b": (x, y)}``."""

    def training_step(self, batch, batch_idx):
        return sum(F.cross_entropy(self(images), labels) for images, labels in batch.values())


class _Uint8Batches(LitClassifier):
    """Its steps turn uint8 images into floats (the monitor was given no ``preprocess=``)."""

    def training_step(self, batch, batch_idx):
        return super().training_step((batch[0].float() / 255, batch[1]), batch_idx)

    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch[0].float() / 255, batch[1]), batch_idx)


def _tiny(model_class: type[LitClassifier]) -> LitClassifier:
    return model_class(SmallCNN(in_channels=1, num_classes=10, width=4), lr=1e-2)


def _fit(trainer, model, train, val) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    assert trainer.state.finished
    return [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


def test_training_batches_whose_images_cannot_be_read_leave_expected_gradients_its_blurred_baselines(
    tmp_path, digits16
):
    train, val = loaders(digits16)
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=0)
    said = _fit(trainer, _tiny(_TwoTrainingLoaders), {"a": train, "b": train}, val)
    assert trainer.global_step == 2 * 4
    unreadable = [line for line in said if "cannot read the images of a training batch" in line]
    assert len(unreadable) == 1 and "dict with keys ['a', 'b']" in unreadable[0] and "blurred probes" in unreadable[0]
    assert monitor.cost["runs"] == 2 and monitor.cost["failed"] == 0  # every method explained, EG on blurred probes
    assert monitor._run.collector.references is None


def test_strict_raises_the_training_batch_s_error(tmp_path, digits16):
    train, val = loaders(digits16)
    trainer = make_trainer(tmp_path, [cheap_monitor(strict=True)], num_sanity_val_steps=0)
    with pytest.raises(TypeError, match=r"could not find images \[B, C, H, W\]"):
        trainer.fit(_tiny(_TwoTrainingLoaders), {"a": train, "b": train}, val)


def _uint8_loaders(digits16) -> tuple[DataLoader, DataLoader]:
    images, labels = digits16
    as_bytes = (images.clamp(0, 1) * 255).to(torch.uint8)
    return loaders((as_bytes, labels))


def test_validation_batches_that_cannot_be_read_after_training_started_explain_nothing_and_say_why_once(
    tmp_path, digits16
):
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=0, max_epochs=3)
    said = _fit(trainer, _tiny(_Uint8Batches), *_uint8_loaders(digits16))
    assert trainer.global_step == 3 * 4  # every epoch trained
    validation = [line for line in said if "cannot read the images of the validation batches" in line]
    assert len(validation) == 1 and "torch.uint8" in validation[0] and "until `probes=` are given" in validation[0]
    assert monitor.cost["runs"] == 0 and monitor.probes is None


def test_validation_batches_that_cannot_be_read_fail_in_the_sanity_check_before_training(tmp_path, digits16):
    trainer = make_trainer(tmp_path, [cheap_monitor()])
    with pytest.raises(TypeError, match="torch.uint8"):
        trainer.fit(_tiny(_Uint8Batches), *_uint8_loaders(digits16))
    assert trainer.global_step == 0


class _SizesDataset(Dataset):
    """Digits at 16x16, 20x16 and 16x20 in turn (a model that pools globally takes any size)."""

    def __init__(self, digits: tuple[torch.Tensor, torch.Tensor], count: int = 48) -> None:
        self.images, self.labels = digits[0][:count], digits[1][:count]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = [(16, 16), (20, 16), (16, 20)][index % 3]
        image = F.interpolate(self.images[index : index + 1], size=size, mode="bilinear")[0]
        return image, self.labels[index]


@pytest.mark.parametrize("sanity_steps", [0, 2])
def test_validation_images_of_several_sizes_give_probes_and_test_images_of_the_first_size(
    tmp_path, digits16, sanity_steps
):
    monitor = AttributionMonitor(num_probes=4)
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=sanity_steps, limit_val_batches=24)
    with warnings.catch_warnings(record=True):
        trainer.fit(tiny_model(), loaders(digits16)[0], DataLoader(_SizesDataset(digits16), batch_size=1))
    assert trainer.state.finished and monitor.cost["runs"] == 2 and monitor.cost["failed"] == 0
    assert monitor.probes is not None and tuple(monitor.probes.images.shape) == (4, 1, 16, 16)
    test_images = monitor._run.collector.test_images
    assert test_images is not None and tuple(test_images.shape) == (8, 1, 16, 16)  # 8 of the 24 images seen


def test_mixed_sizes_are_said_once_when_the_probes_are_chosen(tmp_path, digits16, caplog):
    trainer = make_trainer(tmp_path, [AttributionMonitor(num_probes=4)], num_sanity_val_steps=0, limit_val_batches=6)
    with caplog.at_level("INFO"):
        trainer.fit(tiny_model(), loaders(digits16)[0], DataLoader(_SizesDataset(digits16), batch_size=1))
    lines = [r.getMessage() for r in caplog.records if "come in several sizes" in r.getMessage()]
    assert lines == [
        "AttributionMonitor: the validation images come in several sizes; probes and shortcut test images are the "
        "images of the first size seen (1x16x16), 4 images of other sizes were left out. Pass `probes=` to choose them."
    ]


def test_a_single_validation_image_switches_the_shortcut_checks_off_with_one_line(tmp_path, digits16, caplog):
    images, labels = digits16
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor], limit_val_batches=1)
    one = DataLoader(TensorDataset(images[1500:1501], labels[1500:1501]), batch_size=1)
    with caplog.at_level("INFO"):
        _fit(trainer, tiny_model(), loaders(digits16)[0], one)
    assert monitor.cost["runs"] == 2 and monitor.cost["failed"] == 0 and monitor._run.engine.detector is None
    lines = [r.getMessage() for r in caplog.records if "shortcut checks are off" in r.getMessage()]
    assert lines == [
        "AttributionMonitor: shortcut checks are off: they test on validation images and saw 1, fewer than 2. "
        "Give the Trainer more validation images (`limit_val_batches`) to check for shortcuts."
    ]


def test_with_probes_given_unreadable_validation_batches_leave_the_shortcut_checks_testing_on_the_probes(
    tmp_path, digits16
):
    images, labels = digits16
    monitor = cheap_monitor(probes=(images[1500:1504], labels[1500:1504].tolist()))
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=2)  # the sanity check too: probes are given
    said = _fit(trainer, _tiny(_Uint8Batches), *_uint8_loaders(digits16))
    assert [line for line in said if "The shortcut checks test on the given probes instead." in line] != []
    assert len([line for line in said if "cannot read the images of the validation batches" in line]) == 1
    assert monitor.cost["runs"] == 2 and monitor.cost["failed"] == 0
    assert torch.equal(monitor._run.collector.test_images, monitor.probes.images)


def _raising_batch_images(batch):
    return batch["image"]  # a KeyError on the (images, labels) tuples of this data


def test_a_batch_images_function_that_raises_after_training_started_is_one_warning(tmp_path, digits16):
    monitor = cheap_monitor(batch_images=_raising_batch_images)
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=0)
    said = _fit(trainer, tiny_model(), *loaders(digits16))
    assert trainer.global_step == 2 * 4
    assert len([line for line in said if "cannot read the images of a training batch" in line]) == 1
    assert len([line for line in said if "cannot read the images of the validation batches" in line]) == 1


def test_references_gathered_before_an_unreadable_training_batch_are_kept(digits16):
    collector = Collector(num_probes=2, test_images=0, reference_count=8, seed=0)
    images, labels = digits16
    assert collector.offer_training((images[:4], labels[:4])) is None
    error = collector.offer_training({"tokens": torch.zeros(4, 5)})
    assert isinstance(error, TypeError) and collector.offer_training((images[4:8], labels[4:8])) is None
    assert collector.reservoir is not None and collector.reservoir.seen == 4  # nothing taken after the error
    assert torch.equal(collector.freeze_references((16, 16)), images[:4])
