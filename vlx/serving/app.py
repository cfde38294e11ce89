"""The policy server: a FastAPI app that answers `POST /act` with a VLA's action for an image and an instruction.

`create_app(policy)` builds it. Requests pass, in order: the body size limit (Content-Length and the
bytes actually streamed, 413), the API key (401), the content type (415), strict UTF-8 JSON without
duplicate keys (400), the request schema (422), the image (400), the unnorm_key (422), then the model,
one call at a time on its own thread under a timeout (504). Every error is JSON
`{"error": message, "field": name-or-null}`; no client input yields a 5xx — a 500 means the policy
itself failed or returned a non-finite or wrongly sized action (logged with its traceback), a 503 that
more than `max_pending` requests are already in progress, a 504 that the model was too slow.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import math
import threading
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlx.errors import ConfigError, VlxError
from vlx.serving.images import ImageError, decode_image
from vlx.serving.schema import ActRequest, ApiError, Policy
from vlx.serving.worker import ModelWorker

log = logging.getLogger("vlx.serving")

MiB = 1024 * 1024
API_KEY_HEADER = "X-API-Key"
_MAX_MESSAGE, _MAX_FIELD = 300, 64


def json_response(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """ASCII-only JSON (a lone surrogate or odd byte in an echoed name can never break encoding)."""
    body = json.dumps(payload, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return Response(body.encode("ascii"), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> Response:
    message = message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
    if field is not None and len(field) > _MAX_FIELD:
        field = field[: _MAX_FIELD - 3] + "..."
    return json_response(status, {"error": message, "field": field}, headers)


def validation_error(errors: list[dict[str, Any]], skip_loc_prefix: int = 0) -> ApiError:
    """A 422 naming the first invalid field (pydantic's message, never the input value)."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())][skip_loc_prefix:]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg', 'invalid value')}" if field else str(first.get("msg", "invalid request"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return ApiError(422, message, field)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: from Content-Length before the app runs, and while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ApiError(413, f"request body is larger than {self.max_bytes} bytes", None, {"Connection": "close"})
        lengths = {value for key, value in scope["headers"] if key.lower() == b"content-length"}
        if lengths:
            value = lengths.pop()
            if lengths or not value.isdigit() or len(value) > 18:
                await self._send(ApiError(400, "invalid Content-Length header"), scope, receive, send)
                return
            if int(value) > self.max_bytes:
                await self._send(too_large, scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ApiError as exc:  # raised by limited_receive outside a route's exception handling
            if started:
                raise
            await self._send(exc, scope, receive, send)

    @staticmethod
    async def _send(exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(exc.status, exc.message, exc.field, exc.headers)(scope, receive, send)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ApiError(400, f"request body is not valid JSON: duplicate key {key[:_MAX_FIELD]!r}", "body")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ApiError(400, f"request body is not valid JSON: {name} is not a JSON number", "body")


def parse_act_request(
    body: bytes, *, max_instruction_chars: int, max_bytes: int, max_pixels: int, max_side: int
) -> tuple[ActRequest, Any]:
    """The validated request and its RGB image, or an ApiError (400 body/image, 422 schema)."""
    try:
        text = body.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid JSON: it is not UTF-8", "body") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply", "body") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc.msg} (character {exc.pos})", "body") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"request body must be a JSON object, not {type(data).__name__}", "body")
    try:
        request = ActRequest.model_validate(data, strict=True, context={"max_instruction_chars": max_instruction_chars})
    except ValidationError as exc:
        raise validation_error(exc.errors(include_input=False, include_url=False)) from None
    try:
        image = decode_image(request.image, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)
    except ImageError as exc:
        raise ApiError(400, str(exc), "image") from None
    return request, image


def _finite_action(raw: Any, action_dim: int) -> list[float]:
    """The policy's output as `action_dim` finite floats, or a ValueError saying what is wrong with it."""
    if hasattr(raw, "detach"):  # a torch tensor, maybe bf16 or on a GPU
        raw = raw.detach().float().cpu().numpy()
    action = np.asarray(raw, dtype=np.float64).reshape(-1)
    if action.size != action_dim:
        raise ValueError(f"it returned {action.size} values, expected action_dim={action_dim}")
    values = [float(v) for v in action]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("it returned non-finite values (NaN or infinity)")
    return values


def _check_settings(policy: Policy, api_key: str | None, limits: dict[str, float]) -> None:
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
) -> FastAPI:
    """A FastAPI app serving `policy`: `GET /health` and `POST /act` (see docs/serving.md)."""
    limits = dict(max_request_bytes=max_request_bytes, max_image_pixels=max_image_pixels, max_image_side=max_image_side,
                  max_instruction_chars=max_instruction_chars, predict_timeout_s=predict_timeout_s,
                  decode_concurrency=decode_concurrency, max_pending=max_pending)
    _check_settings(policy, api_key, limits)
    expected_key = api_key.encode("utf-8") if api_key is not None else None
    worker = ModelWorker()
    decode_slots = threading.BoundedSemaphore(decode_concurrency)  # bounds the memory of images being decoded
    parse = functools.partial(parse_act_request, max_instruction_chars=max_instruction_chars,
                              max_bytes=max_request_bytes, max_pixels=max_image_pixels, max_side=max_image_side)

    def parse_bounded(body: bytes) -> tuple[ActRequest, Any]:
        with decode_slots:
            return parse(body)

    app = FastAPI(title="vlx policy server", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes)
    app.state.policy, app.state.worker = policy, worker
    pending = 0  # requests being decoded, waiting for the model or predicting: bounds the images held in memory

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
        message = {404: "not found", 405: f"method {request.method[:16]} not allowed"}.get(exc.status_code, str(exc.detail))
        if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
            message += f"; allowed: {exc.headers['Allow']}"
        return error_response(exc.status_code, message, None, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return error_response(500, "internal server error (see the server log)")

    @app.get("/health")
    async def health(request: Request) -> Response:
        authorize(request)
        return json_response(200, {"status": "ok", "action_dim": policy.action_dim, "unnorm_keys": list(policy.unnorm_keys)})

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
            raise ApiError(503, f"the policy is busy ({pending} requests in progress); retry later", None, {"Retry-After": "1"})
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
        act_request, image = await anyio.to_thread.run_sync(parse_bounded, body)
        key = act_request.unnorm_key
        if key is not None and key not in policy.unnorm_keys:
            known = ", ".join(policy.unnorm_keys) or "none: this model returns normalised actions"
            raise ApiError(422, f"unknown unnorm_key {key!r}; known: {known}", "unnorm_key")
        try:
            raw = await worker.run(predict_timeout_s, policy.predict_action, image, act_request.instruction, key)
        except (TimeoutError, asyncio.TimeoutError):
            raise ApiError(504, f"the policy did not answer within {predict_timeout_s:g} s") from None
        except VlxError as exc:
            field = "unnorm_key" if "unnorm_key" in str(exc) else None
            raise ApiError(422, str(exc) or type(exc).__name__, field) from None
        except Exception:
            log.exception("policy.predict_action failed")
            raise ApiError(500, "the policy failed on this request (see the server log)") from None
        try:
            action = _finite_action(raw, policy.action_dim)
        except Exception as exc:  # noqa: BLE001 — whatever it returned, it is the model's fault
            log.error("policy.predict_action returned an invalid action: %s", exc)
            raise ApiError(500, f"the policy returned an invalid action: {exc}") from None
        return json_response(200, {"action": action})

    return app
