"""One-pass decoding: action slots after the prompt, read in a single LLM pass through a 4-D attention mask.

A one-pass head appends K·A placeholder positions ("action slots") to the prompt. Their input embeddings
are multiplied by zero, as OpenVLA-OFT does, so a slot is told apart from the others only by its position
(RoPE). `block_attention_mask` lets every slot see the whole prompt and every other slot of its sample
(bidirectional among themselves) while prompt positions stay causal and never see a slot, so the prompt's
hidden states are the same with or without slots appended (a prefix that could be cached). The mask is the
additive float kind (0 = attend, the dtype's minimum = blocked) that transformers passes to SDPA, eager and
flex attention unchanged, so the LLM's own code runs unmodified. Position ids follow the attention mask, so
left-padded inference batches get the same positions as unpadded prompts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlx.errors import DataError


def mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding: (B, L) mask → (B, L) positions (0 at each sample's first real token)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def block_attention_mask(attention_mask: torch.Tensor, slots: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive (B, 1, L, L) mask: query i sees key j iff j is real and (j <= i, or both are action slots)."""
    real = attention_mask.bool()  # (B, L)
    length = real.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()  # (L, L)
    among_slots = slots[:, :, None] & slots[:, None, :]  # (B, L, L)
    allowed = (causal[None] | among_slots) & real[:, None, :]  # (B, L, L)
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=real.device)
    blocked.masked_fill_(~allowed, torch.finfo(dtype).min)
    return blocked[:, None]  # (B, 1, L, L)


def slot_count(slots: torch.Tensor, expected: int, sample_ids: Any) -> None:
    """A DataError unless every sample of the batch has exactly `expected` action slots."""
    counts = slots.sum(-1)  # (B,)
    if not bool((counts == expected).all()):
        raise DataError(f"batch {sample_ids or '?'} has {counts.tolist()} action slots per sample; the head needs "
                        f"{expected} (chunk_size × action_dim) in every sample")


def slot_hidden_states(llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any], expected: int) -> torch.Tensor:
    """The LLM's last hidden states at the action slots, in order: (B, S, D) with S = `expected`."""
    slots = batch.get("action_slots")
    if slots is None:
        raise DataError(f"batch {batch.get('ids', '?')} has no 'action_slots': a one-pass head needs the "
                        "placeholders its dataset appends after the prompt")
    slots = slots.to(embeds.device).bool()  # (B, L)
    slot_count(slots, expected, batch.get("ids"))
    attention = batch["attention_mask"].to(embeds.device)  # (B, L)
    inputs = embeds.masked_fill(slots[..., None], 0.0)  # (B, L, D): slots carry position only
    mask = block_attention_mask(attention, slots, embeds.dtype)  # (B, 1, L, L)
    hidden = llm.hidden_states(inputs, mask, mask_positions(attention))  # (B, L, D)
    return hidden[slots].reshape(embeds.shape[0], expected, hidden.shape[-1])  # (B, S, D)
