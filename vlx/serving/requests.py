"""Parsing `POST /act` bodies: strict JSON, the request schema, what the model takes, the images.

`parse_act_request` checks, in order: strict UTF-8 JSON without duplicate keys or NaN/Infinity literals (400),
an object (422), the schema plus the fields the model decides on — `image` xor `images`, and a `session` when
the server ensembles (422, every problem at once, the first named) —, the cameras by name and the state against
the model's observation spec (422, the model's own message; nothing is decoded yet), then each image (400 naming
`image` or `images.<camera>`). `load_json`, the first step, also reads OpenVLA-protocol bodies.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from vlx.observation import ObservationError, ObservationSpec
from vlx.serving.http import MAX_FIELD, validation_error
from vlx.serving.images import ImageError, decode_image
from vlx.serving.schema import ActRequest, ApiError


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ApiError(400, f"request body is not valid JSON: duplicate key {key[:MAX_FIELD]!r}", "body")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ApiError(400, f"request body is not valid JSON: {name} is not a JSON number", "body")


# A decoder object rather than json.loads, which a client library in the same process may have patched
# (json_numpy.patch() does).
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def load_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: strict UTF-8, no duplicate keys, no NaN/Infinity literals (400), an object (422)."""
    try:
        text = body.decode("utf-8")
        data = _DECODER.decode(text)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid JSON: it is not UTF-8", "body") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply", "body") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc.msg} (character {exc.pos})", "body") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"request body must be a JSON object, not {type(data).__name__}", "body")
    return data


def _model_field_errors(data: dict[str, Any], spec: ObservationSpec, needs_session: bool) -> list[dict[str, Any]]:
    """Errors shaped like pydantic's for the fields the model decides on: `image` xor `images`, and `session`."""
    expected, other = ("images", "image") if spec.cameras else ("image", "images")
    given = {name for name in ("image", "images") if data.get(name) is not None}
    errors: list[dict[str, Any]] = []
    if other in given:
        takes = (f"the cameras {spec.cameras}, as images: {{camera: base64}}" if spec.cameras
                 else "one image, as image (not named cameras)")
        both = "give image or images, not both; " if expected in given else ""
        errors.append({"loc": (other,), "msg": f"{both}this model sees {takes}"})
    elif expected not in given:
        cameras = f" (this model sees the cameras {spec.cameras})" if spec.cameras else ""
        errors.append({"loc": (expected,), "msg": f"Field required{cameras}"})
    if needs_session and data.get("session") is None:
        errors.append({"loc": ("session",), "msg": "Field required: this server ensembles chunks (ensemble=exp) per "
                                                   "session; send one session name per episode"})
    return errors


def _check_observation(request: ActRequest, spec: ObservationSpec) -> None:
    """A 422 with the model's own message when the cameras (by name: nothing is decoded yet) or the state do not fit."""
    try:
        if request.images is not None:
            spec.images(dict.fromkeys(request.images))
    except ObservationError as exc:
        raise ApiError(422, str(exc), "images") from None
    try:
        spec.state(request.state)
    except ObservationError as exc:
        raise ApiError(422, str(exc), "state") from None


def _decode(text: str, camera: str | None, limits: dict[str, int]) -> Any:
    """One request image as RGB, or a 400 naming `image` or `images.<camera>`."""
    try:
        return decode_image(text, **limits)
    except ImageError as exc:
        if camera is None:
            raise ApiError(400, str(exc), "image") from None
        raise ApiError(400, f"camera {camera!r}: {exc}", f"images.{camera}") from None


def parse_act_request(
    body: bytes, *, max_instruction_chars: int, max_bytes: int, max_pixels: int, max_side: int,
    observation: ObservationSpec | None = None, needs_session: bool = False,
) -> tuple[ActRequest, Any]:
    """The validated request and its RGB image (or {camera: RGB image}), or an ApiError (400 body/image, 422 schema)."""
    spec = observation or ObservationSpec()
    data = load_json(body)
    errors = _model_field_errors(data, spec, needs_session)
    try:
        request = ActRequest.model_validate(data, strict=True, context={"max_instruction_chars": max_instruction_chars})
    except ValidationError as exc:
        errors += exc.errors(include_input=False, include_url=False)
    if errors:
        raise validation_error(errors)
    _check_observation(request, spec)
    limits = dict(max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)
    if request.images is None:
        return request, _decode(request.image, None, limits)
    return request, {camera: _decode(request.images[camera], camera, limits) for camera in spec.cameras}
