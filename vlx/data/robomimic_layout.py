"""Validation of the robomimic HDF5 layout, one demo at a time, so problems can be raised or collected.

`DemoReader` knows where a file keeps its demos (`data/demo_N`), their subsets (`mask/<filter_key>`) and
what a usable demo holds: a numeric (T, A) `action_key` dataset with finite values and a matching
`num_samples` attr, uint8 camera frames `obs/<camera>` (T, H, W[, 3|4]) for each of its camera keys, finite
numeric low-dim `obs/<state key>` arrays (T,) or (T, d) for each state key (concatenated in order into the
robot state), and an instruction (the `lang` of the demo's `ep_meta` JSON attr, else the configured one).
Each problem is a DataError naming the file, the demo and the key, with a `kind` from docs/errors.md.
`read_demos` checks every demo and returns the good ones with the problems found; `RobomimicFile` raises
the first problem, while `vlx data check` reports them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlx.data.action_stats import first_nonfinite_row
from vlx.errors import ConfigError, DataError


def check_hdf5_path(path: Path) -> None:
    """A DataError unless `path` is an existing HDF5 file."""
    if not path.is_file():
        raise DataError(f"{path}: robomimic HDF5 file not found", kind="missing-file")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file (expected a robomimic dataset)", kind="not-hdf5")


def demo_order(name: str) -> tuple[int, int, str]:
    """Sort key: `demo_N` by N (so demo_2 < demo_10), anything else after them by name."""
    match = re.fullmatch(r"demo_(\d+)", name)
    return (0, int(match.group(1)), name) if match else (1, 0, name)


def json_attr(attrs: h5py.AttributeManager, name: str, where: str) -> dict[str, Any] | None:
    """The JSON object stored in string attribute `name`, or None when the attribute is absent."""
    raw = attrs.get(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: attribute {name!r} is not valid JSON ({exc})", kind="bad-attribute") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: attribute {name!r} must be a JSON object, got {type(value).__name__}",
                        kind="bad-attribute")
    return value


@dataclass(frozen=True)
class Demo:
    """What validation learned about one demo; `image_sizes` and `gray` follow the reader's camera keys."""

    name: str
    actions: np.ndarray  # (T, A) float32
    image_sizes: tuple[tuple[int, int], ...]  # (H, W) per camera
    gray: tuple[bool, ...]  # per camera
    instruction: str
    state: np.ndarray | None = None  # (T, P) float32, the state keys concatenated; None without state keys

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first camera."""
        return self.image_sizes[0]


def key_list(keys: str | Sequence[str] | None, what: str, where: str) -> tuple[str, ...]:
    """`keys` as a tuple of non-empty, distinct strings (a single string is one key; None is none)."""
    if keys is None:
        return ()
    values = (keys,) if isinstance(keys, str) else tuple(keys)
    if not all(isinstance(key, str) and key for key in values):
        raise ConfigError(f"config key '{where}' must be a list of non-empty {what} names, got {list(values)!r:.120}")
    if len(set(values)) != len(values):
        raise ConfigError(f"config key '{where}' names a {what} twice: {list(values)}")
    return values


@dataclass(frozen=True)
class DemoReader:
    """Reads and checks the demos of the file at `path`; `where` is the config path of the reader's
    arguments (e.g. `data`), so messages can name `{where}.camera_key` and the like.

    `camera_key` is one camera (config key `camera_key`) or an ordered list (config key `camera_keys`);
    `state_keys` are the low-dim obs keys whose concatenation is the robot state (none: no state).
    """

    path: Path
    camera_key: str | Sequence[str] = "agentview_image"
    action_key: str = "actions"
    where: str = "data"
    state_keys: Sequence[str] | None = None

    def __post_init__(self) -> None:
        single = isinstance(self.camera_key, str)
        cameras = key_list(self.camera_key, "camera", f"{self.where}.camera_key{'' if single else 's'}")
        if not cameras:
            raise ConfigError(f"config key '{self.where}.camera_keys' is empty; name at least one camera")
        object.__setattr__(self, "camera_keys", cameras)
        object.__setattr__(self, "camera_fields", [f"{self.where}.camera_key"] if single else
                           [f"{self.where}.camera_keys[{i}]" for i in range(len(cameras))])
        object.__setattr__(self, "state_keys", key_list(self.state_keys, "state", f"{self.where}.state_keys"))

    def demo_names(self, file: h5py.File) -> list[str]:
        """The demo groups under `data/`, in demo-number order."""
        data = file.get("data")
        if not isinstance(data, h5py.Group):
            raise DataError(f"{self.path}: no 'data' group; a robomimic file keeps its demos in data/demo_N",
                            kind="no-data-group")
        names = sorted((name for name, item in data.items() if isinstance(item, h5py.Group)), key=demo_order)
        if not names:
            raise DataError(f"{self.path}: the 'data' group holds no demos (expected data/demo_0, data/demo_1, ...)",
                            kind="no-demos")
        return names

    def filter(self, file: h5py.File, names: list[str], filter_key: str) -> list[str]:
        """The demos (in file order) that `mask/<filter_key>` lists."""
        masks = file.get("mask")
        available = sorted(masks) if isinstance(masks, h5py.Group) else []
        listed = masks.get(filter_key) if isinstance(masks, h5py.Group) else None
        if not isinstance(listed, h5py.Dataset):
            raise DataError(f"{self.path}: filter key {filter_key!r} ({self.where}.filter_key) is not in the file; "
                            f"its mask/ keys are {available}", kind="unknown-filter-key")
        selected = {v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(listed[()])}
        if not selected:
            raise DataError(f"{self.path}: filter key mask/{filter_key} lists no demos; expected demo names such "
                            "as b'demo_0'", kind="empty-filter-key")
        unknown = sorted(selected - set(names), key=demo_order)
        if unknown:
            raise DataError(f"{self.path}: filter key mask/{filter_key} names demos that are not in data/: {unknown}",
                            kind="bad-filter-key")
        return [name for name in names if name in selected]

    def read_demos(self, file: h5py.File, names: list[str],
                   instruction: str | None) -> tuple[list[Demo], list[DataError]]:
        """Every named demo checked: the good ones, and the problems (each demo's, then disagreements with the
        first good demo on the action dim or the image size)."""
        demos, problems = [], []
        for name in names:
            try:
                demos.append(self.read_demo(file["data"][name], name, instruction))
            except DataError as problem:
                problems.append(problem)
        for demo in demos[1:]:  # every demo must agree with the first on these
            checks = [("action-dim-mismatch", "action dim", demo.actions.shape[1], demos[0].actions.shape[1])]
            checks += [("image-size-mismatch", f"obs/{camera} image size (H, W)", size, first)
                       for camera, size, first in zip(self.camera_keys, demo.image_sizes, demos[0].image_sizes,
                                                      strict=True)]
            if demo.state is not None and demos[0].state is not None:
                checks.append(("state-dim-mismatch", f"state dim (obs/{' + obs/'.join(self.state_keys)})",
                               demo.state.shape[1], demos[0].state.shape[1]))
            for kind, what, value, expected in checks:
                if value != expected:
                    problems.append(DataError(f"{self.path}: demo {demo.name} has {what} {value} but demo "
                                              f"{demos[0].name} has {expected}; every demo must share one {what}",
                                              kind=kind))
        return demos, problems

    def read_demo(self, group: h5py.Group, name: str, instruction: str | None) -> Demo:
        """Check one demo's actions, camera frames (shapes only), state and instruction (ep_meta lang, else config)."""
        where = f"{self.path}: demo {name}"
        values = self._actions(group, where)  # (T, A)
        obs = group.get("obs")
        shapes = [self._camera_shape(obs, camera, field, len(values), where)
                  for camera, field in zip(self.camera_keys, self.camera_fields, strict=True)]
        state = np.concatenate([self._state(obs, key, i, len(values), where) for i, key in enumerate(self.state_keys)],
                               axis=1) if self.state_keys else None  # (T, P)
        lang = (json_attr(group.attrs, "ep_meta", where) or {}).get("lang")  # the demo's own instruction
        if lang is not None and (not isinstance(lang, str) or not lang.strip()):
            raise DataError(f"{where}: ep_meta 'lang' must be a non-empty string, got {lang!r:.80}",
                            kind="bad-attribute")
        if lang is None and instruction is None:
            raise DataError(f"{where}: no instruction: the demo has no ep_meta 'lang' and {self.where}.instruction "
                            f"is not set; set {self.where}.instruction in the config to the task's instruction",
                            kind="no-instruction")
        lang = lang if lang is not None else str(instruction)
        return Demo(name, values, image_sizes=tuple((shape[1], shape[2]) for shape in shapes),
                    gray=tuple(len(shape) == 3 for shape in shapes), instruction=lang, state=state)

    def _camera_shape(self, obs: Any, camera: str, field: str, steps: int, where: str) -> tuple[int, ...]:
        """The shape of a demo's `obs/<camera>` frames, checked: uint8 images, one frame per step."""
        frames = obs.get(camera) if isinstance(obs, h5py.Group) else None
        if not isinstance(frames, h5py.Dataset):
            obs_keys = sorted(obs) if isinstance(obs, h5py.Group) else []
            raise DataError(f"{where}: no camera obs/{camera} ({field}); the demo's obs keys are {obs_keys}",
                            kind="missing-camera")
        shape = frames.shape
        if frames.dtype != np.uint8 or not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (3, 4))):
            raise DataError(f"{where}: obs/{camera} must be uint8 (T, H, W, 3) images (or (T, H, W) "
                            f"grayscale, (T, H, W, 4) RGBA), got {frames.dtype} {shape}", kind="bad-camera")
        if shape[0] != steps:
            raise DataError(f"{where}: obs/{camera} has {shape[0]} frames but {self.action_key!r} has "
                            f"{steps} steps; every step needs one frame", kind="frame-count")
        return shape

    def _state(self, obs: Any, key: str, index: int, steps: int, where: str) -> np.ndarray:
        """A demo's low-dim `obs/<key>` as (T, d) float32: present, numeric, finite, one row per step."""
        field = f"{self.where}.state_keys[{index}]"
        values = obs.get(key) if isinstance(obs, h5py.Group) else None
        if not isinstance(values, h5py.Dataset):
            obs_keys = sorted(obs) if isinstance(obs, h5py.Group) else []
            raise DataError(f"{where}: no state obs/{key} ({field}); the demo's obs keys are {obs_keys}",
                            kind="missing-state")
        if values.ndim not in (1, 2) or values.dtype.kind not in "fiub" or values.shape[0] != steps:
            raise DataError(f"{where}: obs/{key} ({field}) must be a numeric (T,) or (T, d) array with one row per "
                            f"step (T={steps}), got {values.dtype} {values.shape}", kind="bad-state")
        array = values[()].astype(np.float32).reshape(steps, -1)  # (T, d)
        step = first_nonfinite_row(array)
        if step is not None:
            raise DataError(f"{where}: obs/{key} ({field}) at step {step} is not finite ({array[step].tolist()}); "
                            "every state value must be a finite number", kind="nonfinite-state")
        return array

    def _actions(self, group: h5py.Group, where: str) -> np.ndarray:
        """The demo's (T, A) float32 actions: present, numeric, 2-D, finite, and as many as `num_samples`."""
        actions = group.get(self.action_key)
        if not isinstance(actions, h5py.Dataset):
            raise DataError(f"{where}: no {self.action_key!r} dataset ({self.where}.action_key); "
                            f"the demo has {sorted(group)}", kind="missing-actions")
        if actions.ndim != 2 or actions.dtype.kind not in "fiu" or 0 in actions.shape:
            raise DataError(f"{where}: {self.action_key!r} must be a non-empty numeric (T, A) array, "
                            f"got {actions.dtype} {actions.shape}", kind="bad-actions")
        values = actions[()].astype(np.float32)  # (T, A)
        step = first_nonfinite_row(values)
        if step is not None:
            raise DataError(f"{where}: {self.action_key!r} at step {step} is not finite ({values[step].tolist()}); "
                            "every action must be a finite number", kind="nonfinite-actions")
        num_samples = np.asarray(group.attrs.get("num_samples", len(values))).tolist()  # robomimic indexes by it
        if num_samples != len(values):
            raise DataError(f"{where}: attr num_samples={num_samples!r} but {self.action_key!r} has {len(values)} rows",
                            kind="num-samples")
        return values
