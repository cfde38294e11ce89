"""The action-token head: added tokens, loss and metrics on action positions, constrained KV-cached
decoding (equal to a plain recompute-everything loop), predict_action with statistics, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlx.builder import build_model
from vlx.checkpoint import load, save_checkpoint
from vlx.errors import ConfigError, DataError
from vlx.heads.action import ActionTokenHead
from vlx.heads.action_decoding import decode_action_tokens
from vlx.heads.instruction import vla_question
from vlx.llm.prompts import IGNORE_INDEX


@pytest.fixture()
def vla(tiny_vla):
    return tiny_vla


def test_new_tokens_are_added_once_with_consecutive_ids(vla) -> None:
    codec = vla.head.codec
    assert codec.top_id - codec.first_id == 256
    assert vla.tokenizer.convert_ids_to_tokens(codec.first_id) == "<act_0>"
    rows = vla.llm.model.get_input_embeddings().weight.shape[0]
    assert rows >= len(vla.tokenizer) and rows % 64 == 0
    again = ActionTokenHead(action_dim=3, llm=vla.llm, tokens="new")  # tokens exist: same ids, no growth
    assert again.codec.first_id == codec.first_id
    assert vla.llm.model.get_input_embeddings().weight.shape[0] == rows


def test_reuse_last_uses_the_base_vocabulary(tiny_cfg: dict) -> None:
    model = build_model({**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 7}, "prompt": {"name": "pure"}})
    assert model.head.codec.top_id == model.tokenizer.vocab_size
    with pytest.raises(ConfigError, match="base_vocab_size=999"):
        ActionTokenHead(action_dim=7, llm=model.llm, base_vocab_size=999)


def test_loss_and_metrics_cover_the_action_positions(vla) -> None:
    codec = vla.head.codec
    eos = vla.tokenizer.eos_token_id
    vocab = vla.llm.model.get_input_embeddings().weight.shape[0]
    action_ids = [codec.first_id + 5, codec.first_id + 100, codec.first_id + 200]
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, *action_ids, eos]])  # (1, 6)
    logits = torch.zeros(1, 6, vocab)
    for position, target in enumerate([*action_ids, eos]):  # position t predicts label t+1
        logits[0, position + 1, target] = 50.0
    out = vla.head.score(logits, labels)
    assert out.metrics["action_accuracy"] == 1.0 and out.metrics["action_l1"] == 0.0
    assert out.loss < 1e-6
    logits[0, 1, action_ids[0]] = 0.0  # the first action token is now predicted two bins off
    logits[0, 1, action_ids[0] + 2] = 50.0
    out = vla.head.score(logits, labels)
    assert out.metrics["action_accuracy"] == pytest.approx(2 / 3)
    assert out.metrics["action_l1"] == pytest.approx(2 * codec.bin_width / 3, rel=1e-5)
    text = vla.head.score(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, 7, eos]]))  # a text batch
    assert set(text.metrics) == {"token_accuracy"} and torch.isfinite(text.loss)
    with pytest.raises(DataError, match="no supervised token"):
        vla.head.score(logits, torch.full((1, 6), IGNORE_INDEX))


def naive_constrained_greedy(model, embeds: torch.Tensor, first: int, top: int, steps: int) -> list[int]:
    """Reference: recompute the whole (unpadded) sequence at every step, argmax over the action ids."""
    chosen = []
    for _ in range(steps):
        logits = model.llm.model(inputs_embeds=embeds, use_cache=False).logits[0, -1, first:top]
        token = int(logits.argmax()) + first
        chosen.append(token)
        embeds = torch.cat([embeds, model.llm.embed(torch.tensor([[token]]))], dim=1)
    return chosen


def test_cached_decoding_equals_recompute_loop_on_a_padded_batch(vla) -> None:
    codec = vla.head.codec
    with torch.no_grad():
        for layer in vla.llm.model.model.layers:  # sharper logits so argmax ties cannot hide a bug
            layer.mlp.down_proj.weight.mul_(20)
        prompts = [vla.prompt_ids(vla_question(q), has_image=False) for q in ("go left", "move to the red block now")]
        singles = [naive_constrained_greedy(vla, vla.llm.embed(p[None]), codec.first_id, codec.top_id, 5)
                   for p in prompts]
        length = max(len(p) for p in prompts)
        ids = torch.full((2, length), vla.tokenizer.pad_token_id)
        mask = torch.zeros(2, length, dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, length - len(p):], mask[row, length - len(p):] = p, 1
        batched = decode_action_tokens(vla.llm.model, vla.llm.embed(ids), mask, codec.first_id, codec.top_id, 5)
    assert batched.tolist() == singles
    assert len(set(singles[0]) | set(singles[1])) > 1  # not a constant output


def test_predict_action_unnormalises_with_the_selected_statistics(vla) -> None:
    images = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8) for i in range(3)]
    instructions = ["move to the red block", "move to the blue block", "stop"]
    batch = vla.predict_actions(images, instructions)
    assert batch.shape == (3, 3) and batch.dtype == np.float32
    single = vla.predict_action(images[1], instructions[1], unnorm_key="toy")
    np.testing.assert_allclose(single, batch[1], atol=1e-5)
    stats = vla.action_stats["toy"]
    normalized = stats.normalize(batch)
    assert np.all(np.abs(normalized[:, :2]) <= 1 + 1e-6)  # normalised dims decode inside [q01, q99]
    codec = vla.head.codec
    assert np.isclose(normalized[..., None], codec.centres, atol=1e-4).any(-1).all()  # each value is a bin centre
    vla.action_stats["other"] = stats
    with pytest.raises(ConfigError, match="unnorm_key"):
        vla.predict_action(images[0], instructions[0])
    with pytest.raises(ConfigError, match="nope"):
        vla.predict_action(images[0], instructions[0], unnorm_key="nope")


def test_text_models_have_no_predict_action(tiny_model) -> None:
    with pytest.raises(ConfigError, match="not an action head"):
        tiny_model.predict_action(np.zeros((48, 48, 3), dtype=np.uint8), "move")


def test_checkpoint_keeps_action_tokens_and_statistics(vla, tmp_path) -> None:
    image = np.random.default_rng(7).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    before = vla.predict_action(image, "move to the green block")
    loaded = load(save_checkpoint(vla, tmp_path / "vla"))
    assert loaded.unnorm_keys == ["toy"]
    np.testing.assert_array_equal(loaded.action_stats["toy"].q99, vla.action_stats["toy"].q99)
    assert loaded.head.codec.first_id == vla.head.codec.first_id
    np.testing.assert_allclose(loaded.predict_action(image, "move to the green block"), before, atol=1e-6)
