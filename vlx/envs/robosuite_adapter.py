"""`robosuite`: a robosuite task (Lift, Can, Square, ...) as a closed-loop env for `rollout`, built like robomimic does.

`vlx eval checkpoint=DIR rollout.env=robosuite rollout.env_kwargs='{dataset: PATH}'` reads robomimic's `env_args`
(`{"env_name", "type": 1, "env_kwargs"}`) from the dataset's `data` attr, or takes them as `env_args`, renders one
`camera` at `image_size`² and builds the env with `robomimic.utils.env_utils.create_env_from_metadata(env_meta,
render_offscreen=True, use_image_obs=True)` after registering `{camera}_image` as an rgb observation. Image
convention: MuJoCo renders bottom-up (OpenGL); robomimic's `EnvRobosuite.get_observation` flips the rows (`[::-1]`)
and then turns the frame into float (3, H, W) in [0, 1], so frames arrive upright, as in robomimic datasets; the
adapter converts them back to uint8 (H, W, 3) `agentview_image`. That holds for robosuite's default
`macros.IMAGE_CONVENTION = "opengl"`; with "opencv" robosuite flips as well and the frames would be upside down,
so the adapter refuses it. Actions pass through (clipped to robosuite's `action_spec`); an episode ends at the
first `is_success()["task"]` or after `max_steps`. The instruction is the config's, else the dataset's first demo's
`ep_meta` `lang`. Only validation is tested here: robosuite and MuJoCo are not installed on the development
machine, so every line below that needs them (marked UNTESTED) has never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlx.envs.gym_adapter import (
    CAMERA_KEY,
    WHERE,
    AdapterEpisode,
    clip_action,
    import_optional,
    non_empty,
    positive_int,
    rgb_frame,
)
from vlx.errors import ConfigError, DataError, VlxError
from vlx.registry import ENVIRONMENTS

ROBOSUITE_TYPE = 1  # robomimic.envs.env_base.EnvType.ROBOSUITE_TYPE
INSTALL_HINT = ("robosuite is not installed: pip install robosuite==1.5.2 'mujoco<=3.9'; "
                "MUJOCO_GL=egl for headless rendering")


def check_env_args(env_args: Any, where: str, error: type[VlxError] = ConfigError) -> dict[str, Any]:
    """robomimic's env_args validated: a non-empty `env_name`, `type` 1 (robosuite; the default) and a mapping
    `env_kwargs` (default {}); `where` names the config key or file in the messages."""
    expected = "expected robomimic's {'env_name': 'Lift', 'type': 1, 'env_kwargs': {...}}"
    if not isinstance(env_args, Mapping):
        raise error(f"{where} must be a mapping; {expected}, got {env_args!r:.80}")
    name, kind, kwargs = env_args.get("env_name"), env_args.get("type", ROBOSUITE_TYPE), env_args.get("env_kwargs", {})
    if not isinstance(name, str) or not name.strip():
        raise error(f"{where} has no 'env_name' (the robosuite task); {expected}, got keys {sorted(env_args)}")
    if kind != ROBOSUITE_TYPE:
        hint = "; it was recorded by vlx: use rollout.env=block-reach" if kind == "vlx" else ""
        raise error(f"{where}.type={kind!r} is not a robosuite env (robomimic type {ROBOSUITE_TYPE}){hint}")
    if not isinstance(kwargs, Mapping):
        raise error(f"{where}.env_kwargs must be a mapping of robosuite.make arguments, got {kwargs!r:.80}")
    version = {"env_version": env_args["env_version"]} if "env_version" in env_args else {}
    return {"env_name": name, "type": ROBOSUITE_TYPE, "env_kwargs": dict(kwargs), **version}


def resolve_task(env_args: Any, dataset: str | Path | None, camera: str,
                 instruction: str | None) -> tuple[dict[str, Any], str]:
    """(validated env_args, instruction) from the config, or from the robomimic file `dataset` (its `data` attr
    `env_args`; the config's instruction, else its first demo's `ep_meta` lang)."""
    if instruction is not None:
        non_empty(instruction, "instruction")
    if (env_args is None) == (dataset is None):
        raise ConfigError(f"set exactly one of {WHERE}.env_args (robomimic's env_args) and {WHERE}.dataset "
                          "(a robomimic HDF5 file that stores them)")
    if dataset is None:
        if instruction is None:
            raise ConfigError(f"{WHERE}.instruction is not set; robosuite tasks carry no language, so give the "
                              f"instruction (or a {WHERE}.dataset whose demos have an ep_meta 'lang')")
        return check_env_args(env_args, f"{WHERE}.env_args"), instruction
    from vlx.data.robomimic_hdf5 import RobomimicFile  # here, not at the top: vlx.data imports the model stack

    demos = RobomimicFile(dataset, camera_key=f"{camera}_image", instruction=instruction, where=WHERE)
    where = f"{demos.path}: data attr env_args"
    if not demos.env_args():
        raise DataError(f"{where} is missing; set {WHERE}.env_args instead of {WHERE}.dataset")
    return check_env_args(demos.env_args(), where, DataError), instruction or demos.instruction(0)


def camera_env_meta(env_args: dict[str, Any], camera: str, image_size: int) -> dict[str, Any]:
    """env_args with robosuite rendering only `camera`, at image_size²."""
    kwargs = {**env_args["env_kwargs"], "camera_names": [camera], "camera_heights": image_size,
              "camera_widths": image_size}
    return {**env_args, "env_kwargs": kwargs}


def chw_to_uint8(frame: np.ndarray) -> np.ndarray:
    """robomimic's processed float (3, H, W) frame in [0, 1] → uint8 (H, W, 3), rounded."""
    if frame.ndim != 3 or frame.shape[0] != 3:
        raise DataError(f"robosuite: expected a processed (3, H, W) frame from robomimic, got {frame.shape}")
    return np.clip(np.rint(np.moveaxis(frame, 0, -1) * 255.0), 0, 255).astype(np.uint8)  # (H, W, 3)


def create_env(env_meta: dict[str, Any], image_key: str) -> Any:
    """UNTESTED HERE (needs robosuite + MuJoCo): robomimic's EnvRobosuite for `env_meta` with rgb `image_key`."""
    robosuite = import_optional("robosuite", INSTALL_HINT)
    convention = getattr(getattr(robosuite, "macros", None), "IMAGE_CONVENTION", "opengl")
    if convention != "opengl":
        raise ConfigError(f"robosuite.macros.IMAGE_CONVENTION={convention!r}: robomimic flips frames itself and "
                          "expects robosuite's default 'opengl'; leave the macro at its default")
    from robomimic.utils import env_utils, obs_utils

    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"rgb": [image_key], "low_dim": []}})
    try:
        return env_utils.create_env_from_metadata(env_meta=env_meta, render_offscreen=True, use_image_obs=True)
    except ModuleNotFoundError as exc:  # robomimic 0.3.0 imports mujoco_py (robosuite <= 1.3) and egl_probe
        raise ConfigError(f"robomimic's robosuite wrapper needs the missing module {exc.name!r}: robomimic 0.3.0 "
                          "(PyPI) imports mujoco_py, which robosuite 1.5 no longer uses (install robomimic from its "
                          "GitHub main branch), and egl_probe for offscreen rendering (pip install egl_probe)") from exc


@ENVIRONMENTS.register("robosuite")
class RobosuiteEnv(AdapterEpisode):
    """A robosuite task seen through the `ClosedLoopEnv` protocol; see the module docstring for the conventions."""

    def __init__(self, env_args: Mapping[str, Any] | None = None, dataset: str | None = None, camera: str = "agentview",
                 image_size: int = 84, instruction: str | None = None, max_steps: int = 400) -> None:
        self.camera, self.image_key = non_empty(camera, "camera"), f"{camera}_image"
        self.image_size, self.max_steps = positive_int(image_size, "image_size"), positive_int(max_steps, "max_steps")
        env_args, self._instruction = resolve_task(env_args, dataset, camera, instruction)
        self.env_meta = camera_env_meta(env_args, camera, image_size)
        self._env = create_env(self.env_meta, self.image_key)
        low, high = self._env.env.action_spec  # UNTESTED HERE: robosuite's (low, high) action bounds
        self._low, self._high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.action_dim = int(self._low.size)
        self._steps, self._success = 0, False

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """UNTESTED HERE. Start an episode; the seed goes to numpy's global RNG (robosuite <= 1.4 samples from it)
        and replaces the generators robosuite 1.5 keeps (`env.rng`, the placement sampler's `rng`): best effort."""
        if seed is not None:
            np.random.seed(seed)
            base = self._env.env
            for owner in (base, getattr(base, "placement_initializer", None)):
                if owner is not None and hasattr(owner, "rng"):
                    owner.rng = np.random.default_rng(seed)
        self._steps, self._success = 0, False
        return self._observation(self._env.reset()), {"instruction": self._instruction, "seed": seed}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """UNTESTED HERE. One action, clipped to the action spec; ends at success or after max_steps."""
        a = clip_action(action, self._low, self._high, True, f"robosuite env {self.env_meta['env_name']!r}")
        obs, reward, _, info = self._env.step(a)  # robomimic's 4-tuple; robosuite never ends an episode itself
        self._steps += 1
        self._success = self._success or bool(self._env.is_success()["task"])
        truncated = not self._success and self._steps >= self.max_steps
        return self._observation(obs), float(reward), self._success, truncated, info

    def render_scene(self, size: int = 128) -> np.ndarray:
        """UNTESTED HERE. The camera rendered at size² (upright: robomimic flips it), for the rollout videos."""
        frame = self._env.render(mode="rgb_array", height=size, width=size, camera_name=self.camera)  # (size, size, 3)
        return rgb_frame(frame, f"robosuite camera {self.camera!r}")

    def close(self) -> None:
        """UNTESTED HERE. Release robosuite's simulator and offscreen renderer."""
        self._env.env.close()

    def _observation(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """robomimic's observation plus the camera frame as uint8 (H, W, 3) under CAMERA_KEY."""
        if self.image_key not in obs:
            raise DataError(f"robosuite: the observation has no {self.image_key!r} (keys {sorted(obs)}); "
                            f"check {WHERE}.camera against the task's cameras")
        return {**obs, CAMERA_KEY: chw_to_uint8(np.asarray(obs[self.image_key]))}
