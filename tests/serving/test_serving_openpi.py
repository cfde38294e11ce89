"""The openpi-compatible websocket protocol (`protocol=openpi`) through TestClient: the metadata frame, actions and
timings, openpi's LIBERO keys, the API key in the handshake, and every error's text frame and close code."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import (
    CAMERAS,
    ChunkPolicy,
    ColourPolicy,
    expected_action,
    expected_chunk,
    openpi_frame,
    openpi_unframe,
    random_rgb,
)
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from vlx.serving import create_app

KEY = "openpi-key"
AUTH = {"Authorization": f"Api-Key {KEY}"}
RGB = random_rgb(8, (16, 12))
LIMIT = 32 * 1024


@pytest.fixture()
def client() -> TestClient:
    app = create_app(ColourPolicy(), protocol="openpi", api_key=KEY, max_request_bytes=LIMIT, max_image_side=64,
                     max_image_pixels=48 * 48, max_instruction_chars=50)
    return TestClient(app, raise_server_exceptions=False)


def test_metadata_then_one_action_per_frame_with_timings(client: TestClient) -> None:
    with client.websocket_connect("/", headers=AUTH) as ws:
        metadata = openpi_unframe(ws.receive_bytes())
        assert {k: v for k, v in metadata.items() if k != "keys"} == {
            "action_dim": 5, "unnorm_keys": ["bridge", "libero"], "chunk_size": 1, "cameras": None, "state_dim": None,
            "execute_steps": 1, "ensemble": None}
        assert metadata["keys"]["observation/image"] == "image" and metadata["keys"]["prompt"] == "instruction"
        ws.send_bytes(openpi_frame({"observation/image": RGB, "prompt": "pick", "unnorm_key": "libero"}))
        reply = openpi_unframe(ws.receive_bytes())
        assert set(reply) == {"actions", "policy_timing", "server_timing"}
        assert reply["actions"].dtype == np.float64 and reply["actions"].tolist() == [expected_action(RGB, "pick",
                                                                                                      "libero")]
        assert set(reply["policy_timing"]) == {"infer_ms"} and set(reply["server_timing"]) == {"infer_ms"}
        ws.send_bytes(openpi_frame({"image": RGB, "instruction": "go", "unnorm_key": np.str_("bridge")}))
        reply = openpi_unframe(ws.receive_bytes())
        assert reply["actions"].tolist() == [expected_action(RGB, "go", "bridge")]
        assert set(reply["server_timing"]) == {"infer_ms", "prev_total_ms"}


def test_the_key_is_checked_in_the_handshake_and_healthz_is_open(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Api-Key wrong"}, {"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        with pytest.raises(WebSocketDenialResponse) as denied:
            client.websocket_connect("/", headers=headers).__enter__()
        assert denied.value.status_code == 401 and denied.value.json()["field"] == "Authorization"
    assert denied.value.json()["error"] == "missing API key: send it in the Authorization header as 'Api-Key KEY'"
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "OK\n")
    assert client.get("/health").status_code == 401 and client.get("/health", headers=AUTH).json()["status"] == "ok"


def frame_with(**fields) -> bytes:
    return openpi_frame({"observation/image": RGB, "prompt": "go", "unnorm_key": "bridge", **fields})


def packed_array(fields: dict) -> dict:
    """openpi's msgpack_numpy map of RGB with some entries replaced."""
    return {b"__ndarray__": True, b"data": RGB.tobytes(), b"dtype": "|u1", b"shape": list(RGB.shape), **fields}


ERRORS = {  # name: (frame: bytes, or str for a text frame; close code; what the text frame says)
    "a text frame": ("hello", 1003, "frames must be binary msgpack"),
    "not msgpack": (b"\xc1", 1007, "frame is not valid msgpack"),
    "truncated msgpack": (frame_with()[:-3], 1007, "frame is not valid msgpack"),
    "an ext type": (b"\xd4\x05\x00", 1007, "msgpack extension types are not accepted"),
    "a list, not a map": (openpi_frame([1, 2]), 1008, "the observation must be a map"),
    "a bytes key": (openpi_frame({b"prompt": "go"}), 1008, "observation keys must be strings"),
    "an unknown key": (frame_with(**{"observation/wrist_img": RGB}), 1008, "unknown key 'observation/wrist_img'"),
    "an object array": (frame_with(**{"observation/image": packed_array({b"dtype": "|O"})}), 1007,
                        "observation/image: dtype '|O' is not allowed"),
    "a void array": (frame_with(**{"observation/image": packed_array({b"dtype": "|V3"})}), 1007, "is not allowed"),
    "a complex array": (frame_with(**{"observation/image": packed_array({b"dtype": "<c8"})}), 1007, "not allowed"),
    "a size mismatch": (frame_with(**{"observation/image": packed_array({b"shape": [16, 16, 3]})}), 1007, "needs"),
    "a float image": (frame_with(**{"observation/image": RGB / 255.0}), 1007, "(x * 255).astype(np.uint8)"),
    "a missing prompt": (openpi_frame({"observation/image": RGB}), 1008, "the instruction is missing: send it as"),
    "a numpy bool in the state": (frame_with(**{"observation/state": [np.bool_(True)]}), 1008,
                                  "observation/state.0: Input should be a valid number"),
    "a state for a model without one": (frame_with(**{"observation/state": np.zeros(3)}), 1008, "no state input"),
    "an unknown unnorm_key": (frame_with(unnorm_key="droid"), 1008, "unknown unnorm_key 'droid'"),
    "a frame over the limit": (frame_with(pad="x" * LIMIT), 1009, f"frame is larger than {LIMIT} bytes"),
    "the model failing": (frame_with(prompt="!crash"), 1011, "the policy failed on this request (see the server log)"),
    "a non-finite action": (frame_with(prompt="!nan"), 1011, "the policy returned an invalid action"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_an_error_is_a_text_frame_then_a_close_code(client: TestClient, name: str) -> None:
    data, code, message = ERRORS[name]
    with client.websocket_connect("/", headers=AUTH) as ws:
        ws.receive_bytes()  # metadata
        ws.send_text(data) if isinstance(data, str) else ws.send_bytes(data)
        text = ws.receive_text()
        assert message in text and "Traceback" not in text and "CUDA" not in text, text
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
        assert closed.value.code == code


def test_openpi_libero_keys_feed_the_cameras_and_the_state() -> None:
    app = create_app(ChunkPolicy(), protocol="openpi", execute_steps=3, key_map={"observation/front": CAMERAS[0]})
    agent, wrist, state = random_rgb(1, (8, 6)), random_rgb(2, (6, 8)), np.asarray([0.25, -1.5])
    expected = expected_chunk([agent, wrist], "stack", [0.25, -1.5], "libero")[:3]
    with TestClient(app).websocket_connect("/") as ws:
        assert openpi_unframe(ws.receive_bytes())["cameras"] == CAMERAS
        for observation in (
            {"observation/image": agent, "observation/wrist_image": wrist, "observation/state": state},
            {CAMERAS[0]: agent, CAMERAS[1]: wrist, "state": list(state.astype(np.float32))},  # npgeneric scalars
            {"observation/front": agent, f"observation/{CAMERAS[1]}": wrist, "state": state.tolist()},
        ):
            ws.send_bytes(openpi_frame({**observation, "prompt": "stack", "unnorm_key": "libero"}))
            assert openpi_unframe(ws.receive_bytes())["actions"].tolist() == expected


def test_ensembling_keeps_one_history_per_connection() -> None:
    app = create_app(ChunkPolicy(cameras=None, state_dim=None), protocol="openpi", ensemble="exp", ensemble_weight=0.0)
    client = TestClient(app)
    frame = openpi_frame({"image": RGB, "prompt": "go", "unnorm_key": "bridge"})
    row0 = expected_chunk([RGB], "go")[0]
    for _ in range(2):  # a new connection starts a new episode
        with client.websocket_connect("/") as ws:
            ws.receive_bytes()
            steps = []
            for _ in range(2):
                ws.send_bytes(frame)
                steps.append(openpi_unframe(ws.receive_bytes())["actions"].tolist())
        assert steps == [[row0], [[row0[0], row0[1], 0.5, row0[3]]]]  # step 1: the mean of rows 1 and 0 (k = 1, 0)
    assert len(app.state.sessions) == 0  # a closed connection's history is dropped
