"""Tests of batched closed-loop evaluation: expert and null policies, the language-blind override, GIFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlx.envs import BlockReach, ExpertPolicy, rollout
from vlx.envs.video import BAR_HEIGHT
from vlx.errors import ConfigError, VlxError

SEEDS = list(range(20))


class RecordingPolicy:
    """An observation policy that returns zeros and remembers what it was shown."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[str]]] = []

    def __call__(self, observations: list[dict], instructions: list[str]) -> np.ndarray:
        for obs in observations:
            assert {"agentview_image", "wrist_image", "agent_pos", "gripper"} <= set(obs)
            assert all(obs[key].shape == (64, 64, 3) and obs[key].dtype == np.uint8
                       for key in ("agentview_image", "wrist_image"))
        self.batches.append((len(observations), list(instructions)))
        return np.zeros((len(observations), 3), dtype=np.float32)


def test_noiseless_expert_succeeds_everywhere():
    result = rollout(ExpertPolicy(noise=0.0), "block-reach", SEEDS, batch_size=6)
    assert result.success_rate == 1.0
    assert [e.seed for e in result.episodes] == SEEDS
    for episode in result.episodes:
        env = BlockReach()
        assert episode.instruction == env.reset(episode.seed)[1]["instruction"]
        assert 2 <= episode.steps <= 10


def test_results_do_not_depend_on_batch_size():
    one = rollout(ExpertPolicy(noise=0.0), "block-reach", SEEDS, batch_size=1)
    many = rollout(ExpertPolicy(noise=0.0), BlockReach, SEEDS, batch_size=16)
    assert one.episodes == many.episodes


def test_zero_policy_never_succeeds_and_batches_shrink():
    policy = RecordingPolicy()
    result = rollout(policy, "block-reach", SEEDS[:5], batch_size=4, env_kwargs={"max_steps": 3})
    assert result.success_rate == 0.0 and [e.steps for e in result.episodes] == [3] * 5
    assert [size for size, _ in policy.batches] == [4, 4, 4, 1, 1, 1]
    envs = [BlockReach() for _ in SEEDS[:4]]
    assert policy.batches[0][1] == [env.reset(seed)[1]["instruction"] for env, seed in zip(envs, SEEDS, strict=False)]


def test_instruction_override_is_what_the_policy_sees():
    policy = RecordingPolicy()
    result = rollout(policy, "block-reach", SEEDS[:3], instruction_override="move to the block",
                     env_kwargs={"max_steps": 2})
    assert {text for _, texts in policy.batches for text in texts} == {"move to the block"}
    assert all(e.instruction.startswith("move to the ") and e.instruction != "move to the block"
               for e in result.episodes)


def test_gifs_have_one_frame_per_step_plus_the_first(tmp_path: Path):
    result = rollout(ExpertPolicy(noise=0.3, seed=0), "block-reach", SEEDS[:4], num_videos=2, video_dir=tmp_path)
    assert result.videos == [tmp_path / "episode_0.gif", tmp_path / "episode_1.gif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0.gif", "episode_1.gif"]
    for path, episode in zip(result.videos, result.episodes, strict=False):
        with Image.open(path) as gif:
            assert gif.n_frames == episode.steps + 1
            assert gif.size == (256, 128 + BAR_HEIGHT)


def test_errors():
    with pytest.raises(ConfigError, match="video_dir"):
        rollout(RecordingPolicy(), "block-reach", [0], num_videos=1)
    with pytest.raises(ConfigError, match="seeds is empty"):
        rollout(RecordingPolicy(), "block-reach", [])
    with pytest.raises(ConfigError, match="block-rech"):
        rollout(RecordingPolicy(), "block-rech", [0])
    with pytest.raises(ConfigError, match="env.max_stepz"):
        rollout(RecordingPolicy(), "block-reach", [0], env_kwargs={"max_step": 0.1, "max_stepz": 3})
    with pytest.raises(VlxError, match=r"shape \(1, 2\).*expected \(1, 3\)"):
        rollout(lambda observations, texts: np.zeros((len(observations), 2)), "block-reach", [0])
