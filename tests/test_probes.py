"""Probe parsing, class-spread selection, the candidate pool and the training reservoir."""

from __future__ import annotations

import pickle

import torch

from lightning_xai.probes import CandidatePool, TrainingReservoir, split_batch, spread_over_classes


def test_split_batch_understands_common_layouts():
    images, labels = torch.rand(3, 1, 4, 4), torch.tensor([1, 2, 3])
    assert split_batch(images)[1] is None
    assert torch.equal(split_batch([images, labels])[1], labels)
    assert torch.equal(split_batch({"label": labels, "image": images, "meta": "x"})[0], images)
    assert torch.equal(split_batch((labels, images))[0], images)  # order does not matter
    assert split_batch((images, torch.rand(3)))[1] is None  # float targets are not class labels


def test_spread_over_classes_is_round_robin():
    labels = torch.tensor([5, 5, 5, 5, 1, 1, 2])
    assert labels[spread_over_classes(labels, 3)].tolist() == [1, 2, 5]
    assert labels[spread_over_classes(labels, 5)].tolist() == [1, 1, 2, 5, 5]
    assert spread_over_classes(labels, 100).numel() == 7


def test_pool_stops_at_capacity_and_never_alters_batches():
    pool = CandidatePool(capacity=5)
    batch = (torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
    original = batch[0].clone()
    pool.add(batch)
    pool.add(batch)
    pool.add(batch)
    assert pool.count == 5 and pool.full
    probes = pool.select(2)
    probes.images.add_(1.0)
    assert torch.equal(batch[0], original)
    assert probes.labels.tolist() == [0, 1]


def test_pool_copies_are_normal_tensors_even_under_inference_mode():
    pool = CandidatePool(capacity=4)
    with torch.inference_mode():
        pool.add((torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 3])))
        probes = pool.select(2)
    assert not probes.images.is_inference() and not probes.labels.is_inference()


def test_reservoir_is_uniform_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    counts = torch.zeros(100)
    for seed in range(200):
        reservoir = TrainingReservoir(capacity=10, seed=seed)
        for start in range(0, 100, 20):
            reservoir.add(torch.arange(start, start + 20, dtype=torch.float32).view(20, 1, 1, 1))
        counts[reservoir.images.flatten().long()] += 1
    assert torch.equal(state, torch.get_rng_state())
    assert counts.sum() == 2000
    # each image is kept with probability 10/100: 20 of 200 times on average
    assert counts[:50].mean() > 15 and counts[50:].mean() > 15


def test_reservoir_pickles_with_its_generator_state():
    reservoir = TrainingReservoir(capacity=2, seed=1)
    reservoir.add(torch.rand(5, 1, 2, 2))
    copy = pickle.loads(pickle.dumps(reservoir))
    batch = torch.rand(5, 1, 2, 2)
    reservoir.add(batch)
    copy.add(batch)
    assert torch.equal(reservoir.images, copy.images)
