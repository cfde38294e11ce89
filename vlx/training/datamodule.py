"""The LightningDataModule of a stage: builds its datasets through the registry and batches them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vlx.data.collate import Collator
from vlx.model import VisionLanguageModel
from vlx.registry import DATASETS


def build_dataset(cfg: Mapping[str, Any], where: str, model: VisionLanguageModel) -> Dataset:
    """The dataset a `data.train` / `data.val` config node names, tokenised for `model`."""
    return DATASETS.build(
        cfg, where, prompt_format=model.prompt_format, tokenizer=model.tokenizer,
        image_transform=model.vision.image_transform, num_image_tokens=model.vision.num_patches,
    )


class VlxDataModule(L.LightningDataModule):
    """Train (and optional val) loaders of one stage; datasets are validated when built."""

    def __init__(self, model: VisionLanguageModel, stage: Mapping[str, Any], where: str) -> None:
        super().__init__()
        data = stage["data"]
        self.train_set = build_dataset(data["train"], f"{where}.data.train", model)
        self.val_set = build_dataset(data["val"], f"{where}.data.val", model) if data.get("val") else None
        self.batch_size, self.num_workers = int(stage["batch_size"]), int(stage["num_workers"])
        self.collate = Collator(model.tokenizer.pad_token_id)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
