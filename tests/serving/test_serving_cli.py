"""`vlx serve`: argument parsing, the API key from the environment, the bind warning, the wiring to uvicorn."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import (
    ChunkPolicy,
    ColourPolicy,
    act_body,
    b64,
    cameras_body,
    encode,
    expected_action,
    expected_chunk,
    random_rgb,
)

from vlx.cli import serve
from vlx.cli.serve import ServeOptions, bind_warning, parse_args, warn_if_exposed
from vlx.errors import ConfigError


def test_defaults_and_values() -> None:
    assert parse_args(["checkpoint=runs/x"], environ={}) == ServeOptions(checkpoint="runs/x")
    options = parse_args(["checkpoint=c", "host=0.0.0.0", "port=9000", "api_key=k", "device=cuda:0",
                          "predict_timeout_s=2.5", "limit_concurrency=4"], environ={})
    assert options == ServeOptions("c", "0.0.0.0", 9000, "k", "cuda:0", 2.5, 4)


def test_chunk_execution_options() -> None:
    options = parse_args(["checkpoint=c", "execute_steps=2"], environ={})
    assert (options.execute_steps, options.ensemble, options.ensemble_weight) == (2, None, 0.01)
    options = parse_args(["checkpoint=c", "ensemble=exp", "ensemble_weight=0.05"], environ={})
    assert (options.execute_steps, options.ensemble, options.ensemble_weight) == (None, "exp", 0.05)
    options = parse_args(["checkpoint=c", "ensemble=null", "execute_steps=none"], environ={})
    assert (options.execute_steps, options.ensemble) == (None, None)


def test_unknown_key_is_a_config_error_listing_the_accepted_keys() -> None:
    with pytest.raises(ConfigError) as error:
        parse_args(["checkpoint=c", "hots=0.0.0.0"], environ={})
    assert str(error.value) == ("unknown key 'hots'; did you mean 'host'?; vlx serve accepts: checkpoint=, protocol=, "
                                "host=, port=, api_key=, device=, predict_timeout_s=, limit_concurrency=, "
                                "execute_steps=, ensemble=, ensemble_weight=, unnorm_key=, key_map=, quantize=")


@pytest.mark.parametrize("argv, message", [
    (["--port", "80"], "argument '--port' is not key=value"),
    (["host=127.0.0.1"], "checkpoint=DIR is required"),
    (["checkpoint=c", "port=http"], "port='http' is not an integer"),
    (["checkpoint=c", "port=70000"], "port=70000 is out of range: expected 1 to 65535"),
    (["checkpoint=c", "port=1", "port=2"], "port= is given twice"),
    (["checkpoint=c", "api_key="], "api_key= is empty"),
    (["checkpoint=c", "predict_timeout_s=-1"], "predict_timeout_s=-1 is out of range"),
    (["checkpoint=c", "execute_steps=two"], "execute_steps='two' is not an integer"),
    (["checkpoint=c", "execute_steps=0"], "execute_steps=0 is out of range: expected 1 to 100000"),
    (["checkpoint=c", "ensemble_weight=-0.5"], "ensemble_weight=-0.5 is out of range: expected 0 to 1000"),
    (["checkpoint=c", "ensemble_weight=nan"], "ensemble_weight=nan is out of range"),
    (["checkpoint=c", "protocol=grpc"], "protocol='grpc' is not one vlx serves; LeRobot's gRPC async inference is not "
                                        "offered: its payloads are pickles, unsafe to accept; choose one of: vlx, "
                                        "openvla, openpi"),
    (["checkpoint=c", "protocol=openpl"], "protocol='openpl' is not one vlx serves; did you mean 'openpi'?"),
    (["checkpoint=c", "protocol=openpi", "key_map=observation/image"], "key_map entry 'observation/image' is not "
                                                                       "wire_key:input"),
    (["checkpoint=c", "protocol=openpi", "key_map=a:image,a:state"], "key_map='a:image,a:state' maps a key twice"),
    (["checkpoint=c", "unnorm_key="], "unnorm_key= is empty"),
])
def test_bad_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_args(argv, environ={})


def test_api_key_from_the_environment_unless_given() -> None:
    assert parse_args(["checkpoint=c"], environ={"VLX_API_KEY": "from-env"}).api_key == "from-env"
    assert parse_args(["checkpoint=c", "api_key=given"], environ={"VLX_API_KEY": "from-env"}).api_key == "given"
    assert parse_args(["checkpoint=c"], environ={"VLX_API_KEY": ""}).api_key is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_print_no_warning(host: str) -> None:
    stream = io.StringIO()
    assert not warn_if_exposed(host, None, stream) and stream.getvalue() == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "robot.example.org"])
def test_other_hosts_print_a_warning_that_suggests_an_api_key(host: str) -> None:
    stream = io.StringIO()
    assert warn_if_exposed(host, None, stream)
    assert stream.getvalue() == (f"vlx serve: warning: listening on {host}, not on a loopback address; anyone who can "
                                 f"reach it can drive the robot: set api_key=... or $VLX_API_KEY, and put a "
                                 f"TLS-terminating proxy in front of it\n")
    assert "unencrypted" in bind_warning(host, "k") and "set api_key" not in bind_warning(host, "k")


def test_a_checkpoint_without_an_action_head_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class TextHead:
        pass

    class TextModel:  # what vlx.checkpoint.load returns for a LLaVA checkpoint: no predict_action
        head = TextHead()
        config = {"head": {"name": "text"}}

    import vlx.checkpoint

    monkeypatch.setattr(vlx.checkpoint, "load", lambda directory, device="cpu": TextModel())
    with pytest.raises(ConfigError, match=r"^checkpoint runs/llava is not a VLA \(its head is text\)"):
        serve.load_policy("runs/llava", "cpu")


def test_main_wires_the_policy_the_key_and_the_settings_into_uvicorn(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uvicorn

    runs: list[tuple] = []
    monkeypatch.setattr(serve, "load_policy",
                        lambda checkpoint, device, quantize: ColourPolicy(unnorm_keys=("bridge",)))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append((app, kwargs)))
    monkeypatch.setenv("VLX_API_KEY", "env-key")
    serve.main(["checkpoint=runs/vla", "host=0.0.0.0", "port=8123"])
    (app, kwargs), = runs
    assert kwargs == {"host": "0.0.0.0", "port": 8123, "log_level": "info", "timeout_keep_alive": 5,
                      "limit_concurrency": 32, "server_header": False, "ws": "none"}
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "requests and the API key travel unencrypted" in err
    rgb = random_rgb(2)
    client = TestClient(app)
    body = act_body(b64(encode(Image.fromarray(rgb))), "go", None)
    assert client.post("/act", json=body).status_code == 401
    response = client.post("/act", json=body, headers={"X-API-Key": "env-key"})
    assert response.json() == {"action": expected_action(rgb, "go", "bridge")}


def test_vlx_serve_reports_a_bad_argument_as_one_line(capsys) -> None:
    from vlx.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "checkpoint=c", "prot=80"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "vlx serve: error: unknown key 'prot'; did you mean 'port'?; vlx serve accepts: checkpoint=,")


def test_execute_steps_beyond_the_chunk_is_one_line_at_start_up(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uvicorn

    from vlx.cli import main

    runs: list = []
    monkeypatch.setattr(serve, "load_policy", lambda checkpoint, device, quantize: ChunkPolicy())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(app))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "checkpoint=runs/vla", "execute_steps=8"])
    assert exit_info.value.code == 2 and runs == []
    assert capsys.readouterr().err == ("vlx serve: error: config key 'serve.execute_steps'=8; expected a whole number "
                                       "from 1 to the policy's chunk size 4 (or null: all 4)\n")
    with pytest.raises(SystemExit):
        main(["serve", "checkpoint=runs/vla", "ensemble=mean"])
    assert capsys.readouterr().err.startswith("vlx serve: error: config key 'serve.ensemble'='mean'; expected null")


def test_main_wires_the_chunk_settings(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uvicorn

    apps: list = []
    monkeypatch.setattr(serve, "load_policy", lambda checkpoint, device, quantize: ChunkPolicy())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))
    rgb = random_rgb(3, (8, 8))
    images = {"agentview_image": b64(encode(Image.fromarray(rgb))), "wrist_image": b64(encode(Image.fromarray(rgb)))}
    serve.main(["checkpoint=runs/vla", "execute_steps=3"])
    assert "chunk_size=4, cameras=['agentview_image', 'wrist_image'], state_dim=2" in capsys.readouterr().err
    response = TestClient(apps[-1]).post("/act", json=cameras_body(images, "go", [1.0, 2.0]))
    assert response.json() == {"actions": expected_chunk([rgb, rgb], "go", [1.0, 2.0])[:3]}
    serve.main(["checkpoint=runs/vla", "ensemble=exp", "ensemble_weight=0.5"])
    assert "ensemble=exp ensemble_weight=0.5" in capsys.readouterr().err
    client = TestClient(apps[-1])
    assert client.post("/act", json=cameras_body(images, "go", [1.0, 2.0])).json()["field"] == "session"
    response = client.post("/act", json=cameras_body(images, "go", [1.0, 2.0], session="s"))
    assert response.json() == {"action": expected_chunk([rgb, rgb], "go", [1.0, 2.0])[0]}
    assert client.get("/health").json()["ensemble"] == "exp"


def test_protocol_key_map_and_unnorm_key_options() -> None:
    options = parse_args(["checkpoint=c", "protocol=openpi", "unnorm_key=libero",
                          "key_map=observation/image:agentview_image, prompt:instruction"], environ={})
    assert (options.protocol, options.unnorm_key) == ("openpi", "libero")
    assert options.key_map == (("observation/image", "agentview_image"), ("prompt", "instruction"))
    assert parse_args(["checkpoint=c"], environ={}).protocol == "vlx"
    assert serve.uvicorn_settings(options)["ws"] == "websockets-sansio"
    assert serve.uvicorn_settings(options)["ws_per_message_deflate"] is False  # uncompressed, as openpi serves


def test_main_serves_openpi_with_the_key_map(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uvicorn
    from serving_helpers import openpi_frame, openpi_unframe

    runs: list[tuple] = []
    monkeypatch.setattr(serve, "load_policy", lambda checkpoint, device, quantize: ChunkPolicy())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append((app, kwargs)))
    serve.main(["checkpoint=runs/vla", "protocol=openpi", "unnorm_key=libero", "execute_steps=1",
                "key_map=front:agentview_image,wrist:wrist_image"])
    (app, kwargs), = runs
    assert (kwargs["ws"], kwargs["ws_max_size"]) == ("websockets-sansio", 8 * 1024 * 1024)
    assert "(openpi protocol) on ws://127.0.0.1:8000" in capsys.readouterr().err
    rgb = random_rgb(4, (8, 8))
    with TestClient(app).websocket_connect("/") as ws:
        assert openpi_unframe(ws.receive_bytes())["keys"]["front"] == "agentview_image"
        ws.send_bytes(openpi_frame({"front": rgb, "wrist": rgb, "state": [1.0, 2.0], "prompt": "go"}))
        assert openpi_unframe(ws.receive_bytes())["actions"].tolist() == expected_chunk([rgb, rgb], "go", [1.0, 2.0],
                                                                                       "libero")[:1]


def test_a_key_map_for_an_unknown_camera_stops_vlx_serve_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys) -> None:
    import uvicorn

    from vlx.cli import main

    monkeypatch.setattr(serve, "load_policy", lambda checkpoint, device, quantize: ChunkPolicy())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("the server must not start"))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "checkpoint=runs/vla", "protocol=openvla", "key_map=front:top_camera"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("vlx serve: error: key_map: 'front' maps to 'top_camera', which is not an input "
                                       "of this model; a key maps to one of: agentview_image, wrist_image, state, "
                                       "instruction, unnorm_key\n")
