"""LoRA stage: base LLM weights stay frozen, adapters and projector train, merging keeps the outputs,
and the saved checkpoint is a plain model."""

from __future__ import annotations

import pytest
import torch

from vlx.builder import build_model
from vlx.checkpoint import load, save_checkpoint
from vlx.errors import ConfigError
from vlx.training.lora import add_lora, merge_lora
from vlx.training.stages import apply_stage


def text_batch(model) -> dict:
    ids = model.prompt_ids("what colour is the circle?", has_image=False)[None]  # (1, L)
    labels = ids.clone()
    labels[:, :3] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "ids": ["s0"]}


def test_lora_trains_adapters_only_and_merges_exactly(tiny_cfg: dict, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model({**tiny_cfg, "prompt": {"name": "vicuna"}})
    base = {name: p.detach().clone() for name, p in model.llm.model.named_parameters()}
    apply_stage(model, ["projector"], allow_none=True)
    add_lora(model, {"r": 4, "alpha": 8}, "stages.lora.lora")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("projector.") for name in trainable)
    assert (any(".q_proj.lora_A" in name for name in trainable)
            and any(".down_proj.lora_B" in name for name in trainable))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = text_batch(model)
    for _ in range(3):
        model(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in model.llm.model.named_parameters():  # peft names: base_model.model.<name>, base_layer
        if "lora_" not in name:
            original = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(p, base[original]), name
    model.eval()
    with torch.no_grad():
        before = model(batch).logits
        assert merge_lora(model) and not merge_lora(model)
        after = model(batch).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert not any("lora_" in name for name, _ in model.named_parameters())
    changed = [n for n, p in model.llm.model.named_parameters() if not torch.equal(p, base[n])]
    assert any("q_proj" in n for n in changed)  # the merged adapters changed the weights they wrap
    loaded = load(save_checkpoint(model, tmp_path / "merged"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, after)


def test_lora_settings_are_checked(tiny_model) -> None:
    with pytest.raises(ConfigError, match=r"stages.x.lora.rank.*Did you mean 'r'"):
        add_lora(tiny_model, {"rank": 4}, "stages.x.lora")
    with pytest.raises(ConfigError, match="rank must be at least 1"):
        add_lora(tiny_model, {"r": 0}, "stages.x.lora")
    with pytest.raises(ConfigError, match="stages.x.lora"):
        add_lora(tiny_model, {"target_modules": ["no_such_layer"]}, "stages.x.lora")
