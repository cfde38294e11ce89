"""A validated reader for robomimic HDF5 demonstrations: a camera frame, an instruction and an action per step.

Layout: demos in `data/demo_N` (attr `num_samples`, `actions` (T, A), uint8 `obs/<camera>` (T, H, W, 3)),
the `data` attr `env_args` (JSON), and demo subsets in `mask/<filter_key>` (demo names as bytes).
Construction checks all that needs no pixels — keys, dtypes and shapes of the selected demos, finite
actions, one action dim and one image size across demos, an instruction per demo (the `lang` of the demo's
`ep_meta` JSON attr, as robosuite 1.5 / robocasa write it, else the config's `instruction`) — so a bad file
fails before training, naming the file, demo and key (the checks live in `vlx.data.robomimic_layout`). The selected demos' actions stay in memory (N × A
float32); frames are read one at a time through an HDF5 handle opened lazily in each process (DataLoader
workers fork or spawn; an h5py handle must cross neither), unless `cache_images=True` loads all selected
frames once (N × H × W × 3 bytes: 2 GB for 100k 84 px frames; forked workers share it copy-on-write,
spawned ones each load their own). Grayscale frames get three channels; RGBA frames lose their alpha.
"""

from __future__ import annotations

import copy
import os
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


class RobomimicFile:
    """The steps of the selected demos of one robomimic file, indexed in demo order; `where` is the config
    path of these arguments (e.g. `data`), so messages can name `{where}.camera_key` and the like."""

    def __init__(
        self, path: str | Path, camera_key: str = "agentview_image", action_key: str = "actions",
        filter_key: str | None = None, instruction: str | None = None, where: str = "data", cache_images: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        self.camera_key, self.action_key, self.where = camera_key, action_key, where
        self._reader = DemoReader(self.path, camera_key, action_key, where)
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
        self.image_size: tuple[int, int] = demos[0].image_size
        self._gray = [demo.gray for demo in demos]
        self._instructions = [demo.instruction for demo in demos]
        self._actions = np.concatenate([demo.actions for demo in demos])  # (N, A)
        self._ends = np.cumsum([len(demo.actions) for demo in demos])  # (D,) exclusive end of each demo
        self._handle: h5py.File | None = None  # opened lazily in each process; `_pid` says which
        self._pid: int | None = None
        self._cache_images = cache_images
        self._cache: list[np.ndarray] | None = self._load_frames() if cache_images else None  # (T, H, W, 3) each

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

    def _frames(self, demo: int, steps: int | slice) -> np.ndarray:
        """Frame(s) `steps` of the selected demo at position `demo`, (..., H, W, 3) uint8."""
        name = self.demos[demo]
        try:
            frames = self._file()[f"data/{name}/obs/{self.camera_key}"][steps]  # (..., H, W) | (..., H, W, 3|4)
        except (OSError, KeyError) as exc:  # the file changed or broke after construction
            raise DataError(f"{self.path}: demo {name}: cannot read obs/{self.camera_key} ({exc})") from None
        return _to_rgb(frames, self._gray[demo])

    def _load_frames(self) -> list[np.ndarray]:
        return [self._frames(demo, slice(None)) for demo in range(self.num_demos)]  # (T, H, W, 3) each

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

    def image(self, index: int) -> np.ndarray:
        """The camera frame of a sample, (H, W, 3) uint8; reads only that frame unless images are cached."""
        demo, step, _ = self._position(index)
        return self._frame(demo, step)

    def _frame(self, demo: int, step: int) -> np.ndarray:
        if self._cache_images:
            if self._cache is None:
                self._cache = self._load_frames()
            return self._cache[demo][step].copy()
        return self._frames(demo, step)

    def sample(self, index: int) -> tuple[str, int, np.ndarray, np.ndarray, str]:
        """(demo name, step, frame (H, W, 3) uint8, action (A,), instruction) of a sample, located once."""
        demo, step, flat = self._position(index)
        return self.demos[demo], step, self._frame(demo, step), self._actions[flat].copy(), self._instructions[demo]

    def action(self, index: int) -> np.ndarray:
        """The action of a sample, (A,) float32."""
        return self._actions[self._position(index)[2]].copy()

    def instruction(self, index: int) -> str:
        """The language instruction of a sample's demo."""
        return self._instructions[self._position(index)[0]]

    def actions(self) -> np.ndarray:
        """All samples' actions in index order, (N, A) float32 (e.g. for `ActionStats.from_actions`)."""
        return self._actions.copy()

    def env_args(self) -> dict[str, Any]:
        """The parsed `env_args` attr of the `data` group ({} when the file has none)."""
        return copy.deepcopy(self._env_args)
