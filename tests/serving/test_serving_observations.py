"""`POST /act` with named cameras, a robot state and action chunks: exact answers, every mismatch a 4xx naming the
field, `execute_steps` truncation, and temporal ensembling per client session (values worked out by hand)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import (
    CAMERAS,
    ChunkPolicy,
    ColourPolicy,
    act_body,
    b64,
    bomb_png,
    cameras_body,
    encode,
    expected_action,
    expected_chunk,
    random_rgb,
)

from vlx.errors import ConfigError
from vlx.serving import create_app

AGENT, WRIST = random_rgb(10, (20, 12)), random_rgb(11, (8, 8))
IMAGES = {"agentview_image": b64(encode(Image.fromarray(AGENT))), "wrist_image": b64(encode(Image.fromarray(WRIST)))}
STATE = [0.25, -1.5]  # exact in float32


def client_for(policy: object, **settings: object) -> TestClient:
    app = create_app(policy, max_image_side=64, max_image_pixels=48 * 48, **settings)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture()
def policy() -> ChunkPolicy:
    return ChunkPolicy()


@pytest.fixture()
def client(policy: ChunkPolicy) -> TestClient:
    return client_for(policy)


def error(response: httpx.Response) -> tuple[int, str | None, str]:
    return response.status_code, response.json()["field"], response.json()["error"]


def test_two_cameras_and_a_state_get_the_exact_chunk(client: TestClient, policy: ChunkPolicy) -> None:
    response = client.post("/act", json=cameras_body(IMAGES, "stack the cups", STATE, "libero"))
    assert response.status_code == 200, response.text
    assert response.json() == {"actions": expected_chunk([AGENT, WRIST], "stack the cups", STATE, "libero")}
    assert policy.calls == [(CAMERAS, "stack the cups", "libero", STATE)]


def test_cameras_may_come_in_any_order(client: TestClient) -> None:
    swapped = {"wrist_image": IMAGES["wrist_image"], "agentview_image": IMAGES["agentview_image"]}
    response = client.post("/act", json=cameras_body(swapped, "go", STATE))
    assert response.json() == {"actions": expected_chunk([AGENT, WRIST], "go", STATE)}


def test_health_reports_the_chunk_the_cameras_and_the_state() -> None:
    response = client_for(ChunkPolicy(), execute_steps=2).get("/health")
    assert response.json() == {"status": "ok", "action_dim": 4, "unnorm_keys": ["bridge", "libero"], "chunk_size": 4,
                               "cameras": CAMERAS, "state_dim": 2, "execute_steps": 2, "ensemble": None}
    health = client_for(ChunkPolicy(), ensemble="exp").get("/health").json()
    assert (health["execute_steps"], health["ensemble"]) == (None, "exp")


@pytest.mark.parametrize("images, status, field, message", [
    ({"agentview_image": IMAGES["agentview_image"]}, 422, "images",
     "camera 'wrist_image' is missing: the model was trained with cameras ['agentview_image', 'wrist_image']; got "
     "['agentview_image']"),
    ({**IMAGES, "left_image": IMAGES["wrist_image"]}, 422, "images",
     "camera 'left_image' is not one of the model's cameras ['agentview_image', 'wrist_image']"),
    ({}, 422, "images", "camera 'agentview_image' is missing: the model was trained with cameras ['agentview_image', "
                        "'wrist_image']; got []"),
    ({**IMAGES, "wrist_image": b64(b"GIF89a....")}, 400, "images.wrist_image",
     "camera 'wrist_image': image is not a PNG or JPEG (its bytes do not start with either signature)"),
    ({**IMAGES, "agentview_image": b64(bomb_png(100_000, 10))}, 400, "images.agentview_image",
     "camera 'agentview_image': image is 100000x10; the largest side allowed is 64 pixels"),
    ({**IMAGES, "wrist_image": b64(encode(Image.new("RGB", (60, 60))))}, 400, "images.wrist_image",
     "camera 'wrist_image': image is 60x60 = 3600 pixels; the limit is 2304"),
    ({**IMAGES, "wrist_image": "not base64!!"}, 400, "images.wrist_image",
     "camera 'wrist_image': image is not valid base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding)"),
    ({**IMAGES, "wrist_image": 7}, 422, "images.wrist_image", "images.wrist_image: Input should be a valid string"),
    ({**IMAGES, "wrist_image": ""}, 422, "images.wrist_image",
     "images.wrist_image: String should have at least 1 character"),
    ({**IMAGES, "wrist\x00": IMAGES["wrist_image"]}, 422, "images.wrist\x00.[key]",
     "images.wrist\x00.[key]: String contains control characters or lone surrogates"),
    ({f"cam{i}": IMAGES["wrist_image"] for i in range(17)}, 422, "images",
     "images: Dictionary should have at most 16 items after validation, not more"),
    ([IMAGES["agentview_image"]], 422, "images", "images: Input should be a valid dictionary"),
])
def test_camera_mistakes_name_the_camera(client: TestClient, policy: ChunkPolicy, images, status, field,
                                         message) -> None:
    response = client.post("/act", json=cameras_body(images, "go", STATE))
    assert error(response) == (status, field, message)
    assert policy.calls == []


@pytest.mark.parametrize("state, field, message", [
    ([0.25, -1.5, 2.0], "state", "state has 3 values; the model expects 2"),
    ([], "state", "state has 0 values; the model expects 2"),
    (None, "state", "state is missing: this model needs the robot state, 2 numbers"),
    ([0.25, "1.5"], "state.1", "state.1: Input should be a valid number"),
    ([True, 0.5], "state.0", "state.0: Input should be a valid number"),
    ([0.25, None], "state.1", "state.1: Input should be a valid number"),
    ([[0.25], [1.5]], "state.0", "state.0: Input should be a valid number (and 1 more error)"),
    ({"x": 1.0}, "state", "state: Input should be a valid list"),
    ("0.25,1.5", "state", "state: Input should be a valid list"),
    ([0.0] * 1025, "state", "state: List should have at most 1024 items after validation, not 1025"),
])
def test_state_mistakes_are_422_naming_the_state(client: TestClient, policy: ChunkPolicy, state, field,
                                                 message) -> None:
    response = client.post("/act", json={**cameras_body(IMAGES, "go"), "state": state})
    assert error(response) == (422, field, message)
    assert policy.calls == []


@pytest.mark.parametrize("literal, message", [(b"1e400", "state.0: Input should be a finite number"),
                                              (b"-1e999", "state.0: Input should be a finite number"),
                                              (b"1" + b"0" * 400, "state.0: Input should be a valid number")])
def test_state_numbers_out_of_float_range_are_refused(client: TestClient, literal: bytes, message: str) -> None:
    body = httpx.Request("POST", "/", json=cameras_body(IMAGES, "go", [9.5, 0.5])).content.replace(b"9.5", literal)
    response = client.post("/act", content=body, headers={"content-type": "application/json"})
    assert error(response) == (422, "state.0", message)


def test_nan_and_infinity_literals_in_the_state_are_invalid_json(client: TestClient) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = httpx.Request("POST", "/", json=cameras_body(IMAGES, "go", [9.5, 0.5])).content.replace(b"9.5", literal)
        response = client.post("/act", content=body, headers={"content-type": "application/json"})
        assert error(response) == (400, "body",
                                   f"request body is not valid JSON: {literal.decode()} is not a JSON number")


def test_integers_are_numbers(client: TestClient) -> None:
    response = client.post("/act", json=cameras_body(IMAGES, "go", [2, -1]))
    assert response.json() == {"actions": expected_chunk([AGENT, WRIST], "go", [2.0, -1.0])}


def test_image_and_images_exclude_each_other() -> None:
    cameras, bare = client_for(ChunkPolicy()), client_for(ColourPolicy())
    png = IMAGES["wrist_image"]
    cases = [
        (cameras, {"image": png, **cameras_body(IMAGES, "go", STATE)}, "image",
         "image: give image or images, not both; this model sees the cameras ['agentview_image', 'wrist_image'], "
         "as images: {camera: base64}"),
        (cameras, {"image": png, "instruction": "go", "state": STATE}, "image",
         "image: this model sees the cameras ['agentview_image', 'wrist_image'], as images: {camera: base64}"),
        (cameras, {"instruction": "go", "state": STATE}, "images",
         "images: Field required (this model sees the cameras ['agentview_image', 'wrist_image'])"),
        (cameras, {"images": None, "image": None, "instruction": "go", "state": STATE}, "images",
         "images: Field required (this model sees the cameras ['agentview_image', 'wrist_image'])"),
        (bare, {**act_body(png, "go"), "images": {"wrist_image": png}}, "images",
         "images: give image or images, not both; this model sees one image, as image (not named cameras)"),
        (bare, {"images": {"wrist_image": png}, "instruction": "go"}, "images",
         "images: this model sees one image, as image (not named cameras)"),
        (bare, {"instruction": "go"}, "image", "image: Field required"),
        (bare, {}, "image", "image: Field required (and 1 more error)"),
    ]
    for client, body, field, message in cases:
        assert error(client.post("/act", json=body)) == (422, field, message), body


def test_a_model_without_state_input_refuses_a_state() -> None:
    policy = ColourPolicy()
    client = client_for(policy)
    response = client.post("/act", json={**act_body(IMAGES["wrist_image"], "go"), "state": STATE})
    assert error(response) == (422, "state",
                               "state: this model has no state input (no proprio projector); do not pass one")
    response = client.post("/act", json=act_body(IMAGES["wrist_image"], "go"))
    assert response.json() == {"action": expected_action(WRIST, "go")}  # and the old request still works
    assert len(policy.calls) == 1


def test_a_chunked_single_image_model_answers_its_whole_chunk() -> None:
    client = client_for(ChunkPolicy(cameras=None, state_dim=None, chunk_size=3))
    response = client.post("/act", json=act_body(IMAGES["agentview_image"], "open", "bridge"))
    assert response.json() == {"actions": expected_chunk([AGENT], "open", chunk_size=3)}
    assert [len(row) for row in response.json()["actions"]] == [4, 4, 4]


def test_execute_steps_answers_the_first_rows_of_each_chunk() -> None:
    for steps in (1, 3, 4):
        response = client_for(ChunkPolicy(), execute_steps=steps).post("/act", json=cameras_body(IMAGES, "go", STATE))
        assert response.json() == {"actions": expected_chunk([AGENT, WRIST], "go", STATE)[:steps]}, steps


def test_a_one_step_model_keeps_answering_action() -> None:
    client = client_for(ChunkPolicy(chunk_size=1), execute_steps=1)
    response = client.post("/act", json=cameras_body(IMAGES, "go", STATE))
    assert response.json() == {"action": expected_chunk([AGENT, WRIST], "go", STATE, chunk_size=1)[0]}


def test_a_chunk_of_the_wrong_shape_or_with_nan_is_a_500(client: TestClient) -> None:
    for instruction, message in (
        ("!nan-row", "the policy returned an invalid action: it returned non-finite values (NaN or infinity) in row 3"),
        ("!flat",
         "the policy returned an invalid action: it returned shape (16,), expected (chunk_size, action_dim)=(4, 4)"),
    ):
        assert error(client.post("/act", json=cameras_body(IMAGES, instruction, STATE))) == (500, None, message)


def test_the_policy_may_describe_its_observation_with_any_object() -> None:
    inner = ChunkPolicy(cameras=["front"], state_dim=None, chunk_size=2, unnorm_keys=("bridge",))
    duck = SimpleNamespace(action_dim=4, unnorm_keys=["bridge"], chunk_size=2, predict_action=inner.predict_action,
                           observation=SimpleNamespace(cameras=["front"], state_dim=None))  # not an ObservationSpec
    client = TestClient(create_app(duck))
    response = client.post("/act", json=cameras_body({"front": IMAGES["wrist_image"]}, "go", unnorm_key=None))
    assert response.json() == {"actions": expected_chunk([WRIST], "go", chunk_size=2)}
    response = client.post("/act", json=cameras_body({"back": IMAGES["wrist_image"]}, "go", unnorm_key=None))
    assert error(response) == (422, "images", "camera 'front' is missing: the model was trained with cameras "
                                              "['front']; got ['back']")


def test_execution_and_observation_settings_are_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"^config key 'serve.execute_steps'=5; expected a whole number from 1 to the "
                                          r"policy's chunk size 4 \(or null: all 4\)$"):
        create_app(ChunkPolicy(), execute_steps=5)
    with pytest.raises(ConfigError, match=r"^config key 'serve': execute_steps and ensemble exclude each other"):
        create_app(ChunkPolicy(), execute_steps=2, ensemble="exp")
    with pytest.raises(ConfigError, match=r"^config key 'serve.ensemble'='mean'"):
        create_app(ChunkPolicy(), ensemble="mean")
    with pytest.raises(ConfigError, match=r"^config key 'serve.ensemble_weight'=-1"):
        create_app(ChunkPolicy(), ensemble="exp", ensemble_weight=-1)
    with pytest.raises(ConfigError, match="max_sessions must be a positive number"):
        create_app(ChunkPolicy(), ensemble="exp", max_sessions=0)
    with pytest.raises(ConfigError, match=r"policy.chunk_size must be a positive int, got 0"):
        create_app(ChunkPolicy(chunk_size=0))
    with pytest.raises(ConfigError, match=r"at most 16 cameras"):
        create_app(ChunkPolicy(cameras=[f"cam{i}" for i in range(17)]))
    with pytest.raises(ConfigError, match=r"policy.observation.state_dim must be None or an int from 1 to 1024"):
        create_app(SimpleNamespace(action_dim=4, unnorm_keys=[], predict_action=print,
                                   observation=SimpleNamespace(cameras=None, state_dim=2000)))


# -- temporal ensembling ------------------------------------------------------------------------------------------

RED_200, RED_50 = np.full((6, 6, 3), (200, 0, 0), np.uint8), np.full((6, 6, 3), (50, 9, 9), np.uint8)
SOLID = {"agentview_image": b64(encode(Image.fromarray(RED_200))), "wrist_image": b64(encode(Image.fromarray(RED_50)))}


def ensembled(client: TestClient, session: str, step_state: float) -> list[float]:
    """One step of `session`: ChunkPolicy's chunk then has column 2 = step_state + k, k = 0..3."""
    response = client.post("/act", json=cameras_body(SOLID, "go", [step_state, 0.0], session=session))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"action"}
    return response.json()["action"]


def test_ensembling_averages_every_chunk_that_covers_the_step() -> None:
    client = client_for(ChunkPolicy(), ensemble="exp", ensemble_weight=0.0)  # m = 0: plain means
    # step t predicts column 2 = 10·t + k for steps t..t+3; the step's action averages the chunks covering it
    played = [ensembled(client, "episode-1", 10.0 * t) for t in range(5)]
    assert played == [[200.0, 50.0, value, 2.0] for value in (0.0,  # step 0: chunk 0 (its row 0)
                                                              (1 + 10) / 2,  # step 1: chunk 0 row 1, chunk 1 row 0
                                                              (2 + 11 + 20) / 3,
                                                              (3 + 12 + 21 + 30) / 4,
                                                              (13 + 22 + 31 + 40) / 4)]  # chunk 0 no longer covers it


def test_ensembling_weights_the_oldest_chunk_most() -> None:
    m = 0.01
    client = client_for(ChunkPolicy(), ensemble="exp")  # ACT's default weight 0.01
    played = [ensembled(client, "e", 10.0 * t)[2] for t in range(3)]
    w0, w1, w2 = 1.0, math.exp(-m), math.exp(-2 * m)
    assert played == pytest.approx([0.0, (w0 * 1 + w1 * 10) / (w0 + w1), (w0 * 2 + w1 * 11 + w2 * 20) / (w0 + w1 + w2)],
                                   rel=1e-6)


def test_sessions_are_independent_and_the_least_recently_used_is_forgotten() -> None:
    app = create_app(ChunkPolicy(), ensemble="exp", ensemble_weight=0.0, max_sessions=2)
    client = TestClient(app)
    assert ensembled(client, "a", 0.0)[2] == 0.0
    assert ensembled(client, "b", 100.0)[2] == 100.0  # b's first step: only its own chunk
    assert ensembled(client, "a", 10.0)[2] == (1 + 10) / 2  # a's second step: a's two chunks, none of b's
    assert ensembled(client, "c", 500.0)[2] == 500.0  # a third session: b, the least recently used, is dropped
    assert "b" not in app.state.sessions and len(app.state.sessions) == 2
    assert ensembled(client, "b", 110.0)[2] == 110.0  # b starts again from an empty history, and a is dropped
    assert ensembled(client, "c", 510.0)[2] == (501 + 510) / 2  # c kept its history
    assert ensembled(client, "a", 20.0)[2] == 20.0  # a was forgotten


def test_ensembling_needs_a_session(policy: ChunkPolicy) -> None:
    client = client_for(policy, ensemble="exp")
    for body in (cameras_body(SOLID, "go", STATE), cameras_body(SOLID, "go", STATE, session=None)):
        assert error(client.post("/act", json=body)) == (
            422, "session", "session: Field required: this server ensembles chunks (ensemble=exp) per session; send "
                            "one session name per episode")
    for session, message in ((7, "session: Input should be a valid string"),
                             ("", "session: String should have at least 1 character"),
                             ("x" * 201, "session: String should have at most 200 characters"),
                             ("a\x01b", "session: String contains control characters or lone surrogates")):
        response = client.post("/act", json=cameras_body(SOLID, "go", STATE, session=session))
        assert error(response) == (422, "session", message)
    assert policy.calls == []


def test_a_session_is_ignored_without_ensembling(client: TestClient) -> None:
    response = client.post("/act", json=cameras_body(IMAGES, "go", STATE, session="episode-1"))
    assert response.json() == {"actions": expected_chunk([AGENT, WRIST], "go", STATE)}
