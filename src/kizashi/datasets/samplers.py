"""Samplers of day-panel datasets."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Dataset positions ``0..n-1`` in an order drawn from ``(seed, epoch)`` (or in order
    when ``shuffle=False``): the same seed gives the same order in every process, so a
    resumed run can continue an epoch where it stopped (:meth:`resume_at` skips the items
    already trained). Lightning calls :meth:`set_epoch` before each epoch.

    Under ``torch.distributed`` each rank takes every ``world``-th item of the epoch's
    order (padded by repetition to equal lengths, as ``DistributedSampler``).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, n_done: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``n_done`` items."""
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(n_done))

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def order(self, epoch: int) -> np.ndarray:
        """This rank's positions for ``epoch`` (the whole epoch)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)
        else:
            order = np.arange(self.n)
        rank, world = self._world()
        if world > 1:
            per_rank = math.ceil(self.n / world)
            order = np.resize(order, per_rank * world)[rank::world]
        return order

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
        self._resume = None
        return iter(order.tolist())

    def __len__(self) -> int:
        _, world = self._world()
        return math.ceil(self.n / world)


__all__ = ["EpochShuffleSampler"]
