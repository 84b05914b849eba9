"""How many patches one pass over the training cases draws, so that every batch is full, on one process or many.

``DataLoader(shuffle=True)`` draws each case once per pass: with fewer cases than ``batch_size`` (one volume, as in
the semi-automated mode and every one-patient recipe) every batch held one patch whatever the plan said, and with
``N % batch_size`` cases left over the last batch of each pass was short. nnU-Net draws ``batch_size`` cases per
step with replacement; here the pass is lengthened to whole batches instead (torch's ``RandomSampler`` with
``num_samples`` above the case count starts a new permutation), so a data set whose size is a multiple of the
batch size is sampled exactly as before (the headline run is unchanged). torch's ``DistributedSampler`` has the
same limit per rank (one case on two ranks: one patch per batch on each), hence ``FullBatchDistributedSampler``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler

__all__ = ["FullBatchDistributedSampler", "full_batches"]


def full_batches(num_cases: int, batch_size: int) -> int:
    """The number of samples per pass over ``num_cases`` training cases that fills every batch of ``batch_size``:
    ``num_cases`` rounded up to a multiple of ``batch_size`` (the sampler's ``num_samples``).

    Raises:
        ValueError: no training case, or a batch size below 1.
    """
    if num_cases < 1:
        raise ValueError("the training split has no cases: the datalist's 'training' list is empty.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    return -(-num_cases // batch_size) * batch_size


class FullBatchDistributedSampler(DistributedSampler):
    """torch's ``DistributedSampler`` whose every rank draws whole batches of ``batch_size`` per pass.

    Each rank draws ``full_batches(ceil(N / num_replicas), batch_size)`` indices. The pass is a run of
    permutations of the ``N`` cases drawn from one generator seeded with ``seed + epoch`` (the same on every rank),
    cut to ``num_replicas`` times that length and dealt out rank by rank as torch does
    (``indices[rank::num_replicas]``).
    Where ``N`` is a multiple of ``num_replicas * batch_size`` that is one permutation, exactly torch's
    ``DistributedSampler(shuffle=True)``; otherwise the pass is filled from the next permutation instead of
    repeating the first cases, and no batch is short. ``set_epoch`` (MONAI's workflows call it) reshuffles.

    Args:
        dataset: the training cases (only ``len`` is read).
        batch_size: patches per batch on each rank.
        num_replicas, rank: default to the process group's world size and rank.
        shuffle: permute the cases (else they are repeated in order).
        seed: the shuffle's seed, the same on every rank.

    Raises:
        ValueError: an empty data set or a batch size below 1.
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        self.num_samples = full_batches(math.ceil(len(dataset) / self.num_replicas), batch_size)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        num_cases = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        indices: list[int] = []
        while len(indices) < self.total_size:
            order = torch.randperm(num_cases, generator=generator) if self.shuffle else torch.arange(num_cases)
            indices += order.tolist()
        return iter(indices[self.rank : self.total_size : self.num_replicas])
