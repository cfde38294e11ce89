"""Named registries for every pluggable part of vlx.

Each axis a user can swap from the command line (vision backbones, projectors, LLM backbones, heads,
prompt formats, datasets, closed-loop environments, proprio projectors, the MLPs of regression heads) is a
`Registry`. Built-in entries live in the component packages and are imported lazily on first use;
third-party packages add entries through the `vlx.plugins` entry-point group (see README, "Plugins").
`Registry.build(cfg, where=...)` checks the config's arguments against the entry's signature, so a typo in
a config fails with the config path and the accepted arguments.
Registries are the only way a config becomes objects: vlx never calls Hydra's `instantiate`, and a
`_target_` key anywhere in a node handed to `build` is a ConfigError, so a config or checkpoint cannot
name arbitrary Python to run — only vlx's own entries and installed `vlx.plugins`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from vlx.errors import ConfigError

T = TypeVar("T")
PLUGIN_GROUP = "vlx.plugins"


@functools.cache
def _load_plugins() -> None:
    """Import every module advertised in the `vlx.plugins` entry-point group; callables are called."""
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin must not hide which one it was
            raise ConfigError(f"vlx plugin {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        if callable(loaded) and not inspect.isclass(loaded) and not inspect.ismodule(loaded):
            loaded()


def closest(name: str, known: list[str]) -> str | None:
    """The known name most similar to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """A name → factory table for one kind of component.

    `kind` is the human name used in messages ("vision backbone"); `builtins` is the module whose
    import registers the built-in entries.
    """

    def __init__(self, kind: str, builtins: str) -> None:
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, Callable[..., T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a class or factory under `name` (kebab-case)."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            importlib.import_module(self._builtins)
            _load_plugins()  # once per process, whichever registry asks first
            self._loaded = True

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._ensure_loaded()
        return sorted(self._entries)

    def get(self, name: str, where: str = "") -> Callable[..., T]:
        """The factory registered as `name`; unknown names raise a ConfigError with the closest match."""
        self._ensure_loaded()
        if name in self._entries:
            return self._entries[name]
        known = self.names()
        hint = closest(str(name), known)
        at = f" at config key '{where}'" if where else ""
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"unknown {self.kind} {name!r}{at}.{suggestion} Known: {', '.join(known)}",
                          kind="unknown-name")

    def build(self, cfg: Mapping[str, Any], where: str, **injected: Any) -> T:
        """Build the entry named by `cfg['name']` with the remaining keys as keyword arguments.

        `injected` arguments come from the model builder (e.g. a projector's input width) and win over
        nothing: a config that also sets them is an error, since the value would be ignored.
        """
        reject_targets(cfg, where)
        args = dict(cfg)
        if "name" not in args:
            raise ConfigError(f"config key '{where}' needs a 'name' (one of: {', '.join(self.names())})")
        name = args.pop("name")
        factory = self.get(name, where=f"{where}.name")
        for key in injected:
            if key in args:
                raise ConfigError(f"config key '{where}.{key}' is set by vlx itself; remove it")
        check_arguments(factory, {**args, **injected}, where=where, label=f"{self.kind} {name!r}")
        return factory(**args, **injected)


def reject_targets(node: Any, where: str) -> None:
    """A ConfigError for the first Hydra `_target_` key in `node` (nested mappings and lists included)."""
    items = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        at = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}"
        if key == "_target_":
            raise ConfigError(f"config key '{at}'={value!r}: vlx builds parts only from its registries (give "
                              "'name: ENTRY'), never from a Hydra _target_; remove it", kind="hydra-target")
        reject_targets(value, at)


def check_arguments(factory: Callable[..., Any], args: Mapping[str, Any], where: str, label: str) -> None:
    """Raise a ConfigError naming the config path when `args` do not fit `factory`'s signature."""
    signature = inspect.signature(factory)
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD and n != "self"]
    if not accepts_any:
        for key in args:
            if key not in params:
                hint = closest(key, accepted)
                suggestion = f" Did you mean '{hint}'?" if hint else ""
                raise ConfigError(
                    f"config key '{where}.{key}' is not an argument of {label}.{suggestion} "
                    f"Accepted: {', '.join(accepted)}", kind="unknown-argument",
                )
    missing = [
        n
        for n, p in params.items()
        if n != "self"
        and p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in args
    ]
    if missing:
        raise ConfigError(f"config key '{where}' is missing {', '.join(missing)} (required by {label})")


VISION_BACKBONES: Registry[Any] = Registry("vision backbone", "vlx.vision")
PROJECTORS: Registry[Any] = Registry("projector", "vlx.projectors")
LLM_BACKBONES: Registry[Any] = Registry("LLM backbone", "vlx.llm")
HEADS: Registry[Any] = Registry("head", "vlx.heads")
ACTION_MLPS: Registry[Any] = Registry("action MLP", "vlx.heads")
PROPRIO_PROJECTORS: Registry[Any] = Registry("proprio projector", "vlx.proprio")
PROMPT_FORMATS: Registry[Any] = Registry("prompt format", "vlx.llm")
DATASETS: Registry[Any] = Registry("dataset", "vlx.data")
ENVIRONMENTS: Registry[Any] = Registry("environment", "vlx.envs")
