"""Record Meta-World demonstrations from its scripted experts as one robomimic-layout HDF5 file.

For each task, `demos_per_task` successful episodes of `metaworld.policies`' expert (noiseless; an episode ends
at its first success, so a demo stops there), in the layout of `vlx.envs.record` (whose helpers write it):
`data/demo_{i}` with attrs `num_samples`, `seed`, `task`, `ep_meta` = JSON `{"lang": instruction}`; datasets
`actions` (T, 4) float32 (the executed expert actions, clipped to [-1, 1]), `rewards` (T,) Meta-World's dense
reward, `dones` (T,), `states` (T, S) MuJoCo's qpos/qvel/mocap state before each action; `obs/` and `next_obs/`
with `{camera}_image` uint8 (T, H, W, 3) for each camera, `agentview_image` (an HDF5 hard link to the first
camera: the key single-camera loaders and `vlx data check` use), `agent_pos` (T, 4) and `state` (T, 39).
`mask/train` and `mask/valid` split every task alike (its last round(valid_fraction · demos) demos are valid),
and `mask/{task}` lists each task's demos. Episode k of a task uses env seed `seed * SEED_STRIDE + k`; failed
episodes are rejected and counted. The file is written to a temporary path and renamed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from vlx.envs.block_reach import ENV_TYPE
from vlx.envs.gym_adapter import CAMERA_KEY
from vlx.envs.metaworld_env import ENV_NAME, MetaWorldEnv, camera_names
from vlx.envs.metaworld_tasks import resolve_tasks
from vlx.envs.record import (
    SEED_STRIDE,
    Episode,
    atomic_hdf5,
    check_recording,
    stack_obs,
    write_demo,
    write_mask,
    write_masks,
)
from vlx.errors import ConfigError

MAX_ATTEMPTS_PER_DEMO = 5  # give up on a task when its expert fails this often (a failed episode costs max_steps)


@dataclass(frozen=True)
class MetaWorldRecording:
    """What `record_metaworld` wrote; `rejected[task]` counts the expert's failed episodes of each task."""

    path: Path
    tasks: list[str]
    demos: int
    samples: int
    rejected: dict[str, int]

    def expert_success_rate(self, task: str) -> float:
        """Kept / attempted episodes of `task`."""
        kept = self.demos // len(self.tasks)
        return kept / (kept + self.rejected[task])


def run_expert_episode(env: MetaWorldEnv, seed: int) -> Episode:
    """One episode of the env's scripted expert from the scene of `seed`."""
    obs, info = env.reset(seed)
    frames, actions, rewards, states = [obs], [], [], []
    done = False
    while not done:
        actions.append(env.expert_action())  # (4,)
        states.append(env.sim_state())
        obs, reward, terminated, truncated, _ = env.step(actions[-1])
        frames.append(obs)
        rewards.append(reward)
        done = terminated or truncated
    keys = [key for key in obs if key != CAMERA_KEY]  # the alias is written as a link
    return Episode(seed=seed, instruction=info["instruction"], success=env.is_success(),
                   obs=stack_obs(frames[:-1], keys), next_obs=stack_obs(frames[1:], keys),
                   actions=np.stack(actions), rewards=np.array(rewards), states=np.stack(states))  # (T, 4) (T,) (T, S)


def record_metaworld(out: Path, tasks: str | Sequence[str], demos_per_task: int, seed: int = 0,
                     valid_fraction: float = 0.1, cameras: str | Sequence[str] = "corner2", image_size: int = 64,
                     max_steps: int = 500) -> MetaWorldRecording:
    """Write `demos_per_task` successful expert demos of each task (names or groups, `resolve_tasks`) to `out`."""
    check_recording(("--demos", demos_per_task), ("--seed", seed), ("--valid-fraction", valid_fraction))
    names, cameras = resolve_tasks(tasks, "--tasks"), camera_names(cameras)
    links = {CAMERA_KEY: f"{cameras[0]}_image"}  # agentview_image: a second name for the first camera
    num_valid = round(valid_fraction * demos_per_task)
    out, samples, index = Path(out), 0, 0
    rejected: dict[str, int] = {}
    train: list[str] = []
    valid: list[str] = []
    with atomic_hdf5(out) as f, Progress(transient=True, console=Console(stderr=True)) as progress:
        bar = progress.add_task(f"recording {out.name}", total=len(names) * demos_per_task)
        data = f.create_group("data")
        for task in names:
            env = MetaWorldEnv(task, cameras=cameras, image_size=image_size, max_steps=max_steps)
            kept, attempts, demos = 0, 0, []
            try:
                while kept < demos_per_task:
                    if attempts >= MAX_ATTEMPTS_PER_DEMO * demos_per_task:
                        raise ConfigError(f"record_metaworld: the {task} expert succeeded {kept} times in {attempts} "
                                          f"episodes of {max_steps} steps; leave {task} out or raise --max-steps")
                    episode = run_expert_episode(env, seed * SEED_STRIDE + attempts)
                    attempts += 1
                    if not episode.success:
                        continue
                    group = data.create_group(f"demo_{index}")
                    write_demo(group, episode, links)
                    group.attrs["task"] = task
                    demos.append(f"demo_{index}")
                    kept, index, samples = kept + 1, index + 1, samples + len(episode.actions)
                    progress.advance(bar)
            finally:
                env.close()
            rejected[task] = attempts - kept
            train += demos[:demos_per_task - num_valid]
            valid += demos[demos_per_task - num_valid:]
            write_mask(f, task, demos)
        data.attrs["total"] = samples
        data.attrs["env_args"] = json.dumps({"env_name": ENV_NAME, "type": ENV_TYPE, "tasks": names, "env_kwargs": {
            "cameras": cameras, "image_size": image_size, "max_steps": max_steps}})
        data.attrs["vlx_recording"] = json.dumps({"tasks": names, "demos_per_task": demos_per_task, "seed": seed,
                                                  "valid_fraction": valid_fraction})
        write_masks(f, train, valid)
    return MetaWorldRecording(path=out, tasks=names, demos=index, samples=samples, rejected=rejected)
