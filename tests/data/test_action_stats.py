"""Tests of ActionStats: OpenVLA's BOUNDS_Q99 statistics and normalisation, JSON round trips, and every error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlx.data.action_stats import ActionStats, select_stats, stats_from_table, stats_table
from vlx.errors import ConfigError, DataError


def _hand_actions() -> np.ndarray:
    """101 transitions: dim 0 = 0..100, dim 1 constant 3, dim 2 (gripper) -1 for 50 steps then +1."""
    steps = np.arange(101, dtype=np.float64)
    return np.stack([steps, np.full(101, 3.0), np.where(steps < 50, -1.0, 1.0)], axis=1)  # (101, 3)


@pytest.fixture
def hand() -> ActionStats:
    return ActionStats.from_actions(_hand_actions(), num_trajectories=4, where="hand.hdf5")


def _random_stats(seed: int = 0) -> tuple[np.ndarray, ActionStats]:
    rng = np.random.default_rng(seed)
    actions = rng.normal(loc=[10.0, -20.0, 5.0, 1.0], scale=[1.0, 3.0, 0.5, 1.0], size=(500, 4))  # (500, 4)
    return actions, ActionStats.from_actions(actions, num_trajectories=10)


def _assert_same(a: ActionStats, b: ActionStats) -> None:
    for key in ("mean", "std", "min", "max", "q01", "q99", "mask"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert getattr(a, key).dtype == getattr(b, key).dtype
    assert (a.num_transitions, a.num_trajectories) == (b.num_transitions, b.num_trajectories)


def test_statistics_of_a_hand_computed_example(hand: ActionStats) -> None:
    np.testing.assert_allclose(hand.q01, [1.0, 3.0, -1.0])
    np.testing.assert_allclose(hand.q99, [99.0, 3.0, 1.0])
    np.testing.assert_allclose(hand.mean, [50.0, 3.0, 1.0 / 101], rtol=1e-6)
    np.testing.assert_allclose(hand.std, [np.sqrt(850.0), 0.0, np.sqrt(1 - (1 / 101) ** 2)], rtol=1e-6)
    np.testing.assert_array_equal(hand.min, [0.0, 3.0, -1.0])
    np.testing.assert_array_equal(hand.max, [100.0, 3.0, 1.0])
    np.testing.assert_array_equal(hand.mask, [True, True, False])  # the gripper is not normalised by default
    assert hand.mask.dtype == bool and all(getattr(hand, k).dtype == np.float32 for k in ("mean", "q01", "q99"))
    assert (hand.action_dim, hand.num_transitions, hand.num_trajectories) == (3, 101, 4)
    with pytest.raises(ValueError, match="read-only"):
        hand.q01[0] = 5.0  # frozen statistics are immutable


def test_normalize_exact_values_clipping_and_untouched_gripper(hand: ActionStats) -> None:
    actions = np.array([[50.0, 3.0, 1.0], [25.5, 3.0, -1.0], [1.0, 3.0, 0.3], [100.0, 7.0, 5.0], [-5.0, -2.0, -7.5]])
    expected = np.array([[0.0, 0.0, 1.0], [-0.5, 0.0, -1.0], [-1.0, 0.0, 0.3], [1.0, 0.0, 5.0], [-1.0, 0.0, -7.5]])
    normalized = hand.normalize(actions)  # (5, 3)
    assert normalized.dtype == np.float32 and normalized.shape == (5, 3)
    np.testing.assert_allclose(normalized, expected, atol=1e-7)


def test_unnormalize_exact_values(hand: ActionStats) -> None:
    restored = hand.unnormalize(np.array([[0.0, 0.9, 0.3], [-1.0, -1.0, -4.0], [1.0, 1.0, 1.0], [-0.5, 0.0, 0.0]]))
    np.testing.assert_allclose(restored, [[50.0, 3.0, 0.3], [1.0, 3.0, -4.0], [99.0, 3.0, 1.0], [25.5, 3.0, 0.0]],
                               rtol=1e-7)


def test_zero_range_masked_dims_map_to_zero_and_back_to_their_constant(hand: ActionStats) -> None:
    assert hand.q01[1] == hand.q99[1] == 3.0
    np.testing.assert_array_equal(hand.normalize(np.array([[50.0, v, 0.0] for v in (3.0, 2.9, 3.1, -100.0)]))[:, 1], 0)
    np.testing.assert_array_equal(hand.unnormalize(np.array([[0.0, v, 0.0] for v in (-1.0, 0.0, 0.5, 1.0)]))[:, 1], 3)


def test_zero_range_unmasked_dims_pass_through() -> None:
    actions = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # the gripper is constant 1
    stats = ActionStats.from_actions(actions, num_trajectories=1)
    np.testing.assert_array_equal(stats.normalize(actions)[:, 1], 1.0)  # OpenVLA would zero it; vlx keeps it
    np.testing.assert_array_equal(stats.unnormalize(np.array([[0.0, 1.0]]))[:, 1], 1.0)


def test_round_trip_inside_the_quantiles_and_clipping_outside() -> None:
    actions, stats = _random_stats()
    rng = np.random.default_rng(1)
    inside = stats.q01 + rng.uniform(0, 1, size=(64, 4)) * (stats.q99 - stats.q01)  # (64, 4)
    inside[:, 3] = rng.uniform(-3, 3, size=64)  # the gripper may be anything
    np.testing.assert_allclose(stats.unnormalize(stats.normalize(inside)), inside, rtol=1e-5)
    normalized = stats.normalize(actions)  # (500, 4)
    assert np.abs(normalized[:, :3]).max() == 1.0  # some actions lie outside [q01, q99] and are clipped
    np.testing.assert_array_equal(normalized[:, 3], actions[:, 3].astype(np.float32))
    outside = np.stack([stats.q01 - 5, stats.q99 + 5])  # (2, 4)
    np.testing.assert_array_equal(stats.normalize(outside)[:, :3], [[-1, -1, -1], [1, 1, 1]])
    np.testing.assert_allclose(stats.unnormalize(stats.normalize(outside))[:, :3], [stats.q01[:3], stats.q99[:3]],
                               rtol=1e-6)


def test_batched_shapes_and_custom_mask() -> None:
    actions, _ = _random_stats()
    stats = ActionStats.from_actions(actions, num_trajectories=10, mask=[True, False, True, True])
    batch = actions[:24].reshape(2, 3, 4, 4)  # (2, 3, 4, A)
    normalized = stats.normalize(batch)
    assert normalized.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(normalized[..., 1], batch[..., 1].astype(np.float32))  # unmasked
    np.testing.assert_array_equal(normalized.reshape(-1, 4), stats.normalize(actions[:24]))
    assert np.abs(normalized[..., 3]).max() <= 1.0  # masked, though it is the last dim


def test_json_round_trip(hand: ActionStats) -> None:
    text = json.dumps(hand.to_dict())
    assert set(json.loads(text)) == {"mean", "std", "min", "max", "q01", "q99", "mask", "num_transitions",
                                     "num_trajectories"}
    _assert_same(ActionStats.from_dict(json.loads(text), where="stats.json"), hand)


def test_stats_table_round_trip(hand: ActionStats) -> None:
    _, other = _random_stats()
    table = json.loads(json.dumps(stats_table({"lift": hand, "can": other})))
    restored = stats_from_table(table, where="ckpt/action_stats.json")
    assert sorted(restored) == ["can", "lift"]
    _assert_same(restored["lift"], hand)
    _assert_same(restored["can"], other)


def test_from_dict_reads_openvla_norm_stats(hand: ActionStats) -> None:
    flat = hand.to_dict()
    counts = {key: flat.pop(key) for key in ("num_transitions", "num_trajectories")}
    openvla = {"action": flat, "proprio": {"mean": [0.0]}, **counts}  # OpenVLA's dataset_statistics.json entry
    _assert_same(ActionStats.from_dict(openvla, where="config.json: norm_stats"), hand)


@pytest.mark.parametrize(
    ("actions", "kwargs", "fragments"),
    [
        (np.zeros((0, 3)), {}, ["no actions", "(0, 3)"]),
        (np.zeros((4, 0)), {}, ["no actions", "(4, 0)"]),
        (np.zeros(5), {}, ["2-D", "(5,)"]),
        (np.zeros((2, 3, 4)), {}, ["2-D", "(2, 3, 4)"]),
        (np.array([[0, 1], [2, 3], [4, np.nan]]), {}, ["row 2", "not finite"]),
        (np.array([[np.inf, 1], [2, np.nan]]), {}, ["row 0", "not finite"]),
        ([["a", "b"]], {}, ["numeric"]),
        (np.zeros((3, 2)), {"mask": [True]}, ["mask has 1 entries", "2 dims"]),
        (np.zeros((3, 2)), {"mask": [1, 0]}, ["'mask'", "booleans"]),
        (np.zeros((3, 2)), {"num_trajectories": 0}, ["num_trajectories", "[1, 3]", "0"]),
        (np.zeros((3, 2)), {"num_trajectories": 4}, ["num_trajectories", "[1, 3]", "4"]),
    ],
)
def test_from_actions_errors(actions, kwargs, fragments) -> None:
    kwargs = {"num_trajectories": 1, **kwargs}
    with pytest.raises(DataError) as info:
        ActionStats.from_actions(actions, where="lift.hdf5", **kwargs)
    assert str(info.value).startswith("lift.hdf5: ")
    for fragment in fragments:
        assert fragment in str(info.value)


def _without(key: str):
    return lambda data: {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda data: [1, 2], ["must be an object", "[1, 2]"]),
        (_without("q01"), ["lack ['q01']", "expected keys"]),
        (_without("mask"), ["lack ['mask']"]),
        (_without("num_trajectories"), ["lack ['num_trajectories']"]),
        (lambda data: {**data, "q99": [1.0, 2.0]}, ["'q99' has 2 entries", "'q01' has 3"]),
        (lambda data: {**data, "mask": [True, False]}, ["'mask' has 2 entries"]),
        (lambda data: {**data, "std": ["a", "b", "c"]}, ["'std'", "finite numbers"]),
        (lambda data: {**data, "mean": [1.0, None, 2.0]}, ["'mean'", "finite numbers"]),
        (lambda data: {**data, "max": [1.0, float("nan"), 2.0]}, ["'max'", "finite numbers"]),
        (lambda data: {**data, "min": []}, ["'min'", "non-empty"]),
        (lambda data: {**data, "q01": [[1.0], [2.0, 3.0]]}, ["'q01'"]),
        (lambda data: {**data, "mask": [1, 1, 0]}, ["'mask'", "booleans"]),
        (lambda data: {**data, "num_transitions": -1}, ["'num_transitions'", "non-negative integer"]),
        (lambda data: {**data, "num_trajectories": 2.5}, ["'num_trajectories'", "non-negative integer"]),
        (lambda data: {**data, "q01": [1.0, 4.0, -1.0]}, ["'q01' exceeds 'q99' in dim 1"]),
    ],
)
def test_from_dict_errors(hand: ActionStats, edit, fragments) -> None:
    with pytest.raises(DataError) as info:
        ActionStats.from_dict(edit(hand.to_dict()), where="ckpt/action_stats.json: dataset 'lift'")
    assert str(info.value).startswith("ckpt/action_stats.json: dataset 'lift': ")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_stats_from_table_errors_name_the_dataset(hand: ActionStats) -> None:
    with pytest.raises(DataError, match=r"^stats.json: expected an object mapping dataset names"):
        stats_from_table([hand.to_dict()], where="stats.json")
    broken = {"lift": hand.to_dict(), "can": {**hand.to_dict(), "q99": [1.0]}}
    with pytest.raises(DataError, match=r"^stats.json: dataset 'can': 'q99' has 1 entries"):
        stats_from_table(broken, where="stats.json")


@pytest.mark.parametrize("method", ["normalize", "unnormalize"])
def test_wrong_action_dim_is_a_data_error(hand: ActionStats, method: str) -> None:
    with pytest.raises(DataError, match=r"shape \(2, 4\).*3-dim actions.*\(\.\.\., 3\)"):
        getattr(hand, method)(np.zeros((2, 4)))
    with pytest.raises(DataError, match=r"shape \(\)"):
        getattr(hand, method)(np.float32(1.0))


def test_select_stats_follows_openvla_rule(hand: ActionStats) -> None:
    _, other = _random_stats()
    assert select_stats({"lift": hand}, None) is hand
    assert select_stats({"lift": hand, "can": other}, "can") is other
    with pytest.raises(ConfigError, match=r"2 datasets \['can', 'lift'\]; pass unnorm_key="):
        select_stats({"lift": hand, "can": other}, None)
    with pytest.raises(ConfigError, match=r"unnorm_key='lfit'.*known datasets: \['can', 'lift'\]; did you mean 'lift'"):
        select_stats({"lift": hand, "can": other}, "lfit")
    with pytest.raises(ConfigError, match=r"unnorm_key='zzz'.*\['lift'\]$"):
        select_stats({"lift": hand}, "zzz")
    with pytest.raises(ConfigError, match="no action statistics"):
        select_stats({}, None)
