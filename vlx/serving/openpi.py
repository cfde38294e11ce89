"""openpi's websocket protocol (`src/openpi/serving/websocket_policy_server.py`, `openpi-client`) on `/`.

A client connects — with `Authorization: Api-Key KEY` when the server has a key, else the handshake is refused
with HTTP 401 and vlx's JSON error body — and receives one msgpack frame of metadata (what `GET /health` reports,
plus `keys`, the observation keys accepted). It then sends observations, one binary msgpack frame each (numpy
arrays in openpi's msgpack_numpy form; keys per vlx.serving.keymap, e.g. openpi's LIBERO `observation/image`,
`observation/wrist_image`, `observation/state`, `prompt`), and gets for each `{"actions": float64 (N,
action_dim), "policy_timing": {"infer_ms"}, "server_timing": {"infer_ms", "prev_total_ms"}}`: N is
`execute_steps` for a chunked model, 1 for a one-step model or with `ensemble=exp` (one history per connection).
On an error the server sends one text frame, a one-line message, and closes: 1007 for a frame that is no valid
msgpack or holds a bad array, 1008 for an observation that does not fit the model, 1009 for a frame over
`max_request_bytes`, 1003 for a text frame, 1013 when busy, 1011 when the model fails or is too slow. openpi
sends a traceback and closes with 1011 for every error; vlx logs the traceback and sends no internals (openpi's
client raises on the text frame either way). `GET /healthz` answers 200 `OK` without a key, as openpi's does.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.responses import PlainTextResponse, Response

from vlx.serving.arrays import pack, unpack_frame
from vlx.serving.http import MAX_MESSAGE, error_response
from vlx.serving.keymap import KeyMap, Observation
from vlx.serving.schema import ApiError
from vlx.serving.service import KeyHeader, Limits, PolicyService

log = logging.getLogger("vlx.serving")
API_KEY = KeyHeader("Authorization", "Api-Key ")
# HTTP-style status of an ApiError → websocket close code and reason (RFC 6455 section 7.4.1)
CLOSE = {400: (1007, "invalid frame"), 413: (1009, "frame too large"), 415: (1003, "binary frames only"),
         422: (1008, "invalid observation"), 503: (1013, "busy, try again later")}
SERVER_ERROR = (1011, "server error")


def add_routes(app: FastAPI, service: PolicyService, key_map: KeyMap) -> None:
    """The websocket on `/` and `GET /healthz`."""
    metadata = pack({**service.describe(), "keys": key_map.keys})
    connections = itertools.count()

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("OK\n")

    @app.websocket("/")
    async def policy(websocket: WebSocket) -> None:
        try:
            API_KEY.check(service, websocket.headers)
        except ApiError as exc:
            await _deny(websocket, exc)
            return
        await websocket.accept()
        session = f"openpi-{next(connections)}"  # the ensembling history of this connection
        try:
            await websocket.send_bytes(metadata)
            await _serve(websocket, service, key_map, session)
        except WebSocketDisconnect:
            pass
        finally:
            if service.sessions is not None:
                service.sessions.forget(session)


async def _serve(websocket: WebSocket, service: PolicyService, key_map: KeyMap, session: str) -> None:
    """Answer frames until the client leaves or a frame fails (which closes the connection, as openpi does)."""
    prev_total_ms: float | None = None
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        start = time.perf_counter()
        try:
            reply = await _answer(message, service, key_map, session)
        except ApiError as exc:
            await _close(websocket, exc)
            return
        except Exception:  # noqa: BLE001 — logged with its traceback; the client gets no internals
            log.exception("openpi frame failed")
            await _close(websocket, ApiError(500, "internal server error (see the server log)"))
            return
        reply["server_timing"] = {"infer_ms": (time.perf_counter() - start) * 1000}
        if prev_total_ms is not None:  # like openpi: the previous frame's time including its send
            reply["server_timing"]["prev_total_ms"] = prev_total_ms
        await websocket.send_bytes(pack(reply))
        prev_total_ms = (time.perf_counter() - start) * 1000


async def _answer(message: dict[str, Any], service: PolicyService, key_map: KeyMap, session: str) -> dict[str, Any]:
    data = message.get("bytes")
    if data is None:
        raise ApiError(415, "frames must be binary msgpack (openpi's msgpack_numpy), not text", "frame")
    if len(data) > service.limits.max_request_bytes:
        raise ApiError(413, f"frame is larger than {service.limits.max_request_bytes} bytes", "frame")
    with service.slot():
        observation = await service.decode(_read, data, key_map, service.limits)
        prediction = await service.predict(observation.inputs, observation.instruction, observation.unnorm_key,
                                           observation.state, session)
    actions = np.asarray(prediction.rows, dtype=np.float64)  # (N, action_dim)
    return {"actions": actions, "policy_timing": {"infer_ms": prediction.infer_ms}}


def _read(data: bytes, key_map: KeyMap, limits: Limits) -> Observation:
    return key_map.read(unpack_frame(data), limits)


def _message(exc: ApiError) -> str:
    return exc.message if len(exc.message) <= MAX_MESSAGE else exc.message[: MAX_MESSAGE - 3] + "..."


async def _close(websocket: WebSocket, exc: ApiError) -> None:
    """The error as a text frame, then the close code that fits it (the client may already be gone)."""
    code, reason = CLOSE.get(exc.status, SERVER_ERROR)
    try:
        await websocket.send_text(_message(exc))
        await websocket.close(code, f"{reason}; the message is in the previous frame")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


async def _deny(websocket: WebSocket, exc: ApiError) -> None:
    """Refuse the handshake: an HTTP error response where the server supports it, else close 1008 at once."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc.status, exc.message, exc.field))
    else:
        await websocket.close(1008, _message(exc)[:120])
