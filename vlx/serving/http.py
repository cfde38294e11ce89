"""HTTP plumbing of the REST policy servers: ASCII JSON answers, `{"error", "field"}` bodies, the body size limit.

`json_response` never fails to encode (ASCII only, no NaN); `error_response` bounds the echoed message and field;
`validation_error` turns pydantic-style errors into one 422 naming the first field; `require_json` checks the
Content-Type (415) and `read_body` reads the body (400 when the client goes away); `BodyLimitMiddleware` answers
413 for a body over the limit, from Content-Length before the app runs and while the body streams in.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlx.serving.schema import ApiError

MAX_MESSAGE, MAX_FIELD = 300, 64


# An encoder object rather than json.dumps, which a client library in the same process may have patched.
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def json_text(payload: Any) -> str:
    """Compact ASCII-only JSON without NaN (a ValueError for a non-finite float)."""
    return _ENCODER.encode(payload)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """ASCII-only JSON (a lone surrogate or odd byte in an echoed name can never break encoding)."""
    body = json_text(payload)
    return Response(body.encode("ascii"), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
    if field is not None and len(field) > MAX_FIELD:
        field = field[: MAX_FIELD - 3] + "..."
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


def require_json(request: Request) -> None:
    """A 415 unless the request's Content-Type is `application/json`, optionally with `charset=utf-8`."""
    media_type, _, params = request.headers.get("content-type", "").partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8", 'charset="utf-8"'):
        raise ApiError(415, "Content-Type must be application/json (UTF-8)", "Content-Type")


async def read_body(request: Request) -> bytes:
    """The whole body, or a 400 when the client goes away before sending it."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before sending the whole body", "body") from None


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
