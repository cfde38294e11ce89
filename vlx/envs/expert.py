"""The scripted expert of `block-reach`: clean action labels, execution noise, and a batched expert policy.

`expert_action` is the label a demonstration stores: move straight at the goal block at full speed
(the last move lands exactly on it) and close the gripper once the goal is within `success_radius`.
Noise is an execution matter only: `perturb` adds Gaussian noise to the two move dimensions of the
action that is *executed*, never to the stored label. `ExpertPolicy` runs the expert inside
`vlx.envs.rollout.rollout` through the state-based `act_envs` interface (it reads the env, not pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vlx.envs.block_reach import BlockReach
from vlx.errors import ConfigError


def expert_action(env: BlockReach) -> np.ndarray:
    """The clean expert label (3,) float32 = (move x, move y, gripper ±1) for the env's current state."""
    delta = env.goal_position - env.agent_position  # (2,)
    move = np.clip(delta / env.max_step, -1.0, 1.0)  # (2,)
    gripper = 1.0 if float(np.linalg.norm(delta)) <= env.success_radius else -1.0
    return np.array([move[0], move[1], gripper], dtype=np.float32)


def perturb(label: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The executed action (3,) float32: `label` plus N(0, noise²) on the move dims, clipped to [-1, 1]."""
    check_noise(noise)
    executed = np.array(label, dtype=np.float32)  # (3,)
    if noise > 0:
        executed[:2] = np.clip(executed[:2] + rng.normal(0.0, noise, size=2), -1.0, 1.0)
    return executed


def check_noise(noise: float) -> None:
    """Raise a ConfigError unless `noise` is a finite standard deviation >= 0."""
    if not np.isfinite(noise) or noise < 0:
        raise ConfigError(f"expert noise={noise}; expected a standard deviation >= 0 (e.g. 0.3)")


@dataclass
class ExpertPolicy:
    """The scripted expert as a rollout policy; `noise` perturbs the executed moves (seeded by `seed`)."""

    noise: float = 0.0
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_noise(self.noise)
        self._rng = np.random.default_rng(self.seed)

    def act_envs(self, envs: Sequence[BlockReach], instructions: list[str]) -> np.ndarray:
        """Actions (B, 3) for a batch of `block-reach` envs (the instructions are not needed)."""
        return np.stack([perturb(expert_action(env), self.noise, self._rng) for env in envs])  # (B, 3)
