"""Fuzzing the OpenVLA REST and openpi websocket protocols (fixed seeds): never a 5xx, never a server error close.

OpenVLA: random bytes, valid bodies whose image is a hostile json_numpy dict (dtypes, shapes, base64), random
fields, byte-level mutations of the plain and encoded forms, random `encoded` payloads. openpi: one connection
per frame (an error closes it), sometimes with a wrong or missing key; random bytes and text frames, random
msgpack documents, valid observations with hostile msgpack_numpy arrays and scalars or random fields, byte-level
mutations of a valid frame, oversized frames. Every answer must be an action or a client error (HTTP 4xx; a text
frame then close 1003/1007/1008/1009), and a valid request must still get the exact action afterwards.
"""

from __future__ import annotations

import collections
import json
import random

import numpy as np
from fastapi.testclient import TestClient
from fuzz_helpers import CONTENT_TYPES, KEY, headers, mutate, random_text, random_value
from serving_helpers import (
    ColourPolicy,
    expected_action,
    from_json_numpy,
    json_numpy_array,
    openpi_frame,
    openpi_unframe,
    random_rgb,
)
from starlette.testclient import WebSocketDenialResponse

from vlx.serving import create_app

SEED, N_REQUESTS, LIMIT = 20240602, 1200, 16 * 1024
RGB = random_rgb(9, (12, 9))
DTYPES = ["|u1", "<f4", "<f8", ">f8", "|b1", "<i8", "<u2", "<f2", "|O", "<c16", "|V3", "<U3", "|S4", "<M8[s]",
          "(2,)f8", "f8,i4", "object", "", "u1", "uint8", "<f16", 7, None, ["a", "<f8"]]
VALID_KEYS = ["image", "observation/image", "instruction", "prompt", "unnorm_key", "state", "observation/state"]


def random_shape(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.4:
        return list(RGB.shape)
    if roll < 0.8:
        return [rng.choice([0, 1, 3, 9, 12, -1, 2 ** 40, 10 ** 30]) for _ in range(rng.randint(0, 6))]
    return random_value(rng, 3)


def random_data(rng: random.Random) -> bytes:
    return rng.choice([RGB.tobytes(), RGB.tobytes()[:-1], b"", rng.randbytes(rng.randint(0, 400)),
                       mutate(rng, RGB.tobytes())])


def random_json_numpy(rng: random.Random) -> object:
    """A json_numpy dict, mostly almost right."""
    value = {"__numpy__": json_numpy_array(RGB)["__numpy__"], "dtype": "|u1", "shape": list(RGB.shape)}
    for _ in range(rng.randint(1, 3)):
        part = rng.choice(["__numpy__", "dtype", "shape", "extra", "drop"])
        if part == "__numpy__":
            data = random_data(rng)
            value[part] = rng.choice([json_numpy_array(np.frombuffer(data, np.uint8))["__numpy__"],
                                      random_text(rng, 20), random_value(rng, 3)])
        elif part == "dtype":
            value[part] = rng.choice(DTYPES)
        elif part == "shape":
            value[part] = random_shape(rng)
        elif part == "extra":
            value[random_text(rng, 6)] = random_value(rng, 3)
        else:
            value.pop(rng.choice(list(value)), None)
    return value


def openvla_body(rng: random.Random) -> dict:
    return {"image": json_numpy_array(RGB), "instruction": rng.choice(["pick", random_text(rng, 60)]),
            "unnorm_key": rng.choice(["bridge", "libero", None, random_text(rng, 8)])}


VALID_OPENVLA = json.dumps({"image": json_numpy_array(RGB), "instruction": "pick", "unnorm_key": "libero"}).encode()
VALID_ENCODED = json.dumps({"encoded": VALID_OPENVLA.decode()}).encode()


def gen_openvla(rng: random.Random, i: int) -> tuple[dict, bytes]:
    kind = i % 5
    if kind == 0:
        size = rng.choice([rng.randint(0, 2000), LIMIT + rng.randint(1, 100)])  # some over the body limit
        return headers(rng, rng.choice(CONTENT_TYPES)), rng.randbytes(size)
    if kind == 1:
        body = {**openvla_body(rng), "image": random_json_numpy(rng)}
    elif kind == 2:
        body = {**openvla_body(rng), **{rng.choice(VALID_KEYS) if rng.random() < 0.7 else random_text(rng, 8):
                                        rng.choice([random_value(rng, 2), random_json_numpy(rng)])
                                        for _ in range(rng.randint(1, 4))}}
    elif kind == 3:
        return headers(rng), mutate(rng, rng.choice([VALID_OPENVLA, VALID_ENCODED]))
    else:
        inner = rng.choice([mutate(rng, VALID_OPENVLA).decode("latin-1"), random_text(rng, 50),
                            json.dumps({**openvla_body(rng), "image": random_json_numpy(rng)})])
        body = {"encoded": inner if rng.random() < 0.8 else random_value(rng, 2)}
        if rng.random() < 0.1:
            body[rng.choice(["image", random_text(rng, 5)])] = random_value(rng, 2)
    return headers(rng), json.dumps(body).encode()


def test_fuzzed_openvla_requests_never_get_a_5xx(capsys) -> None:
    rng = random.Random(SEED)
    app = create_app(ColourPolicy(), protocol="openvla", api_key=KEY, max_request_bytes=LIMIT, max_image_side=64,
                     max_image_pixels=48 * 48, max_instruction_chars=100)
    client = TestClient(app, raise_server_exceptions=False)
    statuses: collections.Counter = collections.Counter()
    for i in range(N_REQUESTS):
        request_headers, body = gen_openvla(rng, i)
        response = client.post("/act", headers=request_headers, content=body)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (i, body[:300], response.text)
        payload = response.json()
        if response.status_code == 200:
            array = from_json_numpy(json.loads(payload) if isinstance(payload, str) else payload)
            assert array.shape == (5,) and np.isfinite(array).all()
        else:
            assert set(payload) == {"error", "field"}, payload
    with capsys.disabled():
        print(f"\nopenvla fuzz: {N_REQUESTS} requests, status counts {dict(sorted(statuses.items()))}")
    assert {200, 400, 401, 413, 415, 422} <= set(statuses), statuses
    response = client.post("/act", content=VALID_OPENVLA,
                           headers={"X-API-Key": KEY, "content-type": "application/json"})
    assert from_json_numpy(response.json()).tolist() == expected_action(RGB, "pick", "libero")


def random_packed(rng: random.Random) -> dict:
    """An openpi msgpack_numpy array or scalar map, mostly almost right."""
    if rng.random() < 0.2:
        return {b"__npgeneric__": rng.choice([True, False, 1]), b"data": random_value(rng, 3),
                b"dtype": rng.choice(DTYPES)}
    value = {b"__ndarray__": True, b"data": RGB.tobytes(), b"dtype": "|u1", b"shape": list(RGB.shape)}
    for _ in range(rng.randint(1, 3)):
        part = rng.choice([b"data", b"dtype", b"shape", b"__ndarray__", b"extra", "str-keys"])
        if part == b"data":
            value[part] = rng.choice([random_data(rng), random_value(rng, 3)])
        elif part == b"dtype":
            value[part] = rng.choice(DTYPES)
        elif part == b"shape":
            value[part] = random_shape(rng)
        elif part == b"__ndarray__":
            value[part] = random_value(rng, 3)
        elif part == b"extra":
            value[rng.randbytes(3)] = random_value(rng, 3)
        else:
            value = {key.decode("latin-1") if isinstance(key, bytes) else key: item for key, item in value.items()}
    return value


def valid_observation() -> dict:
    return {"observation/image": RGB, "prompt": "pick", "unnorm_key": "libero"}


def frame(value: object) -> bytes:
    """`value` as an openpi frame; integers beyond msgpack's 64 bits become their text."""
    try:
        return openpi_frame(value)
    except (TypeError, OverflowError):
        return openpi_frame(repr(value))


def gen_openpi(rng: random.Random, i: int) -> bytes | str:
    kind = i % 6
    if kind == 0:
        return rng.choice([rng.randbytes(rng.randint(0, 500)), random_text(rng, 40), b"\xd4\x05\x00",
                           b"\xd6\xff\0\0\0\0", b"\x91" * rng.randint(1, 3000) + b"\xc0",
                           frame({"pad": "x" * LIMIT})])
    if kind == 1:
        return frame(random_value(rng))
    if kind == 2:
        key = rng.choice(["observation/image", "observation/state", "image", random_text(rng, 8)])
        return frame({**valid_observation(), key: random_packed(rng)})
    if kind == 3:
        fields = {rng.choice(VALID_KEYS) if rng.random() < 0.7 else rng.choice([random_text(rng, 8), rng.randbytes(4)]):
                  rng.choice([random_value(rng, 2), random_packed(rng), rng.randbytes(8), RGB[:, :, 0]])
                  for _ in range(rng.randint(1, 4))}
        return frame({**valid_observation(), **fields})
    if kind == 4:
        return mutate(rng, frame(valid_observation()))
    return frame({**valid_observation(), "prompt": rng.choice(["pick", random_text(rng, 120)]),
                         "unnorm_key": rng.choice(["bridge", None, random_text(rng, 8), 3])})


def openpi_headers(rng: random.Random) -> dict:
    roll = rng.random()
    if roll < 0.9:
        return {"Authorization": f"Api-Key {KEY}"}
    odd = bytes(rng.choice([rng.randint(32, 126), rng.randint(128, 255)]) for _ in range(rng.randint(0, 20)))
    return rng.choice([{}, {"Authorization": b"Api-Key " + odd}, {"X-API-Key": KEY}, {"Authorization": KEY}])


def test_fuzzed_openpi_frames_never_close_with_a_server_error(capsys) -> None:
    rng = random.Random(SEED + 1)
    app = create_app(ColourPolicy(), protocol="openpi", api_key=KEY, max_request_bytes=LIMIT, max_image_side=64,
                     max_image_pixels=48 * 48, max_instruction_chars=100)
    outcomes: collections.Counter = collections.Counter()
    with TestClient(app, raise_server_exceptions=False) as client:
        for i in range(N_REQUESTS):
            data = gen_openpi(rng, i)
            try:
                with client.websocket_connect("/", headers=openpi_headers(rng)) as ws:
                    ws.receive_bytes()  # metadata
                    ws.send_text(data) if isinstance(data, str) else ws.send_bytes(data)
                    message = ws.receive()
                    if message.get("bytes") is not None:
                        actions = openpi_unframe(message["bytes"])["actions"]
                        assert actions.shape == (1, 5) and np.isfinite(actions).all()
                        outcomes["actions"] += 1
                        continue
                    assert message["type"] == "websocket.send" and message["text"], message
                    closing = ws.receive()  # the server closes after an error
                    assert closing["type"] == "websocket.close", closing
                    assert closing["code"] in (1003, 1007, 1008, 1009), (i, data[:200], message["text"], closing)
                    outcomes[closing["code"]] += 1
            except WebSocketDenialResponse as denied:
                assert denied.status_code == 401, denied.text
                outcomes[401] += 1
        with capsys.disabled():
            print(f"\nopenpi fuzz: {N_REQUESTS} frames, outcomes (HTTP 401 / close codes) {dict(outcomes)}")
        assert {"actions", 401, 1003, 1007, 1008, 1009} <= set(outcomes), outcomes
        with client.websocket_connect("/", headers={"Authorization": f"Api-Key {KEY}"}) as ws:
            ws.receive_bytes()
            ws.send_bytes(openpi_frame(valid_observation()))
            assert openpi_unframe(ws.receive_bytes())["actions"].tolist() == [expected_action(RGB, "pick", "libero")]
