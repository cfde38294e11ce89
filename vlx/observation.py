"""What a VLA observes: named camera images, an optional robot state and the instruction, checked against the model.

`ObservationSpec` is read off a model's config (`observation.cameras`, `observation.state_keys`, and the
state width `proprio.in_dim`): which cameras the model was trained with, in the order their patch tokens
take, and how long its state vector is. A model without `observation.cameras` sees one image (LLaVA,
OpenVLA), given bare. `images` turns what a caller passes — one image, or `{camera: image}` — into the model's
camera order, and `state` checks a state vector; a missing or unknown camera, a state of the wrong length, or
NaN/inf in it is a one-line `ObservationError` naming the camera or the field. The same spec serves
`predict_action`, the closed-loop rollouts and the policy server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError


class ObservationError(DataError, ValueError):
    """An observation that does not fit the model: cameras, state length or values (kind `observation`)."""

    def __init__(self, message: str, kind: str = "observation") -> None:
        super().__init__(message, kind)


def camera_names(value: Any, key: str) -> list[str] | None:
    """A config list of distinct, non-empty camera (or state key) names, or None."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
    if not names or not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ConfigError(f"config key '{key}'={value!r}; expected a list of distinct, non-empty names")
    return names


@dataclass(frozen=True)
class ObservationSpec:
    """The cameras (None: one bare image), the state keys and the state length (None: no state) of a model."""

    cameras: list[str] | None = None
    state_keys: list[str] | None = None
    state_dim: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ObservationSpec:
        node = config.get("observation") or {}
        proprio = config.get("proprio")
        state_dim = None if not proprio else int(proprio["in_dim"])
        state_keys = camera_names(node.get("state_keys"), "observation.state_keys")
        if state_keys and state_dim is None:
            raise ConfigError("config key 'observation.state_keys' is set but the model has no state input: add a "
                              "proprio projector (proprio=mlp proprio.in_dim=N) or remove observation.state_keys")
        return cls(camera_names(node.get("cameras"), "observation.cameras"), state_keys, state_dim)

    @property
    def num_cameras(self) -> int:
        return len(self.cameras) if self.cameras else 1

    def num_tokens(self, num_patches: int) -> int:
        """Image-slot positions of one observation: every camera's patches, then one state token."""
        return self.num_cameras * num_patches + (1 if self.state_dim else 0)

    def images(self, value: Any) -> list[Any]:
        """The camera images of one observation in the model's camera order."""
        if not self.cameras:
            if isinstance(value, Mapping):
                raise ObservationError(f"this model sees one image, not named cameras; got cameras {sorted(value)}")
            return [value]
        if not isinstance(value, Mapping):
            raise ObservationError(f"this model sees the cameras {self.cameras}; pass {{camera: image}}, "
                                   f"not a single {type(value).__name__}")
        missing = [name for name in self.cameras if name not in value]
        if missing:
            raise ObservationError(f"camera {missing[0]!r} is missing: the model was trained with cameras "
                                   f"{self.cameras}; got {sorted(value)}")
        unknown = sorted(set(value) - set(self.cameras))
        if unknown:
            raise ObservationError(f"camera {unknown[0]!r} is not one of the model's cameras {self.cameras}")
        return [value[name] for name in self.cameras]

    def state(self, value: Any, field: str = "state") -> np.ndarray | None:
        """A checked state (P,) float32, or None for a model without state input (which must get none)."""
        if self.state_dim is None:
            if value is not None:
                raise ObservationError(f"{field}: this model has no state input (no proprio projector); "
                                       "do not pass one")
            return None
        if value is None:
            raise ObservationError(f"{field} is missing: this model needs the robot state, {self.state_dim} numbers"
                                   + (f" ({' + '.join(self.state_keys)})" if self.state_keys else ""))
        try:
            state = np.asarray(value, dtype=np.float64).reshape(-1)  # (P,)
        except (TypeError, ValueError):
            raise ObservationError(f"{field} must be {self.state_dim} numbers, got {value!r:.80}") from None
        if state.size != self.state_dim:
            raise ObservationError(f"{field} has {state.size} values; the model expects {self.state_dim}")
        if not np.isfinite(state).all():
            index = int(np.flatnonzero(~np.isfinite(state))[0])
            raise ObservationError(f"{field}[{index}] is {state[index]}: every state value must be a finite number")
        return state.astype(np.float32)
