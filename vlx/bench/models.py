"""The models the benchmarks time: random weights, offline, at a named size.

`llava_config(size, tokenizer_dir)` is a LLaVA-family config (transformers CLIP tower, `mlp` projector,
Llama with the `vicuna` prompt); `vla_config(size, tokenizer_dir)` an OpenVLA-family one (fused
DINOv2 + SigLIP-style timm towers, `fused-mlp`, Llama with the `pure` prompt, patches after BOS, 7-D
action tokens). Sizes: `tiny` (tests, milliseconds), `small` (the CPU benchmarks: a 32,064-row
Llama-2-shaped vocabulary and large enough that the model's arithmetic, not Python, dominates a step).
The tokenizer is vlx's tiny BPE tokenizer (`write_tokenizer`), so nothing is downloaded. `roughen`
redraws weight matrices with std 0.2 so that greedy decoding takes a non-trivial path (random init's
0.02 makes it repeat one token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlx.builder import build_model
from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel

SIZES = ("tiny", "small")
LLM = {  # Llama shapes per size
    "tiny": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 384},
    "small": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8,
              "num_key_value_heads": 8, "vocab_size": 32064},
}
CLIP = {  # transformers CLIP vision shapes per size
    "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 16, "patch_size": 4, "projection_dim": 32},
    "small": {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 3,
              "image_size": 112, "patch_size": 14, "projection_dim": 192},
}
TIMM = {  # (image size, DINOv2-style kwargs, SigLIP-style kwargs) per size
    "tiny": (32, {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 4},
             {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2}),
    "small": (112, {"patch_size": 14, "embed_dim": 192, "depth": 4, "num_heads": 3},
              {"patch_size": 14, "embed_dim": 192, "depth": 4, "num_heads": 3}),
}
TOKENIZER_VOCAB = 320  # the tiny BPE tokenizer's size (as `vlx data assets` writes it)


def check_size(size: str) -> None:
    if size not in SIZES:
        raise ConfigError(f"benchmark size {size!r} is unknown; pick one of {', '.join(SIZES)}")


def write_tokenizer(directory: Path) -> Path:
    """vlx's tiny Llama-style BPE tokenizer saved in `directory` (returned)."""
    from vlx.data.tiny_assets import tokenizer_corpus, train_tokenizer

    train_tokenizer(tokenizer_corpus(), vocab_size=TOKENIZER_VOCAB).save_pretrained(directory)
    return Path(directory)


def llm_node(size: str, tokenizer_dir: Path) -> dict[str, Any]:
    config = {"model_type": "llama", "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
              "tie_word_embeddings": False, **LLM[size]}
    return {"name": "hf-causal-lm", "source": None, "config": config, "tokenizer": str(tokenizer_dir)}


def llava_config(size: str, tokenizer_dir: Path) -> dict[str, Any]:
    """A LLaVA-family model config (exportable to transformers' LlavaForConditionalGeneration)."""
    check_size(size)
    return {
        "vision": {"name": "hf-clip", "source": None, "config": CLIP[size], "feature_layer": -2,
                   "image_resize": "letterbox"},
        "projector": {"name": "mlp"},
        "llm": llm_node(size, tokenizer_dir),
        "head": {"name": "text"},
        "prompt": {"name": "vicuna", "system": "A chat between a user and an assistant."},
    }


def vla_config(size: str, tokenizer_dir: Path, action_dim: int = 7) -> dict[str, Any]:
    """An OpenVLA-family model config with `action_dim` action tokens (256 new tokens: the tiny tokenizer's
    last ids are words)."""
    check_size(size)
    image, dino, siglip = TIMM[size]
    member = {"name": "timm-vit", "image_size": image, "pretrained": False, "image_resize": "resize-naive"}
    return {
        "vision": {"name": "fused", "members": [
            {**member, "model_id": "vit_small_patch14_reg4_dinov2", "model_kwargs": dino},
            {**member, "model_id": "vit_so400m_patch14_siglip_224", "model_kwargs": siglip}]},
        "projector": {"name": "fused-mlp"},
        "llm": llm_node(size, tokenizer_dir),
        "head": {"name": "action-tokens", "action_dim": action_dim, "tokens": "new"},
        "prompt": {"name": "pure", "image_placement": "after-bos"},
    }


def build(config: dict[str, Any], seed: int = 0) -> VisionLanguageModel:
    """The model of `config` with seeded random weights (nothing is loaded)."""
    torch.manual_seed(seed)
    return build_model(config, load_weights=False)


def roughen(model: torch.nn.Module, seed: int = 1, std: float = 0.2) -> torch.nn.Module:
    """Redraw every weight matrix from N(0, std²) so greedy paths are distinct."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model
