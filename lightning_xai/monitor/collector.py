"""What the monitor gathers from the batches that pass by: probe candidates, test images, training references.

Everything is copied to the CPU (the batches training and validation use are never altered),
on global rank 0 only for the training reservoir, and only until it is fixed: probes on the
first validation run, shortcut test images likewise, references on the first monitor run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.batches import BatchImages, Preprocess, images_from_batch
from lightning_xai.monitor import messages
from lightning_xai.monitor.sizing import default_num_probes
from lightning_xai.probes import CandidatePool, ProbeSet, TrainingReservoir

__all__ = ["Collector"]


class Collector:
    """Probe candidates and shortcut test images from validation, reference images from training.

    Args:
        num_probes: probes to choose when none were given; ``None``: sized to the images
            (:func:`~lightning_xai.monitor.sizing.default_num_probes`).
        test_images: how many validation images the shortcut checks use (0: none).
        reference_count: training images to keep for expected gradients (0: none).
        seed: seed of the reservoir's private generator.
        batch_images: ``batch -> images`` (the monitor's ``batch_images=``), else the rule of
            :func:`~lightning_xai.batches.images_from_batch`; the same for probes, test images and references.
        preprocess: what the model's step does to the images before ``forward`` (``preprocess=``).

    Example:
        >>> collector = Collector(num_probes=2, test_images=0, reference_count=0, seed=0)
        >>> collector.offer_validation((torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1])), dataloader_idx=0)
        >>> collector.choose_probes().labels.tolist()
        [0, 1]
    """

    def __init__(
        self,
        *,
        num_probes: int | None,
        test_images: int,
        reference_count: int,
        seed: int,
        batch_images: BatchImages | None = None,
        preprocess: Preprocess | None = None,
    ) -> None:
        self.num_probes = num_probes
        self.test_image_count = test_images
        self.batch_images, self.preprocess = batch_images, preprocess
        self.pool = CandidatePool(
            capacity=max(16 * (num_probes or 16), test_images, 256), batch_images=batch_images, preprocess=preprocess
        )
        self.reservoir = TrainingReservoir(reference_count, seed=seed) if reference_count else None
        self.references: Tensor | None = None
        self.test_images: Tensor | None = None
        self.wants_probes = True
        self.unreadable: Exception | None = None
        self.training_unreadable = False

    @property
    def collecting(self) -> bool:
        """Whether validation images are still wanted (for probes or shortcut test images)."""
        return self.wants_probes or (self.test_image_count > 0 and self.test_images is None)

    def start_validation(self) -> None:
        """A validation run starts: collect afresh while anything is still wanted."""
        if self.collecting:
            self.pool.reset()
            self.unreadable = None

    def offer_validation(self, batch: object, *, dataloader_idx: int) -> None:
        """Copies the first validation images (first dataloader) as candidates. Raises ``TypeError``/``ValueError``
        when the batch's images cannot be read (see :meth:`give_up_validation`)."""
        if self.collecting and dataloader_idx == 0 and not self.pool.full:
            self.pool.add(batch)

    def give_up_validation(self, error: Exception) -> None:
        """This validation run's batches cannot be read: nothing more is collected in it, and choosing probes says
        why (``error``) instead of finding no images."""
        self.unreadable = error
        self.pool.close()  # the run's later batches are not offered

    def offer_training(self, batch: object) -> Exception | None:
        """Offers a training batch's images to the reservoir (until the references are frozen). Returns why the
        batch's images cannot be read (:func:`images_from_batch`, or the user's ``batch_images``/``preprocess``
        raising); the reservoir then keeps what it holds and takes no more."""
        if self.reservoir is None or self.references is not None or self.training_unreadable:
            return None
        try:
            images = images_from_batch(batch, batch_images=self.batch_images, preprocess=self.preprocess)
        except Exception as error:
            self.training_unreadable = True
            return error
        self.reservoir.add(images)
        return None

    def choose_probes(self) -> ProbeSet:
        """The probes from the candidates seen (spread over classes when labels are known). Raises ``ValueError``
        when none were seen, saying why when the batches could not be read."""
        if self.unreadable is not None and self.pool.count == 0:
            raise ValueError(messages.unreadable_validation(self.unreadable))
        if self.num_probes is not None:
            return self.pool.select(self.num_probes)
        first = self.pool.first_images(1)
        size = (int(first.shape[-2]), int(first.shape[-1])) if first is not None else (1, 1)
        return self.pool.select(default_num_probes(size))

    def fix_test_images(self, probes: ProbeSet) -> None:
        """Fixes the shortcut test images: the first validation images, or the probes if none were seen."""
        if self.test_image_count and self.test_images is None:
            first = self.pool.first_images(self.test_image_count)
            self.test_images = first if first is not None else probes.images
        self.wants_probes = False
        self.pool.reset()

    def freeze_references(self, size: tuple[int, int]) -> Tensor | None:
        """The reference images, frozen on first use and resized to the probes' ``size`` when needed."""
        if self.references is None and self.reservoir is not None and self.reservoir.images is not None:
            self.references = self.reservoir.images.clone()
        if self.references is not None and tuple(self.references.shape[-2:]) != tuple(size):
            with torch.inference_mode(False):
                self.references = torch.nn.functional.interpolate(
                    self.references.float(), size=size, mode="bilinear", align_corners=False
                )
        return self.references
