"""`metaworld`: one Meta-World task (Sawyer arm, MuJoCo) as a closed-loop env for `rollout`, on LeRobot's protocol.

`vlx eval ... rollout.env=metaworld rollout.env_kwargs='{task: push-v3}'` builds Meta-World's goal-observable
env of the task (`metaworld.env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE`: the goal is part of the 39-D state,
as in MT10/MT50) and, as LeRobot's `MetaworldEnv` does, unfreezes its initial-state vector so that each
`reset(seed)` draws the object and goal positions from the env's RNG seeded with `seed` (`env.seed(seed)`):
the same seed gives the same scene. Each camera in `cameras` is rendered by MuJoCo at `image_size`² under
`{camera}_image`, the first also under `agentview_image` (what single-camera policies read); `corner2` is
LeRobot's view: its position set to (0.75, 0.075, 0.7) and its frames flipped on both axes. `agent_pos` is the
hand xyz and gripper opening (the 39-D observation's [0:4], LeRobot's `agent_pos`), `state` the whole 39-D
observation. Actions are 4-D in [-1, 1] (xyz delta, grab effort), clipped. Success is `info["success"]`,
latched: an episode ends at its first success, else after `max_steps` (Meta-World's `max_path_length`, 500).
The instruction is LeRobot's task description (`vlx.envs.metaworld_tasks`). Rendering is lowered for speed
(no multisampling, no shadow map: `model.vis.quality.offsamples = 0`, `shadowsize = 0`). MuJoCo reads
`MUJOCO_GL` once, when it is first imported, so the adapter sets it to `egl` (unless set) before importing it, and
any failure to import or to start a GL context is one ConfigError naming the fix. Meta-World's scripted
experts (`metaworld.policies`) read the 39-D state: `MetaWorldExpert` is the rollout policy over them.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from vlx.envs.block_reach import ENV_TYPE, EnvStepError
from vlx.envs.gym_adapter import CAMERA_KEY, WHERE, AdapterEpisode, clip_action, import_optional, positive_int
from vlx.envs.metaworld_tasks import INSTRUCTIONS, check_task
from vlx.errors import ConfigError
from vlx.registry import ENVIRONMENTS, closest

ENV_NAME = "metaworld"
INSTALL_HINT = "rollout.env=metaworld needs Meta-World, which is not installed: pip install 'vlx[metaworld]'"
GL_FIX = ("headless Linux: MUJOCO_GL=egl (apt-get install libegl1) or MUJOCO_GL=osmesa (apt-get install "
          "libosmesa6); with a display: MUJOCO_GL=glfw")
ACTION_LOW, ACTION_HIGH = np.full(4, -1.0), np.full(4, 1.0)  # Meta-World's Box(-1, 1, (4,))


@dataclass(frozen=True)
class CameraFix:
    """LeRobot's changes to one of Meta-World's cameras: a new position and a flip of both image axes."""

    position: tuple[float, float, float]
    flip: bool


LEROBOT_CAMERAS = {"corner2": CameraFix(position=(0.75, 0.075, 0.7), flip=True)}


def gl_error(exc: BaseException) -> ConfigError:
    """The one-line error for a MuJoCo that cannot render with its GL backend (MUJOCO_GL)."""
    reason = (str(exc).strip().splitlines() or [""])[0][:160]
    wanted = os.environ.get("MUJOCO_GL", "")
    context = getattr(sys.modules.get("mujoco"), "GLContext", None)  # the backend mujoco chose at its import
    chosen = context.__module__.rsplit(".", 1)[-1] if context is not None else None  # egl, osmesa, glfw, ...
    late = (f" (mujoco was imported before MUJOCO_GL was set and uses {chosen}: set MUJOCO_GL before Python starts)"
            if chosen and wanted.lower() in ("", "egl", "osmesa") and chosen != (wanted.lower() or "egl") else "")
    return ConfigError(f"MuJoCo cannot render with MUJOCO_GL={wanted!r}{late} ({type(exc).__name__}: {reason}); "
                       f"{GL_FIX}", kind="no-gl")


def import_metaworld() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(mujoco, metaworld.env_dict, metaworld.policies), imported after MUJOCO_GL is set (default egl)."""
    if "mujoco" not in sys.modules:  # mujoco picks its GL backend once, when it is first imported
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        mujoco = import_optional("mujoco", INSTALL_HINT)
        import_optional("metaworld", INSTALL_HINT)
        return mujoco, importlib.import_module("metaworld.env_dict"), importlib.import_module("metaworld.policies")
    except ConfigError:
        raise
    except Exception as exc:  # an invalid MUJOCO_GL, a GL library that does not load
        raise gl_error(exc) from None


def camera_names(cameras: str | Sequence[str]) -> list[str]:
    """`cameras` as a non-empty list of distinct non-empty names (a single name is allowed)."""
    names = [cameras] if isinstance(cameras, str) else list(cameras) if isinstance(cameras, Sequence) else None
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names):
        raise ConfigError(f"{WHERE}.cameras={cameras!r}; expected a camera name or a list of distinct names, "
                          "e.g. corner2 or [corner2, gripperPOV]")
    return names


@ENVIRONMENTS.register(ENV_NAME)
class MetaWorldEnv(AdapterEpisode):
    """A Meta-World task seen through the `ClosedLoopEnv` protocol; see the module docstring for the conventions."""

    action_dim = 4

    def __init__(self, task: str, cameras: str | Sequence[str] = "corner2", image_size: int = 64,
                 max_steps: int = 500, instruction: str | None = None) -> None:
        self.task = check_task(task, f"{WHERE}.task")
        self.cameras = camera_names(cameras)
        self.image_size, self.max_steps = positive_int(image_size, "image_size"), positive_int(max_steps, "max_steps")
        self._instruction = instruction if instruction is not None else INSTRUCTIONS[self.task]
        self._mujoco, env_dict, policies = import_metaworld()
        # seed=0: the constructor's own reset draws from a seeded RNG, leaving numpy's global one untouched
        self.env = env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.task}-goal-observable"](seed=0)
        self.env._freeze_rand_vec = False  # as LeRobot: every reset draws a new scene ...
        self.env.seeded_rand_vec = True  # ... from the env's RNG, which reset(seed) seeds
        self.env.max_path_length = self.max_steps  # Meta-World refuses steps beyond it
        self._expert = policies.ENV_POLICY_MAP[self.task]()
        model = self.env.model
        model.vis.quality.offsamples, model.vis.quality.shadowsize = 0, 0  # before any GL context exists
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), self.image_size, 128)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), self.image_size, 128)
        self._camera_ids = {name: self._camera_id(name) for name in self.cameras}
        for name, camera in self._camera_ids.items():
            if name in LEROBOT_CAMERAS:
                model.cam_pos[camera] = LEROBOT_CAMERAS[name].position
        self._renderers: dict[int, Any] = {}  # image size -> mujoco.Renderer
        self._raw: np.ndarray | None = None  # (39,) the last Meta-World observation; None before reset()
        self._steps, self._success, self._done = 0, False, False

    def _camera_id(self, name: str) -> int:
        model = self.env.model
        known = [model.camera(i).name for i in range(model.ncam)]
        if name not in known:
            hint = closest(name, known)
            raise ConfigError(f"{WHERE}.cameras: {name!r} is not a camera of Meta-World's {self.task}"
                              f"{f'; did you mean {hint!r}?' if hint else ''} (cameras: {', '.join(known)})",
                              kind="unknown-camera")
        return known.index(name)

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; with a seed, its initial scene (object and goal positions) is determined by it."""
        if seed is not None:
            self.env.seed(seed)
        self._raw, _ = self.env.reset()
        self._steps, self._success, self._done = 0, False, False
        return self._observation(), {"instruction": self._instruction, "seed": seed, "task": self.task}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action (4,) in [-1, 1] (clipped); terminates at the first success, truncates at max_steps."""
        if self._raw is None or self._done:
            raise EnvStepError(f"metaworld {self.task}: step() called "
                               + ("before reset()" if self._raw is None else "after the episode ended; call reset()"))
        a = clip_action(action, ACTION_LOW, ACTION_HIGH, True, f"metaworld {self.task}")  # (4,)
        self._raw, reward, _, _, info = self.env.step(a.astype(np.float32))
        self._steps += 1
        self._success = self._success or bool(info["success"])
        truncated = not self._success and self._steps >= self.max_steps
        self._done = self._success or truncated
        return self._observation(), float(reward), self._success, truncated, info

    def expert_action(self) -> np.ndarray:
        """Meta-World's scripted expert's action (4,) float32 for the current state, clipped to [-1, 1]."""
        if self._raw is None:
            raise EnvStepError(f"metaworld {self.task}: the environment has no episode yet; call reset() first")
        with warnings.catch_warnings():  # the experts' proportional gains exceed 1 on purpose; the env clips
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            action = self._expert.get_action(self._raw)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)  # (4,)

    def sim_state(self) -> np.ndarray:
        """MuJoCo's state (qpos, qvel, mocap position and quaternion) flattened, float64."""
        data = self.env.data
        return np.concatenate([data.qpos, data.qvel, data.mocap_pos.ravel(), data.mocap_quat.ravel()])

    def env_args(self) -> dict[str, Any]:
        """robomimic's `env_args` record: env_name, type and the constructor arguments."""
        kwargs = {"task": self.task, "cameras": self.cameras, "image_size": self.image_size,
                  "max_steps": self.max_steps}
        return {"env_name": ENV_NAME, "type": ENV_TYPE, "env_kwargs": kwargs}

    def render_scene(self, size: int = 128) -> np.ndarray:
        """The first camera rendered at size² (uint8 (size, size, 3)), for the rollout videos."""
        return self._render(self.cameras[0], size)

    def close(self) -> None:
        """Release the GL contexts and the simulator."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self.env.close()

    def _render(self, camera: str, size: int) -> np.ndarray:
        """`camera` rendered at size² as uint8 (size, size, 3), upright (LeRobot's flip applied)."""
        if size not in self._renderers:
            try:
                self._renderers[size] = self._mujoco.Renderer(self.env.model, size, size)
            except Exception as exc:  # no GL context: the backend's library is missing or fails
                raise gl_error(exc) from None
        renderer = self._renderers[size]
        renderer.update_scene(self.env.data, camera=self._camera_ids[camera])
        frame = renderer.render()  # (size, size, 3) uint8
        fix = LEROBOT_CAMERAS.get(camera)
        return np.ascontiguousarray(frame[::-1, ::-1] if fix is not None and fix.flip else frame)

    def _observation(self) -> dict[str, np.ndarray]:
        frames = {f"{name}_image": self._render(name, self.image_size) for name in self.cameras}  # (S, S, 3) each
        return {**frames, CAMERA_KEY: frames[f"{self.cameras[0]}_image"],
                "agent_pos": self._raw[0:4].astype(np.float32),  # (4,) hand xyz + gripper opening
                "state": self._raw.astype(np.float32)}  # (39,)


class MetaWorldExpert:
    """Meta-World's scripted experts as a rollout policy (state-based `act_envs`; no noise)."""

    def act_envs(self, envs: Sequence[MetaWorldEnv], instructions: list[str]) -> np.ndarray:
        """Actions (B, 4) for a batch of `metaworld` envs (each env's own task's expert; instructions unused)."""
        return np.stack([env.expert_action() for env in envs])  # (B, 4)
