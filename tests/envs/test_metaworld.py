"""Tests of the `metaworld` env adapter: task names and groups, observation shapes and LeRobot's camera, seeding,
the scripted expert, episode ends, and the one-line errors (misspelled task or camera, no GL backend)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.subprocess_helpers import run_vlx
from vlx.envs import MetaWorldEnv, MetaWorldExpert, rollout
from vlx.envs.block_reach import EnvStepError
from vlx.envs.metaworld_env import import_metaworld
from vlx.envs.metaworld_tasks import INSTRUCTIONS, MT10, MT50, SPLITS, resolve_tasks, split_of, wrong_instruction
from vlx.errors import ConfigError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                reason="the vlx[metaworld] extra (in vlx[dev])")  # found, not imported: vlx
# imports mujoco only after setting MUJOCO_GL, and a test importing it first would make it pick another backend

OBS = {"corner2_image": ((32, 32, 3), np.uint8), "topview_image": ((32, 32, 3), np.uint8),
       "agentview_image": ((32, 32, 3), np.uint8), "agent_pos": ((4,), np.float32), "state": ((39,), np.float32)}


@pytest.fixture
def make_env():
    """MetaWorldEnv(...) whose envs are closed after the test (they hold GL contexts)."""
    envs: list[MetaWorldEnv] = []

    def make(task: str = "reach-v3", **kwargs) -> MetaWorldEnv:
        envs.append(MetaWorldEnv(task, **{"image_size": 32, **kwargs}))
        return envs[-1]

    yield make
    for env in envs:
        env.close()


def test_task_groups_match_metaworld_and_lerobot():
    env_dict = import_metaworld()[1]  # mujoco is imported by vlx only, after MUJOCO_GL is set
    ALL_V3_ENVIRONMENTS, MT10_V3 = env_dict.ALL_V3_ENVIRONMENTS, env_dict.MT10_V3  # noqa: N806 (metaworld's names)

    assert {split: len(tasks) for split, tasks in SPLITS.items()} == {"easy": 28, "medium": 11, "hard": 6,
                                                                       "very-hard": 5}
    assert sorted(MT50) == sorted(ALL_V3_ENVIRONMENTS) == sorted(INSTRUCTIONS)
    assert MT10 == list(MT10_V3)
    assert resolve_tasks("mt10", "rollout.tasks") == MT10
    assert resolve_tasks("reach, push-v3,reach-v3", "t") == ["reach-v3", "push-v3"]  # -v3 optional, no duplicates
    assert resolve_tasks(["very_hard"], "t") == SPLITS["very-hard"]  # LeRobot's spelling of the split
    assert split_of("peg-unplug-side-v3") == "easy" and split_of("stick-pull-v3") == "very-hard"
    assert INSTRUCTIONS["reach-v3"] == "Reach a goal position"
    assert wrong_instruction("reach-v3", MT10) == INSTRUCTIONS["push-v3"]
    # push and push-back share LeRobot's description, so the control skips to the next task that differs
    assert wrong_instruction("push-v3", ["push-v3", "push-back-v3"]) == INSTRUCTIONS["shelf-place-v3"]


def test_misspelled_task_is_one_line_naming_the_closest(make_env):
    with pytest.raises(ConfigError) as info:
        make_env("pick-plce-v3")
    assert str(info.value) == ("rollout.env_kwargs.task='pick-plce-v3' is not a Meta-World task; did you mean "
                               "'pick-place-v3'? (tasks end in -v3, e.g. reach-v3; groups: easy, medium, hard, "
                               "very-hard, mt10, mt50)")
    assert info.value.kind == "unknown-task"
    with pytest.raises(ConfigError, match=r"^rollout.tasks='mt-10' is not a Meta-World task; did you mean 'mt10'\?"):
        resolve_tasks("reach-v3,mt-10", "rollout.tasks")


def test_reset_step_render_shapes_and_dtypes(make_env):
    env = make_env(cameras=["corner2", "topview"])
    assert (env.action_dim, env.max_steps, env.instruction) == (4, 500, "Reach a goal position")
    obs, info = env.reset(seed=5)
    assert info == {"instruction": "Reach a goal position", "seed": 5, "task": "reach-v3"}
    assert {key: (value.shape, value.dtype) for key, value in obs.items()} == OBS
    np.testing.assert_array_equal(obs["agentview_image"], obs["corner2_image"])  # the first camera
    np.testing.assert_array_equal(obs["agent_pos"], obs["state"][:4])
    assert not np.array_equal(obs["corner2_image"], obs["topview_image"])
    obs, reward, terminated, truncated, info = env.step(np.zeros(4))
    assert {key: (value.shape, value.dtype) for key, value in obs.items()} == OBS
    assert isinstance(reward, float) and (terminated, truncated, env.is_success()) == (False, False, False)
    assert "success" in info
    scene = env.render_scene(48)
    assert scene.shape == (48, 48, 3) and scene.dtype == np.uint8
    with pytest.raises(EnvStepError, match=r"action has 3 values; expected 4"):
        env.step(np.zeros(3))


def test_corner2_is_lerobots_view(make_env):
    """LeRobot's MetaworldEnv: MT1 task, corner2 moved to (0.75, 0.075, 0.7), seeded reset, frames flipped."""
    import_metaworld()
    import metaworld

    mt1 = metaworld.MT1("reach-v3", seed=42)
    theirs = mt1.train_classes["reach-v3"](render_mode="rgb_array", camera_name="corner2", width=32, height=32)
    try:
        theirs.set_task(mt1.train_tasks[0])
        theirs.model.cam_pos[2] = [0.75, 0.075, 0.7]
        theirs.model.vis.quality.offsamples, theirs.model.vis.quality.shadowsize = 0, 0  # vlx's render settings
        theirs.reset()
        theirs._freeze_rand_vec, theirs.seeded_rand_vec = False, True
        theirs.seed(7)
        state, _ = theirs.reset(seed=7)
        frame = np.flip(theirs.render(), (0, 1))
    finally:
        theirs.close()
    obs, _ = make_env().reset(seed=7)
    np.testing.assert_array_equal(obs["state"], state.astype(np.float32))
    np.testing.assert_array_equal(obs["agentview_image"], frame)


def test_seeds_give_reproducible_initial_states(make_env):
    first, again, other = make_env("push-v3"), make_env("push-v3"), make_env("push-v3")
    a, b, c = first.reset(seed=11)[0], again.reset(seed=11)[0], other.reset(seed=12)[0]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["state"], c["state"]) and not np.array_equal(a["agentview_image"], c["agentview_image"])
    first.step(np.ones(4))
    np.testing.assert_array_equal(first.reset(seed=11)[0]["state"], a["state"])  # a used env resets the same way


def test_expert_succeeds_on_reach_and_success_is_latched(make_env):
    result = rollout(MetaWorldExpert(), "metaworld", [0], env_kwargs={"task": "reach-v3", "image_size": 16})
    assert result.episodes[0].success and 10 <= result.episodes[0].steps <= 100, result.episodes
    env = make_env(image_size=16)
    env.reset(seed=0)
    for _ in range(result.episodes[0].steps - 1):
        assert env.step(env.expert_action())[2] is False
    _, _, terminated, truncated, _ = env.step(env.expert_action())
    assert (terminated, truncated, env.is_success()) == (True, False, True)  # the episode ends at its first success
    with pytest.raises(EnvStepError, match="after the episode ended; call reset"):
        env.step(np.zeros(4))


def test_max_steps_truncates_and_bad_arguments_are_refused(make_env):
    env = make_env(max_steps=3)
    env.reset(seed=0)
    ends = [env.step(np.zeros(4))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)] and not env.is_success()
    with pytest.raises(ConfigError) as info:
        make_env(cameras=["cornr2"])
    assert str(info.value) == ("rollout.env_kwargs.cameras: 'cornr2' is not a camera of Meta-World's reach-v3; did you "
                               "mean 'corner2'? (cameras: topview, corner, corner2, corner3, corner4, behindGripper, "
                               "gripperPOV)")
    with pytest.raises(ConfigError, match=r"^rollout.env_kwargs.image_size=0; expected an integer >= 1"):
        make_env(image_size=0)
    with pytest.raises(ConfigError, match=r"^rollout.env_kwargs.cameras=\[\]; expected a camera name or a list"):
        make_env(cameras=[])


@pytest.mark.parametrize(("backend", "reason"), [
    ("bogus", "RuntimeError: invalid value for environment variable MUJOCO_GL: bogus"),  # refused when imported
    ("glx", "FatalError: "),  # imported, but no X display to make a GL context on
])
def test_no_gl_backend_is_one_line_naming_the_fix(tmp_path, backend, reason):
    result = run_vlx("data", "metaworld", "--tasks", "reach-v3", "--demos", "1", "--out", str(tmp_path / "d.hdf5"),
                     cwd=tmp_path, env_extra={"MUJOCO_GL": backend, "DISPLAY": ""}, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("vlx data: error:")]
    assert len(errors) == 1 and f"MuJoCo cannot render with MUJOCO_GL='{backend}' ({reason}" in errors[0]
    assert errors[0].endswith("; headless Linux: MUJOCO_GL=egl (apt-get install libegl1) or MUJOCO_GL=osmesa "
                              "(apt-get install libosmesa6); with a display: MUJOCO_GL=glfw")
    assert list(tmp_path.iterdir()) == []  # no file, not even the temporary one
