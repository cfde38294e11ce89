"""Tests of the `gymnasium` and `robosuite` env adapters; robosuite/MuJoCo are not installable here, so for robosuite
only validation, env_args/instruction resolution from a robomimic-layout file and frame conversion are tested."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from robomimic.utils.obs_utils import process_frame

from vlx.envs import rollout
from vlx.envs.block_reach import EnvStepError
from vlx.envs.gym_adapter import GymnasiumEnv
from vlx.envs.robosuite_adapter import RobosuiteEnv, camera_env_meta, chw_to_uint8, resolve_task
from vlx.errors import ConfigError, DataError
from vlx.registry import ENVIRONMENTS

SIZE = 16  # the test env's frame size
IDS = {"limited": "vlx-test/PointReach-v0", "unlimited": "vlx-test/PointReachNoLimit-v0"}
GYM = {"id": IDS["limited"], "instruction": "reach the top right corner"}
LIFT = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20}}
make = functools.partial(GymnasiumEnv, **GYM)


@pytest.fixture(scope="module")
def gym_ids() -> dict[str, str]:
    """Register a numpy-rendered point in [-1, 1]² pushed by Box(-0.5, 0.5, (2,)) actions; success: both > 0.9."""
    gymnasium = pytest.importorskip("gymnasium")
    box = gymnasium.spaces.Box

    class PointReach(gymnasium.Env):
        metadata = {"render_modes": ["rgb_array"]}

        def __init__(self, render_mode: str | None = None, success_info: str | None = "is_success",
                     terminate: bool = True, reward: float = 1.0, dict_obs: bool = False, rgb: bool = True) -> None:
            self.render_mode, self.info_key, self.terminate, self.reward = render_mode, success_info, terminate, reward
            self.metadata = {"render_modes": ["rgb_array"] if rgb else []}
            self.dict_obs, self.action_space = dict_obs, box(-0.5, 0.5, (2,), np.float32)
            pos, pixels = box(-1.0, 1.0, (2,), np.float32), box(0, 255, (SIZE, SIZE, 3), np.uint8)
            self.observation_space = gymnasium.spaces.Dict({"pixels": pixels, "pos": pos}) if dict_obs else pos

        def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
            super().reset(seed=seed)
            self.pos = self.np_random.uniform(-0.5, 0.5, size=2)  # (2,)
            return self._obs(), {}

        def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
            self.last_action, self.pos = np.array(action), np.clip(self.pos + action, -1.0, 1.0)
            reached = bool(np.all(self.pos > 0.9))
            info = {self.info_key: reached} if self.info_key else {}
            return self._obs(), self.reward * reached, reached and self.terminate, False, info

        def render(self) -> np.ndarray:  # (SIZE, SIZE, 4) RGBA with one white pixel; the adapter drops alpha
            image = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
            row, col = np.minimum([(1 - self.pos[1]) * SIZE / 2, (1 + self.pos[0]) * SIZE / 2], SIZE - 1).astype(int)
            image[row, col] = 255
            return image

        def _obs(self) -> Any:
            pos = self.pos.astype(np.float32)
            return {"pixels": self.render()[..., :3] // 2, "pos": pos} if self.dict_obs else pos

    gymnasium.register(IDS["limited"], entry_point=PointReach, max_episode_steps=12, disable_env_checker=True)
    gymnasium.register(IDS["unlimited"], entry_point=PointReach, disable_env_checker=True)
    return IDS


def test_gym_frames_image_key_seeding_and_truncation(gym_ids):
    env = make()
    assert (env.action_dim, env.max_steps, env.instruction) == (2, 12, "reach the top right corner")
    obs, info = env.reset(seed=3)
    assert obs["agentview_image"].shape == (SIZE, SIZE, 3) and obs["agentview_image"].dtype == np.uint8
    assert int(obs["agentview_image"].sum()) == 3 * 255  # one white pixel, alpha dropped
    np.testing.assert_allclose(obs["state"], [-0.41435083, -0.26318949], rtol=1e-6)  # gymnasium's seed-3 draw
    assert info == {"instruction": "reach the top right corner", "seed": 3}
    assert np.array_equal(make().reset(seed=3)[0]["agentview_image"], obs["agentview_image"])
    assert not np.array_equal(make().reset(seed=4)[0]["state"], obs["state"])
    assert env.render_scene(40).shape == (40, 40, 3) and env.render_scene(40).dtype == np.uint8
    short = make(max_steps=4)
    short.reset(seed=0)
    assert [short.step(np.zeros(2))[3] for _ in range(4)] == [False, False, False, True] and not short.is_success()
    assert short.max_steps == 4 and make(id=IDS["unlimited"], max_steps=7).max_steps == 7
    obs, _ = make(env_kwargs={"dict_obs": True, "rgb": False}, image_key="pixels").reset(seed=0)
    assert np.array_equal(obs["agentview_image"], obs["pixels"]) and int(obs["agentview_image"].max()) == 127
    with pytest.raises(ConfigError, match=r"rollout\.env_kwargs\.image_key='rgb' is not in .*\['pixels', 'pos'\]"):
        make(env_kwargs={"dict_obs": True}, image_key="rgb").reset(seed=0)


def test_gym_actions_are_clipped_to_the_box_unless_disabled(gym_ids):
    for clip, expected in ((True, [0.5, -0.25]), (False, [5.0, -0.25])):
        env = make(action_low_high_from_env=clip)
        env.reset(seed=0)
        env.step(np.array([5.0, -0.25]))
        sent = env.env.unwrapped.last_action
        assert sent.tolist() == expected and sent.dtype == np.float32
    with pytest.raises(EnvStepError, match=r"action has 3 values; expected 2"):
        env.step(np.zeros(3))
    with pytest.raises(EnvStepError, match="non-finite"):
        env.step(np.array([np.nan, 0.0]))


@pytest.mark.parametrize("env_kwargs, success_key, success", [
    ({}, "is_success", True),  # the env reports success in info
    ({"success_info": None}, "is_success", True),  # no report: terminated with a positive reward
    ({"success_info": None, "reward": 0.0}, "is_success", False),  # terminated without a reward
    ({"success_info": "done_ok"}, "done_ok", True),  # a custom info key
    ({"terminate": False}, "is_success", True),  # reported but never terminated: the adapter ends the episode
])
def test_gym_success_detection(gym_ids, env_kwargs, success_key, success):
    env = make(env_kwargs=env_kwargs, success_key=success_key)
    env.reset(seed=3)  # starts at (-0.41, -0.26): the corner is 3 steps of 0.5 away
    steps = [env.step(np.array([0.5, 0.5])) for _ in range(3)]
    assert [step[2] for step in steps] == [False, False, True] and not any(step[3] for step in steps)
    assert env.is_success() is success


def test_gym_rollout_through_the_registry(gym_ids, tmp_path: Path):
    shown: set[tuple[tuple[int, ...], str]] = set()

    def towards_the_corner(observations: list[dict], instructions: list[str]) -> np.ndarray:
        shown.update((obs["agentview_image"].shape, text) for obs, text in zip(observations, instructions, strict=True))
        return np.full((len(observations), 2), 0.5)

    result = rollout(towards_the_corner, "gymnasium", [0, 1, 2], env_kwargs=GYM, batch_size=2, num_videos=1,
                     video_dir=tmp_path)  # by name: ENVIRONMENTS.build({"name": "gymnasium", **GYM})
    assert [(e.seed, e.success, e.steps) for e in result.episodes] == [(0, True, 3), (1, True, 2), (2, True, 3)]
    assert shown == {((SIZE, SIZE, 3), "reach the top right corner")}
    assert result.videos == [tmp_path / "episode_0.gif"] and result.videos[0].stat().st_size > 0


@pytest.mark.parametrize("name, kwargs, message", [
    ("gymnasium", None, r"gymnasium, which is not installed: pip install gymnasium$"),  # None: gymnasium is missing
    ("gymnasium", {"id": "NoSuchEnv-v0"}, r"rollout\.env_kwargs\.id='NoSuchEnv-v0' is not a registered gymnasium "
                                          r"environment: Environment `NoSuchEnv` doesn't exist\.$"),
    ("gymnasium", {"id": "CartPole-v1"}, r"env_kwargs\.id='CartPole-v1' has the action space Discrete\(2\); only Box"),
    ("gymnasium", {"env_kwargs": {"colour": 1}}, r"env_kwargs\.env_kwargs: gymnasium.make\(.*\) failed: .*'colour'"),
    ("gymnasium", {"env_kwargs": {"render_mode": "human"}}, r"env_kwargs\.env_kwargs\.render_mode is set by the adapt"),
    ("gymnasium", {"env_kwargs": {"rgb": False}}, r"render modes \[\]\); set rollout\.env_kwargs\.image_key"),
    ("gymnasium", {"instruction": " "}, r"rollout\.env_kwargs\.instruction must be a non-empty string"),
    ("gymnasium", {"id": IDS["unlimited"]}, r"env_kwargs\.max_steps is not set and .* has no max_episode_steps"),
    ("gymnasium", {"max_steps": 0}, r"rollout\.env_kwargs\.max_steps=0; expected an integer >= 1"),
    ("robosuite", {"env_args": {"type": 1}}, r"env_kwargs\.env_args has no 'env_name' .* got keys \['type'\]"),
    ("robosuite", {"env_args": {"env_name": "x", "type": "vlx"}}, r"env_args\.type='vlx' is not .*=block-reach"),
    ("robosuite", {"env_args": {"env_name": "x", "env_kwargs": [1]}}, r"env_args\.env_kwargs must be a mapping"),
    ("robosuite", {}, r"set exactly one of rollout\.env_kwargs\.env_args .* rollout\.env_kwargs\.dataset"),
    ("robosuite", {"env_args": LIFT, "instruction": None}, r"rollout\.env_kwargs\.instruction is not set"),
    ("robosuite", {"env_args": LIFT, "image_size": 0}, r"rollout\.env_kwargs\.image_size=0; expected an integer >= 1"),
    ("robosuite", {"env_args": LIFT}, r"^robosuite is not installed: pip install robosuite==1\.5\.2 'mujoco<=3\.9'; "
                                      r"MUJOCO_GL=egl for headless rendering$"),  # valid, but robosuite is missing
])
def test_configuration_errors(request, monkeypatch, name, kwargs, message):
    if name == "gymnasium" and kwargs is not None:
        request.getfixturevalue("gym_ids")
    monkeypatch.setitem(sys.modules, "robosuite" if kwargs is not None else "gymnasium", None)  # make sure of it
    base = GYM if name == "gymnasium" else {"instruction": "lift the cube"}
    with pytest.raises(ConfigError, match=message):
        ENVIRONMENTS.build({"name": name, **base, **(kwargs or {})}, where="rollout.env")


def test_robosuite_env_args_instruction_and_frames(tmp_path: Path, monkeypatch):
    def write_robomimic(path: Path, env_args: dict | None, lang: str | None) -> Path:
        """A one-demo robomimic-layout file: data attr env_args, demo_0 with 3 steps and an 8 px camera."""
        with h5py.File(path, "w") as file:
            file.create_dataset("data/demo_0/actions", data=np.zeros((3, 7), dtype=np.float32))
            file.create_dataset("data/demo_0/obs/agentview_image", data=np.zeros((3, 8, 8, 3), dtype=np.uint8))
            file["data"].attrs.update({"total": 3, **({"env_args": json.dumps(env_args)} if env_args else {})})
            lang_attr = {"ep_meta": json.dumps({"lang": lang})} if lang else {}
            file["data/demo_0"].attrs.update({"num_samples": 3, **lang_attr})
        return path

    path = write_robomimic(tmp_path / "lift.hdf5", {**LIFT, "env_version": "1.5.2"}, "lift the red cube")
    env_args, instruction = resolve_task(None, path, "agentview", None)
    assert env_args == {**LIFT, "env_version": "1.5.2"} and instruction == "lift the red cube"
    assert resolve_task(None, path, "agentview", "pick up the cube")[1] == "pick up the cube"
    assert camera_env_meta(env_args, "agentview", 64)["env_kwargs"] == {
        **LIFT["env_kwargs"], "camera_names": ["agentview"], "camera_heights": 64, "camera_widths": 64}
    assert env_args["env_kwargs"] == LIFT["env_kwargs"]  # not modified in place
    for name, args, lang, message in [
        ("bare", LIFT, None, r"no instruction: .* rollout\.env_kwargs\.instruction is not set"),
        ("no_args", None, "lift", r"no_args\.hdf5: data attr env_args is missing; set rollout\.env_kwargs\.env_args"),
        ("nameless", {"type": 1}, "lift", r"nameless\.hdf5: data attr env_args has no 'env_name'"),
    ]:
        with pytest.raises(DataError, match=message):
            resolve_task(None, write_robomimic(tmp_path / f"{name}.hdf5", args, lang), "agentview", None)
    monkeypatch.setitem(sys.modules, "robosuite", None)  # missing here anyway; make sure of it
    with pytest.raises(ConfigError, match="robosuite is not installed"):
        RobosuiteEnv(dataset=str(path))  # the file is read and validated first, then the import fails
    # robomimic's processed float (3, H, W) frames in [0, 1] convert back to uint8 (H, W, 3) exactly
    frame = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)  # (H, W, 3)
    restored = chw_to_uint8(process_frame(frame=frame.copy(), channel_dim=3, scale=255.0))
    assert restored.dtype == np.uint8 and np.array_equal(restored, frame)
    with pytest.raises(DataError, match=r"expected a processed \(3, H, W\) frame"):
        chw_to_uint8(np.zeros((6, 5, 3)))
