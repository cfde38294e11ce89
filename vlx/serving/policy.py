"""What the policy server needs from a policy, checked once, and the policy's answers, checked every time.

`observation_spec` and `chunk_size` read a policy's cameras, state length and chunk size (defaulting to one bare
image, no state, one step for a plain OpenVLA-style policy); `check_settings` refuses a policy or server setting
that cannot work before the server starts; `call_policy` passes `state=` only when there is one; `finite_rows`
turns whatever `predict_action` returned into rows of finite floats or says what is wrong with it (a 500).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vlx.errors import ConfigError
from vlx.observation import ObservationSpec, camera_names
from vlx.serving.schema import MAX_CAMERAS, MAX_NAME_CHARS, MAX_STATE_VALUES, Policy


def finite_rows(raw: Any, chunk_size: int, action_dim: int) -> list[list[float]]:
    """The policy's output as `chunk_size` rows of `action_dim` finite floats, or a ValueError saying what is wrong."""
    if hasattr(raw, "detach"):  # a torch tensor, maybe bf16 or on a GPU
        raw = raw.detach().float().cpu().numpy()
    array = np.asarray(raw, dtype=np.float64)
    if chunk_size == 1:
        if array.size != action_dim:
            raise ValueError(f"it returned {array.size} values, expected action_dim={action_dim}")
        array = array.reshape(1, action_dim)
    elif array.shape != (chunk_size, action_dim):
        raise ValueError(f"it returned shape {array.shape}, "
                         f"expected (chunk_size, action_dim)=({chunk_size}, {action_dim})")
    rows = [[float(v) for v in row] for row in array]
    for index, row in enumerate(rows):
        if not all(math.isfinite(v) for v in row):
            where = f" in row {index}" if chunk_size > 1 else ""
            raise ValueError(f"it returned non-finite values (NaN or infinity){where}")
    return rows


def observation_spec(policy: Policy) -> ObservationSpec:
    """The policy's cameras and state length, checked; one bare image and no state when it has no `observation`."""
    spec = getattr(policy, "observation", None)
    if spec is None:
        return ObservationSpec()
    cameras = camera_names(getattr(spec, "cameras", None), "policy.observation.cameras")
    state_dim = getattr(spec, "state_dim", None)
    if cameras and (len(cameras) > MAX_CAMERAS or max(len(name) for name in cameras) > MAX_NAME_CHARS):
        raise ConfigError(f"policy.observation.cameras: the server takes at most {MAX_CAMERAS} cameras of at most "
                          f"{MAX_NAME_CHARS} characters each, got {cameras!r:.200}")
    if state_dim is not None and (isinstance(state_dim, bool) or not isinstance(state_dim, int)
                                  or not 1 <= state_dim <= MAX_STATE_VALUES):
        raise ConfigError(f"policy.observation.state_dim must be None or an int from 1 to {MAX_STATE_VALUES}, "
                          f"got {state_dim!r}")
    return spec if isinstance(spec, ObservationSpec) else ObservationSpec(cameras, getattr(spec, "state_keys", None),
                                                                          state_dim)


def chunk_size(policy: Policy) -> int:
    size = getattr(policy, "chunk_size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"policy.chunk_size must be a positive int, got {size!r}")
    return size


def call_policy(policy: Policy, inputs: Any, instruction: str, unnorm_key: str | None,
                state: list[float] | None) -> Any:
    """`predict_action`, given `state=` only when there is one (a model without a state input never gets it)."""
    if state is None:
        return policy.predict_action(inputs, instruction, unnorm_key)
    return policy.predict_action(inputs, instruction, unnorm_key, state=state)


def check_settings(policy: Policy, api_key: str | None, limits: dict[str, float]) -> None:
    if not callable(getattr(policy, "predict_action", None)):
        raise ConfigError(f"{type(policy).__name__} has no predict_action(); the server needs a VLA policy")
    dim = getattr(policy, "action_dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"policy.action_dim must be a positive int, got {dim!r}")
    keys = getattr(policy, "unnorm_keys", None)
    if keys is None or isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"policy.unnorm_keys must be a list of dataset names, got {keys!r}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise ConfigError("api_key must be a non-empty string (or None for no authentication)")
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
