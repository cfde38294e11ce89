"""`vlx serve checkpoint=DIR [host=127.0.0.1] [port=8000] [api_key=KEY] [device=cpu] ...`: serve a VLA over HTTP.

A plain `key=value` parser (no Hydra: there is no config to compose, only where to listen and how to
answer with chunks: `execute_steps=N`, or `ensemble=exp [ensemble_weight=M]`, checked against the
model's chunk size when it is loaded). The API key can also come from the `VLX_API_KEY` environment
variable, which keeps it out of the process list. Binding to anything but a loopback address prints a
warning to stderr.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from vlx.config_schema import closest
from vlx.errors import ConfigError, VlxError

ACCEPTED = ("checkpoint", "host", "port", "api_key", "device", "predict_timeout_s", "limit_concurrency",
            "execute_steps", "ensemble", "ensemble_weight")
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


def _number(key: str, text: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}={text} is out of range: expected {low:g} to {high:g}")
    return value


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
    return ServeOptions(
        checkpoint=values["checkpoint"],
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
    """The keyword arguments of `uvicorn.run`: short keep-alive, bounded concurrency (503 beyond), no Server header."""
    return dict(host=options.host, port=options.port, log_level="info", timeout_keep_alive=5,
                limit_concurrency=options.limit_concurrency, server_header=False)


def _is_vla(model: Any) -> bool:
    """Has `predict_action` and a positive `action_dim` (a text model's `action_dim` raises a ConfigError)."""
    if not callable(getattr(model, "predict_action", None)):
        return False
    try:
        action_dim = model.action_dim
    except (AttributeError, VlxError):
        return False
    return isinstance(action_dim, int) and action_dim > 0


def load_policy(checkpoint: str, device: str) -> Any:
    """The checkpoint's model, which must be a VLA (an action head, so `predict_action` works)."""
    from vlx.checkpoint import load

    model = load(checkpoint, device=device)
    if not _is_vla(model):
        config = getattr(model, "config", None)
        head = config.get("head") if hasattr(config, "get") else None
        name = head.get("name") if hasattr(head, "get") else None
        raise ConfigError(f"checkpoint {checkpoint} is not a VLA (its head is "
                          f"{name or type(getattr(model, 'head', None)).__name__}); vlx serve needs a model "
                          f"with an action head (head=action-tokens)")
    return model


def _execution(options: ServeOptions) -> str:
    """How chunks are answered, for the start-up line."""
    if options.ensemble:
        return f"ensemble={options.ensemble} ensemble_weight={options.ensemble_weight:g}"
    return f"execute_steps={options.execute_steps or 'all'}"


def main(argv: list[str]) -> None:
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(f"usage: vlx serve checkpoint=DIR [host=127.0.0.1] [port=8000] [api_key=KEY] [device=cpu] "
              f"[predict_timeout_s=30] [limit_concurrency=32] [execute_steps=N | ensemble=exp [ensemble_weight=0.01]]"
              f"\n  the API key may also come from ${API_KEY_ENV}")
        return
    options = parse_args(argv)
    import uvicorn

    from vlx.serving import create_app

    policy = load_policy(options.checkpoint, options.device)
    app = create_app(policy, api_key=options.api_key, predict_timeout_s=options.predict_timeout_s,
                     execute_steps=options.execute_steps, ensemble=options.ensemble,
                     ensemble_weight=options.ensemble_weight)
    warn_if_exposed(options.host, options.api_key)
    shown = f"[{options.host}]" if ":" in options.host else options.host
    observation = getattr(policy, "observation", None)
    print(f"serving {options.checkpoint} on http://{shown}:{options.port} "
          f"(action_dim={policy.action_dim}, chunk_size={getattr(policy, 'chunk_size', 1)}, "
          f"cameras={getattr(observation, 'cameras', None)}, state_dim={getattr(observation, 'state_dim', None)}, "
          f"unnorm_keys={list(policy.unnorm_keys)}, {_execution(options)}, "
          f"api_key={'on' if options.api_key else 'off'})", file=sys.stderr)
    uvicorn.run(app, **uvicorn_settings(options))
