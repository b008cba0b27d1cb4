"""Which rows train together, and in what order: seeded, resumable, optionally grouped by length."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

MEGA_BATCH = 64  # global batches sorted together; the order of batches is shuffled again afterwards


class TrainSampler(Sampler[int]):
    """This rank's share of one seeded permutation per epoch.

    The permutation is cut into global batches (per-rank batch x world size), so a batch holds the same rows
    whatever the number of processes; each rank takes every world_size-th row of it. With `lengths`, each run of
    MEGA_BATCH global batches is sorted by length before it is cut, and the batches are then shuffled: rows of
    similar length train together, so padding becomes rare, while the mix stays random and seeded.
    `skip` leaves out this rank's first rows of the next epoch, so a resumed run reads what it had left.
    """

    def __init__(self, num_rows: int, batch_size: int, seed: int, world_size: int, rank: int,
                 lengths: list[int] | None = None) -> None:
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.world_size, self.rank, self.lengths = world_size, rank, lengths
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        size = self.batch_size * self.world_size
        if self.lengths is not None:
            mega = size * MEGA_BATCH
            order = [i for start in range(0, len(order), mega)
                     for i in sorted(order[start:start + mega], key=lambda i: -self.lengths[i])]
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        short = batches.pop() if len(batches[-1]) < size else None  # stays last
        if self.lengths is not None:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if short is not None:  # every rank gets as many rows, as DistributedSampler does
            batches.append(short + order[:-len(short) % self.world_size])
        return batches

    def __iter__(self) -> Iterator[int]:
        mine = [i for batch in self.global_batches() for i in batch[self.rank::self.world_size]]
        return iter(mine[self.skip:])

    def __len__(self) -> int:
        return -(-self.num_rows // self.world_size) - self.skip
