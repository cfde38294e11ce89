"""The composed VLM: visual-token splicing, loss, generation with KV cache, parameter counts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlx.data.collate import Collator
from vlx.errors import DataError
from vlx.llm.prompts import IGNORE_INDEX, Turn, expand_image_slot


def make_batch(model, questions_answers, with_image=True):
    items = []
    for i, (question, answer) in enumerate(questions_answers):
        text = f"<image>\n{question}" if with_image else question
        turns = [Turn("user", text), Turn("assistant", answer)]
        encoded = model.prompt_format.encode(turns, model.tokenizer, has_image=with_image)
        ids, labels = expand_image_slot(encoded.input_ids, encoded.labels, model.llm.image_token_id,
                                        model.vision.num_patches)
        items.append({
            "id": f"s{i}", "input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "pixel_values": torch.randn(3, 48, 48) if with_image else None,
        })
    return Collator(model.tokenizer.pad_token_id)(items)


def test_visual_tokens_replace_exactly_the_image_slots(tiny_model):
    batch = make_batch(tiny_model, [("What colour?", "red"), ("How many shapes are there?", "3")])
    embeds = tiny_model.embed(batch["input_ids"], batch["pixel_values"])  # (B, L, D)
    visual = tiny_model.projector(tiny_model.vision(batch["pixel_values"]))  # (B, N, D)
    slots = batch["input_ids"] == tiny_model.llm.image_token_id
    assert slots.sum() == 2 * tiny_model.vision.num_patches
    torch.testing.assert_close(embeds[slots], visual.reshape(-1, visual.shape[-1]))
    text = tiny_model.llm.embed(batch["input_ids"])
    torch.testing.assert_close(embeds[~slots], text[~slots])


def test_slot_count_mismatch_is_an_error(tiny_model):
    batch = make_batch(tiny_model, [("What colour?", "red")])
    with pytest.raises(DataError, match="image-slot tokens but 2 images"):
        tiny_model.embed(batch["input_ids"], torch.cat([batch["pixel_values"]] * 2))
    with pytest.raises(DataError, match="no pixel_values"):
        tiny_model.embed(batch["input_ids"], None)


def test_forward_loss_is_masked_cross_entropy(tiny_model):
    batch = make_batch(tiny_model, [("What colour?", "red"), ("Where?", "top left")])
    out = tiny_model(batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape == (*batch["input_ids"].shape, tiny_model.llm.model.config.vocab_size)
    predicted = logits[keep].argmax(-1)  # the metric recomputed from the logits and labels themselves
    assert float(out.metrics["token_accuracy"]) == pytest.approx((predicted == labels[keep]).float().mean().item())


def test_all_masked_batch_is_an_error_not_zero_loss(tiny_model):
    batch = make_batch(tiny_model, [("What colour?", "red")])
    batch["labels"][:] = IGNORE_INDEX
    with pytest.raises(DataError, match="no supervised token"):
        tiny_model(batch)


def test_generate_matches_greedy_loop_without_cache(tiny_model):
    """KV-cached generation gives the same tokens as recomputing the full sequence each step."""
    tiny_model.eval()
    image = Image.new("RGB", (48, 48), (200, 30, 30))
    ids = tiny_model.prompt_ids("What colour is the shape at the top?", has_image=True).unsqueeze(0)
    pixels = tiny_model.vision.image_transform(image).unsqueeze(0)
    embeds = tiny_model.embed(ids, pixels)
    tokens = []
    with torch.no_grad():
        for _ in range(6):
            logits = tiny_model.llm(embeds, torch.ones(embeds.shape[:2], dtype=torch.long))
            token = int(logits[0, -1].argmax())
            if token == tiny_model.tokenizer.eos_token_id:
                break
            tokens.append(token)
            embeds = torch.cat([embeds, tiny_model.llm.embed(torch.tensor([[token]]))], dim=1)
    expected = tiny_model.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    answers = tiny_model.generate([image], ["What colour is the shape at the top?"], max_new_tokens=6)
    assert answers == [expected]


def test_batched_generation_with_left_padding_matches_single(tiny_model):
    tiny_model.eval()
    images = [Image.new("RGB", (48, 48), (200, 30, 30)), Image.new("RGB", (40, 60), (30, 30, 200))]
    questions = ["What colour is the shape at the top left?", "How many shapes are there?"]
    batched = tiny_model.generate(images, questions, max_new_tokens=5)
    single = [tiny_model.generate([im], [q], max_new_tokens=5)[0] for im, q in zip(images, questions, strict=True)]
    assert batched == single


def test_parameter_counts_split_by_part(tiny_model):
    counts = tiny_model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in tiny_model.parameters())
    assert counts["total"] == sum(counts[f"{part}_total"] for part in ("vision", "projector", "llm", "head"))
    tiny_model.vision.requires_grad_(False)
    counts = tiny_model.parameter_counts()
    assert counts["frozen"] == counts["vision_total"]
    assert counts["trainable"] == counts["total"] - counts["vision_total"]
