"""Starting a stage from a checkpoint whose head or inputs differ from the recipe's (OpenVLA → OpenVLA-OFT).

`init_from` loads the checkpoint's model. Its vision backbone, projector and LLM keep their weights and must
be the architecture this run's config describes: the vision backbone's spec, the projector's tensor shapes
and the LLM's architecture fields (`llm.config`, vocabulary rows aside: heads may have added tokens) are
compared, and a difference is a ConfigError naming the part. The head and the proprio projector are rebuilt
from this run's config, with fresh weights, when their config differs from the checkpoint's — a continuous
head on a token-head VLA, a state input added — and the observation spec (cameras, state keys) is this run's.
So `openvla-oft-7b` starts from an imported OpenVLA-7B with OpenVLA's VLM weights and OFT's new parts, as
OFT itself does. The parts rebuilt are returned and printed by the caller.
"""

from __future__ import annotations

from typing import Any

import torch

from vlx.builder import build_proprio, projector_widths
from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.observation import ObservationSpec
from vlx.registry import HEADS, LLM_BACKBONES, PROJECTORS, VISION_BACKBONES

VOLATILE = {"_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version"}  # not architecture
ARCHITECTURE_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_key_value_heads")


def _differs(where: str, part: str, what: str) -> ConfigError:
    return ConfigError(f"config key '{where}.init_from': the checkpoint's {part} is not the {part} this config "
                       f"describes ({what}); init_from keeps the checkpoint's {part}, so pick the recipe it was "
                       f"trained with or override {part}=...", kind="init-from-architecture")


def architecture(spec: Any) -> Any:
    """A part's spec without the bookkeeping fields of transformers configs (where it was loaded from, dtype)."""
    if isinstance(spec, dict):
        return {key: architecture(value) for key, value in spec.items() if key not in VOLATILE}
    if isinstance(spec, list):
        return [architecture(value) for value in spec]
    return spec


def check_same_backbones(model: VisionLanguageModel, cfg: dict[str, Any], where: str) -> None:
    """A ConfigError unless the checkpoint's vision backbone, projector and LLM are the config's."""
    with torch.device("meta"):
        vision = VISION_BACKBONES.build(cfg["vision"], "vision", load_weights=False)
        if architecture(vision.spec()) != architecture(model.vision.spec()):
            raise _differs(where, "vision backbone",
                           f"{vision.spec().get('name')} vs {model.vision.spec().get('name')} "
                           "or different settings")
        widths = projector_widths(cfg, vision.embed_dim, model.llm.hidden_size)
        node = {key: value for key, value in cfg["projector"].items() if key not in widths}
        projector = PROJECTORS.build(node, "projector", **widths)
    ours = {name: tuple(t.shape) for name, t in projector.state_dict().items()}
    theirs = {name: tuple(t.shape) for name, t in model.projector.state_dict().items()}
    if ours != theirs:
        raise _differs(where, "projector", f"tensors {sorted(ours)} vs {sorted(theirs)}" if ours.keys() != theirs.keys()
                       else next(f"{n}: {list(ours[n])} vs {list(theirs[n])}" for n in ours if ours[n] != theirs[n]))
    stated = (cfg["llm"].get("config") or {}) if isinstance(cfg.get("llm"), dict) else {}
    saved = model.llm.model.config.to_dict()
    for key in ARCHITECTURE_FIELDS:
        if key in stated and stated[key] != saved.get(key):
            raise _differs(where, "llm", f"{key} {saved.get(key)!r} vs {stated[key]!r}")
    if LLM_BACKBONES.get(cfg["llm"].get("name", ""), "llm.name") is not type(model.llm):
        raise _differs(where, "llm", f"{cfg['llm'].get('name')} vs {type(model.llm).__name__}")


def adapt_to_config(model: VisionLanguageModel, cfg: dict[str, Any], where: str) -> list[str]:
    """Make a loaded checkpoint's model the one `cfg` describes: same backbones, this run's head, state input and
    observation spec; returns the parts rebuilt with fresh weights."""
    check_same_backbones(model, cfg, where)
    saved, replaced = model.config, []
    if saved.get("head") != cfg.get("head"):
        model.head = HEADS.build(cfg["head"], "head", llm=model.llm)
        replaced.append("head")
    if (saved.get("proprio") or None) != (cfg.get("proprio") or None):
        model.proprio = build_proprio(cfg.get("proprio"), model.llm.hidden_size)
        replaced.append("proprio")
    model.config = cfg
    model.observation = ObservationSpec.from_config(cfg)
    return replaced
