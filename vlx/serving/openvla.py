"""OpenVLA's REST protocol (`vla-scripts/deploy.py`): `POST /act` with json_numpy arrays, the action array back.

The request is a JSON object `{"image": <json_numpy uint8 (H, W, 3)>, "instruction": str, "unnorm_key": str,
optional}`, or deploy.py's form for clients without json_numpy, `{"encoded": "<that object as a json_numpy
string>"}` and nothing else. A vlx model with named cameras or a state also takes the keys of
vlx.serving.keymap (its cameras by name, `state` as a json_numpy float array or a list of numbers). The answer is
what deploy.py answers: the action itself, json_numpy-encoded — `{"__numpy__": base64, "dtype": "<f8", "shape":
[action_dim]}` (or `[execute_steps, action_dim]` for a chunked model) — and, for the encoded form, that encoding
as a JSON string. deploy.py answers every failure with the JSON string "error" and status 200; vlx answers the
status the failure deserves (400, 401, 413, 415, 422, 503, 504; 500 only when the model fails) with vlx's
`{"error": message, "field": name}` body, which a deploy.py client (`requests.post(...).json()`) reads just as
well. The checks and their order are vlx REST's (vlx.serving.rest), with `X-API-Key` for the key.
"""

from __future__ import annotations

import functools

import numpy as np
from fastapi import FastAPI, Request
from starlette.responses import Response

from vlx.serving.arrays import to_json_numpy
from vlx.serving.http import json_response, json_text
from vlx.serving.keymap import KeyMap, Observation
from vlx.serving.requests import load_json
from vlx.serving.rest import decode_and_predict
from vlx.serving.schema import ApiError
from vlx.serving.service import PolicyService


def parse_request(body: bytes, key_map: KeyMap, service: PolicyService) -> tuple[Observation, bool]:
    """The observation in a deploy.py request body, and whether it came in the `{"encoded": ...}` form."""
    data = load_json(body)
    if "encoded" not in data:
        return key_map.read(data, service.limits), False
    if len(data) != 1:
        others = sorted(key for key in data if key != "encoded")
        raise ApiError(422, f"an encoded request has only the key 'encoded'; got also {others!r:.100}", "encoded")
    if not isinstance(data["encoded"], str):
        raise ApiError(422, f"encoded must be a string (a json_numpy document), not {type(data['encoded']).__name__}",
                       "encoded")
    try:
        inner = load_json(data["encoded"].encode("utf-8"))
    except UnicodeEncodeError:
        raise ApiError(400, "encoded is not valid JSON: it holds a lone surrogate", "encoded") from None
    except ApiError as exc:
        raise ApiError(exc.status, exc.message.replace("request body", "encoded", 1), "encoded") from None
    return key_map.read(inner, service.limits), True


def add_routes(app: FastAPI, service: PolicyService, key_map: KeyMap) -> None:
    """`POST /act` in deploy.py's form."""

    @app.post("/act")
    async def act(request: Request) -> Response:
        parse = functools.partial(parse_request, key_map=key_map, service=service)
        (_, encoded), prediction = await decode_and_predict(
            request, service, parse, lambda decoded: (decoded[0].inputs, decoded[0].instruction,
                                                      decoded[0].unnorm_key, decoded[0].state))
        rows = prediction.rows[0] if service.single_action else prediction.rows
        action = to_json_numpy(np.asarray(rows, dtype=np.float64))
        return json_response(200, json_text(action) if encoded else action)
