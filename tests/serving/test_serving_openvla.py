"""The OpenVLA-compatible REST protocol (`protocol=openvla`) through TestClient: deploy.py's two request forms and
its response shape, cameras and state by key, the array rules, vlx's error statuses, and the config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import (
    CAMERAS,
    ChunkPolicy,
    ColourPolicy,
    expected_action,
    expected_chunk,
    from_json_numpy,
    json_numpy_array,
    random_rgb,
)

from vlx.errors import ConfigError
from vlx.serving import create_app

KEY = "openvla-key"
RGB = random_rgb(4, (20, 12))
IMAGE = json_numpy_array(RGB)


@pytest.fixture()
def client() -> TestClient:
    app = create_app(ColourPolicy(), protocol="openvla", api_key=KEY, max_request_bytes=64 * 1024, max_image_side=64,
                     max_image_pixels=48 * 48, max_instruction_chars=50)
    return TestClient(app, headers={"X-API-Key": KEY}, raise_server_exceptions=False)


def test_a_plain_request_gets_the_json_numpy_action_itself(client: TestClient) -> None:
    response = client.post("/act", json={"image": IMAGE, "instruction": "pick up the cube", "unnorm_key": "libero"})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"__numpy__", "dtype", "shape"} and (payload["dtype"], payload["shape"]) == ("<f8", [5])
    assert from_json_numpy(payload).tolist() == expected_action(RGB, "pick up the cube", "libero")


def test_the_encoded_form_gets_the_encoded_action(client: TestClient) -> None:
    inner = json.dumps({"image": IMAGE, "instruction": "go", "unnorm_key": "bridge"})
    response = client.post("/act", json={"encoded": inner})
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), str)  # deploy.py answers json_numpy.dumps(action) for this form
    assert from_json_numpy(json.loads(response.json())).tolist() == expected_action(RGB, "go", "bridge")


@pytest.mark.parametrize("shape", [(12, 20), (12, 20, 1), (12, 20, 4)])
def test_gray_and_rgba_arrays_become_rgb(client: TestClient, shape: tuple) -> None:
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    rgb = np.repeat(array.reshape(12, 20, 1), 3, axis=2) if len(shape) == 2 or shape[2] == 1 else array[..., :3]
    response = client.post("/act", json={"image": json_numpy_array(array), "instruction": "go", "unnorm_key": "bridge"})
    assert from_json_numpy(response.json()).tolist() == expected_action(rgb, "go", "bridge")


def nd(array: np.ndarray, **overrides) -> dict:
    return {**json_numpy_array(array), **overrides}


BAD = {  # name: (request body, status, field, what the message contains)
    "image as a nested list": ({"image": RGB.tolist()}, 422, "image", "image must be a uint8 image array"),
    "float image": ({"image": nd(RGB.astype(np.float32))}, 400, "image", "must be a uint8 array, not float32"),
    "channels first": ({"image": nd(np.ascontiguousarray(RGB.transpose(2, 0, 1)))}, 400, "image", "channels must"),
    "object dtype": ({"image": nd(RGB, dtype="|O")}, 400, "image", "dtype '|O' is not allowed"),
    "complex dtype": ({"image": nd(RGB, dtype="<c16")}, 400, "image", "is not allowed"),
    "structured dtype": ({"image": nd(RGB, dtype=[["a", "<f8"]])}, 400, "image", "is not allowed"),
    "string dtype": ({"image": nd(RGB, dtype="<U3")}, 400, "image", "is not allowed"),
    "wrong size": ({"image": nd(RGB, shape=[12, 20, 4])}, 400, "image", "needs 960 bytes, but the data has 720"),
    "five dimensions": ({"image": nd(RGB, shape=[1, 1, 12, 20, 3])}, 400, "image", "at most 4"),
    "negative shape": ({"image": nd(RGB, shape=[-12, 20, 3])}, 400, "image", "non-negative"),
    "bad base64": ({"image": nd(RGB, __numpy__="abc")}, 400, "image", "not valid base64"),
    "extra array key": ({"image": nd(RGB, order="F")}, 400, "image", "exactly the keys"),
    "too large an image": ({"image": nd(np.zeros((8, 100, 3), np.uint8))}, 400, "image", "largest side allowed is 64"),
    "unknown key": ({"images": IMAGE}, 422, "images", "unknown key 'images'; did you mean 'image'?"),
    "two keys for one input": ({"prompt": "go"}, 422, "prompt", "'instruction' and 'prompt' both give instruction"),
    "instruction too long": ({"instruction": "x" * 51}, 422, "instruction", "at most 50 characters"),
    "instruction not a string": ({"instruction": 7}, 422, "instruction", "valid string"),
    "unknown unnorm_key": ({"unnorm_key": "droid"}, 422, "unnorm_key", "unknown unnorm_key 'droid'"),
    "a state for a model without one": ({"state": [0.5]}, 422, "state", "has no state input"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_requests_get_vlx_statuses_and_error_bodies(client: TestClient, name: str) -> None:
    fields, status, field, message = BAD[name]
    response = client.post("/act", json={"image": IMAGE, "instruction": "go", **fields})
    assert (response.status_code, response.json()["field"]) == (status, field), response.text
    assert message in response.json()["error"]


def test_missing_fields_and_the_encoded_form_rules(client: TestClient) -> None:
    def error(body: object) -> tuple[int, dict]:
        response = client.post("/act", json=body)
        return response.status_code, response.json()

    assert error({"image": IMAGE}) == (422, {"error": "the instruction is missing: send it as instruction or prompt",
                                             "field": "instruction"})
    assert error({"instruction": "go"}) == (422, {"error": "the image is missing: send it as image or "
                                                           "observation/image", "field": "image"})
    assert error({"encoded": "{}", "image": IMAGE})[1]["field"] == "encoded"
    assert error({"encoded": {"image": IMAGE}}) == (422, {"error": "encoded must be a string (a json_numpy "
                                                                   "document), not dict", "field": "encoded"})
    status, body = error({"encoded": '{"image": '})
    assert status == 400 and body["field"] == "encoded" and body["error"].startswith("encoded is not valid JSON")
    assert error({"encoded": "[1]"})[0] == 422
    assert error([IMAGE])[0] == 422
    assert client.post("/act", content=b'{"image": 1', headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/act", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    response = client.post("/act", json={"image": IMAGE, "instruction": "go"}, headers={"X-API-Key": "nope"})
    assert response.json() == {"error": "wrong API key", "field": "X-API-Key"}
    assert client.get("/health").json()["unnorm_keys"] == ["bridge", "libero"]


def test_a_chunked_model_takes_its_cameras_and_state_by_key() -> None:
    app = create_app(ChunkPolicy(), protocol="openvla", execute_steps=2, key_map={"front": "agentview_image"})
    client = TestClient(app)
    red, blue = random_rgb(5, (8, 6)), random_rgb(6, (10, 4))
    body = {"agentview_image": json_numpy_array(red), "wrist_image": json_numpy_array(blue), "instruction": "stack",
            "state": json_numpy_array(np.asarray([0.25, -1.5])), "unnorm_key": "libero"}
    response = client.post("/act", json=body)
    assert response.status_code == 200, response.text
    assert from_json_numpy(response.json()).tolist() == expected_chunk([red, blue], "stack", [0.25, -1.5], "libero")[:2]
    renamed = {**{k: v for k, v in body.items() if k != "agentview_image"}, "front": body["agentview_image"],
               "state": [0.25, -1.5]}
    assert client.post("/act", json=renamed).json() == response.json()
    missing = client.post("/act", json={k: v for k, v in body.items() if k != "wrist_image"}).json()
    assert missing == {"error": "camera 'wrist_image' is missing: send it as wrist_image or observation/wrist_image",
                       "field": "wrist_image"}
    wrong = client.post("/act", json={**body, "state": json_numpy_array(np.zeros((2, 1)))}).json()
    assert wrong == {"error": "state must be a 1-D array of numbers, got shape [2, 1]", "field": "state"}
    short = client.post("/act", json={**body, "state": [1.0]}).json()
    assert short == {"error": "state has 1 values; the model expects 2", "field": "state"}
    assert client.post("/act", json={**body, "state": [True, 1.0]}).json()["field"] == "state.0"


def test_the_server_default_unnorm_key_applies_when_a_request_names_none() -> None:
    client = TestClient(create_app(ColourPolicy(), protocol="openvla", unnorm_key="libero"))
    response = client.post("/act", json={"image": IMAGE, "instruction": "go"})
    assert from_json_numpy(response.json()).tolist() == expected_action(RGB, "go", "libero")


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "grpc"}, "protocol='grpc' is not one vlx serves; LeRobot's gRPC async inference is not offered"),
    ({"protocol": "opnevla"}, "protocol='opnevla' is not one vlx serves; did you mean 'openvla'?"),
    ({"key_map": {"front": "agentview_image"}}, "key_map applies to protocol=openvla and protocol=openpi"),
    ({"protocol": "openvla", "key_map": {"front": "top"}}, "key_map: 'front' maps to 'top', which is not an input"),
    ({"protocol": "openvla", "key_map": {"": "image"}}, "key_map: '' is not a usable key"),
    ({"protocol": "openvla", "ensemble": "exp"}, "ensemble=exp needs one session per client episode"),
    ({"protocol": "openpi", "unnorm_key": "droid"}, "unnorm_key='droid' is not a dataset of this model"),
])
def test_bad_settings_are_one_line_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        create_app(ChunkPolicy(), **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_default_keys_follow_the_models_cameras() -> None:
    from vlx.observation import ObservationSpec
    from vlx.serving.keymap import default_keys

    assert default_keys(ObservationSpec())["observation/image"] == "image"
    keys = default_keys(ObservationSpec(cameras=["wrist_cam", "front"]))
    assert (keys["observation/image"], keys["observation/wrist_image"], keys["image"]) == (
        "front", "wrist_cam", "front")
    keys = default_keys(ObservationSpec(cameras=CAMERAS, state_dim=2))
    assert (keys["observation/image"], keys["observation/wrist_image"]) == tuple(CAMERAS)
    assert keys["observation/state"] == keys["state"] == "state" and keys["prompt"] == "instruction"
