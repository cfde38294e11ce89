"""Record scripted `block-reach` demonstrations as one robomimic-layout HDF5 file.

Layout (robomimic, plus robosuite-1.5's language convention): `data` (attrs `total`, `env_args` JSON),
`data/demo_{i}` (attrs `num_samples`, `seed`, `ep_meta` = JSON `{"lang": instruction}`; datasets
`actions` (T, 3) float32 clean expert labels, `rewards` (T,), `dones` (T,) = 1 at the last step,
`states` (T, S); groups `obs/<key>` and `next_obs/<key>` with the two cameras `agentview_image`,
`wrist_image` and the proprio keys `agent_pos`, `gripper`), and `mask/train`, `mask/valid` (demo names
as bytes; valid = the last demos). The executed actions carry Gaussian noise; only successful episodes
are kept. Episode k uses env seed `seed * 1_000_003 + k`; the file is written to a temporary path and
renamed, so a crash never leaves a half-written dataset under the final name. The file helpers (`stack_obs`,
`write_demo`, `atomic_hdf5`, `write_masks`) are shared with the Meta-World recorder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from rich.console import Console
from rich.progress import Progress

from vlx.envs.block_reach import BlockReach
from vlx.envs.expert import check_noise, expert_action, perturb
from vlx.errors import ConfigError

OBS_KEYS = ("agentview_image", "wrist_image", "agent_pos", "gripper")
RECORDING_FORMAT = 2  # 2: the wrist camera is recorded too (recordings of format 1 are made again)
SEED_STRIDE = 1_000_003  # episode seed = seed * SEED_STRIDE + k
MAX_ATTEMPTS_PER_DEMO = 20  # give up when the expert fails this often (noise far too large)


@dataclass(frozen=True)
class Episode:
    """One recorded episode, each array with T = number of steps on its leading axis."""

    seed: int
    instruction: str
    success: bool
    obs: dict[str, np.ndarray]  # key -> (T, ...)
    next_obs: dict[str, np.ndarray]  # key -> (T, ...)
    actions: np.ndarray  # (T, A) float32 clean labels
    rewards: np.ndarray  # (T,) float64
    states: np.ndarray  # (T, S) float32, the state before each action


@dataclass(frozen=True)
class RecordSummary:
    """What `record_demos` wrote."""

    path: Path
    demos: int
    samples: int
    discarded: int
    expert_success_rate: float


def run_expert_episode(env: BlockReach, seed: int, noise: float) -> Episode:
    """Run the noisy expert for one episode of `env` seeded with `seed`; labels stay clean."""
    rng = np.random.default_rng((seed, 1))  # execution noise, independent of the env's layout stream
    obs, _ = env.reset(seed)
    frames, labels, rewards, states = [obs], [], [], []
    done = False
    while not done:
        labels.append(expert_action(env))
        states.append(env.state())
        obs, reward, terminated, truncated, _ = env.step(perturb(labels[-1], noise, rng))
        frames.append(obs)
        rewards.append(reward)
        done = terminated or truncated
    return Episode(
        seed=seed, instruction=env.instruction, success=env.is_success(),
        obs=stack_obs(frames[:-1]), next_obs=stack_obs(frames[1:]), actions=np.stack(labels),  # (T, 3)
        rewards=np.array(rewards), states=np.stack(states),  # (T,), (T, S)
    )


def stack_obs(frames: list[dict[str, np.ndarray]], keys: Sequence[str] = OBS_KEYS) -> dict[str, np.ndarray]:
    """Stack the `keys` of per-step observation dicts into key -> (T, ...) arrays."""
    return {key: np.stack([frame[key] for frame in frames]) for key in keys}


def write_demo(group: h5py.Group, episode: Episode, links: Mapping[str, str] | None = None) -> None:
    """Write `episode` into the (empty) robomimic demo group `group`; each `links` entry alias -> key makes
    `obs/alias` (and `next_obs/alias`) an HDF5 hard link to `obs/key`: a second name, no second copy."""
    num = len(episode.actions)
    group.attrs["num_samples"] = num
    group.attrs["seed"] = episode.seed
    group.attrs["ep_meta"] = json.dumps({"lang": episode.instruction})
    group.create_dataset("actions", data=episode.actions)
    group.create_dataset("rewards", data=episode.rewards)
    group.create_dataset("dones", data=(np.arange(num) == num - 1).astype(np.int64))  # (T,)
    group.create_dataset("states", data=episode.states)
    for prefix, obs in (("obs", episode.obs), ("next_obs", episode.next_obs)):
        for key, value in obs.items():
            compression = "lzf" if value.ndim == 4 else None  # images (T, H, W, 3)
            group.create_dataset(f"{prefix}/{key}", data=value, compression=compression)
        for alias, key in (links or {}).items():
            group[f"{prefix}/{alias}"] = group[f"{prefix}/{key}"]


@contextmanager
def atomic_hdf5(out: Path) -> Iterator[h5py.File]:
    """An HDF5 file written at `out`.tmp and renamed to `out` when the block ends without an error (the
    temporary file is removed either way), so a crash never leaves a half-written file under the final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_mask(f: h5py.File, key: str, demos: Sequence[str]) -> None:
    """robomimic's filter key `mask/{key}`: the names of its demos, as bytes."""
    f.create_dataset(f"mask/{key}", data=np.array([name.encode() for name in demos], dtype="S"))


def write_masks(f: h5py.File, train: Sequence[str], valid: Sequence[str]) -> None:
    """robomimic's filter keys `mask/train` and `mask/valid`."""
    write_mask(f, "train", train)
    write_mask(f, "valid", valid)


def check_recording(count: tuple[str, int], seed: tuple[str, int], valid_fraction: tuple[str, float]) -> None:
    """A recorder's demo count (>= 1), seed (>= 0) and validation fraction (in [0, 1)), each given with the name
    the user set it by; a ConfigError naming it otherwise."""
    if count[1] < 1:
        raise ConfigError(f"{count[0]}={count[1]}; expected at least 1")
    if seed[1] < 0:
        raise ConfigError(f"{seed[0]}={seed[1]}; expected a seed >= 0")
    if not 0 <= valid_fraction[1] < 1:
        raise ConfigError(f"{valid_fraction[0]}={valid_fraction[1]}; expected a fraction in [0, 1)")


def record_demos(out: Path, num_demos: int, seed: int = 0, valid_fraction: float = 0.1, noise: float = 0.3,
                 env_kwargs: dict[str, Any] | None = None) -> RecordSummary:
    """Write `num_demos` successful noisy-expert demos of `block-reach` to the HDF5 file `out`."""
    check_recording(("record_demos: num_demos", num_demos), ("record_demos: seed", seed),
                    ("record_demos: valid_fraction", valid_fraction))
    check_noise(noise)
    env = BlockReach(**(env_kwargs or {}))
    out = Path(out)
    kept, attempts, samples = 0, 0, 0
    with atomic_hdf5(out) as f, Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"recording {out.name}", total=num_demos)
        data = f.create_group("data")
        while kept < num_demos:
            if attempts >= MAX_ATTEMPTS_PER_DEMO * num_demos:
                raise ConfigError(f"record_demos: the expert succeeded {kept} times in {attempts} episodes "
                                  f"with noise={noise}; lower the noise")
            episode = run_expert_episode(env, seed * SEED_STRIDE + attempts, noise)
            attempts += 1
            if episode.success:
                write_demo(data.create_group(f"demo_{kept}"), episode)
                kept, samples = kept + 1, samples + len(episode.actions)
                progress.advance(task)
        data.attrs["total"] = samples
        data.attrs["env_args"] = json.dumps(env.env_args())
        data.attrs["vlx_recording"] = json.dumps(recording_params(num_demos, seed, valid_fraction, noise, env_kwargs))
        names = [f"demo_{i}" for i in range(num_demos)]
        num_valid = round(valid_fraction * num_demos)
        write_masks(f, names[:num_demos - num_valid], names[num_demos - num_valid:])
    return RecordSummary(path=out, demos=num_demos, samples=samples, discarded=attempts - num_demos,
                         expert_success_rate=num_demos / attempts)


def recording_params(num_demos: int, seed: int, valid_fraction: float, noise: float,
                     env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """What a recording was made with (stored as the `data` attribute `vlx_recording`)."""
    return {"format": RECORDING_FORMAT, "num_demos": num_demos, "seed": seed, "valid_fraction": valid_fraction,
            "noise": noise, "env_kwargs": env_kwargs or {}}


def ensure_demos(out: Path, num_demos: int, seed: int = 0, valid_fraction: float = 0.1, noise: float = 0.3,
                 env_kwargs: dict[str, Any] | None = None) -> Path:
    """`out`, recorded now unless it already holds a complete recording with exactly these parameters."""
    out = Path(out)
    wanted = recording_params(num_demos, seed, valid_fraction, noise, env_kwargs)
    if out.is_file():
        try:
            with h5py.File(out, "r") as f:
                if json.loads(f["data"].attrs.get("vlx_recording", "null")) == wanted:
                    return out
        except (OSError, KeyError, ValueError):
            pass  # unreadable or foreign: record it again
    return record_demos(out, num_demos, seed, valid_fraction, noise, env_kwargs).path
