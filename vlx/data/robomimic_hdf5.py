"""A validated reader for robomimic HDF5 demonstrations: camera frames, a state, an instruction and actions per step.

Layout: demos in `data/demo_N` (attr `num_samples`, `actions` (T, A), uint8 `obs/<camera>` (T, H, W, 3), low-dim
`obs/<key>` (T, d)), the `data` attr `env_args` (JSON), and demo subsets in `mask/<filter_key>` (demo names as
bytes). Construction checks all that needs no pixels — keys, dtypes and shapes of the selected demos, finite
actions and states, one action dim, state dim and image size per camera across demos, an instruction per demo
(the `lang` of the demo's `ep_meta` JSON attr, as robosuite 1.5 / robocasa write it, else the config's
`instruction`) — so a bad file fails before training, naming the file, demo and key (the checks live in
`vlx.data.robomimic_layout`). The selected demos' actions and states stay in memory (N × A and N × P
float32); `chunk(index, K)` gives the actions t..t+K-1 of a step's demo, with the steps past the demo's end
filled with its last action and marked in a mask. Frames are read one at a time through an HDF5 handle
opened lazily in each process (DataLoader workers fork or spawn; an h5py handle must cross neither), unless
`cache_images=True` loads all selected frames once (N × H × W × 3 bytes: 2 GB for 100k 84 px frames; forked
workers share it copy-on-write, spawned ones each load their own). Grayscale frames get three channels;
RGBA frames lose their alpha. The index logic (chunks, states, instructions) is `vlx.data.demo_steps.DemoSteps`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlx.data.demo_steps import DemoSteps
from vlx.data.robomimic_layout import Demo, DemoReader, check_hdf5_path, json_attr
from vlx.errors import ConfigError, DataError


def _to_rgb(frames: np.ndarray, gray: bool) -> np.ndarray:
    """(..., H, W) grayscale or (..., H, W, 3|4) uint8 frames → (..., H, W, 3)."""
    if gray:
        return np.repeat(frames[..., None], 3, axis=-1)  # (..., H, W, 3)
    return np.ascontiguousarray(frames[..., :3])  # (..., H, W, 3): RGBA loses alpha


class RobomimicFile(DemoSteps):
    """The steps of the selected demos of one robomimic file, indexed in demo order; `where` is the config
    path of these arguments (e.g. `data`), so messages can name `{where}.camera_key` and the like.

    `camera_key` is one obs key or an ordered list of them; `state_keys` are low-dim obs keys concatenated
    (in order) into the state."""

    def __init__(
        self, path: str | Path, camera_key: str | Sequence[str] = "agentview_image", action_key: str = "actions",
        filter_key: str | None = None, instruction: str | None = None, where: str = "data", cache_images: bool = False,
        state_keys: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.action_key, self.where = action_key, where
        self._reader = DemoReader(self.path, camera_key, action_key, where, state_keys)
        self.camera_keys: list[str] = list(self._reader.camera_keys)
        self.state_keys: list[str] = list(self._reader.state_keys)
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ConfigError(f"{where}.instruction must be a non-empty string or null, got {instruction!r:.80}")
        check_hdf5_path(self.path)
        try:
            with h5py.File(self.path, "r") as file:
                demos = self._read(file, filter_key, instruction)
        except (OSError, KeyError) as exc:  # a truncated or corrupt file, a dangling link
            raise DataError(f"{self.path}: could not read the HDF5 file ({exc})", kind="corrupt-hdf5") from None
        self._hold([demo.name for demo in demos], [demo.instruction for demo in demos],
                   [demo.actions for demo in demos], None if demos[0].state is None else [d.state for d in demos])
        self.image_sizes: list[tuple[int, int]] = list(demos[0].image_sizes)
        self._gray = [demo.gray for demo in demos]  # per demo, per camera
        self._handle: h5py.File | None = None  # opened lazily in each process; `_pid` says which
        self._pid: int | None = None
        self._cache_images = cache_images
        self._cache: list[dict[str, np.ndarray]] | None = self._load_frames() if cache_images else None

    def _read(self, file: h5py.File, filter_key: str | None, instruction: str | None) -> list[Demo]:
        names = self._reader.demo_names(file)
        if filter_key is not None:
            names = self._reader.filter(file, names, filter_key)
        self._env_args = json_attr(file["data"].attrs, "env_args", f"{self.path}: data") or {}
        demos, problems = self._reader.read_demos(file, names, instruction)
        if problems:
            raise problems[0]
        return demos

    def _file(self) -> h5py.File:
        """This process's read handle (a forked worker must not reuse its parent's)."""
        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"{self.path}: could not open the HDF5 file for reading ({exc})") from None
            self._pid = os.getpid()
        return self._handle

    def _frames(self, demo: int, steps: int | slice, camera: int) -> np.ndarray:
        """Frame(s) `steps` of camera `camera` of the selected demo at position `demo`, (..., H, W, 3) uint8."""
        name, key = self.demos[demo], self.camera_keys[camera]
        try:
            frames = self._file()[f"data/{name}/obs/{key}"][steps]  # (..., H, W) | (..., H, W, 3|4)
        except (OSError, KeyError) as exc:  # the file changed or broke after construction
            raise DataError(f"{self.path}: demo {name}: cannot read obs/{key} ({exc})") from None
        return _to_rgb(frames, self._gray[demo][camera])

    def _load_frames(self) -> list[dict[str, np.ndarray]]:
        return [{key: self._frames(demo, slice(None), camera) for camera, key in enumerate(self.camera_keys)}
                for demo in range(self.num_demos)]  # (T, H, W, 3) per camera per demo

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the HDF5 handle or the frame cache; the receiving process re-opens/re-loads them."""
        return {**self.__dict__, "_handle": None, "_pid": None, "_cache": None}

    def episode_frames(self, demo: int, camera: int) -> np.ndarray:
        return self._frames(demo, slice(None), camera)  # (T, H, W, 3)

    def _frame(self, demo: int, step: int, camera: int) -> np.ndarray:
        if self._cache_images:
            if self._cache is None:
                self._cache = self._load_frames()
            return self._cache[demo][self.camera_keys[camera]][step].copy()
        return self._frames(demo, step, camera)
