"""Build a VisionLanguageModel from a composed vlx config.

The config's `vision`, `projector`, `llm`, `head` and `prompt` nodes each name a registry entry and
its arguments. The projector's widths are injected from the built backbones, so a recipe cannot get
them wrong. `load_weights=False` builds every part from its architecture config alone — with
`torch.device("meta")` this is how `vlx info` sizes 7B recipes without memory or network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.registry import HEADS, LLM_BACKBONES, PROJECTORS, PROMPT_FORMATS, VISION_BACKBONES


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
                                  "to the command line") from None
            raise ConfigError(f"config key '{key}': {str(exc).splitlines()[0]}") from None
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def build_model(
    cfg: Mapping[str, Any] | DictConfig, load_weights: bool = True, load_tokenizer: bool = True
) -> VisionLanguageModel:
    """Compose the model the config describes (weights from the parts' sources when `load_weights`)."""
    config = to_plain(cfg)
    for key in ("vision", "projector", "llm", "head", "prompt"):
        if not isinstance(config.get(key), dict):
            raise ConfigError(f"config key '{key}' is missing; pick one with `{key}=NAME` or a recipe")
    vision = VISION_BACKBONES.build(config["vision"], "vision", load_weights=load_weights)
    llm = LLM_BACKBONES.build(config["llm"], "llm", load_weights=load_weights, load_tokenizer=load_tokenizer)
    projector = PROJECTORS.build(config["projector"], "projector", in_dim=vision.embed_dim, out_dim=llm.hidden_size)
    head = HEADS.build(config["head"], "head", llm=llm)
    prompt = PROMPT_FORMATS.build(config["prompt"], "prompt")
    return VisionLanguageModel(vision, projector, llm, head, prompt, config)
