"""Composing vlx configs with Hydra: the root config in `conf/` plus the recipes in `recipes/`.

Recipes are `# @package _global_` files selected with `recipe=NAME`. They live in the top-level
`recipes/` folder rather than under `conf/`, so they are registered in Hydra's ConfigStore as the
`recipe` group before composing. `compose(overrides)` is what tests and library users call;
the CLI's Hydra apps use the same registration and config directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlx.config_schema import check_config, unknown_key_error
from vlx.errors import ConfigError
from vlx.paths import conf_dir, recipes_dir
from vlx.vision_preset_table import preset_configs


def recipe_names() -> list[str]:
    """Names of the recipes shipped with vlx."""
    return sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def register_recipes() -> None:
    """Put every recipe file into Hydra's ConfigStore as an option of the `recipe` group, and each named vision
    backbone of `vlx.vision_preset_table` as an option of the `vision` group."""
    store = ConfigStore.instance()
    for path in sorted(recipes_dir().glob("*.yaml")):
        store.store(group="recipe", name=path.stem, node=OmegaConf.load(path), package="_global_")
    for name, node in preset_configs().items():
        store.store(group="vision", name=name, node=node)


def with_recipe(overrides: Sequence[str], default: str = "llava-tiny") -> list[str]:
    """`overrides`, with `recipe=default` first unless they already pick a recipe."""
    return list(overrides) if any(o.startswith("recipe=") for o in overrides) else [f"recipe={default}", *overrides]


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config for Hydra-style `overrides` (e.g. `["recipe=llava-tiny"]`)."""
    register_recipes()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=False)
        except (HydraException, OmegaConfBaseException) as exc:
            raise composition_error(exc, overrides) from None
    check_config(cfg)
    return cfg


def composition_error(exc: Exception, overrides: Sequence[str]) -> ConfigError:
    """Hydra's multi-line composition error as one line; an override of a key that does not exist names the
    closest key that does (`stages.finetune.lrr=1e-3` → did you mean 'lr'?)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    full_key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if full_key and isinstance(parent, DictConfig) and "not in struct" in str(cause):
        parent_key = full_key.rpartition(".")[0]
        what = "stage" if parent_key.startswith("stages.") and parent_key.count(".") == 1 else \
            (f"'{parent_key}'" if parent_key else "top-level")
        return unknown_key_error(str(full_key), [str(key) for key in parent if key != "hydra"], what)
    lines = str(exc).split("Config search path")[0].split("\n")
    reason = " ".join(line.strip() for line in lines if line.strip()) or type(exc).__name__
    return ConfigError(f"cannot compose the config from {' '.join(overrides) or 'defaults'}: {reason}")


def to_plain(cfg: Any) -> Any:
    """A resolved plain (dict/list) copy of a possibly OmegaConf config node."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as exc:  # e.g. a mandatory `???` value left unset
            key = getattr(exc, "full_key", None) or "?"
            missing = re.search(r"Missing mandatory value: ([\w.]+)", str(exc))
            if missing:
                raise ConfigError(f"config key '{missing[1]}' (used by '{key}') must be set: add {missing[1]}=... "
                                  "to the command line", kind="missing-value") from None
            raise ConfigError(f"config key '{key}': {str(exc).splitlines()[0]}") from None
    return dict(cfg) if isinstance(cfg, Mapping) else cfg
