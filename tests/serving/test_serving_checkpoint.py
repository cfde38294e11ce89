"""`vlx serve`'s loader on real tiny checkpoints: a VLA is served end to end, a text model is refused."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import ONE_STEP_HEALTH, b64, encode

from vlx.checkpoint import save_checkpoint
from vlx.cli.serve import load_policy
from vlx.errors import ConfigError
from vlx.serving import create_app


def test_a_tiny_vla_checkpoint_is_served_end_to_end(tiny_vla, tmp_path) -> None:
    policy = load_policy(str(save_checkpoint(tiny_vla, tmp_path / "vla")), "cpu")

    client = TestClient(create_app(policy))
    assert client.get("/health").json() == {"status": "ok", "action_dim": 3, "unnorm_keys": ["toy"], **ONE_STEP_HEALTH}
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    response = client.post("/act", json={"image": b64(encode(image)), "instruction": "move to the red block"})
    assert response.status_code == 200, response.text
    direct = policy.predict_action(image, "move to the red block", None)
    assert response.json()["action"] == [float(v) for v in direct]
    response = client.post("/act", json={"image": b64(encode(image)), "instruction": "go", "unnorm_key": "droid"})
    assert response.status_code == 422 and response.json()["field"] == "unnorm_key"


def test_a_text_checkpoint_is_not_a_vla(tiny_model, tmp_path) -> None:
    directory = save_checkpoint(tiny_model, tmp_path / "llava")
    with pytest.raises(ConfigError, match=rf"^checkpoint {directory} is not a VLA \(its head is text\)"):
        load_policy(str(directory), "cpu")


def test_a_tiny_vla_with_two_cameras_and_a_state_is_served_exactly(tiny_chunked_vla, tmp_path) -> None:
    policy = load_policy(str(save_checkpoint(tiny_chunked_vla, tmp_path / "vla")), "cpu")
    client = TestClient(create_app(policy))
    assert client.get("/health").json() == {
        "status": "ok", "action_dim": 3, "unnorm_keys": ["toy"], "chunk_size": 4,
        "cameras": ["agentview_image", "wrist_image"], "state_dim": 3, "execute_steps": 4, "ensemble": None}
    rng = np.random.default_rng(2)
    cameras = {name: Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8))
               for name in ("agentview_image", "wrist_image")}
    state = [0.25, 0.5, 0.75]
    body = {"images": {name: b64(encode(image)) for name, image in cameras.items()}, "instruction": "stack the cups",
            "state": state}
    response = client.post("/act", json=body)
    assert response.status_code == 200, response.text
    direct = policy.predict_action(cameras, "stack the cups", state=state)
    assert direct.shape == (4, 3)
    assert response.json() == {"actions": [[float(v) for v in row] for row in direct]}
    assert response.json() != client.post("/act", json={**body, "state": [0.75, 0.5, 0.25]}).json()  # the state matters
    response = client.post("/act", json={**body, "images": {"agentview_image": body["images"]["agentview_image"]}})
    assert response.status_code == 422 and response.json()["field"] == "images"
    assert response.json()["error"].startswith("camera 'wrist_image' is missing: ")
    response = client.post("/act", json={**body, "state": [0.25, 0.5]})
    assert response.json() == {"error": "state has 2 values; the model expects 3", "field": "state"}
    response = client.post("/act", json={k: v for k, v in body.items() if k != "state"})
    assert response.json() == {"error": "state is missing: this model needs the robot state, 3 numbers (agent_pos + "
                                        "gripper)", "field": "state"}


def test_a_quantised_checkpoint_is_served_and_says_so(tiny_vla, tmp_path, capsys) -> None:
    policy = load_policy(str(save_checkpoint(tiny_vla, tmp_path / "vla")), "cpu", "int8")
    assert "quantize=int8: " in capsys.readouterr().err
    assert type(policy.llm.model.model.layers[0].mlp.down_proj.weight).__name__ == "Int8Tensor"
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    response = TestClient(create_app(policy)).post("/act", json={"image": b64(encode(image)), "instruction": "go"})
    assert response.status_code == 200, response.text
    assert response.json()["action"] == [float(v) for v in policy.predict_action(image, "go", None)]
