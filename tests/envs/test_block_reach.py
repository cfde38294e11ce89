"""Tests of the block-reach environment: seeding, layout constraints, rendering geometry and dynamics."""

from __future__ import annotations

import numpy as np
import pytest

from vlx.envs import PALETTE, BlockReach, EnvStepError
from vlx.errors import ConfigError, VlxError
from vlx.registry import ENVIRONMENTS

COLOURS = dict(PALETTE)
FLOOR, OUTSIDE, WHITE = (200, 200, 200), (40, 40, 40), (255, 255, 255)


def _env(seed: int = 0, **kwargs) -> BlockReach:
    env = BlockReach(**kwargs)
    env.reset(seed)
    return env


def _pixel(env: BlockReach, point: np.ndarray) -> tuple[int, int]:
    """(row, col) of the agent-centred pixel containing world `point` (x right, y up)."""
    p, scale = env.agent_position, env.image_size / 2
    return int(np.floor((p[1] + 1 - point[1]) * scale)), int(np.floor((point[0] - (p[0] - 1)) * scale))


def test_registered_and_defaults():
    env = ENVIRONMENTS.build({"name": "block-reach"}, where="env")
    assert isinstance(env, BlockReach)
    assert (env.num_blocks, env.image_size, env.block_size, env.max_step, env.success_radius, env.max_steps) == (
        3, 64, 0.16, 0.1, 0.1, 30)
    assert env.action_dim == 3
    assert env.env_args() == {"env_name": "block-reach", "type": "vlx", "env_kwargs": {
        "num_blocks": 3, "image_size": 64, "block_size": 0.16, "max_step": 0.1, "success_radius": 0.1,
        "max_steps": 30, "block_distance": 0.25, "start_distance": 0.3, "wrist_half_width": 0.25}}


def test_same_seed_same_episode_and_different_seeds_differ():
    (obs_a, info_a), (obs_b, info_b) = BlockReach().reset(7), BlockReach().reset(7)
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_b[key])
    assert info_a == info_b == {"instruction": info_a["instruction"], "seed": 7}
    states = {tuple(_env(seed).state()) for seed in range(20)}
    assert len(states) == 20


def test_layout_constraints_hold_over_200_seeds():
    instructions = set()
    for seed in range(200):
        env = _env(seed)
        blocks, agent = env.block_positions, env.agent_position  # (3, 2), (2,)
        assert np.all((blocks >= 0.1) & (blocks <= 0.9)) and np.all((agent >= 0.05) & (agent <= 0.95))
        pairwise = np.linalg.norm(blocks[:, None] - blocks[None], axis=-1)[np.triu_indices(3, 1)]
        assert pairwise.min() >= 0.25
        assert np.linalg.norm(blocks - agent, axis=1).min() >= 0.3
        state = env.state()
        assert len(set(state[-3:].tolist())) == 3  # distinct colours
        instructions.add(env.instruction)
    assert instructions == {f"move to the {name} block" for name, _ in PALETTE}


def test_state_vector_layout():
    env = _env(3)
    state = env.state()
    assert state.dtype == np.float32 and state.shape == (3 + 3 * 3 + 1,)
    np.testing.assert_allclose(state[:2], env.agent_position, rtol=1e-6)
    assert state[2] == 0.0
    np.testing.assert_allclose(state[3:9], env.block_positions.reshape(-1), rtol=1e-6)
    goal = int(state[9])
    np.testing.assert_allclose(env.block_positions[goal], env.goal_position)
    assert PALETTE[int(state[10 + goal])][0] == env.goal_colour


@pytest.mark.parametrize("seed", range(10))
def test_agent_centred_image_geometry(seed: int):
    env = _env(seed)
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image[31:33, 31:33], np.full((2, 2, 3), WHITE))
    for centre, colour in zip(env.block_positions, env.state()[-3:], strict=True):
        row, col = _pixel(env, centre)
        assert tuple(image[row, col]) == PALETTE[int(colour)][1]
        # the square is ~5 px wide (0.16 * 32): 2 px away is still the block, 4 px away is floor
        assert tuple(image[row, min(col + 2, 63)]) == PALETTE[int(colour)][1]
        assert tuple(image[row, col + 4]) == FLOOR or tuple(image[row, col - 4]) == FLOOR
    row, col = _pixel(env, env.goal_position)
    assert tuple(image[row, col]) == COLOURS[env.goal_colour]
    assert tuple(image[0, 0]) in (OUTSIDE, FLOOR)


def test_image_shows_world_y_up():
    env = _env(0)
    env._agent = np.array([0.5, 0.5])  # arena spans rows/cols 16..47; above the arena (row < 16) is outside
    image = env.render()
    assert tuple(image[10, 32]) == OUTSIDE and tuple(image[20, 32]) in {FLOOR, *COLOURS.values()}
    env._agent = np.array([0.5, 0.95])  # near the top: the arena's top edge is 1.6 px below the window's centre row
    image = env.render()
    assert tuple(image[25, 5]) == OUTSIDE and tuple(image[40, 5]) == OUTSIDE and tuple(image[40, 20]) != OUTSIDE


def test_render_scene_outlines_goal_and_draws_agent():
    env = _env(1)
    scene = env.render_scene(128)
    assert scene.dtype == np.uint8 and scene.shape == (128, 128, 3)
    goal = env.goal_position
    row, col = int((1 - goal[1]) * 128), int(goal[0] * 128)
    assert tuple(scene[row, col]) == COLOURS[env.goal_colour]
    edge = int(np.floor((goal[0] + 0.08) * 128)) + 1  # just right of the block: outline pixels
    assert tuple(scene[row, edge]) == (20, 20, 20)
    agent = env.agent_position
    assert tuple(scene[int((1 - agent[1]) * 128), int(agent[0] * 128)]) == WHITE


def test_step_clips_actions_and_positions():
    env = _env(0)
    start = env.agent_position
    obs, reward, terminated, truncated, info = env.step(np.array([5.0, -5.0, -1.0]))
    np.testing.assert_allclose(env.agent_position, np.clip(start + [0.1, -0.1], 0, 1))
    assert obs["agent_pos"].dtype == np.float32 and obs["gripper"].tolist() == [0.0]
    assert (reward, terminated, truncated, info) == (0.0, False, False, {"success": False, "steps": 1})
    for _ in range(15):
        env.step(np.array([-1.0, -1.0, -1.0]))
    np.testing.assert_array_equal(env.agent_position, [0.0, 0.0])


def test_success_needs_closed_gripper_and_is_latched():
    env = _env(2)
    env._agent = env.goal_position + [0.05, 0.0]
    *_, terminated, truncated, info = env.step(np.array([0.0, 0.0, -1.0]))
    assert not terminated and not env.is_success()
    obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, 0.5]))
    assert (reward, terminated, truncated, env.is_success()) == (1.0, True, False, True)
    assert obs["gripper"].tolist() == [1.0] and env.state()[2] == 1.0
    with pytest.raises(EnvStepError, match="after the episode ended"):
        env.step(np.zeros(3))


def test_truncation_at_max_steps():
    env = _env(4, max_steps=5)
    flags = [env.step(np.zeros(3))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    assert env.steps == 5 and not env.is_success()


@pytest.mark.parametrize("action", [np.zeros(2), np.zeros((1, 3)), np.zeros(4), np.array([np.nan, 0, 0]),
                                    np.array([0, np.inf, 0])])
def test_bad_actions_raise(action):
    env = _env(0)
    with pytest.raises(EnvStepError, match="action") as info:
        env.step(action)
    assert isinstance(info.value, ValueError) and isinstance(info.value, VlxError)


def test_step_before_reset_and_bad_config_raise():
    with pytest.raises(EnvStepError, match="before reset"):
        BlockReach().step(np.zeros(3))
    with pytest.raises(ConfigError, match="num_blocks=6"):
        BlockReach(num_blocks=6)
    with pytest.raises(ConfigError, match="image_size=63"):
        BlockReach(image_size=63)
    with pytest.raises(ConfigError, match="cannot place"):
        BlockReach(num_blocks=5, block_distance=0.9).reset(0)
