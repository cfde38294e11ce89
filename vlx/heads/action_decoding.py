"""Constrained greedy decoding of action tokens with a KV cache.

One forward pass over the prompt (visual tokens included) fills the cache; each further step feeds only
the token just chosen. At every step the choice is the argmax over the action tokens alone, so the output
is always a valid action — never text, EOS or padding. Because only those rows matter, the loop runs the
LM's decoder and multiplies its last hidden state by the action tokens' rows of the output layer
(n_bins × D) instead of the whole vocabulary (V × D: for Llama-2's 32,064 rows that matrix is the largest
single read of a decoding step on a small model). LMs whose output layer is not a plain `nn.Linear` (or
that expose no decoder) take the full-logits path. Left-padded batches work: position ids follow the
attention mask, as transformers' own `generate` computes them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import nn


@functools.lru_cache(maxsize=None)
def cache_keyword(module_class: type) -> str:
    """The forward keyword that takes the KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`;
    looked up once per model class, not on every call."""
    return "cache" if "cache" in inspect.signature(module_class.forward).parameters else "past_key_values"


def action_scorer(lm: nn.Module, first_id: int, top_id: int) -> tuple[nn.Module, Callable[[object], torch.Tensor]]:
    """(module to run, outputs → last-position scores of the action ids (B, n_bins)).

    The fast path runs the decoder and scores with the action rows of the output layer; the fallback runs
    the whole LM with `logits_to_keep=1` and slices the logits. Both give the same argmax.
    """
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    if type(head) is nn.Linear and isinstance(decoder, nn.Module) and decoder is not lm:
        rows = head.weight[first_id:top_id]  # (n_bins, D): a view, no copy
        bias = None if head.bias is None else head.bias[first_id:top_id]  # (n_bins,)
        return decoder, lambda out: nn.functional.linear(out.last_hidden_state[:, -1], rows, bias)  # (B, n_bins)
    return lm, lambda out: out.logits[:, -1, first_id:top_id]  # (B, n_bins)


@torch.no_grad()
def decode_action_tokens(
    lm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, first_id: int, top_id: int, steps: int
) -> torch.Tensor:
    """Greedy ids in [first_id, top_id) for `steps` positions after the prompt: (B, steps).

    `lm` is a transformers causal LM; `inputs_embeds` (B, L, D) the prompt, left-padded by `attention_mask`.
    """
    embedding = lm.get_input_embeddings()
    module, score = action_scorer(lm, first_id, top_id)
    extra = {} if module is not lm else {"logits_to_keep": 1}
    cache_arg = cache_keyword(type(module))
    mask = attention_mask.long()  # (B, L)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
    out = module(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    chosen = []
    for step in range(steps):
        token = score(out).argmax(-1, keepdim=True) + first_id  # (B, 1)
        chosen.append(token)
        if step == steps - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # (B, L + step + 1)
        positions = positions[:, -1:] + 1  # (B, 1)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        out = module(
            inputs_embeds=embedding(token), attention_mask=mask, position_ids=positions, use_cache=True,
            **extra, **{cache_arg: cache},
        )
    return torch.cat(chosen, dim=1)  # (B, steps)
