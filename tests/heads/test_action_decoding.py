"""The decoding loop scores only the action tokens' rows of the output layer (fast path; a LoRA-wrapped LM
too, whose decoder carries the adapters) and falls back to full logits for other output layers — the chosen
tokens equal a full-logits, recompute-everything greedy loop either way."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from vlx.heads.action_decoding import action_scorer, decode_action_tokens
from vlx.heads.instruction import vla_question


class ScaledHead(nn.Linear):
    """An output layer that is not a plain nn.Linear (as a wrapped or customised head would be)."""


def prompt(vla) -> tuple[torch.Tensor, torch.Tensor]:
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    pixels = vla.vision.image_transform(Image.fromarray(image))
    ids = vla.prompt_ids(vla_question("move to the red block"), has_image=True)[None]  # (1, L)
    with torch.no_grad():
        return vla.embed(ids, pixels[None]), torch.ones_like(ids)


def sharpen(vla) -> None:
    with torch.no_grad():
        for parameter in vla.llm.model.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(std=0.2, generator=torch.Generator().manual_seed(parameter.numel()))


def full_logits_greedy(lm, embeds: torch.Tensor, first: int, top: int, steps: int) -> list[int]:
    """Reference: the whole vocabulary's logits, the whole sequence recomputed at each step."""
    chosen = []
    with torch.no_grad():
        for _ in range(steps):
            chosen.append(int(lm(inputs_embeds=embeds, use_cache=False).logits[0, -1, first:top].argmax()) + first)
            embeds = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[chosen[-1]]]))], dim=1)
    return chosen


def test_fast_path_runs_the_decoder_and_equals_full_logits(tiny_vla) -> None:
    vla, codec = tiny_vla, tiny_vla.head.codec
    sharpen(vla)
    lm = vla.llm.model
    module, _ = action_scorer(lm, codec.first_id, codec.top_id)
    assert module is lm.get_decoder()  # the whole-vocabulary head is skipped
    embeds, mask = prompt(vla)
    fast = decode_action_tokens(lm, embeds, mask, codec.first_id, codec.top_id, 6)
    full = full_logits_greedy(lm, embeds, codec.first_id, codec.top_id, 6)
    assert fast[0].tolist() == full
    assert len(set(full)) > 1


def test_other_output_layers_take_the_full_logits_path(tiny_vla) -> None:
    vla, codec = tiny_vla, tiny_vla.head.codec
    sharpen(vla)
    lm = vla.llm.model
    embeds, mask = prompt(vla)
    before = decode_action_tokens(lm, embeds, mask, codec.first_id, codec.top_id, 5)
    old = lm.get_output_embeddings()
    head = ScaledHead(old.in_features, old.out_features, bias=False)
    head.weight = old.weight
    lm.set_output_embeddings(head)
    module, _ = action_scorer(lm, codec.first_id, codec.top_id)
    assert module is lm
    assert decode_action_tokens(lm, embeds, mask, codec.first_id, codec.top_id, 5).tolist() == before.tolist()


def test_lora_wrapped_lm_decodes_with_its_adapters(tiny_vla) -> None:
    from vlx.training.lora import add_lora

    vla, codec = tiny_vla, tiny_vla.head.codec
    sharpen(vla)
    embeds, mask = prompt(vla)
    before = decode_action_tokens(vla.llm.model, embeds, mask, codec.first_id, codec.top_id, 5)
    add_lora(vla, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}, "stage.lora")
    with torch.no_grad():  # trained-looking adapters (fresh ones start with B = 0)
        for name, parameter in vla.llm.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5, generator=torch.Generator().manual_seed(len(name)))
    lm = vla.llm.model
    after = decode_action_tokens(lm, embeds, mask, codec.first_id, codec.top_id, 5)
    assert after[0].tolist() == full_logits_greedy(lm, embeds, codec.first_id, codec.top_id, 5)
    assert after.tolist() != before.tolist()  # the adapters took part
