"""Executing chunks: receding horizon asks every `execute_steps` steps and plays the chunk's first actions in order;
ACT's temporal ensembling averages the predictions covering a step with weights exp(-m·i), i = 0 the oldest
(values worked out by hand); settings are checked; the rollout asks the policy only when an episode needs it."""

from __future__ import annotations

import numpy as np
import pytest

from vlx.envs import rollout
from vlx.errors import ConfigError, DataError
from vlx.execution import ChunkExecutor, ExecutionSettings


def chunk(start: float, size: int = 4) -> np.ndarray:
    """(size, 1) actions start, start + 1, ... (each action names its step)."""
    return (start + np.arange(size, dtype=np.float64))[:, None]


def test_receding_horizon_plays_the_first_steps_then_asks_again() -> None:
    executor = ChunkExecutor(ExecutionSettings.from_config(4, {"execute_steps": 2}))
    played, asked = [], 0
    for step in range(6):
        if executor.needs_prediction():
            asked += 1
            executor.add(chunk(100 * step))  # a prediction made at `step`
        played.append(float(executor.next_action()[0]))
    assert asked == 3 and played == [0, 1, 200, 201, 400, 401]


def test_default_executes_the_whole_chunk() -> None:
    settings = ExecutionSettings.from_config(4, {})
    executor = ChunkExecutor(settings)
    executor.add(chunk(0))
    assert settings.steps_per_chunk == 4
    assert [float(executor.next_action()[0]) for _ in range(4)] == [0, 1, 2, 3] and executor.needs_prediction()


def test_temporal_ensembling_weights_the_oldest_prediction_most() -> None:
    m = 0.5
    executor = ChunkExecutor(ExecutionSettings.from_config(3, {"ensemble": "exp", "ensemble_weight": m}))
    predictions = [np.array([[10.0], [11.0], [12.0]]), np.array([[20.0], [21.0], [22.0]]),
                   np.array([[30.0], [31.0], [32.0]]), np.array([[40.0], [41.0], [42.0]])]
    played = []
    for prediction in predictions:
        assert executor.needs_prediction()
        executor.add(prediction)
        assert not executor.needs_prediction()
        played.append(float(executor.next_action()[0]))
    w0, w1, w2 = 1.0, np.exp(-m), np.exp(-2 * m)
    expected = [10.0,  # step 0: only the first chunk
                (w0 * 11 + w1 * 20) / (w0 + w1),  # step 1: chunk 0 (oldest) and chunk 1
                (w0 * 12 + w1 * 21 + w2 * 30) / (w0 + w1 + w2),  # step 2: chunks 0, 1, 2
                (w0 * 22 + w1 * 31 + w2 * 40) / (w0 + w1 + w2)]  # step 3: chunk 0 no longer covers it
    np.testing.assert_allclose(played, expected, rtol=1e-6)


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'rollout.execute_steps'=9; expected a whole number from 1 to the policy's "
                                          r"chunk size 8"):
        ExecutionSettings.from_config(8, {"execute_steps": 9})
    with pytest.raises(ConfigError, match="'rollout.execute_steps'=0"):
        ExecutionSettings.from_config(8, {"execute_steps": 0})
    with pytest.raises(ConfigError, match="'rollout.ensemble'='mean'"):
        ExecutionSettings.from_config(8, {"ensemble": "mean"})
    with pytest.raises(ConfigError, match="exclude each other"):
        ExecutionSettings.from_config(8, {"ensemble": "exp", "execute_steps": 2})
    with pytest.raises(ConfigError, match="'serve.ensemble_weight'=-1"):
        ExecutionSettings.from_config(8, {"ensemble": "exp", "ensemble_weight": -1}, where="serve")


def test_wrong_chunks_and_early_actions_are_errors() -> None:
    executor = ChunkExecutor(ExecutionSettings.from_config(4, {}))
    with pytest.raises(DataError, match="before add"):
        executor.next_action()
    with pytest.raises(DataError, match=r"chunk of shape \(3, 1\); expected \(4, action_dim\)"):
        executor.add(chunk(0, size=3))


class ChunkPolicy:
    """Chunks of K actions that all point right; counts how many observations it was asked about."""

    def __init__(self, size: int) -> None:
        self.size, self.asked = size, []

    def __call__(self, observations: list[dict], instructions: list[str]) -> np.ndarray:
        self.asked.append(len(observations))
        return np.tile(np.array([1.0, 0.0, -1.0], dtype=np.float32), (len(observations), self.size, 1))


def test_rollout_asks_once_per_chunk_of_executed_steps() -> None:
    policy = ChunkPolicy(4)
    result = rollout(policy, "block-reach", [0, 1], batch_size=2, env_kwargs={"max_steps": 6},
                     execution=ExecutionSettings.from_config(4, {"execute_steps": 3}))
    assert [e.steps for e in result.episodes] == [6, 6] and policy.asked == [2, 2]  # steps 0 and 3
    ensembled = ChunkPolicy(4)
    rollout(ensembled, "block-reach", [0], env_kwargs={"max_steps": 5},
            execution=ExecutionSettings.from_config(4, {"ensemble": "exp"}))
    assert ensembled.asked == [1] * 5
    with pytest.raises(DataError, match=r"expected \(1, 8, 3\)"):
        rollout(ChunkPolicy(4), "block-reach", [0], execution=ExecutionSettings.from_config(8, {}))
