"""`vlx serve checkpoint=DIR [protocol=vlx|openvla|openpi] [host=127.0.0.1] [port=8000] [api_key=KEY] ...`: serve a VLA.

A plain `key=value` parser (no Hydra: there is no config to compose, only where to listen, which wire protocol
to speak — vlx's REST, OpenVLA's REST or openpi's websocket —, which observation keys feed which model input
(`key_map=observation/image:agentview_image,...` for the OpenVLA and openpi protocols), the dataset to
un-normalise with when a request names none (`unnorm_key=`), whether to quantise the weights (`quantize=int8`,
vlx.quantization), and how to answer with chunks: `execute_steps=N`,
or `ensemble=exp [ensemble_weight=M]`, checked against the model's chunk size when it is loaded). The API key
can also come from the `VLX_API_KEY` environment variable, which keeps it out of the process list. Binding to
anything but a loopback address prints a warning to stderr.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from vlx.config_schema import closest
from vlx.errors import ConfigError, VlxError
from vlx.quantization import check_mode
from vlx.serving.app import check_protocol
from vlx.serving.service import Limits

ACCEPTED = ("checkpoint", "protocol", "host", "port", "api_key", "device", "predict_timeout_s", "limit_concurrency",
            "execute_steps", "ensemble", "ensemble_weight", "unnorm_key", "key_map", "quantize")
NULLS = ("null", "none")  # execute_steps= / ensemble= values meaning "not set"
API_KEY_ENV = "VLX_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    checkpoint: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "cpu"
    predict_timeout_s: float = 30.0
    limit_concurrency: int = 32
    execute_steps: int | None = None  # rows of each predicted chunk to answer (None: all)
    ensemble: str | None = None  # "exp": temporal ensembling per client session
    ensemble_weight: float = 0.01
    protocol: str = "vlx"  # vlx | openvla | openpi (vlx.serving.PROTOCOLS)
    unnorm_key: str | None = None  # the dataset used when a request names none
    key_map: tuple[tuple[str, str], ...] | None = None  # (wire key, model input) pairs for openvla / openpi
    quantize: str = "none"  # none | int8 | int8-dynamic (vlx.quantization)


def _number(key: str, text: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}={text} is out of range: expected {low:g} to {high:g}")
    return value


def parse_key_map(text: str) -> tuple[tuple[str, str], ...]:
    """`wire:input,wire:input` (each wire key mapped to a camera, image, state, instruction or unnorm_key)."""
    pairs = []
    for entry in text.split(","):
        wire, sep, target = entry.strip().rpartition(":")
        if not sep or not wire or not target:
            raise ConfigError(f"key_map entry {entry!r} is not wire_key:input (e.g. observation/image:agentview_image)")
        pairs.append((wire, target))
    if len({wire for wire, _ in pairs}) != len(pairs):
        raise ConfigError(f"key_map={text!r} maps a key twice")
    return tuple(pairs)


def parse_args(argv: list[str], environ: dict[str, str] | None = None) -> ServeOptions:
    """The options in `argv` (`key=value` each); ConfigError naming the accepted keys on a mistake."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ACCEPTED:
            what = f"unknown key {key!r}{closest(key, list(ACCEPTED))}" if sep else f"argument {arg!r} is not key=value"
            raise ConfigError(f"{what}; vlx serve accepts: {', '.join(k + '=' for k in ACCEPTED)}")
        if key in values:
            raise ConfigError(f"{key}= is given twice")
        values[key] = value
    if not values.get("checkpoint"):
        raise ConfigError("checkpoint=DIR is required (a VLA checkpoint directory written by vlx train)")
    if "api_key" in values and not values["api_key"]:
        raise ConfigError("api_key= is empty; give a key, or leave api_key out to use $VLX_API_KEY or no key")
    if not values.get("host", "x") or not values.get("device", "x"):
        raise ConfigError("host= and device= must not be empty")
    steps, ensemble = values.get("execute_steps", "null"), values.get("ensemble", "null")
    protocol = check_protocol(values.get("protocol", ServeOptions.protocol))
    if "unnorm_key" in values and not values["unnorm_key"]:
        raise ConfigError("unnorm_key= is empty; name a dataset of the model, or leave unnorm_key out")
    return ServeOptions(
        checkpoint=values["checkpoint"],
        protocol=protocol,
        host=values.get("host", ServeOptions.host),
        port=_number("port", values["port"], int, 1, 65535) if "port" in values else ServeOptions.port,
        api_key=values.get("api_key") or environ.get(API_KEY_ENV) or None,
        device=values.get("device", ServeOptions.device),
        predict_timeout_s=(_number("predict_timeout_s", values["predict_timeout_s"], float, 0.001, 86400)
                           if "predict_timeout_s" in values else ServeOptions.predict_timeout_s),
        limit_concurrency=(_number("limit_concurrency", values["limit_concurrency"], int, 1, 100000)
                           if "limit_concurrency" in values else ServeOptions.limit_concurrency),
        execute_steps=None if steps.lower() in NULLS else _number("execute_steps", steps, int, 1, 100000),
        ensemble=None if ensemble.lower() in NULLS else ensemble,
        ensemble_weight=(_number("ensemble_weight", values["ensemble_weight"], float, 0, 1000)
                         if "ensemble_weight" in values else ServeOptions.ensemble_weight),
        unnorm_key=values.get("unnorm_key"),
        key_map=parse_key_map(values["key_map"]) if "key_map" in values else None,
        quantize=check_mode(values.get("quantize")),
    )


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The warning for listening on `host`, or None when it is a loopback address."""
    if is_loopback(host):
        return None
    advice = ("anyone who can reach it can drive the robot: set api_key=... or $VLX_API_KEY"
              if api_key is None else "requests and the API key travel unencrypted")
    return (f"vlx serve: warning: listening on {host}, not on a loopback address; {advice}, "
            f"and put a TLS-terminating proxy in front of it")


def warn_if_exposed(host: str, api_key: str | None, stream: TextIO | None = None) -> bool:
    """Print the bind warning (if any) to `stream` (stderr); True if it printed one."""
    message = bind_warning(host, api_key)
    if message is not None:
        print(message, file=stream or sys.stderr)
    return message is not None


def uvicorn_settings(options: ServeOptions) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run`: short keep-alive, bounded concurrency (503 beyond), no Server header;
    websockets only for protocol=openpi, uncompressed (as openpi's server) and with frames capped at the body limit."""
    websocket = (dict(ws="websockets-sansio", ws_max_size=Limits.max_request_bytes, ws_per_message_deflate=False)
                 if options.protocol == "openpi" else dict(ws="none"))
    return dict(host=options.host, port=options.port, log_level="info", timeout_keep_alive=5,
                limit_concurrency=options.limit_concurrency, server_header=False, **websocket)


def _is_vla(model: Any) -> bool:
    """Has `predict_action` and a positive `action_dim` (a text model's `action_dim` raises a ConfigError)."""
    if not callable(getattr(model, "predict_action", None)):
        return False
    try:
        action_dim = model.action_dim
    except (AttributeError, VlxError):
        return False
    return isinstance(action_dim, int) and action_dim > 0


def load_policy(checkpoint: str, device: str, quantize: str = "none") -> Any:
    """The checkpoint's model, which must be a VLA (an action head, so `predict_action` works), quantised as asked
    (the line saying how goes to stderr)."""
    from vlx.checkpoint import load
    from vlx.quantization import describe, quantize_model

    model = load(checkpoint, device=device)
    if not _is_vla(model):
        config = getattr(model, "config", None)
        head = config.get("head") if hasattr(config, "get") else None
        name = head.get("name") if hasattr(head, "get") else None
        raise ConfigError(f"checkpoint {checkpoint} is not a VLA (its head is "
                          f"{name or type(getattr(model, 'head', None)).__name__}); vlx serve needs a model "
                          f"with an action head (head=action-tokens)")
    if quantize != "none":
        print(describe(quantize_model(model, quantize)), file=sys.stderr)
    return model


def _execution(options: ServeOptions) -> str:
    """How chunks are answered, for the start-up line."""
    if options.ensemble:
        return f"ensemble={options.ensemble} ensemble_weight={options.ensemble_weight:g}"
    return f"execute_steps={options.execute_steps or 'all'}"


def main(argv: list[str]) -> None:
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(f"usage: vlx serve checkpoint=DIR [protocol=vlx|openvla|openpi] [host=127.0.0.1] [port=8000] "
              f"[api_key=KEY] [device=cpu] [predict_timeout_s=30] [limit_concurrency=32] [unnorm_key=DATASET] "
              f"[key_map=WIRE:INPUT,...] [quantize=none|int8|int8-dynamic] "
              f"[execute_steps=N | ensemble=exp [ensemble_weight=0.01]]"
              f"\n  the API key may also come from ${API_KEY_ENV}; see docs/serving.md")
        return
    options = parse_args(argv)
    import uvicorn

    from vlx.serving import create_app

    policy = load_policy(options.checkpoint, options.device, options.quantize)
    app = create_app(policy, protocol=options.protocol, api_key=options.api_key,
                     predict_timeout_s=options.predict_timeout_s, execute_steps=options.execute_steps,
                     ensemble=options.ensemble, ensemble_weight=options.ensemble_weight,
                     unnorm_key=options.unnorm_key, key_map=dict(options.key_map) if options.key_map else None)
    warn_if_exposed(options.host, options.api_key)
    shown = f"[{options.host}]" if ":" in options.host else options.host
    observation = getattr(policy, "observation", None)
    scheme = "ws" if options.protocol == "openpi" else "http"
    print(f"serving {options.checkpoint} ({options.protocol} protocol) on {scheme}://{shown}:{options.port} "
          f"(action_dim={policy.action_dim}, chunk_size={getattr(policy, 'chunk_size', 1)}, "
          f"cameras={getattr(observation, 'cameras', None)}, state_dim={getattr(observation, 'state_dim', None)}, "
          f"unnorm_keys={list(policy.unnorm_keys)}, {_execution(options)}, "
          f"api_key={'on' if options.api_key else 'off'})", file=sys.stderr)
    uvicorn.run(app, **uvicorn_settings(options))
