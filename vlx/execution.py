"""Executing predicted action chunks, one action per control step: receding horizon or temporal ensembling.

A policy with `chunk_size` K predicts K actions at once. `ChunkExecutor` (one per episode or client session)
turns those chunks into one action per step, the same way in the closed-loop rollouts and in the server:

- **receding horizon** (default): execute the first `execute_steps` actions of a chunk (default all K, as
  OpenVLA-OFT's LIBERO evaluation does), then ask the policy again;
- **temporal ensembling** (`ensemble: exp`, ACT): ask the policy at every step and execute, for the current
  step, the weighted mean of every chunk predicted so far that covers it, weights exp(-m·i) with i = 0 for the
  oldest of those predictions (ACT's `w_i = exp(-m·i)`, "w_0 for the oldest action"; m = `ensemble_weight`,
  ACT's default 0.01), normalised to sum to 1.

A policy with K = 1 needs neither: every step is one prediction. Settings are checked up front and a bad one
(`execute_steps` > K, an unknown `ensemble`) is a one-line ConfigError naming the key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError

ENSEMBLES = ("exp",)


@dataclass(frozen=True)
class ExecutionSettings:
    """How chunks become steps: `execute_steps` actions per chunk (None: all), or ACT's `ensemble`."""

    chunk_size: int = 1
    execute_steps: int | None = None
    ensemble: str | None = None
    ensemble_weight: float = 0.01

    @classmethod
    def from_config(cls, chunk_size: int, node: Mapping[str, Any] | None, where: str = "rollout") -> ExecutionSettings:
        """Checked settings for a policy of `chunk_size` from a config node's `execute_steps`, `ensemble` and
        `ensemble_weight` (other keys are ignored)."""
        node = node or {}
        steps, ensemble = node.get("execute_steps"), node.get("ensemble")
        weight = node.get("ensemble_weight")
        weight = 0.01 if weight is None else weight
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= chunk_size:
                raise ConfigError(f"config key '{where}.execute_steps'={steps!r}; expected a whole number from 1 to "
                                  f"the policy's chunk size {chunk_size} (or null: all {chunk_size})",
                                  kind="execute-steps")
        if ensemble is not None and ensemble not in ENSEMBLES:
            raise ConfigError(f"config key '{where}.ensemble'={ensemble!r}; expected null (receding horizon) or "
                              f"{', '.join(ENSEMBLES)} (ACT's temporal ensembling)")
        if ensemble is not None and steps is not None:
            raise ConfigError(f"config key '{where}': execute_steps and ensemble exclude each other (ensembling asks "
                              "the policy at every step); set one of them")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
            raise ConfigError(f"config key '{where}.ensemble_weight'={weight!r}; expected a number >= 0 (ACT: 0.01)")
        return cls(int(chunk_size), None if steps is None else int(steps), ensemble, float(weight))

    @property
    def steps_per_chunk(self) -> int:
        """Actions executed from each chunk before the next prediction (1 when ensembling)."""
        return 1 if self.ensemble else (self.execute_steps or self.chunk_size)


class ChunkExecutor:
    """One episode's queue of actions: `needs_prediction()`, `add(chunk)`, then `next_action()` each step."""

    def __init__(self, settings: ExecutionSettings) -> None:
        self.settings = settings
        self._queue: deque[np.ndarray] = deque()  # receding horizon: the actions still to execute
        self._chunks: list[tuple[int, np.ndarray]] = []  # ensembling: (step predicted at, chunk (K, A)), oldest first
        self._step = 0

    def needs_prediction(self) -> bool:
        """Whether the policy must be asked before the next action."""
        if self.settings.ensemble:
            return not self._chunks or self._chunks[-1][0] != self._step
        return not self._queue

    def add(self, chunk: np.ndarray) -> None:
        """A prediction made at the current step: (K, A), or (A,) for a policy of one step."""
        chunk = np.asarray(chunk, dtype=np.float64)
        chunk = chunk[None] if chunk.ndim == 1 else chunk  # (K, A)
        if chunk.ndim != 2 or chunk.shape[0] != self.settings.chunk_size:
            raise DataError(f"the policy returned a chunk of shape {chunk.shape}; "
                            f"expected ({self.settings.chunk_size}, action_dim)")
        if self.settings.ensemble:
            self._chunks.append((self._step, chunk))
        else:
            self._queue = deque(chunk[: self.settings.steps_per_chunk])

    def next_action(self) -> np.ndarray:
        """The action (A,) to execute now; advances to the next step."""
        if self.needs_prediction():
            raise DataError("ChunkExecutor.next_action() called before add(): the policy must be asked first")
        if self.settings.ensemble:
            action = self._ensembled()
        else:
            action = self._queue.popleft()
        self._step += 1
        return action.astype(np.float32)

    def _ensembled(self) -> np.ndarray:
        size = self.settings.chunk_size
        self._chunks = [(start, chunk) for start, chunk in self._chunks if self._step - start < size]
        covering = np.stack([chunk[self._step - start] for start, chunk in self._chunks])  # (n, A), oldest first
        weights = np.exp(-self.settings.ensemble_weight * np.arange(len(covering)))  # (n,): w_0 for the oldest
        return (weights[:, None] * covering).sum(0) / weights.sum()  # (A,)
