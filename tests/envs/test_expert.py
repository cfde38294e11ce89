"""Tests of the scripted expert: exact labels, clean-label/noisy-execution split, and success rates."""

from __future__ import annotations

import numpy as np
import pytest

from vlx.envs import BlockReach, ExpertPolicy, expert_action, perturb
from vlx.envs.record import run_expert_episode
from vlx.errors import ConfigError


def test_label_is_clipped_direction_and_gripper_closes_only_near_goal():
    env = BlockReach()
    env.reset(0)
    delta = env.goal_position - env.agent_position
    label = expert_action(env)
    assert label.dtype == np.float32 and label.shape == (3,)
    np.testing.assert_allclose(label[:2], np.clip(delta / 0.1, -1, 1), rtol=1e-6)
    assert label[2] == -1.0  # the start is >= 0.3 from every block
    env._agent = env.goal_position + [0.06, -0.07]  # |delta| = 0.092 <= 0.1
    np.testing.assert_allclose(expert_action(env), [-0.6, 0.7, 1.0], rtol=1e-5)


def test_perturb_noises_only_the_moves_and_clips():
    rng = np.random.default_rng(0)
    label = np.array([1.0, -0.2, 1.0], dtype=np.float32)
    executed = np.stack([perturb(label, 0.3, rng) for _ in range(2000)])  # (N, 3)
    assert np.all(executed[:, 2] == 1.0) and executed.max() <= 1.0 and executed.min() >= -1.0
    assert abs(executed[:, 1].std() - 0.3) < 0.02 and abs(executed[:, 1].mean() + 0.2) < 0.02
    np.testing.assert_array_equal(perturb(label, 0.0, rng), label)
    with pytest.raises(ConfigError, match="noise=-0.1"):
        perturb(label, -0.1, rng)


def test_noiseless_expert_always_succeeds_and_lands_on_the_goal():
    env = BlockReach()
    for seed in range(50):
        episode = run_expert_episode(env, seed, noise=0.0)
        assert episode.success and len(episode.actions) <= 10  # Chebyshev distance <= 0.85 -> <= 9 moves + close
        np.testing.assert_allclose(env.agent_position, env.goal_position, atol=1e-12)
        assert episode.actions[-1, 2] == 1.0 and np.all(episode.actions[:-1, 2] == -1.0)


def test_noisy_expert_success_rate():
    env = BlockReach()
    episodes = [run_expert_episode(env, seed, noise=0.3) for seed in range(100)]
    assert np.mean([e.success for e in episodes]) >= 0.98  # measured 1.000 over 2000 seeds
    assert 5.0 < np.mean([len(e.actions) for e in episodes]) < 8.0  # measured 6.1 (5.5 without noise)


def test_expert_policy_acts_on_a_batch_of_envs():
    envs = [BlockReach() for _ in range(3)]
    for seed, env in enumerate(envs):
        env.reset(seed)
    actions = ExpertPolicy(noise=0.0).act_envs(envs, ["ignored"] * 3)
    assert actions.shape == (3, 3)
    np.testing.assert_array_equal(actions, np.stack([expert_action(env) for env in envs]))
    noisy = ExpertPolicy(noise=0.3, seed=1).act_envs(envs, ["ignored"] * 3)
    np.testing.assert_array_equal(noisy, ExpertPolicy(noise=0.3, seed=1).act_envs(envs, ["ignored"] * 3))
    assert not np.array_equal(noisy[:, :2], actions[:, :2]) and np.array_equal(noisy[:, 2], actions[:, 2])
