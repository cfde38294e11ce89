"""Training data order that a resumed run can reproduce exactly: seeded per epoch, restartable mid-epoch.

`EpochSampler` draws epoch `e`'s order from a generator seeded with `(seed, e)` alone — a permutation,
or for weighted mixtures a draw with replacement — so the order never depends on the global RNG or on
how many epochs ran in this process. `ResumableDataLoader` counts the batches it has handed out; its
`state_dict()` (epoch, batches) goes into Lightning's checkpoint (Lightning saves and restores the state
of any train loader with `state_dict`/`load_state_dict`), and after `load_state_dict` the next iteration
continues with the first batch not yet trained on. Worker processes get seeds from a generator seeded
the same way, so they too start each epoch identically. Under data parallelism each rank takes every
`world`-th index of the epoch's order (padded to a multiple of `world`, as torch's DistributedSampler
does), so step k of N ranks trains on exactly the samples of step k of one process with an N-times
larger batch; vlx therefore turns off Lightning's own sampler replacement.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vlx.errors import CheckpointError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator that depends only on the run's seed and the epoch."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def data_parallel_rank() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class EpochSampler(Sampler[int]):
    """This rank's indices of one epoch from `epoch_generator(seed, epoch)`; `weights` switch to a weighted draw.

    `world` and `rank` default to the process group's (or 1 and 0) when the sampler is used.
    """

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None, world: int | None = None,
                 rank: int | None = None) -> None:
        self.size, self.seed = int(size), int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch, self.start = 0, 0
        self._world, self._rank = world, rank

    def _shard(self) -> tuple[int, int]:
        world, rank = data_parallel_rank()
        return (self._world or world), (rank if self._rank is None else self._rank)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; a new epoch starts from its first index."""
        if epoch != self.epoch:
            self.epoch, self.start = int(epoch), 0

    def order(self, epoch: int) -> torch.Tensor:
        """The full index order of `epoch`."""  # (size,)
        generator = epoch_generator(self.seed, epoch)
        if self.weights is None:
            return torch.randperm(self.size, generator=generator)
        return torch.multinomial(self.weights, self.size, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0  # a restored position applies to one iteration only
        world, rank = self._shard()
        order = self.order(self.epoch)  # (size,)
        if world > 1:
            padded = torch.cat([order, order[: len(self) * world - self.size]])  # (len × world,)
            order = padded[rank::world]  # (len,)
        yield from order[start:].tolist()

    def __len__(self) -> int:
        world, _ = self._shard()  # always the whole epoch: Lightning counts the batches of a resumed epoch itself
        return -(-self.size // world)


class ResumableDataLoader(DataLoader):
    """A DataLoader over an `EpochSampler` whose position inside the epoch is saved and restored."""

    def __init__(self, dataset: Dataset, sampler: EpochSampler, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())  # reseeded per epoch; never the global RNG
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.batches = 0  # batches handed out in the current epoch

    def __iter__(self) -> Iterator[Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        self.batches = sampler.start // self.batch_size
        self.generator.manual_seed(epoch_generator(sampler.seed, sampler.epoch).initial_seed())  # worker seeds
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.batches}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            epoch, batches = int(state["epoch"]), int(state["batches"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"the resume checkpoint's data-loader state {state!r} lacks integer 'epoch' "
                                  "and 'batches' (it was written by another data loader)") from None
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        sampler.epoch, sampler.start = epoch, batches * int(self.batch_size)
        self.batches = batches
