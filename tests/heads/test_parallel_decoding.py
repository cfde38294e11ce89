"""Parallel decoding is right: the action slots' logits equal an explicitly written Llama forward pass with a
hand-built mask (slots see the prompt and each other, the prompt is causal), on an unpadded prompt and inside a
left-padded batch; the prompt's logits do not change when slots are appended; decoding argmaxes over the
action tokens only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlx.builder import build_model
from vlx.heads.parallel import ParallelActionTokenHead

K, A = 2, 3


@pytest.fixture()
def model(tiny_cfg: dict):
    torch.manual_seed(0)
    cfg = {**tiny_cfg, "head": {"name": "action-tokens-parallel", "action_dim": A, "chunk_size": K, "tokens": "new"},
           "prompt": {"name": "pure", "image_placement": "after-bos"}}
    vla = build_model(cfg).eval()
    with torch.no_grad():  # sharp, position-sensitive weights so a wrong mask or position cannot hide
        for parameter in vla.llm.model.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(std=0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    return vla


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE on (H, L, hd) with the half-split convention of Llama, written out."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, half, dtype=torch.float64) * 2 / x.shape[-1])  # (hd/2,)
    angles = positions.double()[:, None] * inv_freq[None]  # (L, hd/2)
    cos, sin = angles.cos().float(), angles.sin().float()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def reference_logits(lm, embeds: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits (L, V) of one sequence `embeds` (L, D) through Llama's layers, computed by hand."""
    config = lm.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    theta, eps = config.rope_parameters["rope_theta"], config.rms_norm_eps
    h = embeds
    for layer in lm.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        x = rms_norm(h, layer.input_layernorm.weight, eps)
        q = (x @ attn.q_proj.weight.T).view(-1, heads, head_dim).transpose(0, 1)  # (H, L, hd)
        k = (x @ attn.k_proj.weight.T).view(-1, kv_heads, head_dim).transpose(0, 1)
        v = (x @ attn.v_proj.weight.T).view(-1, kv_heads, head_dim).transpose(0, 1)
        q, k = rotate(q, positions, theta), rotate(k, positions, theta)
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim)  # (H, L, L)
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(0, 1).reshape(len(h), -1)  # (L, H·hd)
        h = h + out @ attn.o_proj.weight.T
        x = rms_norm(h, layer.post_attention_layernorm.weight, eps)
        h = h + (torch.nn.functional.silu(x @ mlp.gate_proj.weight.T)
                 * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    return rms_norm(h, lm.model.norm.weight, eps) @ lm.lm_head.weight.T  # (L, V)


def hand_built_mask(prompt: int, slots: int) -> torch.Tensor:
    """(L, L): causal over the prompt; every slot sees the whole prompt and every slot."""
    length = prompt + slots
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        for j in range(length):
            allowed[i, j] = j <= i or (i >= prompt and j >= prompt)
    return allowed


def prompt_ids(model, text: str) -> list[int]:
    return model.tokenizer(f"In: What action should the robot take to {text}?\nOut:").input_ids


def head_batch(model, prompts: list[list[int]]) -> tuple[torch.Tensor, dict]:
    """Left-padded embeddings of prompt + K·A slots, and the batch the head reads."""
    head: ParallelActionTokenHead = model.head
    suffix = head.sequence()
    length = max(len(p) for p in prompts) + len(suffix.input_ids)
    ids = torch.full((len(prompts), length), model.tokenizer.pad_token_id)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    slots = torch.zeros(len(prompts), length, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        sequence = prompt + suffix.input_ids
        ids[row, length - len(sequence):] = torch.tensor(sequence)
        mask[row, length - len(sequence):] = 1
        slots[row, length - len(suffix.slots):] = torch.tensor(suffix.slots)
    return model.llm.embed(ids), {"attention_mask": mask, "action_slots": slots}


def test_slot_logits_equal_an_explicit_reference_with_a_hand_built_mask(model) -> None:
    prompts = [prompt_ids(model, "move to the red block"), prompt_ids(model, "go left")]
    assert len(prompts[0]) != len(prompts[1])  # the batch is left-padded
    with torch.no_grad():
        embeds, batch = head_batch(model, prompts)
        logits = model.head.slot_logits(model.llm, embeds, batch)  # (B, K·A, V)
        for row, prompt in enumerate(prompts):
            ids = torch.tensor(prompt)
            inputs = torch.cat([model.llm.embed(ids), torch.zeros(K * A, embeds.shape[-1])])  # slots: zero embeddings
            allowed = hand_built_mask(len(prompt), K * A)
            expected = reference_logits(model.llm.model, inputs, allowed, torch.arange(len(inputs)))[len(prompt):]
            torch.testing.assert_close(logits[row], expected, atol=2e-4, rtol=2e-4)
        # a mask that lets the slots see only the past (causal) gives other logits: the test can tell
        causal = reference_logits(model.llm.model, inputs, hand_built_mask(len(prompt) + K * A, 0),
                                  torch.arange(len(inputs)))[len(prompt):]
        assert (causal - logits[-1]).abs().max() > 1e-2


def test_prompt_logits_do_not_change_when_slots_are_appended(model) -> None:
    prompt = prompt_ids(model, "move to the red block")
    with torch.no_grad():
        alone = model.llm.model(input_ids=torch.tensor([prompt])).logits[0]  # (P, V), the LLM's own causal pass
        embeds, batch = head_batch(model, [prompt])
        slots = batch["action_slots"]
        from vlx.heads.one_pass import block_attention_mask, mask_positions

        inputs = embeds.masked_fill(slots[..., None], 0.0)
        hidden = model.llm.hidden_states(inputs, block_attention_mask(batch["attention_mask"], slots, embeds.dtype),
                                         mask_positions(batch["attention_mask"]))
        with_slots = model.llm.output_layer()(hidden)[0, : len(prompt)]
    torch.testing.assert_close(with_slots, alone, atol=1e-4, rtol=1e-4)


def test_decode_is_the_argmax_over_the_action_tokens(model) -> None:
    codec = model.head.codec
    with torch.no_grad():
        embeds, batch = head_batch(model, [prompt_ids(model, "move to the red block")])
        hidden = model.llm.hidden_states(embeds.masked_fill(batch["action_slots"][..., None], 0.0),
                                         batch["attention_mask"])
        model.llm.output_layer().weight[5] = 100 * hidden[0, -K * A:].mean(0)  # a text token that wins everywhere
        logits = model.head.slot_logits(model.llm, embeds, batch)[0]  # (K·A, V)
        chunk = model.head.decode(model.llm, embeds, batch)[0]  # (K, A)
    ids = logits[:, codec.first_id : codec.top_id].argmax(-1) + codec.first_id
    assert chunk.shape == (K, A) and (logits.argmax(-1) == 5).all()  # unconstrained, every slot would say token 5
    np.testing.assert_array_equal(chunk.reshape(-1).numpy(), codec.decode(ids))


def test_training_loss_covers_the_real_steps_only(model) -> None:
    from vlx.data.collate import Collator

    codec = model.head.codec
    chunk = np.array([[0.5, -0.5, 1.0], [0.0, 0.2, -1.0]])  # (K, A)
    prompt = prompt_ids(model, "move to the red block")
    items = []
    for real in ([True, True], [True, False]):
        suffix = model.head.sequence(chunk, np.array(real))
        items.append({"id": str(real), "input_ids": torch.tensor(prompt + suffix.input_ids), "pixel_values": None,
                      "labels": torch.tensor([-100] * len(prompt) + suffix.labels),
                      "action_slots": torch.tensor([False] * len(prompt) + suffix.slots),
                      "actions": torch.tensor(chunk, dtype=torch.float32), "action_mask": torch.tensor(real)})
    assert items[1]["labels"].tolist()[-A:] == [-100] * A  # the padded step carries no label
    assert items[0]["labels"].tolist()[-2 * A:] == codec.encode(chunk).reshape(-1).tolist()
    batch = Collator(model.tokenizer.pad_token_id)(items)
    out = model(batch)
    logits = out.logits  # (B, K·A, V)
    labels = torch.tensor(codec.encode(chunk).reshape(-1))
    expected = torch.cat([torch.nn.functional.cross_entropy(logits[0], labels, reduction="none"),
                          torch.nn.functional.cross_entropy(logits[1, :A], labels[:A], reduction="none")]).mean()
    torch.testing.assert_close(out.loss, expected)
    assert set(out.metrics) == {"token_accuracy", "action_accuracy", "action_l1"}
