"""The fast CRC gives TensorBoard's exact checksums, and event files written with it read back."""

from __future__ import annotations

import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from torch.utils.tensorboard import SummaryWriter

from lightning_xai._fast_crc import fast_masked_crc32c, install_fast_crc


def test_the_fast_crc_equals_tensorboards_on_random_records():
    fast = fast_masked_crc32c()
    if fast is None:
        pytest.skip("google-crc32c is not installed")
    for size in (0, 1, 7, 1000, 65_537):
        data = os.urandom(size)
        assert fast(data) == masked_crc32c(data), size


def test_event_files_written_with_it_read_back(tmp_path):
    assert install_fast_crc() in ("google-crc32c", "pure Python")
    writer = SummaryWriter(str(tmp_path))
    for step in range(3):
        writer.add_scalar("xai_cost/seconds_total", float(step), step)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [s.value for s in events.Scalars("xai_cost/seconds_total")] == [0.0, 1.0, 2.0]
