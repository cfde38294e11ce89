"""Tests of batch collation: right/left padding of ids, labels and masks, and stacking of the images present."""

from __future__ import annotations

import pytest
import torch

from vlx.data.collate import Collator, pad_sequences
from vlx.data.llava_json import LlavaJsonDataset
from vlx.llm.formats import VicunaFormat
from vlx.llm.prompts import IGNORE_INDEX
from vlx.vision.transforms import build_image_transform

PAD = 3


def _item(sample_id: str, ids: list[int], labels: list[int] | None = None, image_value: float | None = None) -> dict:
    item = {
        "id": sample_id,
        "input_ids": torch.tensor(ids),
        "pixel_values": None if image_value is None else torch.full((3, 4, 4), image_value),
    }
    if labels is not None:
        item["labels"] = torch.tensor(labels)
    return item


def _items() -> list[dict]:
    return [
        _item("a", [1, 10, 11], [IGNORE_INDEX, 10, 11], image_value=0.5),
        _item("b", [1, 12, 13, 14, 15], [IGNORE_INDEX, IGNORE_INDEX, 13, 14, 15]),
        _item("c", [1, 16], [IGNORE_INDEX, 16], image_value=-2.0),
    ]


def test_right_padding_for_training() -> None:
    batch = Collator(pad_token_id=PAD)(_items())
    assert batch["ids"] == ["a", "b", "c"]
    assert batch["input_ids"].tolist() == [[1, 10, 11, PAD, PAD], [1, 12, 13, 14, 15], [1, 16, PAD, PAD, PAD]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, 10, 11, IGNORE_INDEX, IGNORE_INDEX],
        [IGNORE_INDEX, IGNORE_INDEX, 13, 14, 15],
        [IGNORE_INDEX, 16, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long


def test_left_padding_for_generation() -> None:
    batch = Collator(pad_token_id=PAD, padding_side="left")(_items())
    assert batch["input_ids"].tolist() == [[PAD, PAD, 1, 10, 11], [1, 12, 13, 14, 15], [PAD, PAD, PAD, 1, 16]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch["labels"].tolist()[2] == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 16]


def test_generation_items_without_labels_give_no_labels_key() -> None:
    items = [_item("a", [1, 10]), _item("b", [1, 10, 11, 12])]
    batch = Collator(pad_token_id=PAD, padding_side="left")(items)
    assert "labels" not in batch
    assert batch["input_ids"].tolist() == [[PAD, PAD, 1, 10], [1, 10, 11, 12]]


def test_pixel_values_stack_only_samples_with_images_in_order() -> None:
    batch = Collator(pad_token_id=PAD)(_items())
    pixels = batch["pixel_values"]
    assert pixels.shape == (2, 3, 4, 4)
    assert torch.equal(pixels[0], torch.full((3, 4, 4), 0.5))
    assert torch.equal(pixels[1], torch.full((3, 4, 4), -2.0))


def test_pixel_values_none_when_no_sample_has_an_image() -> None:
    items = [_item("a", [1, 10], [IGNORE_INDEX, 10]), _item("b", [1], [IGNORE_INDEX])]
    batch = Collator(pad_token_id=PAD)(items)
    assert batch["pixel_values"] is None
    assert batch["input_ids"].tolist() == [[1, 10], [1, PAD]]


def test_equal_lengths_need_no_padding() -> None:
    items = [_item("a", [1, 2, 3], [IGNORE_INDEX, 2, 3]), _item("b", [1, 4, 5], [IGNORE_INDEX, 4, 5])]
    for side in ("right", "left"):
        batch = Collator(pad_token_id=PAD, padding_side=side)(items)
        assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 4, 5]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]


@pytest.mark.parametrize(("side", "expected"), [("right", [[7, 8], [9, 0]]), ("left", [[7, 8], [0, 9]])])
def test_pad_sequences(side, expected) -> None:
    out = pad_sequences([torch.tensor([7, 8]), torch.tensor([9])], 0, side)
    assert out.tolist() == expected


def test_collates_real_dataset_items(shapes, tokenizer) -> None:
    transform = build_image_transform("letterbox", 48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    dataset = LlavaJsonDataset(str(shapes.questions("val")), str(shapes.image_dir), VicunaFormat(), tokenizer,
                               transform, num_image_tokens=36, limit=4)
    items = [dataset[i] for i in range(4)]
    batch = Collator(pad_token_id=tokenizer.pad_token_id)(items)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape == batch["labels"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["pixel_values"].shape == (4, 3, 48, 48)
    for row, item in enumerate(items):
        n = lengths[row]
        assert torch.equal(batch["input_ids"][row, :n], item["input_ids"])
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert torch.equal(batch["pixel_values"][row], item["pixel_values"])
