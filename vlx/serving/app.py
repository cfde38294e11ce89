"""The policy server: `create_app(policy, protocol=...)` builds a FastAPI app answering one wire protocol.

Three protocols share one `PolicyService` (limits, API key, busy limit, decoding, the model worker) and one
HTTP scaffolding (the body size limit, `{"error", "field"}` error bodies for every HTTP error, no 5xx for client
input, `GET /health`): `vlx` — vlx's own REST `POST /act` (vlx.serving.rest); `openvla` — OpenVLA's
`vla-scripts/deploy.py` REST `POST /act` with json_numpy arrays (vlx.serving.openvla); `openpi` — openpi's
msgpack websocket on `/` plus `GET /healthz` (vlx.serving.openpi). LeRobot's gRPC async inference is not offered:
its payloads are pickles, which run code on the receiving side. See docs/serving.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from vlx.config_schema import closest
from vlx.errors import ConfigError
from vlx.serving import openpi, openvla, rest
from vlx.serving.http import BodyLimitMiddleware, error_response, json_response, validation_error
from vlx.serving.keymap import KeyMap
from vlx.serving.schema import ApiError, Policy
from vlx.serving.service import KeyHeader, Limits, MiB, PolicyService

API_KEY_HEADER = rest.API_KEY.name
# protocol name → (adds its routes to the app, the header that carries the API key)
PROTOCOLS: dict[str, tuple[Callable[..., None], KeyHeader]] = {
    "vlx": (rest.add_routes, rest.API_KEY), "openvla": (openvla.add_routes, rest.API_KEY),
    "openpi": (openpi.add_routes, openpi.API_KEY),
}


def check_protocol(protocol: object) -> str:
    """`protocol` if it is one vlx serves, else a one-line ConfigError (naming why LeRobot's gRPC is not one)."""
    if protocol in PROTOCOLS:
        return str(protocol)
    hint = closest(str(protocol), list(PROTOCOLS))
    if str(protocol).lower() in ("lerobot", "grpc", "lerobot-grpc", "async"):
        hint = "; LeRobot's gRPC async inference is not offered: its payloads are pickles, unsafe to accept"
    raise ConfigError(f"protocol={protocol!r} is not one vlx serves{hint}; choose one of: {', '.join(PROTOCOLS)}")


def create_app(
    policy: Policy,
    *,
    protocol: str = "vlx",
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
    unnorm_key: str | None = None,
    key_map: Mapping[str, str] | None = None,
) -> FastAPI:
    """A FastAPI app serving `policy` over `protocol` (`vlx`, `openvla` or `openpi`; see docs/serving.md).

    `execute_steps`, `ensemble` and `ensemble_weight` say how a chunked policy's chunks are answered (as
    `vlx.execution.ExecutionSettings`, checked against `policy.chunk_size`); with `ensemble="exp"` the server
    keeps the chunks of at most `max_sessions` client sessions. `unnorm_key` is the dataset used when a request
    names none. `key_map` ({wire key: camera, "image", "state", "instruction" or "unnorm_key"}) adds to or
    overrides the observation keys the `openvla` and `openpi` protocols accept (vlx.serving.keymap).
    """
    add_routes, key_header = PROTOCOLS[check_protocol(protocol)]
    if key_map is not None and protocol == "vlx":
        raise ConfigError("key_map applies to protocol=openvla and protocol=openpi; vlx's /act has fixed fields")
    if ensemble is not None and protocol == "openvla":
        raise ConfigError("ensemble=exp needs one session per client episode, and OpenVLA's /act request has no "
                          "field for it; use protocol=vlx (with session) or protocol=openpi (one per connection)")
    limits = Limits(max_request_bytes=max_request_bytes, max_image_pixels=max_image_pixels,
                    max_image_side=max_image_side, max_instruction_chars=max_instruction_chars)
    service = PolicyService(policy, limits=limits, api_key=api_key, predict_timeout_s=predict_timeout_s,
                            decode_concurrency=decode_concurrency, max_pending=max_pending, execute_steps=execute_steps,
                            ensemble=ensemble, ensemble_weight=ensemble_weight, max_sessions=max_sessions,
                            unnorm_key=unnorm_key)
    keys = KeyMap.build(service.spec, key_map) if protocol != "vlx" else None

    app = FastAPI(title="vlx policy server", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes)
    app.state.policy, app.state.worker, app.state.sessions = policy, service.worker, service.sessions
    app.state.service, app.state.protocol = service, protocol

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
        key_header.check(service, request.headers)
        return json_response(200, {"status": "ok", **service.describe()})

    add_routes(app, service, keys)
    return app
