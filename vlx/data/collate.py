"""Batch collation: pad token sequences and stack the images of the samples that have one.

The batch contract (DESIGN.md): `input_ids`, `attention_mask`, `labels` (-100 where ignored), `pixel_values`
(M, 3, H, W) for the M samples that carry an image — (M, C, 3, H, W) when each carries C cameras — in batch
order, and `ids` (sample ids, for error messages and W&B tables). Robot data adds `actions` (B, K, A)
normalised chunks, `action_mask` (B, K) (False at steps past a demo's end), `state` (B, P) normalised states,
and for one-pass heads `action_slots` (B, L) (True at the placeholder positions). Training pads on the right;
generation pads on the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlx.llm.prompts import IGNORE_INDEX


def pad_sequences(sequences: list[torch.Tensor], value: int, side: str = "right") -> torch.Tensor:
    """Stack 1-D tensors of different lengths into (B, Lmax), padding with `value` on `side`."""
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), value, dtype=sequences[0].dtype)
    for row, seq in enumerate(sequences):
        if side == "right":
            out[row, : len(seq)] = seq
        else:
            out[row, length - len(seq) :] = seq
    return out


@dataclass(frozen=True)
class Collator:
    """Collate dataset items (dicts with input_ids, labels, pixel_values or None, id)."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids = [item["input_ids"] for item in items]
        ones = [torch.ones(len(ids), dtype=torch.long) for ids in input_ids]
        images = [item["pixel_values"] for item in items if item["pixel_values"] is not None]
        batch: dict[str, Any] = {
            "ids": [item["id"] for item in items],
            "input_ids": pad_sequences(input_ids, self.pad_token_id, self.padding_side),  # (B, L)
            "attention_mask": pad_sequences(ones, 0, self.padding_side),  # (B, L)
            "pixel_values": torch.stack(images) if images else None,  # (M, 3, H, W)
        }
        for key in ("actions", "action_mask", "state"):  # (B, K, A), (B, K), (B, P)
            if key in items[0]:
                batch[key] = torch.stack([item[key] for item in items])
        if "action_slots" in items[0]:
            batch["action_slots"] = pad_sequences([item["action_slots"] for item in items], False, self.padding_side)
        if "labels" in items[0]:
            batch["labels"] = pad_sequences([item["labels"] for item in items], IGNORE_INDEX, self.padding_side)
        return batch
