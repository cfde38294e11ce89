"""Robot demonstrations as VLA training samples: robomimic HDF5 files → (image, prompt, action tokens).

A `robomimic-hdf5` dataset mixes one or more sources, each `{key, path, camera_key, action_key,
filter_key, instruction, weight, normalize_mask}`; `key` names the source's action statistics (what
`unnorm_key` selects at inference). A training set computes the statistics of its own split and stores
them in the model (so they travel with the checkpoint); a validation set reuses them. Each sample is
the VLA question in the model's prompt format with the image slot, then one action token per action
dimension and EOS — the labels cover exactly those. Training images get the configured augmentation;
evaluation images the matching centre crop. `sample_weights()` gives each source its configured share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlx.data.action_stats import ActionStats
from vlx.data.augment import inference_preprocess, training_augmentation
from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.errors import ConfigError
from vlx.heads.action import ActionTokenHead, vla_question
from vlx.llm.prompts import IGNORE_INDEX, IMAGE_MARKER, PromptFormat, question_ids
from vlx.registry import DATASETS, check_arguments
from vlx.vision.transforms import ImageTransform


@dataclass(frozen=True)
class RobotSource:
    """One robomimic file (or split of it) in a mixture."""

    key: str
    path: str
    camera_key: str = "agentview_image"
    action_key: str = "actions"
    filter_key: str | None = None
    instruction: str | None = None
    weight: float = 1.0
    normalize_mask: list[bool] | None = None


def parse_sources(entries: Any, where: str) -> list[RobotSource]:
    """Validated RobotSource list from the config's `datasets` list."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"config key '{where}' must be a non-empty list of {{key, path, ...}} entries")
    sources = []
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"config key '{at}' must be a mapping with at least 'key' and 'path'")
        check_arguments(RobotSource, entry, at, "a robot data source")
        source = RobotSource(**entry)
        if not source.weight > 0:
            raise ConfigError(f"config key '{at}.weight'={source.weight}; weights must be positive")
        sources.append(source)
    keys = [s.key for s in sources]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"config key '{where}': each source needs its own 'key' (got {keys})")
    return sources


@DATASETS.register("robomimic-hdf5")
class RobotDemonstrations(Dataset):
    """Samples of every (demo, step) of the sources, tokenised for an action-token head."""

    def __init__(
        self, datasets: list[dict[str, Any]], prompt_format: PromptFormat, tokenizer: Any, image_transform: ImageTransform,
        num_image_tokens: int, action_head: ActionTokenHead, action_stats: dict[str, ActionStats], training: bool,
        augment: Mapping[str, Any] | None = None, limit: int | None = None, cache_images: bool = False,
        config_key: str = "data",
    ) -> None:
        where = config_key
        self.sources = parse_sources(datasets, f"{where}.datasets")
        self.files = [
            RobomimicFile(s.path, s.camera_key, s.action_key, s.filter_key, s.instruction,
                          where=f"{where}.datasets[{i}]", cache_images=cache_images)
            for i, s in enumerate(self.sources)
        ]
        for index, (source, file) in enumerate(zip(self.sources, self.files)):
            if file.action_dim != action_head.action_dim:
                raise ConfigError(f"{file.path}: actions '{source.action_key}' have {file.action_dim} dimensions, but "
                                  f"head.action_dim={action_head.action_dim} ({where}.datasets[{index}])",
                                  kind="head-action-dim")
            if training:
                action_stats[source.key] = ActionStats.from_actions(
                    file.actions(), num_trajectories=file.num_demos, mask=source.normalize_mask, where=str(file.path))
            elif source.key not in action_stats:
                raise ConfigError(f"{where}.datasets[{index}]: no action statistics for '{source.key}'; evaluation data "
                                  f"uses the training statistics (known: {', '.join(sorted(action_stats)) or 'none'})",
                                  kind="stats-key")
        self.stats = [action_stats[s.key] for s in self.sources]
        self.index = [(j, i) for j, file in enumerate(self.files) for i in range(len(file))]  # (source, sample)
        if limit is not None and limit < len(self.index):
            keep = np.linspace(0, len(self.index) - 1, int(limit)).round().astype(int)
            self.index = [self.index[k] for k in keep]
        self.prompt_format, self.tokenizer, self.image_transform = prompt_format, tokenizer, image_transform
        self.num_image_tokens, self.codec = num_image_tokens, action_head.tokenizer
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_MARKER))
        self.augment = training_augmentation(augment) if training else None
        self.preprocess = inference_preprocess(augment)
        self._prompts: dict[str, list[int]] = {}  # instruction → prompt ids (a per-process memo)

    def __len__(self) -> int:
        return len(self.index)

    def sample_weights(self) -> torch.Tensor:
        """Per-sample sampling weights giving source j the share weight_j / Σ weights: (N,)."""
        sizes = np.bincount([j for j, _ in self.index], minlength=len(self.sources))
        per_source = [s.weight / max(size, 1) for s, size in zip(self.sources, sizes)]
        return torch.tensor([per_source[j] for j, _ in self.index], dtype=torch.double)

    def prompt_ids(self, instruction: str) -> list[int]:
        if instruction not in self._prompts:
            self._prompts[instruction] = question_ids(
                self.prompt_format, vla_question(instruction), self.tokenizer, self.image_token_id, self.num_image_tokens)
        return self._prompts[instruction]

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, sample = self.index[index]
        demo, step, frame, action, instruction = self.files[source].sample(sample)
        normalized = self.stats[source].normalize(action)  # (A,)
        action_ids = self.codec.encode(normalized).tolist()
        prompt = self.prompt_ids(instruction)
        image = Image.fromarray(frame)
        image = self.augment(image) if self.augment is not None else self.preprocess(image)
        return {
            "id": f"{self.sources[source].key}:{demo}:{step}",
            "input_ids": torch.tensor(prompt + action_ids + [self.tokenizer.eos_token_id]),
            "labels": torch.tensor([IGNORE_INDEX] * len(prompt) + action_ids + [self.tokenizer.eos_token_id]),
            "pixel_values": self.image_transform(image),
            "actions": torch.as_tensor(normalized, dtype=torch.float32),
        }
