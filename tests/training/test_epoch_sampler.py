"""The training data order: seeded per epoch only, and a restored loader continues with the untrained batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from vlx.errors import CheckpointError
from vlx.training.epoch_sampler import EpochSampler, ResumableDataLoader


class Numbers(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> int:
        return index


def batches(loader: ResumableDataLoader) -> list[list[int]]:
    return [batch.tolist() for batch in loader]


def loader(seed: int = 3) -> ResumableDataLoader:
    return ResumableDataLoader(Numbers(), EpochSampler(10, seed), batch_size=3)


def test_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    torch.manual_seed(123)
    first = list(a)
    torch.manual_seed(456)  # the global RNG plays no part
    assert list(b) == first and sorted(first) == list(range(10))
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(10))
    assert list(EpochSampler(10, seed=4)) != first
    assert len(a) == 10


def test_restored_loader_continues_with_the_next_batch_and_next_epoch_starts_fresh():
    full = loader()
    full.sampler.set_epoch(2)
    expected = batches(full)  # 4 batches: 3 + 3 + 3 + 1
    assert [len(b) for b in expected] == [3, 3, 3, 1]

    interrupted = loader()
    interrupted.sampler.set_epoch(2)
    iterator = iter(interrupted)
    seen = [next(iterator).tolist(), next(iterator).tolist()]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 2} and seen == expected[:2]

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the (same) epoch again before iterating
    assert batches(resumed) == expected[2:]
    assert resumed.state_dict() == {"epoch": 2, "batches": 4}
    resumed.sampler.set_epoch(3)
    next_epoch = loader()
    next_epoch.sampler.set_epoch(3)
    assert batches(resumed) == batches(next_epoch)  # a whole epoch again, not the restored remainder


def test_weighted_sampler_draws_in_proportion_to_the_weights():
    weights = torch.tensor([3.0] * 50 + [1.0] * 50)
    drawn = EpochSampler(100, seed=0, weights=weights).order(0)
    assert drawn.shape == (100,)
    assert torch.equal(drawn, EpochSampler(100, seed=0, weights=weights).order(0))
    big = EpochSampler(100_000, seed=0, weights=torch.cat([torch.full((50_000,), 3.0), torch.ones(50_000)])).order(0)
    assert (big < 50_000).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_a_foreign_loader_state_is_a_checkpoint_error():
    with pytest.raises(CheckpointError,
                       match=r"data-loader state \{'_num_yielded': 3\} lacks integer 'epoch' and 'batches'"):
        loader().load_state_dict({"_num_yielded": 3})


def test_ranks_split_each_step_of_the_single_process_order():
    single = EpochSampler(10, seed=5, world=1, rank=0)
    ranks = [EpochSampler(10, seed=5, world=2, rank=r) for r in (0, 1)]
    order = list(single)
    shards = [list(r) for r in ranks]
    assert [len(r) for r in ranks] == [5, 5] and shards[0] == order[0::2] and shards[1] == order[1::2]
    for step in range(2):  # per-rank batch 2 ↔ single-process batch 4
        union = sorted(shards[0][2 * step:2 * step + 2] + shards[1][2 * step:2 * step + 2])
        assert union == sorted(order[4 * step:4 * step + 4])
    odd = [list(EpochSampler(9, seed=5, world=2, rank=r)) for r in (0, 1)]
    full = list(EpochSampler(9, seed=5, world=1, rank=0))
    assert odd[0] == full[0::2] and odd[1] == full[1::2] + [full[0]]  # padded like DistributedSampler
