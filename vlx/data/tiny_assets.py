"""Tiny local assets — the embedded default that lets vlx run offline on a laptop CPU.

Writes into a directory: a BPE tokenizer trained on the synthetic shapes text and vlx's prompt
templates (saved in transformers format), and randomly initialised transformers checkpoints (a CLIP
vision tower and a Llama-style causal LM) saved with `save_pretrained`. Their architectures come from
the tiny recipe's `vision.config` / `llm.config`, and the recipe loads them back through the same
`from_pretrained` path as real models — nothing is fetched from a hub.
"""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast

from vlx.data.shapes import CAPTION_ITEM, COLOURS, POSITIONS, QUESTION_TEMPLATES, SHAPES
from vlx.errors import ConfigError
from vlx.llm.backbone import build_hf_config
from vlx.llm.formats import VICUNA_SYSTEM

POSITION_STD = 1.0
ASSETS_VERSION = 2  # bump when the generated assets change for the same configs
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
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=list(string.printable), show_progress=False
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


def matches(directory: Path, config: Mapping[str, Any]) -> bool:
    """Whether `directory` holds a saved model whose config.json agrees with every field of `config`."""
    path = directory / "config.json"
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    return all(saved.get(key) == value for key, value in config.items())


def write_tiny_assets(vision: Mapping[str, Any], llm: Mapping[str, Any], seed: int = 0) -> None:
    """Write the tokenizer, CLIP vision and causal-LM checkpoints that `vision`/`llm` configs point at.

    `vision` and `llm` are the recipe's config nodes: their `source` is where the checkpoint goes,
    their `config` its architecture; the LLM's tokenizer is saved next to its weights. Existing
    assets with the requested architectures are left alone; others are rewritten.
    """
    vision_dir, llm_dir = Path(str(vision["source"])).expanduser(), Path(str(llm["source"])).expanduser()
    for where, directory in (("vision.source", vision_dir), ("llm.source", llm_dir)):
        if not directory.is_absolute():
            raise ConfigError(f"{where}={directory} is not a local directory: tiny assets are written only for "
                              "tiny recipes whose sources point into paths.assets (e.g. recipe=llava-tiny)")
    stamp = vision_dir / "vlx-assets.json"
    current = stamp.is_file() and json.loads(stamp.read_text()).get("version") == ASSETS_VERSION
    if current and matches(vision_dir, vision["config"]) and matches(llm_dir, llm["config"]):
        return
    torch.manual_seed(seed)
    vocab_rows = int(llm["config"]["vocab_size"])
    tokenizer = train_tokenizer(tokenizer_corpus(), vocab_size=vocab_rows - 64)
    if len(tokenizer) > vocab_rows:
        raise ConfigError(f"llm.config.vocab_size={vocab_rows} is smaller than the tiny tokenizer ({len(tokenizer)})")
    tiny_clip_vision(vision["config"]).save_pretrained(vision_dir)
    AutoModelForCausalLM.from_config(build_hf_config(llm["config"], "llm.config")).save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    stamp.write_text(json.dumps({"version": ASSETS_VERSION}))
