"""The policy server: a FastAPI app that answers `POST /act` with a VLA's action for an observation and instruction.

`create_app(policy)` builds it. Requests pass, in order: the body size limit (Content-Length and the
bytes actually streamed, 413), the API key (401), the content type (415), strict UTF-8 JSON without
duplicate keys (400), the request schema and what the model takes — `image` or `images`, its cameras,
its state, a `session` when ensembling (422), the images (400), the unnorm_key (422), then the model,
one call at a time on its own thread under a timeout (504). Every error is JSON
`{"error": message, "field": name-or-null}`; no client input yields a 5xx — a 500 means the policy
itself failed or returned a non-finite or wrongly shaped action (logged with its traceback), a 503 that
more than `max_pending` requests are already in progress, a 504 that the model was too slow.

A one-step model answers `{"action": [...]}`; a chunked one (chunk_size K > 1) `{"actions": [[...], ...]}`,
the first `execute_steps` rows of its chunk, or, with `ensemble="exp"`, `{"action": [...]}` temporally
ensembled over the chunks predicted so far for the request's `session` (vlx.serving.sessions).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from vlx.errors import VlxError
from vlx.execution import ExecutionSettings
from vlx.serving.http import BodyLimitMiddleware, error_response, json_response, validation_error
from vlx.serving.policy import call_policy, check_settings, chunk_size, finite_rows, observation_spec
from vlx.serving.requests import parse_act_request
from vlx.serving.schema import ActRequest, ApiError, Policy
from vlx.serving.sessions import SessionExecutors
from vlx.serving.worker import ModelWorker

log = logging.getLogger("vlx.serving")

MiB = 1024 * 1024
API_KEY_HEADER = "X-API-Key"


def create_app(
    policy: Policy,
    *,
    api_key: str | None = None,
    max_request_bytes: int = 8 * MiB,
    max_image_pixels: int = 4096 * 4096,
    max_image_side: int = 4096,
    max_instruction_chars: int = 1000,
    predict_timeout_s: float = 30.0,
    decode_concurrency: int = 2,
    max_pending: int = 8,
    execute_steps: int | None = None,
    ensemble: str | None = None,
    ensemble_weight: float = 0.01,
    max_sessions: int = 256,
) -> FastAPI:
    """A FastAPI app serving `policy`: `GET /health` and `POST /act` (see docs/serving.md).

    `execute_steps`, `ensemble` and `ensemble_weight` say how a chunked policy's chunks are answered (as
    `vlx.execution.ExecutionSettings`, checked against `policy.chunk_size`); with `ensemble="exp"` the
    server keeps the chunks of at most `max_sessions` client sessions.
    """
    limits = dict(max_request_bytes=max_request_bytes, max_image_pixels=max_image_pixels, max_image_side=max_image_side,
                  max_instruction_chars=max_instruction_chars, predict_timeout_s=predict_timeout_s,
                  decode_concurrency=decode_concurrency, max_pending=max_pending, max_sessions=max_sessions)
    check_settings(policy, api_key, limits)
    spec = observation_spec(policy)
    settings = ExecutionSettings.from_config(chunk_size(policy), {"execute_steps": execute_steps, "ensemble": ensemble,
                                                                   "ensemble_weight": ensemble_weight}, where="serve")
    sessions = SessionExecutors(settings, max_sessions) if settings.ensemble else None
    expected_key = api_key.encode("utf-8") if api_key is not None else None
    worker = ModelWorker()
    decode_slots = threading.BoundedSemaphore(decode_concurrency)  # bounds the memory of images being decoded
    parse = functools.partial(parse_act_request, max_instruction_chars=max_instruction_chars,
                              max_bytes=max_request_bytes, max_pixels=max_image_pixels, max_side=max_image_side,
                              observation=spec, needs_session=sessions is not None)

    def parse_bounded(body: bytes) -> tuple[ActRequest, Any]:
        with decode_slots:
            return parse(body)

    def answer(rows: list[list[float]], session: str | None) -> dict[str, Any]:
        """The response body for a checked prediction: the ensembled action, the action, or the chunk's first rows."""
        if sessions is not None:
            return {"action": finite_rows(sessions.step(session, np.asarray(rows)), 1, policy.action_dim)[0]}
        if settings.chunk_size == 1:
            return {"action": rows[0]}
        return {"actions": rows[: settings.steps_per_chunk]}

    app = FastAPI(title="vlx policy server", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes)
    app.state.policy, app.state.worker, app.state.sessions = policy, worker, sessions
    pending = 0  # requests being decoded, waiting for the model or predicting: bounds the images held in memory
    shape = {"chunk_size": settings.chunk_size, "cameras": spec.cameras, "state_dim": spec.state_dim,
             "execute_steps": None if settings.ensemble else settings.steps_per_chunk, "ensemble": settings.ensemble}

    def authorize(request: Request) -> None:
        if expected_key is None:
            return
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            raise ApiError(401, f"missing API key: send it in the {API_KEY_HEADER} header", API_KEY_HEADER)
        # Starlette decodes header values as latin-1; compare the raw bytes in constant time.
        if not hmac.compare_digest(given.encode("latin-1", errors="replace"), expected_key):
            raise ApiError(401, "wrong API key", API_KEY_HEADER)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        error = validation_error(list(exc.errors()), skip_loc_prefix=1)  # loc starts with "body"/"query"
        return error_response(error.status, error.message, error.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: "not found", 405: f"method {request.method[:16]} not allowed"}.get(
            exc.status_code, str(exc.detail))
        if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
            message += f"; allowed: {exc.headers['Allow']}"
        return error_response(exc.status_code, message, None, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return error_response(500, "internal server error (see the server log)")

    @app.get("/health")
    async def health(request: Request) -> Response:
        authorize(request)
        return json_response(200, {"status": "ok", "action_dim": policy.action_dim,
                                   "unnorm_keys": list(policy.unnorm_keys), **shape})

    @app.post("/act")
    async def act(request: Request) -> Response:
        authorize(request)
        content_type = request.headers.get("content-type", "")
        media_type, _, params = content_type.partition(";")
        charset = params.strip().lower().replace(" ", "")
        if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8", 'charset="utf-8"'):
            raise ApiError(415, "Content-Type must be application/json (UTF-8)", "Content-Type")
        nonlocal pending
        if pending >= max_pending:
            raise ApiError(503, f"the policy is busy ({pending} requests in progress); retry later", None,
                           {"Retry-After": "1"})
        pending += 1
        try:
            return await predict(request)
        finally:
            pending -= 1

    async def predict(request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:
            raise ApiError(400, "the client disconnected before sending the whole body", "body") from None
        act_request, inputs = await anyio.to_thread.run_sync(parse_bounded, body)
        key = act_request.unnorm_key
        if key is not None and key not in policy.unnorm_keys:
            known = ", ".join(policy.unnorm_keys) or "none: this model returns normalised actions"
            raise ApiError(422, f"unknown unnorm_key {key!r}; known: {known}", "unnorm_key")
        try:
            raw = await worker.run(predict_timeout_s, call_policy, policy, inputs, act_request.instruction, key,
                                   act_request.state)
        except (TimeoutError, asyncio.TimeoutError):
            raise ApiError(504, f"the policy did not answer within {predict_timeout_s:g} s") from None
        except VlxError as exc:
            field = "unnorm_key" if "unnorm_key" in str(exc) else None
            raise ApiError(422, str(exc) or type(exc).__name__, field) from None
        except Exception:
            log.exception("policy.predict_action failed")
            raise ApiError(500, "the policy failed on this request (see the server log)") from None
        try:
            payload = answer(finite_rows(raw, settings.chunk_size, policy.action_dim), act_request.session)
        except Exception as exc:  # noqa: BLE001 — whatever it returned, it is the model's fault
            log.error("policy.predict_action returned an invalid action: %s", exc)
            raise ApiError(500, f"the policy returned an invalid action: {exc}") from None
        return json_response(200, payload)

    return app
