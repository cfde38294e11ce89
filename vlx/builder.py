"""Build a VisionLanguageModel from a composed vlx config.

The config's `vision`, `projector`, `llm`, `head` and `prompt` nodes each name a registry entry and
its arguments. The projector's widths are injected from the built backbones, so a recipe cannot get
them wrong; a recipe may state them (`projector.in_dim`, `projector.out_dim`) as a check — a fused-mlp
recipe states its fused features' width — and a backbone of another width is then a ConfigError
naming the key, instead of silently building a differently shaped projector. `load_weights=False` builds
every part from its architecture config alone — with `torch.device("meta")` this is how `vlx info` sizes
7B recipes without memory or network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from vlx.config import to_plain
from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.registry import HEADS, LLM_BACKBONES, PROJECTORS, PROMPT_FORMATS, PROPRIO_PROJECTORS, VISION_BACKBONES


def projector_widths(config: Mapping[str, Any], vision_dim: int, llm_dim: int) -> dict[str, int]:
    """The projector's `in_dim`/`out_dim` from the built backbones; widths the config states must agree."""
    projector = config["projector"]
    widths = {"in_dim": vision_dim, "out_dim": llm_dim}
    for key, node, what in [("in_dim", "vision", "vision backbone"), ("out_dim", "llm", "LLM")]:
        stated = projector.get(key)
        if stated is not None and stated != widths[key]:
            feature = "features" if key == "in_dim" else "hidden states"
            raise ConfigError(
                f"config key 'projector.{key}'={stated}: the {projector.get('name')} projector was set up for "
                f"{stated}-wide {feature}, but the {what} {config[node].get('name')!r} (config key '{node}') has width "
                f"{widths[key]}; pick a {what} of width {stated}"
                + (" (fused-mlp expects a fused backbone such as dinosiglip)" if projector.get("name") == "fused-mlp"
                   and key == "in_dim" else "")
                + f" or remove projector.{key}", kind="projector-width",
            )
    return widths


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
    widths = projector_widths(config, vision.embed_dim, llm.hidden_size)
    projector_cfg = {key: value for key, value in config["projector"].items() if key not in widths}
    projector = PROJECTORS.build(projector_cfg, "projector", **widths)
    head = HEADS.build(config["head"], "head", llm=llm)
    prompt = PROMPT_FORMATS.build(config["prompt"], "prompt")
    proprio = build_proprio(config.get("proprio"), llm.hidden_size)
    return VisionLanguageModel(vision, projector, llm, head, prompt, config, proprio=proprio)


def build_proprio(node: Mapping[str, Any] | None, llm_dim: int) -> Any:
    """The state projector a `proprio` node names (its `in_dim` is the state length), or None for no state input."""
    if not node:
        return None
    if not isinstance(node, Mapping):
        raise ConfigError(f"config key 'proprio' must be a mapping such as {{name: mlp, in_dim: 8}} or null, "
                          f"got {node!r:.60}")
    in_dim = node.get("in_dim")
    if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
        raise ConfigError(f"config key 'proprio.in_dim'={in_dim!r}; expected the length of the robot state (e.g. 8)")
    return PROPRIO_PROJECTORS.build(node, "proprio", out_dim=llm_dim)
