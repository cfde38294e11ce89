"""OpenVLA / Prismatic Hugging Face checkpoints (`model_type` openvla or prismatic) → vlx checkpoints.

`config.json` (OpenVLA's `OpenVLAConfig` / `PrismaticConfig`) gives the timm vision backbone(s)
(`timm_model_ids`, `image_sizes`, `timm_override_act_layers`, `image_resize_strategy`), the language
model (`text_config`, `llm_backbone_id`), and for OpenVLA the action statistics (`norm_stats`) and
`n_action_bins`. The safetensors weights use OpenVLA's module names: `vision_backbone.featurizer.*` /
`.fused_featurizer.*` (timm, with LayerScale `gamma` renamed `scale_factor`), `projector.fc1..fc3`, and
`language_model.*`. The result is a vlx VLA (or VLM) whose `predict_action` sees OpenVLA's exact input
ids — BOS, the patches, `In: What action should the robot take to {instruction}?\nOut:`, then the
word-boundary token `▁` (29871 for Llama-2) that OpenVLA appends — and decodes with the action tokens
`text_config.vocab_size - pad_to_multiple_of - d` and the stored `norm_stats`. Unlike OpenVLA's
unconstrained `generate()`, vlx decodes among the action tokens only; both agree whenever the
model's greedy choice is an action token. Layout and sources: docs/formats.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlx.data.action_stats import ActionStats
from vlx.errors import CheckpointError, DataError
from vlx.interop.assemble import dtype_name, write_checkpoint
from vlx.interop.tensors import read_safetensors_dir, rename_prefixes

LAYOUT = "OpenVLA/Prismatic Hugging Face checkpoint"
MODEL_TYPES = ("openvla", "prismatic")
PRISMATIC_RESIZE = {"letterbox": "letterbox-prismatic"}  # Prismatic's LetterboxPad, not LLaVA's expand2square
REQUIRED = ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "image_resize_strategy", "text_config",
            "timm_model_ids", "image_sizes")
LLM_FAMILIES = (("llama2", "llama"), ("vicuna", "llama"), ("mistral", "mistral"), ("phi", "phi"))
WORD_BOUNDARY = "▁"  # SentencePiece's word-boundary piece; Llama-2 id 29871, which OpenVLA hard-codes


def read_config(root: Path) -> dict[str, Any]:
    """config.json, checked for the fields the import needs."""
    path = root / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; an OpenVLA/Prismatic directory has config.json, "
                              "safetensors weights and tokenizer files")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if config.get("model_type") not in MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type={config.get('model_type')!r}; expected one of {list(MODEL_TYPES)}")
    needed = list(REQUIRED) + (["norm_stats", "n_action_bins"] if config["model_type"] == "openvla" else [])
    missing = [key for key in needed if config.get(key) is None]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; an {config['model_type']} config has {needed}")
    return config


def is_fused(config: dict[str, Any]) -> bool:
    """OpenVLA's rule: the explicit flag, else a `dinoclip`/`dinosiglip` backbone id."""
    flag = config.get("use_fused_vision_backbone")
    return bool(flag) if flag is not None else config["vision_backbone_id"].startswith(("dinoclip", "dinosiglip"))


def vision_node(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """The vlx vision node: one `timm-vit`, or a `fused` pair, with Prismatic's second-to-last-block features."""
    ids, sizes = list(config["timm_model_ids"]), list(config["image_sizes"])
    count = 2 if is_fused(config) else 1
    acts = list(config.get("timm_override_act_layers") or [None] * count)
    extra = list(config.get("timm_model_kwargs") or [{}] * count)  # vlx extension: tiny architectures in tests
    if not (len(ids) == len(sizes) == len(acts) == len(extra) == count):
        raise CheckpointError(f"{where}/config.json: timm_model_ids {ids}, image_sizes {sizes} and "
                              f"timm_override_act_layers {acts} must each have {count} entries "
                              f"({'fused' if count == 2 else 'single'} backbone {config['vision_backbone_id']!r})")
    members = [
        {"name": "timm-vit", "model_id": model_id, "image_size": int(size), "pretrained": False, "feature_layer": -2,
         "image_resize": PRISMATIC_RESIZE.get(config["image_resize_strategy"], config["image_resize_strategy"]),
         "model_kwargs": {**({"act_layer": act} if act else {}), **kwargs}}
        for model_id, size, act, kwargs in zip(ids, sizes, acts, extra, strict=True)
    ]
    return {"name": "fused", "members": members} if count == 2 else members[0]


def llm_node(config: dict[str, Any], root: Path, dtype: str) -> dict[str, Any]:
    text = dict(config["text_config"])
    if "model_type" not in text:
        family = next((kind for prefix, kind in LLM_FAMILIES if config["llm_backbone_id"].startswith(prefix)), None)
        if family is None:
            raise CheckpointError(f"{root}/config.json: text_config has no model_type and llm_backbone_id="
                                  f"{config['llm_backbone_id']!r} is not a known Prismatic LLM")
        text["model_type"] = family
    return {"name": "hf-causal-lm", "source": None, "config": text, "tokenizer": str(root), "dtype": dtype,
            "pad_vocab_to_multiple_of": int(config.get("pad_to_multiple_of", 64))}


def prompt_node(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """Prismatic's prompt builder for the LLM; OpenVLA's pure prompt ends with the `▁` token it appends."""
    backbone = config["llm_backbone_id"]
    if config["model_type"] == "prismatic" and not backbone.endswith("-pure"):
        names = {"vicuna": "prismatic-vicuna", "llama2": "prismatic-llama2-chat",
                 "mistral": "prismatic-mistral-instruct", "phi": "phi"}
        name = next((n for prefix, n in names.items() if backbone.startswith(prefix)), None)
        if name is None:
            raise CheckpointError(f"{root}/config.json: no vlx prompt format for llm_backbone_id={backbone!r}")
        return {"name": name, "image_placement": "after-bos"}
    node: dict[str, Any] = {"name": "pure", "image_placement": "after-bos"}
    if config["model_type"] == "openvla":
        node["generation_suffix_ids"] = [word_boundary_id(root)]
    return node


def word_boundary_id(root: Path) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(root)
    token_id = tokenizer.convert_tokens_to_ids(WORD_BOUNDARY)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise CheckpointError(f"{root}: the tokenizer has no {WORD_BOUNDARY!r} token, which OpenVLA appends to every "
                              "prompt (Llama-2 id 29871); expected a SentencePiece-style tokenizer")
    return int(token_id)


def action_stats(config: dict[str, Any], root: Path) -> dict[str, ActionStats]:
    """`norm_stats` as ActionStats per dataset; OpenVLA's defaults for a missing mask (all) and counts (0)."""
    table: dict[str, ActionStats] = {}
    for name, entry in dict(config["norm_stats"]).items():
        where = f"{root}/config.json: norm_stats[{name!r}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("action"), dict):
            raise CheckpointError(f"{where} has no 'action' statistics object")
        action = dict(entry["action"])
        action.setdefault("mask", [True] * len(action.get("q01", [])))
        try:
            table[name] = ActionStats.from_dict(
                {"action": action, "num_transitions": entry.get("num_transitions", 0),
                 "num_trajectories": entry.get("num_trajectories", 0)}, where)
        except DataError as exc:
            raise CheckpointError(str(exc)) from None
    dims = {name: stats.action_dim for name, stats in table.items()}
    if not dims or len(set(dims.values())) != 1:
        raise CheckpointError(f"{root}/config.json: norm_stats must describe at least one dataset, all with the same "
                              f"action dimension (vlx has one action head); got {dims}")
    return table


def vlx_names(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(OpenVLA prefix, vlx prefix) pairs."""
    if is_fused(config):
        vision = (("vision_backbone.featurizer.", "vision.members.0.model."),
                  ("vision_backbone.fused_featurizer.", "vision.members.1.model."))
        projector = (("projector.", "projector."),)
    else:
        vision = (("vision_backbone.featurizer.", "vision.model."),)
        projector = (("projector.fc1.", "projector.linear_1."), ("projector.fc2.", "projector.linear_2."))
    return (*vision, *projector, ("language_model.", "llm.model."))


def convert_tensors(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenVLA tensor names → vlx names; LayerScale `scale_factor` back to timm's `gamma`."""
    renamed = rename_prefixes(tensors, vlx_names(config))
    return {(layer_scale_name(name) if name.startswith("vision.") else name): t for name, t in renamed.items()}


def layer_scale_name(name: str) -> str:
    """timm's LayerScale parameter name (`gamma`) for OpenVLA's `scale_factor` (ls_apply_patch)."""
    return name.removesuffix("scale_factor") + "gamma" if name.endswith(".scale_factor") else name


def import_openvla(src: str | Path, out: str | Path) -> Path:
    """Convert the OpenVLA/Prismatic directory `src` into the vlx checkpoint directory `out`; returns `out`."""
    root = Path(src).expanduser()
    config = read_config(root)
    tensors = convert_tensors(config, read_safetensors_dir(root))
    llm = llm_node(config, root, dtype_name(tensors.get("llm.model.model.embed_tokens.weight")))
    stats: dict[str, ActionStats] = {}
    if config["model_type"] == "openvla":
        stats = action_stats(config, root)
        vocab = int(config["text_config"].get("vocab_size", 0)) - int(config.get("pad_to_multiple_of", 64))
        head = {"name": "action-tokens", "action_dim": next(iter(stats.values())).action_dim,
                "n_bins": int(config["n_action_bins"]), "tokens": "reuse-last", "base_vocab_size": vocab}
    else:
        head = {"name": "text"}
    vlx_config = {
        "vision": vision_node(config, root), "projector": {"name": "fused-mlp" if is_fused(config) else "mlp"},
        "llm": llm, "head": head, "prompt": prompt_node(config, root),
        "augment": {"crop_scale": None, "color_jitter": False},  # OpenVLA's predict_action does not crop
    }
    return write_checkpoint(vlx_config, tensors, out, str(root), LAYOUT, action_stats=stats)
