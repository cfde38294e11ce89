"""What the policy server accepts and returns: the Policy protocol, the request model, the error type.

The request model is strict (no coercion: a number is never accepted as a string), forbids unknown
fields and bounds every string. The instruction limit is set per server through the validation
context (`{"max_instruction_chars": N}`), so one model serves every configuration.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

MAX_UNNORM_KEY_CHARS = 200
# C0 controls other than tab/newline/carriage return, DEL, and lone surrogates (not encodable as UTF-8).
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@runtime_checkable
class Policy(Protocol):
    """What the server needs from a model: a VLA's `predict_action` and two attributes."""

    action_dim: int  # length of every returned action
    unnorm_keys: list[str]  # dataset names whose action statistics the model carries

    def predict_action(self, image: Image.Image, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        """The action for one RGB image and instruction, un-normalised with `unnorm_key`'s statistics.

        Raises a `vlx.errors.VlxError` subclass for a user mistake (e.g. a `ConfigError` for an unknown
        or missing unnorm_key); the server answers those with HTTP 422 and the message.
        """
        ...


class ActRequest(BaseModel):
    """Body of `POST /act`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(min_length=1, description="base64 (standard alphabet, padded) of a PNG or JPEG file")
    instruction: str = Field(min_length=1, description="the task in natural language")
    unnorm_key: str | None = Field(
        default=None, min_length=1, max_length=MAX_UNNORM_KEY_CHARS,
        description="which dataset's action statistics to un-normalise with (see GET /health)",
    )

    @field_validator("instruction")
    @classmethod
    def _instruction_limits(cls, value: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_instruction_chars")
        if limit is not None and len(value) > limit:
            raise PydanticCustomError(
                "string_too_long", "String should have at most {max_length} characters", {"max_length": limit}
            )
        if _BAD_CHARS.search(value):
            raise PydanticCustomError("bad_characters", "String contains control characters or lone surrogates")
        return value

    @field_validator("unnorm_key")
    @classmethod
    def _unnorm_key_chars(cls, value: str | None) -> str | None:
        if value is not None and _BAD_CHARS.search(value):
            raise PydanticCustomError("bad_characters", "String contains control characters or lone surrogates")
        return value


class ActResponse(BaseModel):
    """Body of a successful `POST /act`: the action, `action_dim` finite floats in the robot's units."""

    action: list[float]


class ErrorResponse(BaseModel):
    """Body of every error: a short message and, when one request field is at fault, its name."""

    error: str
    field: str | None = None


class ApiError(Exception):
    """An error answered with `status` and `{"error": message, "field": field}`."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers
