"""`vlx serve`'s loader on real tiny checkpoints: a VLA is served end to end, a text model is refused."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import b64, encode

from vlx.checkpoint import save_checkpoint
from vlx.cli.serve import load_policy
from vlx.errors import ConfigError
from vlx.serving import create_app


def test_a_tiny_vla_checkpoint_is_served_end_to_end(tiny_vla, tmp_path) -> None:
    policy = load_policy(str(save_checkpoint(tiny_vla, tmp_path / "vla")), "cpu")

    client = TestClient(create_app(policy))
    assert client.get("/health").json() == {"status": "ok", "action_dim": 3, "unnorm_keys": ["toy"]}
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
