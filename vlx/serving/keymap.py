"""Which observation key of the OpenVLA and openpi protocols feeds which input of the model, and reading them.

A `KeyMap` maps wire keys to the model's inputs: a camera (or `image`, the one bare image of a model without
cameras), `state`, `instruction` or `unnorm_key`. By default it accepts OpenVLA's `image`, `instruction` and
`unnorm_key`; openpi's LIBERO keys `observation/image` (the first camera that is not a wrist camera),
`observation/wrist_image` (the first camera named `*wrist*`, else the second), `observation/state` and `prompt`;
and every camera by its own name and as `observation/<camera>`, plus `state`. `key_map` entries from the config
add keys or re-point them. `KeyMap.read` turns a decoded request into the model's inputs with the same rules as
vlx's REST schema (strict types, bounded strings, finite state values, the model's own camera and state
messages), each error naming the wire key: unknown or repeated keys, a missing camera, a wrong state are 422s; an
array that is no usable image (dtype, shape, size) is a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from vlx.config_schema import closest
from vlx.errors import ConfigError
from vlx.observation import ObservationError, ObservationSpec
from vlx.serving.arrays import decode_value
from vlx.serving.http import MAX_FIELD, validation_error
from vlx.serving.images import ImageError, array_to_image
from vlx.serving.schema import BAD_CHARS, MAX_NAME_CHARS, MAX_STATE_VALUES, ActRequest, ApiError
from vlx.serving.service import Limits

TEXT_TARGETS = ("instruction", "unnorm_key")
MAX_KEYS = 64  # entries of one observation


@dataclass(frozen=True)
class Observation:
    """A request's inputs for `predict_action`: the image (or {camera: image}), instruction, unnorm_key, state."""

    inputs: Any
    instruction: str
    unnorm_key: str | None
    state: list[float] | None


def default_keys(spec: ObservationSpec) -> dict[str, str]:
    """The wire keys accepted without any `key_map` (see the module docstring)."""
    keys = {"instruction": "instruction", "prompt": "instruction", "unnorm_key": "unnorm_key",
            "state": "state", "observation/state": "state"}
    if not spec.cameras:
        return {**keys, "image": "image", "observation/image": "image"}
    for camera in spec.cameras:
        keys.setdefault(camera, camera)
        keys.setdefault(f"observation/{camera}", camera)
    cameras = spec.cameras
    wrist = next((c for c in cameras if "wrist" in c.lower()), cameras[1] if len(cameras) > 1 else None)
    main = next(c for c in cameras if c != wrist) if len(cameras) > 1 or wrist is None else cameras[0]
    keys.setdefault("image", main)
    keys.setdefault("observation/image", main)
    if wrist is not None and wrist != main:
        keys.setdefault("observation/wrist_image", wrist)
    return keys


@dataclass(frozen=True)
class KeyMap:
    """Wire key → model input (a camera, `image`, `state`, `instruction`, `unnorm_key`), for one model."""

    keys: dict[str, str]
    spec: ObservationSpec

    @classmethod
    def build(cls, spec: ObservationSpec, overrides: Mapping[str, str] | None = None) -> KeyMap:
        """The default keys with `overrides` applied; a ConfigError for an entry that names no input of the model."""
        keys = default_keys(spec)
        targets = [*(spec.cameras or ["image"]), "state", *TEXT_TARGETS]
        for wire, target in (overrides or {}).items():
            if not isinstance(wire, str) or not wire or len(wire) > MAX_NAME_CHARS or BAD_CHARS.search(wire):
                raise ConfigError(f"key_map: {wire!r:.80} is not a usable key (1 to {MAX_NAME_CHARS} characters)")
            if target not in targets:
                raise ConfigError(f"key_map: {wire!r} maps to {target!r:.80}, which is not an input of this model"
                                  f"{closest(str(target), targets)}; a key maps to one of: {', '.join(targets)}")
            keys[wire] = target
        return cls(keys, spec)

    def wires(self, target: str) -> str:
        """The wire keys that feed `target`, for messages: `observation/state or state`."""
        return " or ".join(wire for wire, mapped in self.keys.items() if mapped == target) or "(none; add a key_map)"

    def read(self, data: Any, limits: Limits) -> Observation:
        """The model's inputs from a request's decoded fields (a dict), or an ApiError naming the wire key."""
        if not isinstance(data, dict):
            raise ApiError(422, f"the observation must be a map of keys to values, not {type(data).__name__}", "body")
        if len(data) > MAX_KEYS:
            raise ApiError(422, f"the observation has {len(data)} keys; at most {MAX_KEYS} are accepted", "body")
        given: dict[str, tuple[str, Any]] = {}
        for wire, value in data.items():
            if not isinstance(wire, str):
                raise ApiError(422, f"observation keys must be strings, got {type(wire).__name__} {wire!r:.40}", "body")
            target = self.keys.get(wire)
            if target is None:
                raise ApiError(422, f"unknown key {wire[:MAX_FIELD]!r}{closest(wire, list(self.keys))}; this server "
                                    f"takes: {', '.join(self.keys)}", wire)
            if target in given:
                raise ApiError(422, f"{given[target][0]!r} and {wire!r} both give {target}; send one", wire)
            given[target] = (wire, decode_value(value, wire, limits.max_request_bytes))
        request = self._validate(given, limits)
        images = {target: given[target] for target in (self.spec.cameras or ["image"]) if target in given}
        for target in self.spec.cameras or ["image"]:
            if target not in images:
                what = f"camera {target!r}" if self.spec.cameras else "the image"
                raise ApiError(422, f"{what} is missing: send it as {self.wires(target)}", target)
        state_wire = given.get("state", ("state", None))[0]
        try:
            self.spec.state(request.state, field=state_wire)
        except ObservationError as exc:
            if request.state is None:
                raise ApiError(422, f"{exc}; send it as {self.wires('state')}", state_wire) from None
            raise ApiError(422, str(exc), state_wire) from None
        decoded = {target: _image(wire, value, limits) for target, (wire, value) in images.items()}
        inputs = decoded if self.spec.cameras else decoded["image"]
        return Observation(inputs, request.instruction, request.unnorm_key, request.state)

    def _validate(self, given: dict[str, tuple[str, Any]], limits: Limits) -> ActRequest:
        """The instruction, unnorm_key and state under vlx REST's schema (strict, bounded), errors named by wire key."""
        if "instruction" not in given:
            raise ApiError(422, f"the instruction is missing: send it as {self.wires('instruction')}", "instruction")
        fields = {target: given[target][1] for target in (*TEXT_TARGETS, "state") if target in given}
        if "state" in fields:
            fields["state"] = _state_values(given["state"][0], fields["state"])
        try:
            return ActRequest.model_validate(fields, strict=True,
                                             context={"max_instruction_chars": limits.max_instruction_chars})
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            for error in errors:
                loc = list(error.get("loc", ()))
                if loc and loc[0] in given:
                    loc[0] = given[loc[0]][0]
                error["loc"] = tuple(loc)
            raise validation_error(errors) from None


def _state_values(wire: str, value: Any) -> Any:
    """A state array as a list of Python numbers (the schema checks each); other values are left to the schema."""
    if not isinstance(value, np.ndarray):
        return value
    if value.ndim != 1:
        raise ApiError(422, f"{wire} must be a 1-D array of numbers, got shape {list(value.shape)}", wire)
    if value.size > MAX_STATE_VALUES:
        raise ApiError(422, f"{wire} has {value.size} values; at most {MAX_STATE_VALUES} are accepted", wire)
    return value.tolist()  # bool stays bool (refused), ints stay ints, floats become Python floats (float64)


def _image(wire: str, value: Any, limits: Limits) -> Any:
    if not isinstance(value, np.ndarray):
        raise ApiError(422, f"{wire} must be a uint8 image array (H, W, 3), not {type(value).__name__}", wire)
    try:
        return array_to_image(value, max_pixels=limits.max_image_pixels, max_side=limits.max_image_side)
    except ImageError as exc:
        raise ApiError(400, f"{wire}: {exc}", wire) from None
