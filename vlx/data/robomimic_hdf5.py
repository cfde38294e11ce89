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
RGBA frames lose their alpha.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlx.data.robomimic_layout import Demo, DemoReader, check_hdf5_path, json_attr
from vlx.errors import ConfigError, DataError


def _to_rgb(frames: np.ndarray, gray: bool) -> np.ndarray:
    """(..., H, W) grayscale or (..., H, W, 3|4) uint8 frames → (..., H, W, 3)."""
    if gray:
        return np.repeat(frames[..., None], 3, axis=-1)  # (..., H, W, 3)
    return np.ascontiguousarray(frames[..., :3])  # (..., H, W, 3): RGBA loses alpha


@dataclass(frozen=True)
class DemoStep:
    """One sample: where it is, its camera frames (H, W, 3) uint8 by key, action (A,), state (P,) or None."""

    demo: str
    step: int
    frames: dict[str, np.ndarray]
    action: np.ndarray
    state: np.ndarray | None
    instruction: str


class RobomimicFile:
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
        self.demos: list[str] = [demo.name for demo in demos]
        self.action_dim: int = demos[0].actions.shape[1]
        self.image_sizes: list[tuple[int, int]] = list(demos[0].image_sizes)
        self.state_dim: int | None = None if demos[0].state is None else int(demos[0].state.shape[1])
        self._gray = [demo.gray for demo in demos]  # per demo, per camera
        self._instructions = [demo.instruction for demo in demos]
        self._actions = np.concatenate([demo.actions for demo in demos])  # (N, A)
        self._states = None if self.state_dim is None else np.concatenate([demo.state for demo in demos])  # (N, P)
        self._ends = np.cumsum([len(demo.actions) for demo in demos])  # (D,) exclusive end of each demo
        self._handle: h5py.File | None = None  # opened lazily in each process; `_pid` says which
        self._pid: int | None = None
        self._cache_images = cache_images
        self._cache: list[dict[str, np.ndarray]] | None = self._load_frames() if cache_images else None

    @property
    def camera_key(self) -> str:
        """The first camera's obs key."""
        return self.camera_keys[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first camera."""
        return self.image_sizes[0]

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

    def __len__(self) -> int:
        return int(self._ends[-1])

    @property
    def num_demos(self) -> int:
        return len(self.demos)

    def _position(self, index: int) -> tuple[int, int, int]:
        """(demo position, step, non-negative sample index) of a sample index; negative indices count back."""
        total = len(self)
        if not -total <= index < total:
            raise IndexError(f"{self.path}: sample index {index} is out of range for {total} samples")
        index = int(index) % total
        demo = int(np.searchsorted(self._ends, index, side="right"))
        return demo, index - (int(self._ends[demo - 1]) if demo else 0), index

    def locate(self, index: int) -> tuple[str, int]:
        """Sample index → (demo name, step)."""
        demo, step, _ = self._position(index)
        return self.demos[demo], step

    def steps_left(self, index: int) -> int:
        """How many steps of its demo a sample has from its own on (1 at the demo's last step)."""
        demo, _, flat = self._position(index)
        return int(self._ends[demo]) - flat

    def image(self, index: int, camera: int = 0) -> np.ndarray:
        """A camera frame of a sample (the first camera by default), (H, W, 3) uint8; reads only that frame
        unless images are cached."""
        demo, step, _ = self._position(index)
        return self._frame(demo, step, camera)

    def images(self, index: int) -> dict[str, np.ndarray]:
        """Every camera's frame of a sample, by obs key, (H, W, 3) uint8 each."""
        demo, step, _ = self._position(index)
        return {key: self._frame(demo, step, camera) for camera, key in enumerate(self.camera_keys)}

    def _frame(self, demo: int, step: int, camera: int) -> np.ndarray:
        if self._cache_images:
            if self._cache is None:
                self._cache = self._load_frames()
            return self._cache[demo][self.camera_keys[camera]][step].copy()
        return self._frames(demo, step, camera)

    def sample(self, index: int) -> DemoStep:
        """A sample's frames, action, state and instruction, located once."""
        demo, step, flat = self._position(index)
        frames = {key: self._frame(demo, step, camera) for camera, key in enumerate(self.camera_keys)}
        state = None if self._states is None else self._states[flat].copy()
        return DemoStep(self.demos[demo], step, frames, self._actions[flat].copy(), state, self._instructions[demo])

    def action(self, index: int) -> np.ndarray:
        """The action of a sample, (A,) float32."""
        return self._actions[self._position(index)[2]].copy()

    def chunk(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The actions of steps t..t+size-1 of a sample's demo, (size, A) float32, and which of them are real
        steps of the demo, (size,) bool: steps past the demo's end repeat its last action and are marked False."""
        demo, _, flat = self._position(index)
        end = int(self._ends[demo])  # exclusive end of this demo in the flat index
        rows = np.minimum(np.arange(flat, flat + size), end - 1)  # (size,)
        return self._actions[rows].copy(), np.arange(flat, flat + size) < end

    def state(self, index: int) -> np.ndarray:
        """The state of a sample, (P,) float32; a ConfigError when the file was opened without state keys."""
        if self._states is None:
            raise ConfigError(f"{self.path}: no state keys were given ({self.where}.state_keys), so there is no state")
        return self._states[self._position(index)[2]].copy()

    def instruction(self, index: int) -> str:
        """The language instruction of a sample's demo."""
        return self._instructions[self._position(index)[0]]

    def actions(self) -> np.ndarray:
        """All samples' actions in index order, (N, A) float32 (e.g. for `ActionStats.from_actions`)."""
        return self._actions.copy()

    def states(self) -> np.ndarray | None:
        """All samples' states in index order, (N, P) float32, or None without state keys."""
        return None if self._states is None else self._states.copy()

    def env_args(self) -> dict[str, Any]:
        """The parsed `env_args` attr of the `data` group ({} when the file has none)."""
        return copy.deepcopy(self._env_args)
