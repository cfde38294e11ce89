"""The LightningDataModule of a stage: builds its datasets through the registry and batches them.

The training order is seeded per epoch and restartable mid-epoch (`epoch_sampler`), so a resumed run
sees the same batches as an uninterrupted one; a training set with per-sample weights (a mixture of
robot datasets) is drawn with replacement in proportion to the weights. Both loaders shard themselves
across data-parallel ranks (Lightning's `use_distributed_sampler` is off in vlx's trainers). With a GPU
present, batches are collated into pinned memory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vlx.data.collate import Collator
from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.registry import DATASETS
from vlx.training.epoch_sampler import EpochSampler, ResumableDataLoader, data_parallel_rank


def build_dataset(cfg: Mapping[str, Any], where: str, model: VisionLanguageModel, training: bool) -> Dataset:
    """The dataset a `data.train` / `data.val` config node names, tokenised for `model`.

    vlx hands each dataset the pieces of the model it declares in its signature (prompt format,
    tokenizer, image transform, number of image tokens; for robot data the action head, the model's
    action and state statistics, its observation spec (cameras, state), whether it is a training set, the
    `augment` config and its own `config_key`).
    """
    injectable: dict[str, Callable[[], Any]] = {
        "prompt_format": lambda: model.prompt_format, "tokenizer": lambda: model.tokenizer,
        "image_transform": lambda: model.vision.image_transform, "num_image_tokens": lambda: model.vision.num_patches,
        "action_head": lambda: model.action_head, "action_stats": lambda: model.action_stats,
        "observation": lambda: model.observation, "state_stats": lambda: model.state_stats,
        "training": lambda: training, "augment": lambda: model.config.get("augment"), "config_key": lambda: where,
    }
    name = cfg.get("name") if isinstance(cfg, Mapping) else None
    if name is None:
        raise ConfigError(f"config key '{where}' needs a 'name' (one of: {', '.join(DATASETS.names())})")
    accepted = inspect.signature(DATASETS.get(name, f"{where}.name")).parameters
    return DATASETS.build(cfg, where, **{key: make() for key, make in injectable.items() if key in accepted})


class VlxDataModule(L.LightningDataModule):
    """Train (and optional val) loaders of one stage; datasets are validated when built."""

    def __init__(self, model: VisionLanguageModel, stage: Mapping[str, Any], where: str, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        data = stage["data"]
        self.train_set = build_dataset(data["train"], f"{where}.data.train", model, training=True)
        self.val_set = (build_dataset(data["val"], f"{where}.data.val", model, training=False) if data.get("val")
                        else None)
        self.batch_size, self.num_workers = int(stage["batch_size"]), int(stage["num_workers"])
        self.collate = Collator(model.tokenizer.pad_token_id)

    def _options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "collate_fn": self.collate, "num_workers": self.num_workers,
                "persistent_workers": self.num_workers > 0,
                "pin_memory": torch.cuda.is_available()}  # host-to-device copies overlap compute on a GPU

    def train_dataloader(self) -> DataLoader:
        weights = self.train_set.sample_weights() if hasattr(self.train_set, "sample_weights") else None
        if weights is not None and bool((weights == weights[0]).all()):
            weights = None
        sampler = EpochSampler(len(self.train_set), self.seed, weights)
        return ResumableDataLoader(self.train_set, sampler, **self._options())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.val_set is None:
            return []
        generator = torch.Generator().manual_seed(self.seed)  # never draws from the global RNG (exact resume)
        world, rank = data_parallel_rank()
        sampler = DistributedSampler(self.val_set, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(self.val_set, sampler=sampler, generator=generator, **self._options())
