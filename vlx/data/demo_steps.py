"""The steps of a set of demonstrations, indexed in demo order, whatever file format holds them.

`DemoSteps` keeps what every sample needs besides its pixels in memory — each demo's name and instruction,
all actions (N × A float32), all states (N × P) when the source has a state, and where each demo ends — and
answers the index questions the datasets, the offline metrics and `vlx data check` ask: a sample's demo and
step, its action, the chunk of actions t..t+K-1 of its demo (steps past the demo's end repeat its last action
and are marked in a mask), its state and instruction. A subclass reads the frames (`_frame`): robomimic HDF5
(`vlx.data.robomimic_hdf5.RobomimicFile`) or a LeRobot dataset directory (`vlx.data.lerobot.LeRobotDir`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import ConfigError


@dataclass(frozen=True)
class DemoStep:
    """One sample: where it is, its camera frames (H, W, 3) uint8 by key, action (A,), state (P,) or None."""

    demo: str
    step: int
    frames: dict[str, np.ndarray]
    action: np.ndarray
    state: np.ndarray | None
    instruction: str


class DemoSteps(ABC):
    """Index logic over demos held as (name, instruction, actions (T, A), states (T, P) or None) each."""

    path: Path
    where: str
    action_key: str
    camera_keys: list[str]
    state_keys: list[str]
    image_sizes: list[tuple[int, int]]
    _env_args: dict[str, Any]

    def _hold(self, names: Sequence[str], instructions: Sequence[str], actions: Sequence[np.ndarray],
              states: Sequence[np.ndarray] | None) -> None:
        """Keep the demos' names, instructions, actions and states (each a list in demo order)."""
        self.demos: list[str] = list(names)
        self._instructions = list(instructions)
        self.action_dim: int = int(actions[0].shape[1])
        self._actions = np.concatenate(actions).astype(np.float32, copy=False)  # (N, A)
        self.state_dim: int | None = None if states is None else int(states[0].shape[1])
        self._states = None if states is None else np.concatenate(states).astype(np.float32, copy=False)  # (N, P)
        self._ends = np.cumsum([len(a) for a in actions])  # (D,) exclusive end of each demo

    @abstractmethod
    def _frame(self, demo: int, step: int, camera: int) -> np.ndarray:
        """Frame `step` of camera `camera` of the demo at position `demo`, (H, W, 3) uint8."""

    @abstractmethod
    def episode_frames(self, demo: int, camera: int) -> np.ndarray:
        """Every frame of camera `camera` of the demo at position `demo`, (T, H, W, 3) uint8."""

    def demo_rows(self, demo: int) -> slice:
        """The sample indices of the demo at position `demo` (into `actions()` and `states()`)."""
        return slice(int(self._ends[demo - 1]) if demo else 0, int(self._ends[demo]))

    @property
    def camera_key(self) -> str:
        """The first camera's key."""
        return self.camera_keys[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first camera."""
        return self.image_sizes[0]

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
        return demo, index - self.demo_rows(demo).start, index

    def locate(self, index: int) -> tuple[str, int]:
        """Sample index → (demo name, step)."""
        demo, step, _ = self._position(index)
        return self.demos[demo], step

    def steps_left(self, index: int) -> int:
        """How many steps of its demo a sample has from its own on (1 at the demo's last step)."""
        demo, _, flat = self._position(index)
        return int(self._ends[demo]) - flat

    def image(self, index: int, camera: int = 0) -> np.ndarray:
        """A camera frame of a sample (the first camera by default), (H, W, 3) uint8."""
        demo, step, _ = self._position(index)
        return self._frame(demo, step, camera)

    def images(self, index: int) -> dict[str, np.ndarray]:
        """Every camera's frame of a sample, by key, (H, W, 3) uint8 each."""
        demo, step, _ = self._position(index)
        return {key: self._frame(demo, step, camera) for camera, key in enumerate(self.camera_keys)}

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
        """The state of a sample, (P,) float32; a ConfigError when the source was opened without state keys."""
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
        """The source's environment description ({} when it has none)."""
        return copy.deepcopy(self._env_args)
