"""A validated reader for robomimic HDF5 demonstrations: a camera frame, an instruction and an action per step.

Layout: demos in `data/demo_N` (attr `num_samples`, `actions` (T, A), uint8 `obs/<camera>` (T, H, W, 3)),
the `data` attr `env_args` (JSON), and demo subsets in `mask/<filter_key>` (demo names as bytes).
Construction checks all that needs no pixels — keys, dtypes and shapes of the selected demos, finite
actions, one action dim and one image size across demos, an instruction per demo (the `lang` of the demo's
`ep_meta` JSON attr, as robosuite 1.5 / robocasa write it, else the config's `instruction`) — so a bad file
fails before training, naming the file, demo and key. The selected demos' actions stay in memory (N × A
float32); frames are read one at a time through an HDF5 handle opened lazily in each process (DataLoader
workers fork or spawn; an h5py handle must cross neither), unless `cache_images=True` loads all selected
frames once (N × H × W × 3 bytes: 2 GB for 100k 84 px frames; forked workers share it copy-on-write,
spawned ones each load their own). Grayscale frames get three channels; RGBA frames lose their alpha.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlx.data.action_stats import first_nonfinite_row
from vlx.errors import ConfigError, DataError

def _demo_order(name: str) -> tuple[int, int, str]:
    """Sort key: `demo_N` by N (so demo_2 < demo_10), anything else after them by name."""
    match = re.fullmatch(r"demo_(\d+)", name)
    return (0, int(match.group(1)), name) if match else (1, 0, name)


def _to_rgb(frames: np.ndarray, gray: bool) -> np.ndarray:
    """(..., H, W) grayscale or (..., H, W, 3|4) uint8 frames → (..., H, W, 3)."""
    if gray:
        return np.repeat(frames[..., None], 3, axis=-1)  # (..., H, W, 3)
    return np.ascontiguousarray(frames[..., :3])  # (..., H, W, 3): RGBA loses alpha


def _json_attr(attrs: h5py.AttributeManager, name: str, where: str) -> dict[str, Any] | None:
    """The JSON object stored in string attribute `name`, or None when the attribute is absent."""
    raw = attrs.get(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: attribute {name!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: attribute {name!r} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class _Demo:
    """What construction learned about one selected demo."""

    name: str
    actions: np.ndarray  # (T, A) float32
    image_size: tuple[int, int]  # (H, W)
    gray: bool
    instruction: str


class RobomimicFile:
    """The steps of the selected demos of one robomimic file, indexed in demo order; `where` is the config
    path of these arguments (e.g. `data`), so messages can name `{where}.camera_key` and the like."""

    def __init__(
        self, path: str | Path, camera_key: str = "agentview_image", action_key: str = "actions",
        filter_key: str | None = None, instruction: str | None = None, where: str = "data", cache_images: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        self.camera_key, self.action_key, self.where = camera_key, action_key, where
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ConfigError(f"{where}.instruction must be a non-empty string or null, got {instruction!r:.80}")
        if not self.path.is_file():
            raise DataError(f"{self.path}: robomimic HDF5 file not found")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path}: not an HDF5 file (expected a robomimic dataset)")
        try:
            with h5py.File(self.path, "r") as file:
                demos = self._read(file, filter_key, instruction)
        except (OSError, KeyError) as exc:  # a truncated or corrupt file, a dangling link
            raise DataError(f"{self.path}: could not read the HDF5 file ({exc})") from None
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

    def _read(self, file: h5py.File, filter_key: str | None, instruction: str | None) -> list[_Demo]:
        data = file.get("data")
        if not isinstance(data, h5py.Group):
            raise DataError(f"{self.path}: no 'data' group; a robomimic file keeps its demos in data/demo_N")
        names = sorted((name for name, item in data.items() if isinstance(item, h5py.Group)), key=_demo_order)
        if not names:
            raise DataError(f"{self.path}: the 'data' group holds no demos (expected data/demo_0, data/demo_1, ...)")
        if filter_key is not None:
            names = self._filter(file, names, filter_key)
        self._env_args = _json_attr(data.attrs, "env_args", f"{self.path}: data") or {}
        demos = [self._read_demo(data[name], name, instruction) for name in names]
        for demo in demos[1:]:  # every demo must agree with the first on these
            for what, value, expected in [
                ("action dim", demo.actions.shape[1], demos[0].actions.shape[1]),
                (f"obs/{self.camera_key} image size (H, W)", demo.image_size, demos[0].image_size),
            ]:
                if value != expected:
                    raise DataError(f"{self.path}: demo {demo.name} has {what} {value} but demo {demos[0].name} has "
                                    f"{expected}; every demo must share one {what}")
        return demos

    def _filter(self, file: h5py.File, names: list[str], filter_key: str) -> list[str]:
        """The demos (in file order) that `mask/<filter_key>` lists."""
        masks = file.get("mask")
        available = sorted(masks) if isinstance(masks, h5py.Group) else []
        listed = masks.get(filter_key) if isinstance(masks, h5py.Group) else None
        if not isinstance(listed, h5py.Dataset):
            raise DataError(f"{self.path}: filter key {filter_key!r} ({self.where}.filter_key) is not in the file; "
                            f"its mask/ keys are {available}")
        selected = {v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(listed[()])}
        if not selected:
            raise DataError(f"{self.path}: filter key mask/{filter_key} lists no demos")
        unknown = sorted(selected - set(names), key=_demo_order)
        if unknown:
            raise DataError(f"{self.path}: filter key mask/{filter_key} names demos that are not in data/: {unknown}")
        return [name for name in names if name in selected]

    def _read_demo(self, group: h5py.Group, name: str, instruction: str | None) -> _Demo:
        """Check one demo's actions, camera frames (shapes only) and instruction (ep_meta lang, else config)."""
        where = f"{self.path}: demo {name}"
        actions = group.get(self.action_key)
        if not isinstance(actions, h5py.Dataset):
            raise DataError(f"{where}: no {self.action_key!r} dataset ({self.where}.action_key); "
                            f"the demo has {sorted(group)}")
        if actions.ndim != 2 or actions.dtype.kind not in "fiu" or 0 in actions.shape:
            raise DataError(f"{where}: {self.action_key!r} must be a non-empty numeric (T, A) array, "
                            f"got {actions.dtype} {actions.shape}")
        values = actions[()].astype(np.float32)  # (T, A)
        step = first_nonfinite_row(values)
        if step is not None:
            raise DataError(f"{where}: {self.action_key!r} at step {step} is not finite ({values[step].tolist()})")
        num_samples = np.asarray(group.attrs.get("num_samples", len(values))).tolist()  # robomimic indexes by it
        if num_samples != len(values):
            raise DataError(f"{where}: attr num_samples={num_samples!r} but {self.action_key!r} has {len(values)} rows")
        obs = group.get("obs")
        camera = obs.get(self.camera_key) if isinstance(obs, h5py.Group) else None
        if not isinstance(camera, h5py.Dataset):
            obs_keys = sorted(obs) if isinstance(obs, h5py.Group) else []
            raise DataError(f"{where}: no camera obs/{self.camera_key} ({self.where}.camera_key); "
                            f"the demo's obs keys are {obs_keys}")
        shape = camera.shape
        if camera.dtype != np.uint8 or not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (3, 4))):
            raise DataError(f"{where}: obs/{self.camera_key} must be uint8 (T, H, W, 3) images (or (T, H, W) "
                            f"grayscale, (T, H, W, 4) RGBA), got {camera.dtype} {shape}")
        if shape[0] != len(values):
            raise DataError(f"{where}: obs/{self.camera_key} has {shape[0]} frames but {self.action_key!r} has "
                            f"{len(values)} steps; every step needs one frame")
        lang = (_json_attr(group.attrs, "ep_meta", where) or {}).get("lang")  # the demo's own instruction
        if lang is not None and (not isinstance(lang, str) or not lang.strip()):
            raise DataError(f"{where}: ep_meta 'lang' must be a non-empty string, got {lang!r:.80}")
        if lang is None and instruction is None:
            raise DataError(f"{where}: no instruction: the demo has no ep_meta 'lang' and {self.where}.instruction "
                            f"is not set; set {self.where}.instruction in the config to the task's instruction")
        lang = lang if lang is not None else str(instruction)
        return _Demo(name, values, image_size=(shape[1], shape[2]), gray=len(shape) == 3, instruction=lang)

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
        if self._cache_images:
            if self._cache is None:
                self._cache = self._load_frames()
            return self._cache[demo][step].copy()
        return self._frames(demo, step)

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
