"""`vlx serve`'s loader on real tiny checkpoints: a VLA is served end to end, a text model is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import b64, encode

from vlx.builder import build_model
from vlx.checkpoint import save_checkpoint
from vlx.cli.serve import load_policy
from vlx.data.action_stats import ActionStats
from vlx.errors import ConfigError
from vlx.serving import create_app


def test_a_tiny_vla_checkpoint_is_served_end_to_end(tiny_cfg: dict, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = {**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 3, "tokens": "new"},
           "prompt": {"name": "pure", "image_placement": "after-bos"}}
    model = build_model(cfg).eval()
    actions = np.random.default_rng(0).uniform([-2, 0, -1], [2, 4, 1], size=(200, 3)).astype(np.float32)
    model.action_stats["toy"] = ActionStats.from_actions(actions, num_trajectories=10)
    policy = load_policy(str(save_checkpoint(model, tmp_path / "vla")), "cpu")

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
