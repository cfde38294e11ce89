"""Fuzzing the policy server: thousands of random and malformed requests (fixed seed), never a 5xx.

Five generators: random bytes, random JSON structures, byte-level mutations of a valid body, valid
bodies carrying mutated/bomb images and odd instructions, and random methods/paths/headers. Afterwards
a valid request must still get the exact action. A second run does the same to a chunked policy with
two cameras and a state: random camera names and images, random states, mutated camera bodies.
"""

from __future__ import annotations

import collections
import json
import random
import time

from fastapi.testclient import TestClient
from fuzz_helpers import CONTENT_TYPES, KEY, ODD_TEXT, headers, mutate, random_text, random_value
from PIL import Image
from serving_helpers import (
    CAMERAS,
    ONE_STEP_HEALTH,
    ChunkPolicy,
    ColourPolicy,
    act_body,
    b64,
    bomb_jpeg,
    bomb_png,
    cameras_body,
    encode,
    expected_action,
    expected_chunk,
    random_rgb,
)

from vlx.serving import create_app

SEED, N_REQUESTS = 20240601, 1500
HEALTH_KEYS = {"status", "action_dim", "unnorm_keys", *ONE_STEP_HEALTH}
RGB = random_rgb(7, (12, 9))
IMAGES = [encode(Image.fromarray(RGB)), encode(Image.fromarray(RGB), "JPEG"),
          encode(Image.fromarray(RGB).convert("L")), encode(Image.fromarray(RGB).convert("RGBA")),
          encode(Image.fromarray(RGB).convert("P"))]
VALID = json.dumps(act_body(b64(IMAGES[0]), "pick up the cube", "libero")).encode()
def gen_random_bytes(rng: random.Random):
    return "POST", "/act", headers(rng, rng.choice(CONTENT_TYPES)), rng.randbytes(rng.randint(0, 3000))


def random_fields(rng: random.Random) -> dict:
    keys = ["image", "instruction", "unnorm_key"]
    return {rng.choice(keys) if rng.random() < 0.7 else random_text(rng, 8): random_value(rng, 2)
            for _ in range(rng.randint(0, 5))}


def gen_random_json(rng: random.Random):
    roll = rng.random()
    if roll < 0.3:
        value = random_value(rng)  # any JSON document
    elif roll < 0.65:
        value = random_fields(rng)  # an object with random fields
    else:
        value = {**act_body(b64(IMAGES[0])), **random_fields(rng)}  # a valid body with fields overwritten/added
    return "POST", "/act", headers(rng), json.dumps(value).encode()


def gen_mutated_body(rng: random.Random):
    return "POST", "/act", headers(rng), mutate(rng, VALID)


def gen_mutated_image(rng: random.Random):
    roll = rng.random()
    if roll < 0.15:
        image = rng.choice([bomb_png, bomb_jpeg])(rng.randint(0, 2 ** 16 - 1), rng.randint(0, 2 ** 16 - 1))
    elif roll < 0.85:
        image = mutate(rng, rng.choice(IMAGES), keep=rng.choice([0, 8, 16, 33]))
    else:
        image = rng.choice(IMAGES)
    text = b64(image)
    if rng.random() < 0.15:
        text = mutate(rng, text.encode()).decode("latin-1")
    instruction = rng.choice(["pick up the cube", random_text(rng, 120), rng.choice(ODD_TEXT)])
    unnorm_key = rng.choice([None, "bridge", "libero", "droid", random_text(rng, 8)])
    return "POST", "/act", headers(rng), json.dumps(act_body(text, instruction, unnorm_key)).encode()


def gen_random_request(rng: random.Random):
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = rng.choice(["/act", "/health", "/", "/act/", "/docs", "/openapi.json", "//act", "/act%00", "/%ff%fe",
                       "/" + "".join(rng.choice("abc/._-%20") for _ in range(rng.randint(0, 30)))])
    result = headers(rng, rng.choice(CONTENT_TYPES + [None]))
    for _ in range(rng.randint(0, 3)):
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-") for _ in range(rng.randint(1, 12))).strip("-") or "x"
        result[f"x-{name}"] = bytes(rng.choice([rng.randint(32, 126), rng.randint(128, 255)])
                                    for _ in range(rng.randint(0, 40)))
    if rng.random() < 0.2:
        result["content-length"] = rng.choice(["abc", "-5", "99999999999", "0", "1e9", "10 10"])
    body = rng.choice([b"", VALID, rng.randbytes(rng.randint(0, 200))])
    return method, path, result, body


GENERATORS = [gen_random_bytes, gen_random_json, gen_mutated_body, gen_mutated_image, gen_random_request]


def test_fuzzed_requests_never_get_a_5xx_and_the_server_keeps_working(capsys) -> None:
    rng = random.Random(SEED)
    policy = ColourPolicy()
    app = create_app(policy, api_key=KEY, max_request_bytes=16 * 1024, max_image_side=64, max_image_pixels=48 * 48,
                     max_instruction_chars=100, predict_timeout_s=10.0)
    client = TestClient(app, raise_server_exceptions=False)
    statuses: collections.Counter = collections.Counter()
    start = time.perf_counter()
    for i in range(N_REQUESTS):
        generator = GENERATORS[i % len(GENERATORS)]
        method, path, request_headers, body = generator(rng)
        response = client.request(method, path, headers=request_headers, content=body)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (i, generator.__name__, method, path, body[:200], response.text)
        if method != "HEAD":
            payload = response.json()
            expected_keys = {"/act": {"action"}, "/health": HEALTH_KEYS}.get(path) \
                if response.status_code == 200 else {"error", "field"}
            assert set(payload) == expected_keys, (path, payload)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nfuzz: {N_REQUESTS} requests in {elapsed:.1f} s = {N_REQUESTS / elapsed:.0f} requests/s; "
              f"status counts {dict(sorted(statuses.items()))}; policy calls {len(policy.calls)}")
    # every layer was reached: auth, routing, size limit, content type, JSON, schema, image, and the policy itself
    assert {200, 400, 401, 404, 405, 413, 415, 422} <= set(statuses), statuses
    response = client.post("/act", content=VALID, headers={"X-API-Key": KEY, "content-type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"action": expected_action(RGB, "pick up the cube", "libero")}


STATE = [0.25, -1.5]
VALID_CAMERAS = json.dumps(cameras_body({name: b64(IMAGES[0]) for name in CAMERAS}, "stack", STATE, "libero")).encode()


def random_images(rng: random.Random) -> object:
    names = [name for name in CAMERAS if rng.random() < 0.85] + [random_text(rng, 10) for _ in range(rng.randint(0, 1))]
    if rng.random() < 0.1:
        return random_value(rng, 2)
    return {name: b64(mutate(rng, IMAGES[0]) if rng.random() < 0.3 else rng.choice(IMAGES))
            if rng.random() < 0.9 else random_value(rng, 3) for name in names}


def random_state(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.3:
        return STATE
    if roll < 0.7:
        return [random_value(rng, 4) if rng.random() < 0.3 else rng.uniform(-5, 5) for _ in range(rng.randint(0, 4))]
    return random_value(rng, 2)


def gen_camera_body(rng: random.Random):
    body = cameras_body(random_images(rng), rng.choice(["stack", random_text(rng, 30)]), random_state(rng),
                        rng.choice([None, "bridge", "libero", random_text(rng, 8)]))
    if rng.random() < 0.15:
        body["image"] = b64(IMAGES[0])
    if rng.random() < 0.1:
        body["session"] = random_value(rng, 3)
    return "POST", "/act", headers(rng), json.dumps(body).encode()


def gen_mutated_camera_body(rng: random.Random):
    return "POST", "/act", headers(rng), mutate(rng, VALID_CAMERAS)


def gen_camera_json(rng: random.Random):
    body = {**json.loads(VALID_CAMERAS), **random_fields(rng)}
    return "POST", "/act", headers(rng), json.dumps(body).encode()


def test_fuzzed_camera_and_state_requests_never_get_a_5xx() -> None:
    rng = random.Random(SEED + 1)
    policy = ChunkPolicy()
    app = create_app(policy, api_key=KEY, max_request_bytes=16 * 1024, max_image_side=64, max_image_pixels=48 * 48,
                     max_instruction_chars=100, execute_steps=2)
    client = TestClient(app, raise_server_exceptions=False)
    generators = [gen_camera_body, gen_mutated_camera_body, gen_camera_json]
    statuses: collections.Counter = collections.Counter()
    for i in range(600):
        method, path, request_headers, body = generators[i % len(generators)](rng)
        response = client.request(method, path, headers=request_headers, content=body)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (i, body[:300], response.text)
        assert set(response.json()) == ({"actions"} if response.status_code == 200 else {"error", "field"})
    assert {200, 400, 401, 422} <= set(statuses), statuses
    response = client.post("/act", content=VALID_CAMERAS,
                           headers={"X-API-Key": KEY, "content-type": "application/json"})
    assert response.json() == {"actions": expected_chunk([RGB, RGB], "stack", STATE, "libero")[:2]}
