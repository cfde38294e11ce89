"""The policy server through FastAPI's TestClient: exact actions, every malformed request's status and error body."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import (
    ONE_STEP_HEALTH,
    ColourPolicy,
    act_body,
    b64,
    bomb_jpeg,
    bomb_png,
    encode,
    expected_action,
    random_rgb,
)

from vlx.errors import ConfigError
from vlx.serving import create_app

KEY = "s3cret-key"
LIMIT = 64 * 1024  # max_request_bytes of the test app


@pytest.fixture()
def policy() -> ColourPolicy:
    return ColourPolicy()


@pytest.fixture()
def client(policy: ColourPolicy) -> TestClient:
    app = create_app(policy, api_key=KEY, max_request_bytes=LIMIT, max_image_side=256, max_image_pixels=128 * 128,
                     max_instruction_chars=50, predict_timeout_s=5.0)
    return TestClient(app, headers={"X-API-Key": KEY}, raise_server_exceptions=False)


RGB = random_rgb(0)
PNG_B64 = b64(encode(Image.fromarray(RGB)))


def post(client: TestClient, body: dict, **kwargs) -> httpx.Response:
    return client.post("/act", json=body, **kwargs)


def test_valid_request_returns_the_policys_exact_action(client: TestClient, policy: ColourPolicy) -> None:
    response = post(client, act_body(PNG_B64, "pick up the red block", "bridge"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"action": expected_action(RGB, "pick up the red block", "bridge")}
    assert policy.calls == [((24, 16), "pick up the red block", "bridge")]


def test_unnorm_key_is_passed_through(client: TestClient, policy: ColourPolicy) -> None:
    response = post(client, act_body(PNG_B64, "stack", "libero"))
    assert response.status_code == 200, response.text
    assert response.json()["action"] == expected_action(RGB, "stack", "libero")
    assert response.json()["action"][4] == 2.0 and policy.calls[-1][2] == "libero"


def test_unnorm_key_may_be_omitted_when_the_model_has_one_dataset() -> None:
    client = TestClient(create_app(ColourPolicy(unnorm_keys=("bridge",))))
    for body in ({"image": PNG_B64, "instruction": "go"}, {"image": PNG_B64, "instruction": "go", "unnorm_key": None}):
        response = client.post("/act", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["action"] == expected_action(RGB, "go", "bridge")


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "action_dim": 5, "unnorm_keys": ["bridge", "libero"], **ONE_STEP_HEALTH}


def test_jpeg_is_accepted(client: TestClient) -> None:
    data = encode(Image.fromarray(RGB), "JPEG", quality=90)
    seen = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB"))  # what a decoder makes of it
    response = post(client, act_body(b64(data), "go"))
    assert response.status_code == 200, response.text
    assert response.json()["action"] == expected_action(seen, "go")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "I;16"])
def test_grayscale_alpha_palette_and_16_bit_pngs_become_rgb(client: TestClient, mode: str) -> None:
    rng = np.random.default_rng(3)
    if mode == "I;16":
        gray16 = rng.integers(0, 65536, (10, 12), dtype=np.uint16)
        image, rgb = Image.fromarray(gray16), np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    else:
        rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
        image = Image.fromarray(rgba, "RGBA").convert(mode)
        # the server's contract: alpha is dropped, gray is replicated, a palette is looked up
        rgb = np.asarray(image.convert("RGB"))
        if mode == "RGBA":
            assert np.array_equal(rgb, rgba[..., :3])
    response = post(client, act_body(b64(encode(image)), "go"))
    assert response.status_code == 200, (mode, response.text)
    assert response.json()["action"] == expected_action(rgb, "go")


def _body(**fields) -> bytes:
    return json.dumps({**act_body(PNG_B64, "go"), **fields}).encode()


def _without(name: str) -> bytes:
    body = act_body(PNG_B64, "go")
    del body[name]
    return json.dumps(body).encode()


PNG = encode(Image.fromarray(RGB))
# name: (body bytes, extra headers, expected status, expected field)
MALFORMED = {
    "invalid JSON": (b'{"image": "abc', {}, 400, "body"),
    "JSON that is not UTF-8": (b'{"image": "\xff\xfe"}', {}, 400, "body"),
    "duplicate key": (b'{"image": "a", "image": "b", "instruction": "go"}', {}, 400, "body"),
    "NaN literal": (b'{"image": NaN, "instruction": "go"}', {}, 400, "body"),
    "JSON array, not object": (b"[1, 2]", {}, 422, "body"),
    "nested too deeply": (b"[" * 5000 + b"]" * 5000, {}, 400, "body"),
    "wrong content type": (_body(), {"content-type": "text/plain"}, 415, "Content-Type"),
    "form content type": (b"image=abc", {"content-type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    "non-UTF-8 charset": (_body(), {"content-type": "application/json; charset=latin-1"}, 415, "Content-Type"),
    "missing image": (_without("image"), {}, 422, "image"),
    "missing instruction": (_without("instruction"), {}, 422, "instruction"),
    "extra field": (_body(temperature=0.5), {}, 422, "temperature"),
    "instruction not a string": (_body(instruction=42), {}, 422, "instruction"),
    "instruction a list": (_body(instruction=["go"]), {}, 422, "instruction"),
    "image a number": (_body(image=123), {}, 422, "image"),
    "image null": (_body(image=None), {}, 422, "image"),
    "unnorm_key a number": (_body(unnorm_key=1), {}, 422, "unnorm_key"),
    "instruction too long": (_body(instruction="x" * 51), {}, 422, "instruction"),
    "instruction empty": (_body(instruction=""), {}, 422, "instruction"),
    "instruction with control characters": (_body(instruction="go\x00left"), {}, 422, "instruction"),
    "invalid base64 characters": (_body(image="!!!!" * 10), {}, 400, "image"),
    "base64 with bad padding": (_body(image=PNG_B64[:-2]), {}, 400, "image"),
    "base64 with padding inside": (_body(image="QQ=A" + PNG_B64), {}, 400, "image"),
    "base64 with a newline": (_body(image=PNG_B64[:40] + "\n" + PNG_B64[40:]), {}, 400, "image"),
    "url-safe base64": (_body(image=b64(b"\xfb\xff" * 30).replace("+", "-").replace("/", "_")), {}, 400, "image"),
    "base64 of non-image bytes": (_body(image=b64(b"hello, this is not an image at all")), {}, 400, "image"),
    "base64 of a GIF": (_body(image=b64(encode(Image.fromarray(RGB), "GIF"))), {}, 400, "image"),
    "truncated PNG": (_body(image=b64(PNG[: len(PNG) // 2])), {}, 400, "image"),
    "PNG with a corrupt chunk": (_body(image=b64(PNG[:40] + bytes([PNG[40] ^ 0xFF]) + PNG[41:])), {}, 400, "image"),
    "truncated JPEG": (_body(image=b64(encode(Image.fromarray(RGB), "JPEG")[:200])), {}, 400, "image"),
    "image side too large": (_body(image=b64(encode(Image.new("RGB", (257, 1))))), {}, 400, "image"),
    "image has too many pixels": (_body(image=b64(encode(Image.new("RGB", (200, 200))))), {}, 400, "image"),
    "PNG declaring 100000x100000": (_body(image=b64(bomb_png(100_000, 100_000))), {}, 400, "image"),
    "JPEG declaring 60000x60000": (_body(image=b64(bomb_jpeg(60_000, 60_000))), {}, 400, "image"),
    "PNG declaring 0x0": (_body(image=b64(bomb_png(0, 0))), {}, 400, "image"),
    "body over the size limit": (_body(instruction="x" * LIMIT), {}, 413, None),
    "unknown unnorm_key": (_body(unnorm_key="droid"), {}, 422, "unnorm_key"),
    "missing unnorm_key the model needs": (_body(unnorm_key=None), {}, 422, "unnorm_key"),
    "missing API key": (_body(), {"X-API-Key": None}, 401, "X-API-Key"),
    "wrong API key": (_body(), {"X-API-Key": "s3cret-kez"}, 401, "X-API-Key"),
    "non-ASCII API key": (_body(), {"X-API-Key": "s3cret-k\xe9y".encode("latin-1")}, 401, "X-API-Key"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_its_4xx_and_a_json_error_naming_the_field(client: TestClient, policy, name) -> None:
    body, extra, status, field = MALFORMED[name]
    headers = {"content-type": "application/json", **{k: v for k, v in extra.items() if v is not None}}
    if extra.get("X-API-Key", "") is None:
        client.headers.pop("X-API-Key")
    response = client.post("/act", content=body, headers=headers)
    assert response.status_code == status, (name, response.text)
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert set(payload) == {"error", "field"} and payload["field"] == field, (name, payload)
    assert 0 < len(payload["error"]) <= 300
    if name != "missing unnorm_key the model needs":
        assert policy.calls == [], "the policy must not run for a rejected request"


def test_error_messages_say_what_is_wrong(client: TestClient) -> None:
    def error(body: bytes) -> str:
        return client.post("/act", content=body, headers={"content-type": "application/json"}).json()["error"]

    assert error(_without("image")) == "image: Field required"
    assert error(_body(instruction=42)) == "instruction: Input should be a valid string"
    assert error(_body(instruction="x" * 51)) == "instruction: String should have at most 50 characters"
    assert error(_body(extra=1)) == "extra: Extra inputs are not permitted"
    assert "is 100000x100000; the largest side allowed is 256" in error(_body(image=b64(bomb_png(100_000, 100_000))))
    assert "= 40000 pixels; the limit is 16384" in error(_body(image=b64(encode(Image.new("RGB", (200, 200))))))
    assert "not a PNG or JPEG" in error(_body(image=b64(b"GIF89a....")))
    assert error(_body(unnorm_key="droid")) == "unknown unnorm_key 'droid'; known: bridge, libero"
    assert error(_body(unnorm_key=None)) == "unnorm_key is required: this model carries statistics for bridge, libero"


def test_chunked_body_over_the_limit_is_413(client: TestClient, policy: ColourPolicy) -> None:
    def chunks():
        yield b'{"image": "'
        for _ in range(LIMIT // 1000 + 2):
            yield b"A" * 1000
        yield b'", "instruction": "go"}'

    response = client.post("/act", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] is None
    assert "larger than 65536 bytes" in response.json()["error"]
    assert policy.calls == []


def test_chunked_body_under_the_limit_is_read(client: TestClient) -> None:
    data = _body()
    response = client.post("/act", content=iter([data[:10], data[10:]]), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_invalid_content_length_header_is_400(policy: ColourPolicy) -> None:
    """Servers other than uvicorn may pass a malformed Content-Length through; the app refuses it itself."""
    app = create_app(policy)
    sent: list[dict] = []

    async def call(length: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/act", "raw_path": b"/act", "query_string": b"", "root_path": "", "server": ("t", 80),
                 "client": ("c", 1), "headers": [(b"content-type", b"application/json"), (b"content-length", length)]}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)

    for length in (b"abc", b"-1", b"1e3", b"99999999999999999999999"):
        sent.clear()
        asyncio.run(call(length))
        assert sent[0]["status"] == 400, length
        assert json.loads(sent[1]["body"]) == {"error": "invalid Content-Length header", "field": None}


def test_get_on_act_is_405_and_unknown_routes_are_404(client: TestClient) -> None:
    response = client.get("/act")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json() == {"error": "method GET not allowed; allowed: POST", "field": None}
    assert client.post("/health").status_code == 405
    for path in ("/nope", "/act/", "/docs", "/openapi.json", "/../etc/passwd"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": "not found", "field": None}


def test_health_needs_the_api_key_too(client: TestClient) -> None:
    client.headers.pop("X-API-Key")
    response = client.get("/health")
    assert response.status_code == 401 and response.json()["field"] == "X-API-Key"


def test_policy_errors_are_422_with_the_message(client: TestClient) -> None:
    response = post(client, act_body(PNG_B64, "!data-error"))
    assert response.status_code == 422
    assert response.json() == {"error": "the image is unusable for this model", "field": None}


def test_policy_faults_are_500_without_internal_details(client: TestClient) -> None:
    for instruction, message in (("!crash", "the policy failed on this request (see the server log)"),
                                 ("!nan", "the policy returned an invalid action: it returned non-finite values "
                                          "(NaN or infinity)"),
                                 ("!short", "the policy returned an invalid action: it returned 3 values, "
                                            "expected action_dim=5")):
        response = post(client, act_body(PNG_B64, instruction))
        assert response.status_code == 500, instruction
        assert response.json() == {"error": message, "field": None}
    assert post(client, act_body(PNG_B64, "go")).status_code == 200  # and the server still works


def test_timeout_is_504_and_the_server_recovers() -> None:
    gate = threading.Event()  # the slow call is held until released: no sleep can race the timeout
    policy = ColourPolicy(gate=gate)
    client = TestClient(create_app(policy, predict_timeout_s=0.3))
    response = client.post("/act", json=act_body(PNG_B64, "!sleep"))
    assert response.status_code == 504
    assert response.json() == {"error": "the policy did not answer within 0.3 s", "field": None}
    # the held call still holds the model (one call at a time): a request queued behind it times out
    # too, and its call is dropped, never run
    assert client.post("/act", json=act_body(PNG_B64, "queued")).status_code == 504
    gate.set()
    assert policy.idle.wait(timeout=60)  # the held call finishes
    response = client.post("/act", json=act_body(PNG_B64, "go"))
    assert response.status_code == 200 and response.json()["action"] == expected_action(RGB, "go")
    assert [call[1] for call in policy.calls] == ["!sleep", "go"]


def test_predictions_run_one_at_a_time() -> None:
    policy = ColourPolicy(sleep_s=0.02)
    app = create_app(policy)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/act", json=act_body(PNG_B64, "!sleep")) for _ in range(8)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 8
    assert len(policy.calls) == 8 and policy.max_active == 1


def test_requests_beyond_max_pending_get_503_and_the_server_recovers() -> None:
    gate = threading.Event()  # the admitted calls are held until both refusals are back
    policy = ColourPolicy(gate=gate)
    app = create_app(policy, max_pending=2)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            requests = [asyncio.create_task(client.post("/act", json=act_body(PNG_B64, "!sleep"))) for _ in range(4)]
            pending = set(requests)
            while len(requests) - len(pending) < 2:  # two answered while two are held: those are the refusals
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            gate.set()
            return await asyncio.gather(*requests)

    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json() == {"error": "the policy is busy (2 requests in progress); retry later", "field": None}
    assert busy.headers["retry-after"] == "1" and len(policy.calls) == 2
    response = TestClient(app).post("/act", json=act_body(PNG_B64, "go"))
    assert response.status_code == 200 and response.json()["action"] == expected_action(RGB, "go")


def test_create_app_rejects_bad_settings() -> None:
    class NotAVla:
        action_dim, unnorm_keys = 7, ["bridge"]

    with pytest.raises(ConfigError, match="has no predict_action"):
        create_app(NotAVla())
    with pytest.raises(ConfigError, match="api_key must be a non-empty string"):
        create_app(ColourPolicy(), api_key="")
    with pytest.raises(ConfigError, match="max_request_bytes must be a positive number"):
        create_app(ColourPolicy(), max_request_bytes=0)
    policy = ColourPolicy()
    policy.action_dim = 0
    with pytest.raises(ConfigError, match="action_dim must be a positive int"):
        create_app(policy)


def test_fastapi_validation_errors_keep_the_error_shape() -> None:
    """A route that FastAPI validates itself (here a query parameter) answers in the same JSON shape."""
    app = create_app(ColourPolicy())

    @app.get("/probe")
    def probe(n: int) -> dict:
        return {"n": n}

    response = TestClient(app).get("/probe", params={"n": "seven"})
    assert response.status_code == 422
    assert response.json() == {"error": "n: Input should be a valid integer, unable to parse string as an integer",
                               "field": "n"}
