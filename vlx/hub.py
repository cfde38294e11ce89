"""Loading pretrained parts from a local directory or a Hugging Face Hub id, with clear errors.

Real models load through the libraries' own `from_pretrained`; this module only resolves `~` in local
paths and turns the libraries' network or file errors into a one-line `VlxError` that names the config
key and says how to make the weights available offline. Loading is safe by construction: transformers
models load with `SAFE_LOADING` (no remote code; `.bin` files only through `torch.load(weights_only=True)`,
safetensors preferred), timm reads safetensors or `weights_only=True` files, vlx checkpoints are
safetensors only, and nothing in vlx calls `torch.load`, `pickle.load` or Hydra's `instantiate`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from vlx.errors import CheckpointError, ConfigError

T = TypeVar("T")
SAFE_LOADING: Mapping[str, bool] = MappingProxyType({"trust_remote_code": False, "weights_only": True})


def resolve_source(source: str) -> str:
    """A local path with `~` expanded if it exists, else the string unchanged (a hub id)."""
    local = Path(source).expanduser()
    return str(local) if local.exists() else source


def looks_like_path(source: str) -> bool:
    """Whether `source` is meant as a filesystem path rather than a hub id like `org/name`."""
    return source.startswith(("/", "~", "./", "../")) or Path(source).expanduser().exists()


def load_pretrained(loader: Callable[[str], T], source: str, where: str, what: str, offline_hint: str = "") -> T:
    """Call `loader(source)`; wrap its failure in an error naming `where` (a config key).

    `offline_hint` says how to make a hub-hosted source available locally (default: `hf download`).
    """
    resolved = resolve_source(source)
    if looks_like_path(source) and not Path(resolved).exists():
        raise ConfigError(
            f"{where}={source}: no such directory. A tiny recipe's assets are written by `vlx data assets "
            f"recipe=NAME` (or `vlx demo`); for real weights, download them there first."
        )
    try:
        return loader(resolved)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met a pickle that would run code
        raise CheckpointError(
            f"refused to load {what} from {resolved} (config key '{where}'): its weights are a pickle that "
            "torch.load(weights_only=True) will not unpickle, as it would run code; use safetensors weights",
            kind="unsafe-weights",
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(resolved).exists():
            raise CheckpointError(f"could not load {what} from {resolved} (config key '{where}'): {reason}") from exc
        hint = offline_hint or f"`hf download {source} --local-dir DIR` where there is network, then set {where}=DIR"
        raise ConfigError(
            f"could not load {what} {source!r} (config key '{where}'): it is not a local directory and the "
            f"Hugging Face Hub did not provide it ({reason}). To work offline: {hint}."
        ) from exc


def check_architecture(loaded: object, declared: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    """The checkpoint loaded from a source must have the architecture the recipe declares at `where`."""
    for name in fields:
        if name in declared and getattr(loaded, name, None) != declared[name]:
            raise ConfigError(
                f"{where}.{name}={declared[name]!r} but the weights loaded from the source have "
                f"{getattr(loaded, name, None)!r}; fix the recipe or point the source at matching weights"
            )
