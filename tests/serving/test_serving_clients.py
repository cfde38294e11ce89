"""The real clients of the two foreign protocols against `vlx serve`'s app under uvicorn on 127.0.0.1, on tiny VLA
checkpoints: a deploy.py-style client (`json_numpy.patch(); requests.post(url, json={...}).json()`) and openpi's
`WebsocketClientPolicy(host, port, api_key=...).infer(obs)` each get exactly what `predict_action` gives in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from serving_helpers import serve_on_loopback

from vlx.checkpoint import save_checkpoint
from vlx.cli.serve import load_policy
from vlx.serving import create_app

KEY = "client-key"


@pytest.fixture()
def json_numpy_patched(monkeypatch: pytest.MonkeyPatch):
    """`json_numpy.patch()` as deploy.py's clients call it, undone after the test (it replaces json's functions)."""
    json_numpy = pytest.importorskip("json_numpy")
    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(json, name, getattr(json, name))  # restored at teardown
    json_numpy.patch()
    return json_numpy


def test_a_deploy_py_client_gets_predict_actions_action(tiny_vla, tmp_path, json_numpy_patched) -> None:
    requests = pytest.importorskip("requests")
    policy = load_policy(str(save_checkpoint(tiny_vla, tmp_path / "vla")), "cpu")
    image = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    direct = policy.predict_action(Image.fromarray(image), "move to the red block", None)
    with serve_on_loopback(create_app(policy, protocol="openvla"), "openvla") as port:
        url = f"http://127.0.0.1:{port}/act"
        action = requests.post(url, json={"image": image, "instruction": "move to the red block"}).json()
        assert isinstance(action, np.ndarray) and action.dtype == np.float64 and action.shape == (3,)
        assert action.tolist() == [float(v) for v in direct]
        keyed = requests.post(url, json={"image": image, "instruction": "move to the red block", "unnorm_key": "toy"})
        assert keyed.json().tolist() == action.tolist()
        # deploy.py's form for clients without json_numpy: the payload as a json_numpy string, the answer likewise
        encoded = requests.post(url, json={"encoded": json.dumps({"image": image, "instruction": "move to the red "
                                                                                                 "block"})}).json()
        assert json.loads(encoded).tolist() == action.tolist()
        refused = requests.post(url, json={"image": image, "instruction": "go", "unnorm_key": "droid"})
        assert refused.status_code == 422
        assert refused.json() == {"error": "unknown unnorm_key 'droid'; known: toy", "field": "unnorm_key"}


def test_the_openpi_client_gets_predict_actions_chunk(tiny_chunked_vla, tmp_path) -> None:
    websocket_client_policy = pytest.importorskip(
        "openpi_client.websocket_client_policy",
        reason="pip install --no-deps openpi-client (it pins numpy<2; vlx already has its websockets and msgpack)")
    policy = load_policy(str(save_checkpoint(tiny_chunked_vla, tmp_path / "vla")), "cpu")
    rng = np.random.default_rng(4)
    agent, wrist = (rng.integers(0, 256, (40, 32, 3), dtype=np.uint8) for _ in range(2))
    state = np.asarray([0.25, 0.5, 0.75])  # float64, as openpi's LIBERO example concatenates it
    observation = {"observation/image": agent, "observation/wrist_image": wrist, "observation/state": state,
                   "prompt": "stack the cups"}
    direct = policy.predict_action({"agentview_image": Image.fromarray(agent), "wrist_image": Image.fromarray(wrist)},
                                   "stack the cups", state=state.tolist())
    app = create_app(policy, protocol="openpi", api_key=KEY, execute_steps=2)
    with serve_on_loopback(app, "openpi") as port:
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key=KEY)
        metadata = client.get_server_metadata()
        assert (metadata["chunk_size"], metadata["execute_steps"], metadata["cameras"], metadata["state_dim"]) == (
            4, 2, ["agentview_image", "wrist_image"], 3)
        result = client.infer(observation)
        assert result["actions"].shape == (2, 3) and result["actions"].dtype == np.float64
        assert result["actions"].tolist() == direct[:2].astype(np.float64).tolist()
        assert set(result["policy_timing"]) == {"infer_ms"} and set(result["server_timing"]) == {"infer_ms"}
        again = client.infer(observation)
        assert again["actions"].tolist() == result["actions"].tolist() and "prev_total_ms" in again["server_timing"]
        with pytest.raises(RuntimeError, match="observation/state has 2 values; the model expects 3"):
            client.infer({**observation, "observation/state": state[:2]})
        with pytest.raises(Exception, match="401"):  # websockets' InvalidStatus: the handshake is refused
            websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key="wrong")
        assert websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key=KEY).infer(
            observation)["actions"].tolist() == result["actions"].tolist()  # a new connection after the error
