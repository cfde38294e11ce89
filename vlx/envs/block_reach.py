"""`block-reach`: the built-in closed-loop robot task, small enough for a tiny VLA to learn on a CPU.

A point gripper moves in the arena [0, 1]² among `num_blocks` coloured square blocks and must close its
gripper within `success_radius` of the block named by the instruction ("move to the red block"). The
policy sees an agent-centred camera (`agentview_image`): the `image_size`² image shows the world window
p + [-1, 1]² around the agent position p, so the whole arena is always in view and the agent is always at
the image centre; and a wrist camera (`wrist_image`): the close window p + [-w, w]² (w = `wrist_half_width`,
0.25: a block fills a fifth of it) with the gripper drawn at the centre, white when open and black when
closed. The proprio state is `agent_pos` (x, y) and `gripper` (1 closed, 0 open).
Image convention: x grows to the right, world y grows *up* (row 0 is the top of the window, y = p_y + 1).
Episodes follow the Gymnasium API (`reset(seed)` → (obs, info); `step(a)` → (obs, reward, terminated,
truncated, info)) and `reset(seed)` determines the whole episode. Rendering is numpy slicing only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError
from vlx.registry import ENVIRONMENTS

PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("green", (40, 180, 60)),
    ("blue", (50, 90, 230)),
    ("yellow", (230, 210, 40)),
    ("purple", (150, 60, 200)),
)
OUTSIDE = (40, 40, 40)
FLOOR = (200, 200, 200)
AGENT_OPEN = (255, 255, 255)
AGENT_CLOSED = (20, 20, 20)
GOAL_OUTLINE = (20, 20, 20)
ENV_NAME = "block-reach"
ENV_TYPE = "vlx"  # not one of robomimic's EnvType ints: build it with vlx.registry.ENVIRONMENTS
MAX_TRIES = 10_000  # rejection-sampling attempts per position before the layout is declared impossible


class EnvStepError(DataError, ValueError):
    """An action or a `step()`/`reset()` call order that the environment cannot accept."""


def _span(lo: float, hi: float, pixels_per_unit: float, n: int) -> slice:
    """Indices i in [0, n) whose pixel centres (i + 0.5) / pixels_per_unit lie in [lo, hi]."""
    start = max(math.ceil(lo * pixels_per_unit - 0.5), 0)
    stop = min(math.floor(hi * pixels_per_unit - 0.5) + 1, n)
    return slice(start, max(start, stop))


def fill_box(image: np.ndarray, view: tuple[float, float, float], centre: np.ndarray, half: float,
             colour: tuple[int, int, int]) -> None:
    """Paint the world square `centre` ± `half` into `image` (H, W, 3) seen through `view`.

    `view` = (left, top, pixels_per_unit): the world x of the image's left edge, the world y of its top
    edge and the scale; world y points up, image rows down.
    """
    left, top, ppu = view
    rows = _span(top - centre[1] - half, top - centre[1] + half, ppu, image.shape[0])
    cols = _span(centre[0] - half - left, centre[0] + half - left, ppu, image.shape[1])
    image[rows, cols] = colour


@ENVIRONMENTS.register(ENV_NAME)
class BlockReach:
    """Reach the instructed block and close the gripper; see the module docstring for the conventions."""

    action_dim = 3

    def __init__(self, num_blocks: int = 3, image_size: int = 64, block_size: float = 0.16, max_step: float = 0.1,
                 success_radius: float = 0.1, max_steps: int = 30, block_distance: float = 0.25,
                 start_distance: float = 0.3, wrist_half_width: float = 0.25) -> None:
        if not 1 <= num_blocks <= len(PALETTE):
            raise ConfigError(f"block-reach: num_blocks={num_blocks}; expected 1..{len(PALETTE)} (one colour each)")
        if image_size < 4 or image_size % 2:
            raise ConfigError(f"block-reach: image_size={image_size}; expected an even size >= 4")
        if max_steps < 1 or min(block_size, max_step, success_radius, wrist_half_width) <= 0:
            raise ConfigError("block-reach: max_steps, block_size, max_step, success_radius and wrist_half_width must "
                              "be positive")
        self.num_blocks, self.image_size, self.block_size = num_blocks, image_size, block_size
        self.max_step, self.success_radius, self.max_steps = max_step, success_radius, max_steps
        self.block_distance, self.start_distance = block_distance, start_distance
        self.wrist_half_width = wrist_half_width
        self._kwargs = dict(num_blocks=num_blocks, image_size=image_size, block_size=block_size, max_step=max_step,
                            success_radius=success_radius, max_steps=max_steps, block_distance=block_distance,
                            start_distance=start_distance, wrist_half_width=wrist_half_width)
        self._blocks: np.ndarray | None = None  # (K, 2) block centres; None until reset()

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; with a seed the layout, colours and goal are fully determined by it."""
        rng = np.random.default_rng(seed)
        self._colours = rng.choice(len(PALETTE), size=self.num_blocks, replace=False)  # (K,) palette indices
        blocks: list[np.ndarray] = []
        for _ in range(self.num_blocks):
            blocks.append(self._sample(rng, 0.1, 0.9, blocks, self.block_distance, "block"))
        self._blocks = np.stack(blocks)  # (K, 2)
        self._agent = self._sample(rng, 0.05, 0.95, blocks, self.start_distance, "agent start")  # (2,)
        self._goal = int(rng.integers(self.num_blocks))
        self._closed, self._steps, self._success, self._done = False, 0, False, False
        return self._observation(), {"instruction": self.instruction, "seed": seed}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action (3,) = (dx, dy, gripper) in [-1, 1]; gripper closed iff action[2] > 0."""
        if self._blocks is None or self._done:
            raise EnvStepError("block-reach: step() called " + ("before reset()" if self._blocks is None
                                                                  else "after the episode ended; call reset()"))
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.action_dim,):
            raise EnvStepError(f"block-reach: action has shape {a.shape}; "
                               f"expected ({self.action_dim},) = (dx, dy, gripper)")
        if not np.all(np.isfinite(a)):
            raise EnvStepError(f"block-reach: action {a.tolist()} has a non-finite value")
        a = np.clip(a, -1.0, 1.0)
        self._agent = np.clip(self._agent + self.max_step * a[:2], 0.0, 1.0)  # (2,)
        self._closed = bool(a[2] > 0)
        self._steps += 1
        reached = float(np.linalg.norm(self._agent - self._blocks[self._goal])) <= self.success_radius
        self._success = self._success or (reached and self._closed)
        terminated = self._success
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        info = {"success": self._success, "steps": self._steps}
        return self._observation(), float(self._success), terminated, truncated, info

    def is_success(self) -> bool:
        """Whether the episode has succeeded (latched)."""
        return self._success if self._blocks is not None else False

    @property
    def instruction(self) -> str:
        """The language instruction of the current episode."""
        return f"move to the {self.goal_colour} block"

    @property
    def goal_colour(self) -> str:
        """Colour name of the goal block."""
        self._require_reset()
        return PALETTE[self._colours[self._goal]][0]

    @property
    def agent_position(self) -> np.ndarray:
        """Agent position (2,) float64 (a copy)."""
        self._require_reset()
        return self._agent.copy()

    @property
    def goal_position(self) -> np.ndarray:
        """Goal block centre (2,) float64 (a copy)."""
        self._require_reset()
        return self._blocks[self._goal].copy()

    @property
    def block_positions(self) -> np.ndarray:
        """Block centres (K, 2) float64 (a copy)."""
        self._require_reset()
        return self._blocks.copy()

    @property
    def steps(self) -> int:
        """Steps taken in the current episode."""
        return self._steps if self._blocks is not None else 0

    def state(self) -> np.ndarray:
        """Flat float32 state (3 + 3K + 1,): agent x, y, gripper, block x, y per block, goal index, colour indices."""
        self._require_reset()
        return np.concatenate([self._agent, [float(self._closed)], self._blocks.reshape(-1), [self._goal],
                               self._colours]).astype(np.float32)

    def env_args(self) -> dict[str, Any]:
        """robomimic's `env_args` record: env_name, type and the constructor arguments."""
        return {"env_name": ENV_NAME, "type": ENV_TYPE, "env_kwargs": dict(self._kwargs)}

    # ------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray:
        """The agent-centred camera image (image_size, image_size, 3) uint8 (window p + [-1, 1]²)."""
        self._require_reset()
        size = self.image_size
        image = self._draw_arena(size, (self._agent[0] - 1.0, self._agent[1] + 1.0, size / 2.0))  # (S, S, 3)
        c = size // 2
        image[c - 1:c + 1, c - 1:c + 1] = AGENT_OPEN  # 2x2 marker on the centre = the agent position
        return image

    def render_wrist(self) -> np.ndarray:
        """The wrist camera (image_size, image_size, 3) uint8: window p + [-w, w]² with the gripper at the centre."""
        self._require_reset()
        size, half = self.image_size, self.wrist_half_width
        image = self._draw_arena(size, (self._agent[0] - half, self._agent[1] + half, size / (2 * half)))  # (S, S, 3)
        c, r = size // 2, max(1, size // 16)
        image[c - r:c + r, c - r:c + r] = AGENT_CLOSED if self._closed else AGENT_OPEN  # the gripper
        return image

    def render_scene(self, size: int = 128) -> np.ndarray:
        """A fixed view of the whole arena (size, size, 3) uint8 with the goal outlined and the agent drawn
        (white when the gripper is open, black when closed)."""
        self._require_reset()
        view = (0.0, 1.0, float(size))
        goal = self._blocks[self._goal]
        image = self._draw_arena(size, view, outline=(goal, self.block_size / 2 + 2.0 / size))  # (S, S, 3)
        fill_box(image, view, self._agent, 0.025, AGENT_CLOSED if self._closed else AGENT_OPEN)
        return image

    def _draw_arena(self, size: int, view: tuple[float, float, float],
                    outline: tuple[np.ndarray, float] | None = None) -> np.ndarray:
        image = np.empty((size, size, 3), dtype=np.uint8)  # (S, S, 3)
        image[:] = OUTSIDE
        fill_box(image, view, np.array([0.5, 0.5]), 0.5, FLOOR)
        if outline is not None:
            fill_box(image, view, outline[0], outline[1], GOAL_OUTLINE)
        for centre, colour in zip(self._blocks, self._colours, strict=True):
            fill_box(image, view, centre, self.block_size / 2, PALETTE[colour][1])
        return image

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "agentview_image": self.render(),  # (H, W, 3) uint8
            "wrist_image": self.render_wrist(),  # (H, W, 3) uint8
            "agent_pos": self._agent.astype(np.float32),  # (2,)
            "gripper": np.array([float(self._closed)], dtype=np.float32),  # (1,)
        }

    def _sample(self, rng: np.random.Generator, lo: float, hi: float, others: list[np.ndarray], min_distance: float,
                what: str) -> np.ndarray:
        """A uniform point in [lo, hi]² at distance >= min_distance from every point of `others` (rejection)."""
        for _ in range(MAX_TRIES):
            point = rng.uniform(lo, hi, size=2)  # (2,)
            if all(np.linalg.norm(point - other) >= min_distance for other in others):
                return point
        raise ConfigError(f"block-reach: cannot place the {what} {min_distance} away from {len(others)} blocks "
                          f"in [{lo}, {hi}]²; lower num_blocks, block_distance or start_distance")

    def _require_reset(self) -> None:
        if self._blocks is None:
            raise EnvStepError("block-reach: the environment has no episode yet; call reset() first")
