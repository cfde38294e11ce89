"""Tiny local assets — the embedded default that lets vlx run offline on a laptop CPU.

Writes: a BPE tokenizer trained on the synthetic shapes text and vlx's prompt templates (transformers
format), randomly initialised transformers checkpoints (a CLIP vision tower, a Llama-style causal LM)
saved with `save_pretrained`, and random timm ViT weights saved as safetensors files. Architectures
come from the tiny recipe's config nodes, and the recipe loads them back through the same code paths as
real weights (`from_pretrained`, timm's `pretrained_cfg_overlay=dict(file=...)`) — nothing is fetched
from a hub. A small JSON stamp beside each asset records what it was written for.
"""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast

from vlx.data.shapes import CAPTION_ITEM, COLOURS, POSITIONS, QUESTION_TEMPLATES, SHAPES
from vlx.errors import ConfigError
from vlx.llm.backbone import build_hf_config
from vlx.llm.formats import VICUNA_SYSTEM

POSITION_STD = 1.0
ASSETS_VERSION = 4  # bump when the generated assets change for the same configs
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
TEMPLATE_TEXT = [VICUNA_SYSTEM, "USER: ASSISTANT:", "In: Out:", "What action should the robot take to"]


def tokenizer_corpus() -> list[str]:
    """Sentences covering every word of the shapes data and the prompt templates."""
    lines = list(TEMPLATE_TEXT)
    for (colour, shape, position), (_, template) in itertools.product(
        itertools.product(COLOURS, SHAPES, POSITIONS), QUESTION_TEMPLATES
    ):
        lines.append(template.format(colour=colour, shape=shape, position=position))
        lines.append(CAPTION_ITEM.format(colour=colour, shape=shape, position=position) + ", and.")
    lines += [str(n) for n in range(10)]
    return lines


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A Llama-style (Metaspace BPE) fast tokenizer; every printable ASCII character is in its alphabet."""
    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    model.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=list(string.printable),
        show_progress=False
    )
    model.train_from_iterator(texts, trainer)
    model.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", model.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens=["<image>"], model_max_length=2048,
    )


def tiny_clip_vision(config: Mapping[str, Any]) -> CLIPVisionModel:
    """A random CLIP vision tower whose patch features say where the patch is.

    transformers initialises position embeddings with std 0.02, tiny next to the patch content, so a
    random tower's features barely encode position — a trained CLIP's do. Drawing them at the scale of
    the content keeps the "where" in the features, as the frozen tower of a real LLaVA provides.
    """
    model = CLIPVisionModel(CLIPVisionConfig(**config))
    with torch.no_grad():
        getattr(model, "vision_model", model).embeddings.position_embedding.weight.normal_(std=POSITION_STD)
    return model


def local_path(value: Any, where: str) -> Path:
    """An absolute local path from a config value; tiny assets are never written to hub ids."""
    path = Path(str(value)).expanduser()
    if value is None or not path.is_absolute():
        raise ConfigError(f"{where}={value} is not a local path: tiny assets are written only for tiny recipes "
                          "whose sources point into paths.assets (e.g. recipe=llava-tiny)")
    return path


def is_current(stamp: Path, description: Mapping[str, Any]) -> bool:
    """Whether `stamp` records exactly this asset version and description."""
    return stamp.is_file() and json.loads(stamp.read_text()) == {"version": ASSETS_VERSION, **description}


def write_stamp(stamp: Path, description: Mapping[str, Any]) -> None:
    stamp.write_text(json.dumps({"version": ASSETS_VERSION, **description}, sort_keys=True))


def tiny_timm_vit(model_id: str, image_size: int, model_kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """A random timm ViT whose patch position embeddings are a 2-D sin-cos grid at content scale.

    Trained ViTs learn smooth 2-D position embeddings (neighbouring patches alike, rows and columns
    separable); a random tower's are noise, which a small model can only memorise patch by patch. The
    sin-cos grid gives the random tower the trained kind of "where" (see also `tiny_clip_vision`);
    embeddings of prefix tokens (class, registers), if any, are drawn at the same scale.
    """
    model = timm.create_model(model_id, pretrained=False, num_classes=0, img_size=image_size, **model_kwargs)
    grid = list(model.patch_embed.grid_size)
    patches = grid[0] * grid[1]
    with torch.no_grad():
        model.pos_embed.normal_(std=POSITION_STD)  # (1, prefix + patches, D)
        sincos = build_sincos2d_pos_embed(grid, dim=model.pos_embed.shape[-1])  # (patches, D)
        model.pos_embed[0, -patches:] = sincos / sincos.std() * POSITION_STD
    return model


def write_tiny_vision(vision: Mapping[str, Any], where: str = "vision") -> None:
    """Write the random weights a tiny vision config points at (`hf-clip` dir, `timm-vit` file, `fused`)."""
    name = vision["name"]
    if name == "fused":
        for index, member in enumerate(vision["members"]):
            write_tiny_vision(member, f"{where}.members[{index}]")
    elif name == "hf-clip":
        directory = local_path(vision.get("source"), f"{where}.source")
        stamp = directory / "vlx-assets.json"
        if not is_current(stamp, {"config": vision["config"]}):
            tiny_clip_vision(vision["config"]).save_pretrained(directory)
            write_stamp(stamp, {"config": vision["config"]})
    elif name == "timm-vit":
        file = local_path(vision.get("weights_file"), f"{where}.weights_file")
        description = {k: vision.get(k) for k in ("model_id", "image_size", "model_kwargs")}
        stamp = file.with_name(file.name + ".vlx.json")
        if not (file.is_file() and is_current(stamp, description)):
            file.parent.mkdir(parents=True, exist_ok=True)
            model = tiny_timm_vit(vision["model_id"], vision["image_size"], vision.get("model_kwargs") or {})
            save_file(model.state_dict(), str(file))
            write_stamp(stamp, description)
    else:
        raise ConfigError(f"{where}.name={name!r}: tiny assets can be written for hf-clip, timm-vit and fused")


def write_tiny_llm(llm: Mapping[str, Any]) -> None:
    """Write the tokenizer and random causal LM that a tiny `llm` config points at."""
    directory = local_path(llm.get("source"), "llm.source")
    stamp = directory / "vlx-assets.json"
    if is_current(stamp, {"config": llm["config"]}):
        return
    vocab_rows = int(llm["config"]["vocab_size"])
    tokenizer = train_tokenizer(tokenizer_corpus(), vocab_size=vocab_rows - 64)
    if len(tokenizer) > vocab_rows:
        raise ConfigError(f"llm.config.vocab_size={vocab_rows} is smaller than the tiny tokenizer ({len(tokenizer)})")
    AutoModelForCausalLM.from_config(build_hf_config(llm["config"], "llm.config")).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_stamp(stamp, {"config": llm["config"]})


def write_tiny_assets(vision: Mapping[str, Any], llm: Mapping[str, Any], seed: int = 0) -> None:
    """Write the tokenizer and random vision/LLM weights that a tiny recipe's `vision`/`llm` nodes point at.

    Sources (and timm `weights_file`s) say where each asset goes and `config`/`model_kwargs` its
    architecture; assets already written for the same description are left alone.
    """
    torch.manual_seed(seed)
    write_tiny_vision(vision)
    write_tiny_llm(llm)
