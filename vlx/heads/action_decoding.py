"""Constrained greedy decoding of action tokens with a KV cache.

One forward pass over the prompt (visual tokens included) fills the cache; each further step feeds only
the token just chosen. At every step the choice is the argmax over the action tokens alone, so the output
is always a valid action — never text, EOS or padding. Left-padded batches work: position ids follow the
attention mask, as transformers' own `generate` computes them.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn


@functools.lru_cache(maxsize=None)
def cache_keyword(lm_class: type) -> str:
    """The forward keyword that takes the KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`;
    looked up once per model class, not on every call."""
    return "cache" if "cache" in inspect.signature(lm_class.forward).parameters else "past_key_values"


@torch.no_grad()
def decode_action_tokens(
    lm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, first_id: int, top_id: int, steps: int
) -> torch.Tensor:
    """Greedy ids in [first_id, top_id) for `steps` positions after the prompt: (B, steps).

    `lm` is a transformers causal LM; `inputs_embeds` (B, L, D) the prompt, left-padded by `attention_mask`.
    """
    embedding = lm.get_input_embeddings()
    cache_arg = cache_keyword(type(lm))
    mask = attention_mask.long()  # (B, L)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
    out = lm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    chosen = []
    for step in range(steps):
        logits = out.logits[:, -1, first_id:top_id]  # (B, n_bins)
        token = logits.argmax(-1, keepdim=True) + first_id  # (B, 1)
        chosen.append(token)
        if step == steps - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # (B, L + step + 1)
        positions = positions[:, -1:] + 1  # (B, 1)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        out = lm(
            inputs_embeds=embedding(token), attention_mask=mask, position_ids=positions, use_cache=True,
            logits_to_keep=1, **{cache_arg: cache},
        )
    return torch.cat(chosen, dim=1)  # (B, steps)
