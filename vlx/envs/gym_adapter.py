"""`gymnasium`: any Gymnasium environment with a continuous (Box) action space as a closed-loop env for `rollout`.

`vlx eval checkpoint=DIR rollout.env=gymnasium rollout.env_kwargs='{id: ..., instruction: ...}'` makes the env
with `gymnasium.make(id, render_mode="rgb_array", **env_kwargs)` and shows the policy one camera frame per step
under `agentview_image` (uint8 (H, W, 3)): `obs[image_key]` when `image_key` is set (the observation must then
be a dict holding it), else `env.render()`. The VLA's un-normalised actions are taken to be in the env's own
units and passed through, clipped to the action space's bounds (`action_low_high_from_env=False`: not clipped).
Success is `info[success_key]` when the env reports it, else "terminated with a positive reward"; an episode
ends at its first success (robomimic's rollout convention), so success is latched. The instruction is the
fixed config string. gymnasium is optional: it is imported when an env is built, never by `import vlx.envs`.
The small helpers here (optional imports, frame checks, action clipping) are shared with the robosuite adapter.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from vlx.envs.block_reach import EnvStepError
from vlx.errors import ConfigError, DataError
from vlx.registry import ENVIRONMENTS

WHERE = "rollout.env_kwargs"  # the config path of an adapter's arguments under `vlx eval`
CAMERA_KEY = "agentview_image"  # the observation key that rollout's image policies read
RESERVED = {"render_mode": "the adapter renders rgb_array frames", "max_episode_steps": f"use {WHERE}.max_steps"}


def import_optional(module: str, hint: str) -> ModuleType:
    """Import an optional package; a ConfigError with `hint` (how to install it) when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:
            raise ConfigError(hint) from None
        raise ConfigError(f"{module} is installed but failed to import ({exc})") from exc


def non_empty(value: Any, key: str) -> str:
    """`value` when it is a non-empty string, else a ConfigError naming `{WHERE}.{key}`."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{WHERE}.{key} must be a non-empty string, got {value!r:.80}")
    return value


def positive_int(value: Any, key: str) -> int:
    """`value` when it is an int >= 1, else a ConfigError naming `{WHERE}.{key}`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{WHERE}.{key}={value!r}; expected an integer >= 1")
    return value


def rgb_frame(image: Any, what: str) -> np.ndarray:
    """A uint8 (H, W, 3) frame from a uint8 (H, W, 3|4) array (alpha dropped); a DataError naming `what` else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"{what} must be a uint8 (H, W, 3) RGB image, got {got}")
    return np.ascontiguousarray(image[..., :3])  # (H, W, 3)


def resize_frame(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8 with PIL's bilinear resize."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))  # (size, size, 3)


def clip_action(action: Any, low: np.ndarray, high: np.ndarray, clip: bool, what: str) -> np.ndarray:
    """Check a policy action against the bounds' shape (finite, flattened size) and clip it to [low, high]."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)  # (A,)
    if a.size != low.size:
        raise EnvStepError(f"{what}: action has {a.size} values; expected {low.size} (action space shape {low.shape})")
    if not np.all(np.isfinite(a)):
        raise EnvStepError(f"{what}: action {a.tolist()} has a non-finite value")
    a = a.reshape(low.shape)
    return np.clip(a, low, high) if clip else a


class AdapterEpisode:
    """What both adapters share: a latched success flag and a fixed instruction."""

    _success: bool = False
    _instruction: str = ""

    def is_success(self) -> bool:
        """Whether the episode has succeeded (latched: it stays true until the next reset)."""
        return self._success

    @property
    def instruction(self) -> str:
        """The episode's language instruction (from the config, or the dataset for robosuite)."""
        return self._instruction


@ENVIRONMENTS.register("gymnasium")
class GymnasiumEnv(AdapterEpisode):
    """A Gymnasium env seen through the `ClosedLoopEnv` protocol; see the module docstring for the conventions."""

    def __init__(self, id: str, instruction: str, env_kwargs: Mapping[str, Any] | None = None,
                 image_key: str | None = None, success_key: str = "is_success", max_steps: int | None = None,
                 action_low_high_from_env: bool = True) -> None:
        self._instruction = non_empty(instruction, "instruction")
        self.id = non_empty(id, "id")
        self.image_key, self.success_key, self.clip = image_key, success_key, action_low_high_from_env
        if image_key is not None:
            non_empty(image_key, "image_key")
        if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
            raise ConfigError(f"{WHERE}.env_kwargs must be a mapping of gymnasium.make arguments, "
                              f"got {env_kwargs!r:.80}")
        kwargs = dict(env_kwargs or {})
        for key, why in RESERVED.items():
            if key in kwargs:
                raise ConfigError(f"{WHERE}.env_kwargs.{key} is set by the adapter itself; remove it ({why})")
        if max_steps is not None:
            kwargs["max_episode_steps"] = positive_int(max_steps, "max_steps")
        gym = import_optional("gymnasium", "rollout.env=gymnasium needs gymnasium, which is not installed: "
                                           "pip install gymnasium")
        self.env = self._make(gym, kwargs)
        space = self.env.action_space
        self._low = np.broadcast_to(space.low, space.shape).astype(np.float64)  # action space shape
        self._high = np.broadcast_to(space.high, space.shape).astype(np.float64)
        self.action_dim = int(np.prod(space.shape))
        self.max_steps = int(self.env.spec.max_episode_steps)
        self._success = False

    def _make(self, gym: ModuleType, kwargs: dict[str, Any]) -> Any:
        """`gymnasium.make`, then checks of what the adapter relies on (Box actions, a horizon, rgb frames)."""
        try:
            env = gym.make(self.id, render_mode="rgb_array", **kwargs)
        except gym.error.UnregisteredEnv as exc:
            raise ConfigError(f"{WHERE}.id={self.id!r} is not a registered gymnasium environment: "
                              f"{str(exc).splitlines()[0]}") from None
        except (gym.error.Error, TypeError) as exc:
            raise ConfigError(f"{WHERE}.env_kwargs: gymnasium.make({self.id!r}) failed: "
                              f"{str(exc).splitlines()[0]}") from None
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            env.close()
            raise ConfigError(f"{WHERE}.id={self.id!r} has the action space {space}; only Box (continuous) action "
                              "spaces are supported, since a VLA outputs continuous actions")
        if env.spec is None or env.spec.max_episode_steps is None:
            env.close()
            raise ConfigError(f"{WHERE}.max_steps is not set and gymnasium env {self.id!r} has no max_episode_steps; "
                              f"set {WHERE}.max_steps to the episode length")
        if self.image_key is None and "rgb_array" not in env.metadata.get("render_modes", []):
            env.close()
            raise ConfigError(f"gymnasium env {self.id!r} cannot render rgb_array frames (render modes "
                              f"{env.metadata.get('render_modes', [])}); set {WHERE}.image_key to an image observation")
        return env

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode with `env.reset(seed=seed)`; the seed determines it when the env is deterministic."""
        obs, info = self.env.reset(seed=seed)
        self._success = False
        return self._observation(obs), {**info, "instruction": self._instruction, "seed": seed}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action in the env's units (clipped to the Box bounds); terminates at the first success."""
        a = clip_action(action, self._low, self._high, self.clip, f"gymnasium env {self.id!r}")
        obs, reward, terminated, truncated, info = self.env.step(a.astype(self.env.action_space.dtype))
        succeeded = bool(info[self.success_key]) if self.success_key in info else bool(terminated and reward > 0)
        self._success = self._success or succeeded
        return self._observation(obs), float(reward), bool(terminated) or self._success, bool(truncated), info

    def render_scene(self, size: int = 128) -> np.ndarray:
        """`env.render()` resized to (size, size, 3) uint8, for the rollout videos."""
        return resize_frame(self._render(), size)

    def close(self) -> None:
        """Release the env's resources (renderers, simulators)."""
        self.env.close()

    def _render(self) -> np.ndarray:
        return rgb_frame(self.env.render(), f"gymnasium env {self.id!r}: render()")  # (H, W, 3)

    def _observation(self, obs: Any) -> dict[str, np.ndarray]:
        """The env's observation (a dict's entries, else under `state`) plus the camera frame under CAMERA_KEY."""
        entries = dict(obs) if isinstance(obs, Mapping) else {"state": obs}
        if self.image_key is None:
            frame = self._render()
        elif self.image_key in entries:
            frame = rgb_frame(entries[self.image_key], f"gymnasium env {self.id!r}: observation {self.image_key!r}")
        else:
            raise ConfigError(f"{WHERE}.image_key={self.image_key!r} is not in gymnasium env {self.id!r}'s "
                              f"observation (keys: {sorted(entries)}); name one of its image keys or leave it unset "
                              "to use render()")
        return {**entries, CAMERA_KEY: frame}
