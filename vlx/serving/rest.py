"""vlx's own REST protocol: `POST /act` with a base64 PNG/JPEG image (or `{camera: base64}`), JSON in and out.

Requests pass, in order: the body size limit (Content-Length and the bytes actually streamed, 413), the API key
in `X-API-Key` (401), the content type (415), the busy limit (503), strict UTF-8 JSON without duplicate keys
(400), the request schema and what the model takes — `image` or `images`, its cameras, its state, a `session`
when ensembling (422), the images (400), the unnorm_key (422), then the model (vlx.serving.service: 504 on a
timeout, 500 when the model fails). A one-step model answers `{"action": [...]}`; a chunked one (chunk_size K > 1)
`{"actions": [[...], ...]}`, the first `execute_steps` rows of its chunk, or, with `ensemble="exp"`,
`{"action": [...]}` temporally ensembled over the chunks predicted so far for the request's `session`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from starlette.responses import Response

from vlx.serving.http import json_response, read_body, require_json
from vlx.serving.keymap import KeyMap
from vlx.serving.requests import parse_act_request
from vlx.serving.service import KeyHeader, PolicyService, Prediction

API_KEY = KeyHeader("X-API-Key")
T = TypeVar("T")


async def decode_and_predict(request: Request, service: PolicyService, parse: Callable[[bytes], T],
                             arguments: Callable[[T], tuple[Any, ...]]) -> tuple[T, Prediction]:
    """A JSON `POST /act`'s common path: the API key, the content type, a busy slot, the body read and decoded off the
    event loop by `parse`, then the model called with `arguments(decoded)` (`PolicyService.predict`'s arguments)."""
    API_KEY.check(service, request.headers)
    require_json(request)
    with service.slot():
        body = await read_body(request)
        decoded = await service.decode(parse, body)
        prediction = await service.predict(*arguments(decoded))
    return decoded, prediction


def add_routes(app: FastAPI, service: PolicyService, key_map: KeyMap | None = None) -> None:
    """`POST /act` in vlx's form (`key_map` does not apply: the fields are fixed)."""
    limits = service.limits
    parse = functools.partial(parse_act_request, max_instruction_chars=limits.max_instruction_chars,
                              **limits.image, observation=service.spec, needs_session=service.sessions is not None)

    @app.post("/act")
    async def act(request: Request) -> Response:
        (act_request, _), prediction = await decode_and_predict(
            request, service, parse, lambda decoded: (decoded[1], decoded[0].instruction, decoded[0].unnorm_key,
                                                      decoded[0].state, decoded[0].session))
        if service.single_action:
            return json_response(200, {"action": prediction.rows[0]})
        return json_response(200, {"actions": prediction.rows})
