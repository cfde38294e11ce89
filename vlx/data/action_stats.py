"""Per-dataset action statistics and OpenVLA's `BOUNDS_Q99` normalisation of actions to [-1, 1].

`ActionStats.from_actions` computes mean, std, min, max and the 1st/99th percentiles (q01, q99) of every
action dimension, plus a mask of the dimensions to normalise (by default all but the last, the gripper).
`normalize` maps [q01, q99] linearly onto [-1, 1] and clips; `unnormalize` inverts it; unmasked
dimensions pass through unchanged. A masked dimension whose range is zero (q01 == q99, which includes
OpenVLA's min == max "unused" dimensions) normalises to exactly 0 and un-normalises to exactly its
constant q01, so it round-trips and costs the action head nothing; unlike OpenVLA, an *unmasked*
constant dimension is left alone, because zeroing it would lose its value. Statistics serialise to
JSON with OpenVLA's key names; several datasets' statistics live in one table keyed by dataset name, and
`select_stats` picks one by `unnorm_key` with OpenVLA's rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError
from vlx.registry import closest

EPS = 1e-8  # OpenVLA's guard against division by a zero range
ARRAY_KEYS = ("mean", "std", "min", "max", "q01", "q99")
COUNT_KEYS = ("num_transitions", "num_trajectories")
ALL_KEYS = (*ARRAY_KEYS, "mask", *COUNT_KEYS)


def first_nonfinite_row(values: np.ndarray) -> int | None:
    """Index of the first row of a (N, ...) array holding a NaN or inf, or None when all are finite."""
    bad = ~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))  # (N,)
    return int(np.argmax(bad)) if bad.any() else None


def _vector(value: Any, key: str, kind: str, where: str) -> np.ndarray:
    """`value` as a non-empty 1-D array whose dtype kind is in `kind` ("fiu" numbers, "b" booleans)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    finite = kind == "b" or (array.dtype.kind in kind and bool(np.isfinite(array).all()))
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in kind or not finite:
        expected = "booleans" if kind == "b" else "finite numbers"
        raise DataError(f"{where}: {key!r} must be a non-empty list of {expected}, got {value!r:.80}")
    return array


@dataclass(frozen=True, eq=False)
class ActionStats:
    """Statistics of one dataset's actions; every array is (A,) float32 except `mask`, (A,) bool."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    num_transitions: int
    num_trajectories: int

    def __post_init__(self) -> None:  # own read-only copies, so frozen statistics really are immutable
        for key in (*ARRAY_KEYS, "mask"):
            array = np.array(getattr(self, key), dtype=bool if key == "mask" else np.float32)  # (A,)
            array.setflags(write=False)
            object.__setattr__(self, key, array)

    @property
    def action_dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_actions(
        cls, actions: np.ndarray, num_trajectories: int, mask: Sequence[bool] | None = None, where: str = "actions"
    ) -> ActionStats:
        """Statistics of (N, A) actions from `num_trajectories` demos; `mask` defaults to all but the last dim."""
        try:
            x = np.asarray(actions, dtype=np.float64)  # (N, A)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: actions must be a numeric (transitions, action_dim) array ({exc})") from None
        if x.ndim != 2:
            raise DataError(f"{where}: actions must be a 2-D (transitions, action_dim) array, got shape {x.shape}")
        if x.size == 0:
            raise DataError(f"{where}: no actions (shape {x.shape}); statistics need at least one transition")
        row = first_nonfinite_row(x)
        if row is not None:
            raise DataError(f"{where}: action row {row} is not finite ({x[row].tolist()}); every action must be finite")
        if isinstance(num_trajectories, bool) or not isinstance(num_trajectories, (int, np.integer)) or not (
            1 <= num_trajectories <= len(x)
        ):
            raise DataError(f"{where}: num_trajectories must be an int in [1, {len(x)}], got {num_trajectories!r}")
        action_dim = x.shape[1]
        default = [True] * (action_dim - 1) + [False]  # the last dim is the gripper
        mask_array = _vector(default if mask is None else mask, "mask", "b", where)  # (A,)
        if len(mask_array) != action_dim:
            raise DataError(f"{where}: mask has {len(mask_array)} entries but the actions have {action_dim} dims")
        q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)  # (A,) each
        columns = {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0), "q01": q01, "q99": q99}
        arrays = {key: value.astype(np.float32) for key, value in columns.items()}
        return cls(**arrays, mask=mask_array, num_transitions=len(x), num_trajectories=int(num_trajectories))

    def _checked(self, values: np.ndarray, name: str) -> np.ndarray:
        """`values` as a float64 (..., A) array, or a DataError when the last axis is not this action_dim."""
        try:
            x = np.asarray(values, dtype=np.float64)  # (..., A)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} must be a numeric (..., {self.action_dim}) array ({exc})") from None
        if x.ndim == 0 or x.shape[-1] != self.action_dim:
            raise DataError(
                f"{name} have shape {x.shape} but these statistics are for {self.action_dim}-dim actions "
                f"(expected shape (..., {self.action_dim}))"
            )
        return x

    @property
    def _zero_range(self) -> np.ndarray:
        return self.mask & (self.q01 == self.q99)  # (A,) masked dims with nothing to scale

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """(..., A) actions in dataset units → (..., A) float32; masked dims in [-1, 1], the rest unchanged."""
        x = self._checked(actions, "actions")  # (..., A)
        low, high = self.q01.astype(np.float64), self.q99.astype(np.float64)  # (A,)
        scaled = np.clip(2 * (x - low) / (high - low + EPS) - 1, -1, 1)  # (..., A)
        scaled = np.where(self._zero_range, 0.0, scaled)
        return np.where(self.mask, scaled, x).astype(np.float32)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        """(..., A) normalised actions → (..., A) float32 in dataset units (inverse of `normalize` in range)."""
        a = self._checked(normalized, "normalized actions")  # (..., A)
        low, high = self.q01.astype(np.float64), self.q99.astype(np.float64)  # (A,)
        restored = 0.5 * (a + 1) * (high - low + EPS) + low  # (..., A)
        restored = np.where(self._zero_range, low, restored)
        return np.where(self.mask, restored, a).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable statistics with OpenVLA's key names (lists, bools and ints)."""
        data: dict[str, Any] = {key: getattr(self, key).tolist() for key in ARRAY_KEYS}
        data["mask"] = [bool(value) for value in self.mask]
        data.update(num_transitions=self.num_transitions, num_trajectories=self.num_trajectories)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> ActionStats:
        """Statistics from `to_dict` output or OpenVLA's `{"action": {...}, "num_transitions", ...}` form."""
        if not isinstance(data, Mapping):
            raise DataError(
                f"{where}: action statistics must be an object with keys {list(ALL_KEYS)}, not {data!r:.60}"
            )
        if isinstance(data.get("action"), Mapping):  # OpenVLA's dataset_statistics.json / norm_stats entry
            data = {**data["action"], **{key: data[key] for key in COUNT_KEYS if key in data}}
        missing = [key for key in ALL_KEYS if key not in data]
        if missing:
            raise DataError(f"{where}: action statistics lack {missing}; expected keys {list(ALL_KEYS)}")
        arrays = {key: _vector(data[key], key, "fiu", where).astype(np.float32) for key in ARRAY_KEYS}
        mask = _vector(data["mask"], "mask", "b", where)  # (A,)
        action_dim = len(arrays["q01"])
        for key, value in [*arrays.items(), ("mask", mask)]:
            if len(value) != action_dim:
                raise DataError(f"{where}: {key!r} has {len(value)} entries but 'q01' has {action_dim}")
        for key in COUNT_KEYS:
            count = data[key]
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                raise DataError(f"{where}: {key!r} must be a non-negative integer, got {count!r:.80}")
        if (arrays["q01"] > arrays["q99"]).any():
            dim = int(np.argmax(arrays["q01"] > arrays["q99"]))
            raise DataError(f"{where}: 'q01' exceeds 'q99' in dim {dim}; expected q01 <= q99 in every dim")
        return cls(**arrays, mask=mask, **{key: int(data[key]) for key in COUNT_KEYS})


def stats_table(stats: Mapping[str, ActionStats]) -> dict[str, dict[str, Any]]:
    """Several datasets' statistics as one JSON-serialisable table keyed by dataset name."""
    return {name: entry.to_dict() for name, entry in stats.items()}


def stats_from_table(table: Mapping[str, Any], where: str) -> dict[str, ActionStats]:
    """The inverse of `stats_table`; `where` (usually the JSON file) prefixes every error."""
    if not isinstance(table, Mapping):
        raise DataError(f"{where}: expected an object mapping dataset names to action statistics, got {table!r:.80}")
    return {str(name): ActionStats.from_dict(entry, f"{where}: dataset {name!r}") for name, entry in table.items()}


def select_stats(stats: Mapping[str, ActionStats], unnorm_key: str | None, what: str = "action") -> ActionStats:
    """OpenVLA's rule: `unnorm_key` names a dataset; it may be omitted only when there is exactly one.
    `what` ("action" or "state") names the statistics in messages."""
    known = sorted(stats)
    if not known:
        verb = "un-normalise" if what == "action" else "normalise the state"
        raise ConfigError(f"no {what} statistics are available (none were saved with the model); cannot {verb}")
    if unnorm_key is None:
        if len(known) == 1:
            return stats[known[0]]
        raise ConfigError(
            f"the model was trained on {len(known)} datasets {known}; pass unnorm_key=... naming one of them",
            kind="unnorm-key",
        )
    if unnorm_key not in stats:
        guess = closest(unnorm_key, known)
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise ConfigError(f"unnorm_key={unnorm_key!r} has no {what} statistics; known datasets: {known}{hint}",
                          kind="unnorm-key")
    return stats[unnorm_key]
