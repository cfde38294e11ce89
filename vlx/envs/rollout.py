"""Closed-loop evaluation: run a batched policy in up to `batch_size` environments in lockstep.

A policy is either an observation policy, `policy(observations, instructions)` with `observations` the
environments' observation dicts (camera frames as uint8 (H, W, 3), low-dim state arrays), returning
(B, action_dim) actions or (B, K, action_dim) chunks, or a state policy that implements
`act_envs(envs, instructions)` (the `EnvPolicy` protocol; the scripted `ExpertPolicy` does, since it reads the
env state, not pixels). Chunks are executed by one `ChunkExecutor` per episode (receding horizon or temporal
ensembling, `vlx.execution`); the policy is asked only for the episodes whose executor needs a prediction.
Each episode resets its own environment with its seed and runs until success or truncation; finished
environments leave the batch and the next seeds take their places. `instruction_override` replaces the
instruction the policy sees (the language-blind control) while results keep the task's own instruction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from rich.console import Console
from rich.progress import Progress

from vlx.envs.video import compose_frame, write_gif
from vlx.errors import ConfigError, DataError
from vlx.execution import ChunkExecutor, ExecutionSettings
from vlx.registry import ENVIRONMENTS

ObservationPolicy = Callable[[list[dict[str, np.ndarray]], list[str]], np.ndarray]


class ClosedLoopEnv(Protocol):
    """What `rollout` needs from an environment (`BlockReach` is one)."""

    action_dim: int
    max_steps: int

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...
    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]: ...
    def is_success(self) -> bool: ...
    @property
    def instruction(self) -> str: ...
    def render_scene(self, size: int = 128) -> np.ndarray: ...


@runtime_checkable
class EnvPolicy(Protocol):
    """A policy that acts from the environments themselves (privileged state), e.g. the scripted expert."""

    def act_envs(self, envs: Sequence[Any], instructions: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluated episode; `instruction` is the task's own (not the override)."""

    seed: int
    instruction: str
    success: bool
    steps: int


@dataclass(frozen=True)
class RolloutResult:
    """All episodes in the order of the seeds, and the GIFs written."""

    episodes: list[EpisodeResult]
    videos: list[Path] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Fraction of successful episodes."""
        return sum(e.success for e in self.episodes) / len(self.episodes)

    @property
    def mean_steps(self) -> float:
        """Average episode length in steps."""
        return sum(e.steps for e in self.episodes) / len(self.episodes)


@dataclass
class _Running:
    """An episode in progress."""

    index: int
    seed: int
    env: ClosedLoopEnv
    obs: dict[str, np.ndarray]
    frames: list[np.ndarray] | None  # None when this episode gets no video
    executor: ChunkExecutor
    steps: int = 0


def env_factory(env_name_or_factory: str | Callable[..., ClosedLoopEnv],
                env_kwargs: dict[str, Any] | None = None) -> Callable[[], ClosedLoopEnv]:
    """A no-argument env constructor from a registry name (arguments checked) or a factory."""
    kwargs = dict(env_kwargs or {})
    if isinstance(env_name_or_factory, str):
        name = env_name_or_factory
        return lambda: ENVIRONMENTS.build({"name": name, **kwargs}, where="env")
    return lambda: env_name_or_factory(**kwargs)


def _act(policy: ObservationPolicy | EnvPolicy, batch: list[_Running], instruction_override: str | None,
         chunk_size: int) -> np.ndarray:
    """Query `policy` once for the batch; returns (B, K, action_dim) chunks after checking the shape."""
    instructions = [instruction_override or run.env.instruction for run in batch]
    if isinstance(policy, EnvPolicy):
        actions = policy.act_envs([run.env for run in batch], instructions)
    else:
        actions = policy([run.obs for run in batch], instructions)
    actions = np.asarray(actions)  # (B, A) | (B, K, A)
    chunks = actions[:, None] if actions.ndim == 2 else actions  # (B, K, A)
    expected = (len(batch), chunk_size, batch[0].env.action_dim)
    if chunks.shape != expected:
        raise DataError(f"rollout: the policy returned actions of shape {actions.shape} for a batch of "
                        f"{len(batch)}; expected {expected if chunk_size > 1 else expected[::2]}")
    return chunks


def _frame(run: _Running, image_key: str) -> None:
    if run.frames is not None:
        run.frames.append(compose_frame(run.env.render_scene(), run.obs[image_key], run.steps / run.env.max_steps))


def rollout(policy: ObservationPolicy | EnvPolicy, env_name_or_factory: str | Callable[..., ClosedLoopEnv],
            seeds: list[int], *, env_kwargs: dict[str, Any] | None = None, instruction_override: str | None = None,
            num_videos: int = 0, video_dir: Path | None = None, batch_size: int = 16,
            image_key: str = "agentview_image", execution: ExecutionSettings | None = None) -> RolloutResult:
    """Evaluate `policy` on one episode per seed; GIFs of the first `num_videos` go to `video_dir`.

    `execution` says how the policy's chunks become steps (default: one action per prediction); `image_key`
    is the camera shown in the videos."""
    execution = execution or ExecutionSettings()
    if not seeds:
        raise ConfigError("rollout: seeds is empty; give at least one episode seed")
    if batch_size < 1:
        raise ConfigError(f"rollout: batch_size={batch_size}; expected at least 1")
    if num_videos > 0 and video_dir is None:
        raise ConfigError(f"rollout: num_videos={num_videos} needs a video_dir")
    make = env_factory(env_name_or_factory, env_kwargs)
    pending = deque(enumerate(seeds))
    running: list[_Running] = []
    results: dict[int, EpisodeResult] = {}
    videos: dict[int, Path] = {}
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("rollout", total=len(seeds))
        while pending or running:
            while pending and len(running) < batch_size:
                index, seed = pending.popleft()
                env = make()
                run = _Running(index, seed, env, env.reset(seed)[0], [] if index < num_videos else None,
                               ChunkExecutor(execution))
                _frame(run, image_key)
                running.append(run)
            asking = [run for run in running if run.executor.needs_prediction()]
            if asking:
                for run, chunk in zip(asking, _act(policy, asking, instruction_override, execution.chunk_size),
                                      strict=True):
                    run.executor.add(chunk)  # (K, A)
            still: list[_Running] = []
            for run in running:
                run.obs, _, terminated, truncated, _ = run.env.step(run.executor.next_action())
                run.steps += 1
                _frame(run, image_key)
                if not (terminated or truncated):
                    still.append(run)
                    continue
                results[run.index] = EpisodeResult(run.seed, run.env.instruction, run.env.is_success(), run.steps)
                close = getattr(run.env, "close", None)
                if close is not None:  # simulators hold render contexts
                    close()
                if run.frames is not None:
                    videos[run.index] = write_gif(run.frames, Path(video_dir) / f"episode_{run.seed}.gif")
                progress.advance(task)
            running = still
    return RolloutResult([results[i] for i in range(len(seeds))], [videos[i] for i in sorted(videos)])
