"""The LLM backbone: any transformers causal LM plus its tokenizer, prepared for visual tokens.

Weights come from `AutoModelForCausalLM.from_pretrained(source)` (hub id or local directory) or, without
weights, from `config` (the architecture the recipe carries; used on the `meta` device and to rebuild
from a checkpoint). The tokenizer gains an `<image>` slot token and a pad token when missing, and the
embedding matrix grows to a multiple of `pad_vocab_to_multiple_of` rows (as transformers' LLaVA and
Prismatic do: 32000 → 32064). When both `source` and `config` are given, they must agree.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from vlx.errors import ConfigError
from vlx.hub import SAFE_LOADING, check_architecture, load_pretrained
from vlx.llm.prompts import IMAGE_MARKER
from vlx.registry import LLM_BACKBONES

DTYPES = ("float32", "bfloat16", "float16")
CHECKED_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def build_hf_config(config: dict[str, Any], where: str) -> Any:
    """A transformers config from a dict with a `model_type` (e.g. `llama`)."""
    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise ConfigError(f"config key '{where}' needs a 'model_type' (e.g. llama)")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except ValueError as exc:
        raise ConfigError(f"config key '{where}': {exc}") from exc


@LLM_BACKBONES.register("hf-causal-lm")
class HFCausalLM(nn.Module):
    """A transformers causal LM; `tokenizer` defaults to `source`."""

    def __init__(
        self,
        source: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        pad_token: str = "<pad>",
        pad_vocab_to_multiple_of: int = 64,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        load_weights: bool = True,
        load_tokenizer: bool = True,
    ) -> None:
        super().__init__()
        if source is None and config is None:
            raise ConfigError("the LLM needs 'llm.source' (dir or hub id) or 'llm.config' (architecture)")
        if dtype not in DTYPES:
            raise ConfigError(f"llm.dtype={dtype!r}; expected one of {', '.join(DTYPES)}")
        torch_dtype = getattr(torch, dtype)
        if load_weights and source is not None:
            self.model = load_pretrained(
                lambda s: AutoModelForCausalLM.from_pretrained(
                    s, dtype=torch_dtype, attn_implementation=attn_implementation, **SAFE_LOADING),
                source, "llm.source", "language model",
            )
        else:
            if config is None:
                raise ConfigError("llm.config is required to build the LLM without loading weights")
            hf_config = build_hf_config(config, "llm.config")
            hf_config._attn_implementation = attn_implementation
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype)
        self.tokenizer = None
        self.pad_vocab_to_multiple_of = pad_vocab_to_multiple_of
        tokenizer_source = tokenizer or source
        if load_tokenizer and tokenizer_source is not None:
            self.tokenizer = load_pretrained(lambda s: AutoTokenizer.from_pretrained(s, trust_remote_code=False),
                                             tokenizer_source, "llm.tokenizer", "tokenizer")
            self._add_special_tokens(pad_token)
        if config is not None and load_weights and source is not None:
            check_architecture(self.model.config, config, CHECKED_FIELDS, "llm.config")
        self.set_gradient_checkpointing(gradient_checkpointing)
        self.attn_implementation = attn_implementation
        self.hidden_size: int = self.model.config.hidden_size

    def _add_special_tokens(self, pad_token: str) -> None:
        """Add `<image>` and a pad token if missing; grow the embeddings to hold them."""
        tok = self.tokenizer
        if IMAGE_MARKER not in tok.get_vocab():
            tok.add_special_tokens({"additional_special_tokens": [IMAGE_MARKER]})
        if tok.pad_token is None:
            tok.add_special_tokens({"pad_token": pad_token})
        self._grow_embeddings()

    def _grow_embeddings(self) -> None:
        """Resize the embeddings (and LM head) to the next multiple that holds every tokenizer id."""
        rows = self.model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > rows:
            multiple = self.pad_vocab_to_multiple_of
            self.model.resize_token_embeddings(math.ceil(len(self.tokenizer) / multiple) * multiple,
                                               mean_resizing=False)

    def add_tokens(self, tokens: list[str]) -> list[int]:
        """Ids of `tokens`, added to the tokenizer (as special tokens) and the embeddings when missing."""
        if self.tokenizer is None:
            raise ConfigError("cannot add tokens to an LLM built without its tokenizer")
        missing = [token for token in tokens if token not in self.tokenizer.get_vocab()]
        if missing:
            self.tokenizer.add_tokens(missing, special_tokens=True)
            self._grow_embeddings()
        return [int(i) for i in self.tokenizer.convert_tokens_to_ids(tokens)]

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute decoder activations in the backward pass (less memory, ~30% more compute)."""
        model = self.model
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names
            enable, disable, key = (model.activation_checkpointing_enable, model.activation_checkpointing_disable,
                                    "activation")
        else:
            enable, disable, key = model.gradient_checkpointing_enable, model.gradient_checkpointing_disable, "gradient"
        if enabled:
            enable(**{f"{key}_checkpointing_kwargs": {"use_reentrant": False}})
        else:
            disable()

    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(IMAGE_MARKER))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)  # (B, L) -> (B, L, D)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
        return out.logits  # (B, L, V)

    def decoder(self) -> nn.Module:
        """The transformer without its output layer (e.g. `LlamaModel`); its outputs are the final-norm hidden
        states."""
        return self.model.get_decoder()

    def output_layer(self) -> nn.Module:
        """The LM head (hidden states → vocabulary logits)."""
        return self.model.get_output_embeddings()

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last layer's hidden states (after the final norm), (B, L, D); `attention_mask` is a (B, L) padding
        mask or a prepared additive (B, 1, L, L) mask, which transformers uses as given."""
        out = self.decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False)
        return out.last_hidden_state  # (B, L, D)

    def spec(self) -> dict[str, Any]:
        """Registry arguments that rebuild this LLM with no weights (tokenizer path set by the checkpoint)."""
        config = self.model.config.to_dict()
        return {
            "name": "hf-causal-lm",
            "source": None,
            "config": config,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "attn_implementation": self.attn_implementation,
        }
