"""The policy server under real uvicorn on 127.0.0.1 (a free port, a background thread), over real HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request

import pytest
from PIL import Image
from serving_helpers import (
    ONE_STEP_HEALTH,
    ColourPolicy,
    act_body,
    b64,
    encode,
    expected_action,
    random_rgb,
    serve_on_loopback,
)

from vlx.serving import create_app

KEY = "uvicorn-key"
RGB = random_rgb(5, (20, 10))


@pytest.fixture()
def server_port():
    with serve_on_loopback(create_app(ColourPolicy(), api_key=KEY, max_request_bytes=32 * 1024)) as port:
        yield port


def request(port: int, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/act", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_real_server_answers_valid_and_malformed_requests(server_port: int) -> None:
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}
    body = json.dumps(act_body(b64(encode(Image.fromarray(RGB))), "open the drawer", "libero")).encode()
    assert request(server_port, body, headers) == (200, {"action": expected_action(RGB, "open the drawer", "libero")})
    assert request(server_port, b'{"image": 1', headers) == (400, {
        "error": "request body is not valid JSON: Expecting ',' delimiter (character 11)", "field": "body"})
    assert (request(server_port, body, {**headers, "X-API-Key": "nope"})
            == (401, {"error": "wrong API key", "field": "X-API-Key"}))
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server_port}/health", headers=headers)) as r:
        assert json.loads(r.read()) == {"status": "ok", "action_dim": 5, "unnorm_keys": ["bridge", "libero"],
                                        **ONE_STEP_HEALTH}
        assert "server" not in {k.lower() for k in r.headers}


def raw_request(port: int, data: bytes) -> tuple[int, dict]:
    """Send `data` in one write (so the server has it all before it answers and closes), read the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_real_server_limits_declared_and_chunked_bodies(server_port: int) -> None:
    head = f"POST /act HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-API-Key: {KEY}\r\n"
    # a declared Content-Length over the limit is refused from the headers alone: no body is sent
    status, payload = raw_request(server_port, (head + "Content-Length: 40960\r\n\r\n").encode())
    assert (status, payload) == (413, {"error": "request body is larger than 32768 bytes", "field": None})
    # a chunked body has no Content-Length: the bytes are counted as they arrive
    chunks = [b'{"image": "' + b"A" * 4085] + [b"A" * 4096] * 9
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    status, payload = raw_request(server_port, (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + body)
    assert (status, payload) == (413, {"error": "request body is larger than 32768 bytes", "field": None})
    # and a chunked body under the limit is served
    valid = json.dumps(act_body(b64(encode(Image.fromarray(RGB))), "go", "bridge")).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (valid[:100], valid[100:])) + b"0\r\n\r\n"
    status, payload = raw_request(server_port, (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + body)
    assert (status, payload) == (200, {"action": expected_action(RGB, "go", "bridge")})
