"""Robot demonstrations as VLA training samples: robomimic HDF5 files or LeRobot datasets → (cameras, state, prompt,
action chunk).

A `robomimic-hdf5` dataset mixes one or more sources, each `{key, path, format, camera_key | camera_keys,
state_keys, action_key, filter_key, episodes, instruction, weight, normalize_mask}`. `format` is `robomimic` (an
HDF5 file) or `lerobot` (a LeRobot v3.0/v2.1 directory, `vlx.data.lerobot`; its camera keys are features such as
`observation.images.front` or just `front`, its default state key `observation.state`, its default action key
`action`, and `episodes` selects episodes by range or list); null tells them apart by the path. `key` names the
source's action (and state) statistics (what `unnorm_key` selects at inference). `camera_keys` are the source's obs
keys for the model's cameras (`observation.cameras`), in the same order, and default to those names; `state_keys`
the low-dim obs keys concatenated into the state (default `observation.state_keys`). A training set computes the
statistics of its own split and stores them in the model (so they travel with the checkpoint); a validation set
reuses them. Each sample is the VLA question in the model's prompt format with the observation slot (every camera's
patches, then the state token), followed by what the head appends (`ActionHead.sequence`) for the normalised chunk
of actions t..t+K-1 (K = `head.chunk_size`).

The end of an episode (`episode_end`): by default (`mask`) a window that runs past the demo's last step is filled
with the last action and those steps are marked in `action_mask`, so they carry no loss and count in no metric. The
alternatives are OpenVLA's `repeat` (the repeated last action is a target like any other) and OpenVLA-OFT's `drop`
(such windows are not samples at all). `mask` is the default because `drop` throws away the last K-1 steps of every
demo — in short episodes (the built-in task's average 6) most of the data, and exactly the final approach — while
`repeat` teaches the model a made-up "hold the last action" ending. Training images get the configured augmentation
(each camera its own draw); evaluation images the matching centre crop. `sample_weights()` gives each source its
configured share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlx.data.action_stats import ActionStats
from vlx.data.augment import inference_preprocess, training_augmentation
from vlx.data.demo_steps import DemoSteps
from vlx.data.lerobot import is_lerobot_dir
from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.errors import ConfigError
from vlx.heads.base import ActionHead
from vlx.llm.prompts import IGNORE_INDEX, IMAGE_MARKER, PromptFormat, question_ids
from vlx.observation import ObservationSpec
from vlx.registry import DATASETS, check_arguments
from vlx.vision.transforms import ImageTransform

EPISODE_ENDS = ("mask", "repeat", "drop")
FORMATS = ("robomimic", "lerobot")


@dataclass(frozen=True)
class RobotSource:
    """One robomimic file (or split of it) in a mixture."""

    key: str
    path: str
    format: str | None = None  # robomimic | lerobot; None: a directory with meta/info.json is lerobot
    camera_key: str | None = None
    camera_keys: list[str] | None = None
    state_keys: list[str] | None = None
    action_key: str | None = None  # default: robomimic `actions`, lerobot `action`
    filter_key: str | None = None
    episodes: Any = None  # lerobot: "a:b" or a list of episode indices
    instruction: str | None = None
    weight: float = 1.0
    normalize_mask: list[bool] | None = None

    @property
    def kind(self) -> str:
        """`robomimic` or `lerobot`, as given or told from the path."""
        if self.format is not None:
            return self.format
        return "lerobot" if is_lerobot_dir(Path(self.path).expanduser()) else "robomimic"


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
        if source.camera_key is not None and source.camera_keys is not None:
            raise ConfigError(f"config key '{at}' sets both camera_key and camera_keys; give one of them")
        if source.format not in (None, *FORMATS):
            raise ConfigError(f"config key '{at}.format'={source.format!r}; expected one of {', '.join(FORMATS)} "
                              "(or null: told from the path)")
        if source.episodes is not None and source.kind != "lerobot":
            raise ConfigError(f"config key '{at}.episodes' selects LeRobot episodes; a robomimic file selects demos "
                              "with filter_key (a mask/ key)")
        sources.append(source)
    keys = [s.key for s in sources]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"config key '{where}': each source needs its own 'key' (got {keys})")
    return sources


def source_cameras(source: RobotSource, observation: ObservationSpec, at: str) -> str | list[str] | None:
    """The obs key(s) a source reads for the model's cameras (a bare key for a one-image model; None: a LeRobot
    dataset's only camera)."""
    if source.camera_keys is not None:
        keys = list(source.camera_keys)
        if len(keys) != observation.num_cameras:
            wanted = observation.cameras or ["one image"]
            raise ConfigError(f"config key '{at}.camera_keys' names {len(keys)} cameras {keys}, but the model sees "
                              f"{observation.num_cameras} ({', '.join(wanted)}; observation.cameras)",
                              kind="camera-count")
        return keys if observation.cameras else keys[0]
    if source.camera_key is not None:
        if observation.cameras and len(observation.cameras) > 1:
            raise ConfigError(f"config key '{at}.camera_key' names one camera, but the model sees "
                              f"{observation.cameras} (observation.cameras); give camera_keys", kind="camera-count")
        return [source.camera_key] if observation.cameras else source.camera_key
    if observation.cameras:
        return list(observation.cameras)
    return None if source.kind == "lerobot" else "agentview_image"


def source_state_keys(source: RobotSource, observation: ObservationSpec, at: str) -> list[str] | None:
    """The low-dim obs keys a source concatenates into the state (None: no state), checked against the model."""
    keys = source.state_keys if source.state_keys is not None else observation.state_keys
    if keys is None and source.kind == "lerobot":
        keys = ["observation.state"]
    if observation.state_dim is None and source.state_keys:
        raise ConfigError(f"config key '{at}.state_keys' is set but the model has no state input; add "
                          "proprio=mlp proprio.in_dim=N or remove the state keys", kind="state-keys")
    if observation.state_dim is not None and not keys:
        raise ConfigError(f"config key '{at}.state_keys' is not set (nor observation.state_keys): the model takes a "
                          f"{observation.state_dim}-value state; name the low-dim obs keys that make it up",
                          kind="state-keys")
    return list(keys) if observation.state_dim is not None else None


def open_source(source: RobotSource, cameras: str | list[str] | None, state_keys: list[str] | None, at: str,
                cache_images: bool) -> DemoSteps:
    """The source's demonstrations: a RobomimicFile or a LeRobotDir."""
    if source.kind == "lerobot":
        from vlx.data.lerobot import LeRobotDir

        return LeRobotDir(source.path, cameras, source.action_key or "action", source.filter_key, source.instruction,
                          where=at, cache_images=cache_images, state_keys=state_keys, episodes=source.episodes)
    return RobomimicFile(source.path, cameras, source.action_key or "actions", source.filter_key, source.instruction,
                         where=at, cache_images=cache_images, state_keys=state_keys)


@DATASETS.register("robomimic-hdf5")
class RobotDemonstrations(Dataset):
    """Samples of every (demo, step) of the sources, tokenised for the model's action head."""

    def __init__(
        self, datasets: list[dict[str, Any]], prompt_format: PromptFormat, tokenizer: Any,
        image_transform: ImageTransform, num_image_tokens: int, action_head: ActionHead,
        action_stats: dict[str, ActionStats], training: bool,
        observation: ObservationSpec | None = None, state_stats: dict[str, ActionStats] | None = None,
        augment: Mapping[str, Any] | None = None, limit: int | None = None, cache_images: bool = False,
        episode_end: str = "mask", config_key: str = "data",
    ) -> None:
        where = config_key
        if episode_end not in EPISODE_ENDS:
            raise ConfigError(f"config key '{where}.episode_end'={episode_end!r}; "
                              f"expected one of {', '.join(EPISODE_ENDS)}")
        self.observation = observation or ObservationSpec()
        state_stats = {} if state_stats is None else state_stats
        self.sources = parse_sources(datasets, f"{where}.datasets")
        self.files = []
        for index, source in enumerate(self.sources):
            at = f"{where}.datasets[{index}]"
            self.files.append(open_source(source, source_cameras(source, self.observation, at),
                                          source_state_keys(source, self.observation, at), at, cache_images))
        for index, (source, file) in enumerate(zip(self.sources, self.files, strict=True)):
            self._check_and_record_stats(index, source, file, action_head, action_stats, state_stats, training, where)
        self.stats = [action_stats[s.key] for s in self.sources]
        self.state_stats = [state_stats.get(s.key) for s in self.sources]
        self.head, self.episode_end = action_head, episode_end
        self.index = [(j, i) for j, file in enumerate(self.files) for i in range(len(file))
                      if episode_end != "drop" or file.steps_left(i) >= action_head.chunk_size]  # (source, sample)
        if not self.index:
            raise ConfigError(f"config key '{where}.episode_end'=drop leaves no sample: every demo is shorter than "
                              f"head.chunk_size={action_head.chunk_size}")
        if limit is not None and limit < len(self.index):
            keep = np.linspace(0, len(self.index) - 1, int(limit)).round().astype(int)
            self.index = [self.index[k] for k in keep]
        self.prompt_format, self.tokenizer, self.image_transform = prompt_format, tokenizer, image_transform
        self.num_tokens = self.observation.num_tokens(num_image_tokens)
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_MARKER))
        self.augment = training_augmentation(augment) if training else None
        self.preprocess = inference_preprocess(augment)
        self._prompts: dict[str, list[int]] = {}  # instruction → prompt ids (a per-process memo)

    def _check_and_record_stats(self, index: int, source: RobotSource, file: DemoSteps, head: ActionHead,
                                action_stats: dict[str, ActionStats], state_stats: dict[str, ActionStats],
                                training: bool, where: str) -> None:
        """Action and state widths against the model; the training split's statistics into the model."""
        at = f"{where}.datasets[{index}]"
        if file.action_dim != head.action_dim:
            raise ConfigError(f"{file.path}: actions '{file.action_key}' have {file.action_dim} dimensions, but "
                              f"head.action_dim={head.action_dim} ({at})", kind="head-action-dim")
        if file.state_dim is not None and file.state_dim != self.observation.state_dim:
            raise ConfigError(f"{file.path}: the state obs/{' + obs/'.join(file.state_keys)} has {file.state_dim} "
                              f"values, but proprio.in_dim={self.observation.state_dim} ({at}.state_keys)",
                              kind="state-dim")
        if training:
            action_stats[source.key] = ActionStats.from_actions(
                file.actions(), num_trajectories=file.num_demos, mask=source.normalize_mask, where=str(file.path))
            if file.state_dim is not None:
                state_stats[source.key] = ActionStats.from_actions(
                    file.states(), num_trajectories=file.num_demos, mask=[True] * file.state_dim, where=str(file.path))
            return
        for table, what in ((action_stats, "action"), (state_stats if file.state_dim is not None else None, "state")):
            if table is not None and source.key not in table:
                raise ConfigError(f"{at}: no {what} statistics for '{source.key}'; evaluation data uses the training "
                                  f"statistics (known: {', '.join(sorted(table)) or 'none'})", kind="stats-key")

    def __len__(self) -> int:
        return len(self.index)

    def sample_weights(self) -> torch.Tensor:
        """Per-sample sampling weights giving source j the share weight_j / Σ weights: (N,)."""
        sizes = np.bincount([j for j, _ in self.index], minlength=len(self.sources))
        per_source = [s.weight / max(size, 1) for s, size in zip(self.sources, sizes, strict=True)]
        return torch.tensor([per_source[j] for j, _ in self.index], dtype=torch.double)

    def prompt_ids(self, instruction: str) -> list[int]:
        if instruction not in self._prompts:
            self._prompts[instruction] = question_ids(
                self.prompt_format, self.head.question(instruction), self.tokenizer, self.image_token_id,
                self.num_tokens)
        return self._prompts[instruction]

    def pixels(self, frames: dict[str, np.ndarray], keys: list[str]) -> torch.Tensor:
        """The cameras' frames, augmented (training) or centre-cropped, as (3k, H, W) or (C, 3k, H, W)."""
        prepare = self.augment if self.augment is not None else self.preprocess
        tensors = [self.image_transform(prepare(Image.fromarray(frames[key]))) for key in keys]
        return torch.stack(tensors) if self.observation.cameras else tensors[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, sample = self.index[index]
        file = self.files[source]
        step = file.sample(sample)
        chunk, real = file.chunk(sample, self.head.chunk_size)  # (K, A), (K,)
        if self.episode_end == "repeat":
            real[:] = True
        normalized = self.stats[source].normalize(chunk)  # (K, A)
        suffix = self.head.sequence(normalized, real)
        prompt = self.prompt_ids(step.instruction)
        item = {
            "id": f"{self.sources[source].key}:{step.demo}:{step.step}",
            "input_ids": torch.tensor(prompt + suffix.input_ids),
            "labels": torch.tensor([IGNORE_INDEX] * len(prompt) + suffix.labels),
            "pixel_values": self.pixels(step.frames, file.camera_keys),
            "actions": torch.as_tensor(normalized, dtype=torch.float32),  # (K, A)
            "action_mask": torch.as_tensor(real),  # (K,)
        }
        if self.head.one_pass:
            item["action_slots"] = torch.tensor([False] * len(prompt) + suffix.slots)
        if step.state is not None:
            item["state"] = torch.as_tensor(self.state_stats[source].normalize(step.state), dtype=torch.float32)  # (P,)
        return item
