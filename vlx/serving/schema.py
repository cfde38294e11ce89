"""What the policy server accepts and returns: the Policy protocol, the request model, the error type.

The request model is strict (no coercion: a number is never accepted as a string, a bool never as a
number), forbids unknown fields and bounds every string, list and mapping. Names (unnorm_key, camera
names, session) share one rule: 1 to 200 characters, no control characters or lone surrogates. The
instruction limit is set per server through the validation context (`{"max_instruction_chars": N}`), so
one model serves every configuration. Which of `image` / `images` a request must carry, and whether its
cameras and state fit, depends on the model: the app checks that after this schema.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Protocol, runtime_checkable

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

MAX_NAME_CHARS = 200
MAX_UNNORM_KEY_CHARS = MAX_NAME_CHARS
MAX_CAMERAS = 16  # entries of `images`
MAX_STATE_VALUES = 1024  # entries of `state`
# C0 controls other than tab/newline/carriage return, DEL, and lone surrogates (not encodable as UTF-8).
BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _no_bad_chars(value: str) -> str:
    if BAD_CHARS.search(value):
        raise PydanticCustomError("bad_characters", "String contains control characters or lone surrogates")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):  # 1e400 parses as infinity without a NaN/Infinity literal
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(_no_bad_chars)]
ImageB64 = Annotated[str, Field(min_length=1)]
StateValue = Annotated[float, AfterValidator(_finite)]


@runtime_checkable
class Policy(Protocol):
    """What the server needs from a model: a VLA's `predict_action` and two attributes.

    Two more are read when present, and default to the single-image, single-step behaviour when absent:
    `observation` (an object with `cameras`, a list of camera names or None for one bare image, and
    `state_dim`, the length of the robot state or None for no state input, e.g. a
    `vlx.observation.ObservationSpec`) and `chunk_size` (actions per prediction, K; default 1).
    """

    action_dim: int  # length of every returned action
    unnorm_keys: list[str]  # dataset names whose action statistics the model carries

    def predict_action(self, image: Any, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        """The action for one observation and instruction, un-normalised with `unnorm_key`'s statistics.

        `image` is one RGB PIL image, or `{camera: image}` for a model with `observation.cameras`; a model
        with `observation.state_dim` is also given `state=[...]` (a keyword argument, never passed to a
        model without a state input). Returns (action_dim,) values, or (chunk_size, action_dim) for
        chunk_size > 1. Raises a `vlx.errors.VlxError` subclass for a user mistake (e.g. a `ConfigError`
        for an unknown or missing unnorm_key); the server answers those with HTTP 422 and the message.
        """
        ...


class ActRequest(BaseModel):
    """Body of `POST /act`: one observation (`image` or `images`, optionally `state`) and the instruction."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: ImageB64 | None = Field(default=None, description="base64 (standard alphabet, padded) of a PNG or JPEG "
                                                               "file, for a model that sees one image")
    images: dict[Name, ImageB64] | None = Field(
        default=None, max_length=MAX_CAMERAS, description="{camera: base64 PNG/JPEG}, for a model with named cameras",
    )
    state: list[StateValue] | None = Field(
        default=None, max_length=MAX_STATE_VALUES, description="the robot state (JSON numbers), for a model with a "
                                                               "state input",
    )
    instruction: str = Field(min_length=1, description="the task in natural language")
    unnorm_key: Name | None = Field(
        default=None, description="which dataset's action statistics to un-normalise with (see GET /health)",
    )
    session: Name | None = Field(
        default=None, description="the client's episode, for a server that ensembles chunks (ensemble=exp)",
    )

    @field_validator("instruction")
    @classmethod
    def _instruction_limits(cls, value: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_instruction_chars")
        if limit is not None and len(value) > limit:
            raise PydanticCustomError(
                "string_too_long", "String should have at most {max_length} characters", {"max_length": limit}
            )
        return _no_bad_chars(value)


class ActResponse(BaseModel):
    """Body of a successful `POST /act` for a one-step model (or an ensembling server): `action_dim` finite
    floats in the robot's units."""

    action: list[float]


class ChunkResponse(BaseModel):
    """Body of a successful `POST /act` for a chunked model: the first `execute_steps` actions of the chunk
    (all chunk_size by default), each `action_dim` finite floats, to execute in order."""

    actions: list[list[float]]


class ErrorResponse(BaseModel):
    """Body of every error: a short message and, when one request field is at fault, its name."""

    error: str
    field: str | None = None


class ApiError(Exception):
    """An error answered with `status` and `{"error": message, "field": field}`."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers
