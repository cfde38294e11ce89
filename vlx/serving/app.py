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
from vlx.execution import ExecutionSettings
from vlx.observation import ObservationError, ObservationSpec, camera_names
from vlx.serving.images import ImageError, decode_image
from vlx.serving.schema import MAX_CAMERAS, MAX_NAME_CHARS, MAX_STATE_VALUES, ActRequest, ApiError, Policy
from vlx.serving.sessions import SessionExecutors
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


def _load_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: strict UTF-8, no duplicate keys, no NaN/Infinity literals (400), an object (422)."""
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
    data = _load_json(body)
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


def _finite_rows(raw: Any, chunk_size: int, action_dim: int) -> list[list[float]]:
    """The policy's output as `chunk_size` rows of `action_dim` finite floats, or a ValueError saying what is wrong."""
    if hasattr(raw, "detach"):  # a torch tensor, maybe bf16 or on a GPU
        raw = raw.detach().float().cpu().numpy()
    array = np.asarray(raw, dtype=np.float64)
    if chunk_size == 1:
        if array.size != action_dim:
            raise ValueError(f"it returned {array.size} values, expected action_dim={action_dim}")
        array = array.reshape(1, action_dim)
    elif array.shape != (chunk_size, action_dim):
        raise ValueError(f"it returned shape {array.shape}, expected (chunk_size, action_dim)=({chunk_size}, {action_dim})")
    rows = [[float(v) for v in row] for row in array]
    for index, row in enumerate(rows):
        if not all(math.isfinite(v) for v in row):
            where = f" in row {index}" if chunk_size > 1 else ""
            raise ValueError(f"it returned non-finite values (NaN or infinity){where}")
    return rows


def observation_spec(policy: Policy) -> ObservationSpec:
    """The policy's cameras and state length, checked; one bare image and no state when it has no `observation`."""
    spec = getattr(policy, "observation", None)
    if spec is None:
        return ObservationSpec()
    cameras = camera_names(getattr(spec, "cameras", None), "policy.observation.cameras")
    state_dim = getattr(spec, "state_dim", None)
    if cameras and (len(cameras) > MAX_CAMERAS or max(len(name) for name in cameras) > MAX_NAME_CHARS):
        raise ConfigError(f"policy.observation.cameras: the server takes at most {MAX_CAMERAS} cameras of at most "
                          f"{MAX_NAME_CHARS} characters each, got {cameras!r:.200}")
    if state_dim is not None and (isinstance(state_dim, bool) or not isinstance(state_dim, int)
                                  or not 1 <= state_dim <= MAX_STATE_VALUES):
        raise ConfigError(f"policy.observation.state_dim must be None or an int from 1 to {MAX_STATE_VALUES}, "
                          f"got {state_dim!r}")
    return spec if isinstance(spec, ObservationSpec) else ObservationSpec(cameras, getattr(spec, "state_keys", None),
                                                                          state_dim)


def _chunk_size(policy: Policy) -> int:
    size = getattr(policy, "chunk_size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"policy.chunk_size must be a positive int, got {size!r}")
    return size


def _call_policy(policy: Policy, inputs: Any, instruction: str, unnorm_key: str | None, state: list[float] | None) -> Any:
    """`predict_action`, given `state=` only when there is one (a model without a state input never gets it)."""
    if state is None:
        return policy.predict_action(inputs, instruction, unnorm_key)
    return policy.predict_action(inputs, instruction, unnorm_key, state=state)


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
    _check_settings(policy, api_key, limits)
    spec = observation_spec(policy)
    settings = ExecutionSettings.from_config(_chunk_size(policy), {"execute_steps": execute_steps, "ensemble": ensemble,
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
            return {"action": _finite_rows(sessions.step(session, np.asarray(rows)), 1, policy.action_dim)[0]}
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
        act_request, inputs = await anyio.to_thread.run_sync(parse_bounded, body)
        key = act_request.unnorm_key
        if key is not None and key not in policy.unnorm_keys:
            known = ", ".join(policy.unnorm_keys) or "none: this model returns normalised actions"
            raise ApiError(422, f"unknown unnorm_key {key!r}; known: {known}", "unnorm_key")
        try:
            raw = await worker.run(predict_timeout_s, _call_policy, policy, inputs, act_request.instruction, key,
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
            payload = answer(_finite_rows(raw, settings.chunk_size, policy.action_dim), act_request.session)
        except Exception as exc:  # noqa: BLE001 — whatever it returned, it is the model's fault
            log.error("policy.predict_action returned an invalid action: %s", exc)
            raise ApiError(500, f"the policy returned an invalid action: {exc}") from None
        return json_response(200, payload)

    return app
