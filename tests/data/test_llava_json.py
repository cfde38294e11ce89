"""Tests of LlavaJsonDataset: loading the shapes JSON, tokenised items, and errors that name file and sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlx.data.llava_json import LlavaJsonDataset
from vlx.errors import ConfigError, DataError
from vlx.llm.formats import PlainFormat, VicunaFormat
from vlx.llm.prompts import IGNORE_INDEX
from vlx.vision.transforms import build_image_transform

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 48
N_IMAGE_TOKENS = 36  # (48 / 8) ** 2 patches of the tiny CLIP


@pytest.fixture(scope="module")
def transform():
    return build_image_transform("letterbox", SIZE, MEAN, STD)


def _dataset(path, image_dir, tokenizer, transform, fmt=None, **kwargs) -> LlavaJsonDataset:
    return LlavaJsonDataset(
        json_path=str(path), image_dir=str(image_dir), prompt_format=fmt or VicunaFormat(), tokenizer=tokenizer,
        image_transform=transform, num_image_tokens=N_IMAGE_TOKENS, **kwargs,
    )


def _write(tmp_path: Path, records, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def _sample(sample_id: str, question: str = "<image>\nHow many shapes are there?", answer: str = "3",
            image: str | None = "images/train-00000.png") -> dict:
    record = {"id": sample_id, "conversations": [{"from": "human", "value": question},
                                                 {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
    return record


def _label_text(tokenizer, labels) -> str:
    return tokenizer.decode([int(x) for x in labels if int(x) != IGNORE_INDEX], skip_special_tokens=False).lstrip()


def _image_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<image>")


def test_loads_shapes_questions_with_expected_items(shapes, tokenizer, transform) -> None:
    records = json.loads(shapes.questions("train").read_text(encoding="utf-8"))
    dataset = _dataset(shapes.questions("train"), shapes.image_dir, tokenizer, transform)
    assert len(dataset) == len(records) == 80
    for index in (0, 1, 79):
        item = dataset[index]
        assert item["id"] == records[index]["id"]
        ids, labels = item["input_ids"], item["labels"]
        assert ids.dtype == labels.dtype == torch.long
        assert ids.shape == labels.shape and ids.ndim == 1
        slots = (ids == _image_id(tokenizer)).nonzero().flatten().tolist()
        assert len(slots) == N_IMAGE_TOKENS and slots == list(range(slots[0], slots[0] + N_IMAGE_TOKENS))
        assert (labels[slots] == IGNORE_INDEX).all()
        assert ids[0].item() == tokenizer.bos_token_id
        assert item["pixel_values"].shape == (3, SIZE, SIZE) and item["pixel_values"].dtype == torch.float32
        assert _label_text(tokenizer, labels) == records[index]["conversations"][1]["value"] + "</s>"


def test_every_shapes_sample_trains_exactly_its_answer(shapes, tokenizer, transform) -> None:
    records = json.loads(shapes.questions("val").read_text(encoding="utf-8"))
    dataset = _dataset(shapes.questions("val"), shapes.image_dir, tokenizer, transform)
    for record, sample in zip(records, dataset.samples, strict=True):
        assert sample.sample_id == record["id"]
        assert sample.image == shapes.image_dir / record["image"]
        assert _label_text(tokenizer, sample.labels) == record["conversations"][1]["value"] + "</s>"


def test_plain_captions_put_the_image_after_bos_and_train_the_caption(shapes, tokenizer, transform) -> None:
    records = json.loads(shapes.captions("train").read_text(encoding="utf-8"))
    dataset = _dataset(shapes.captions("train"), shapes.image_dir, tokenizer, transform, fmt=PlainFormat(), limit=5)
    assert len(dataset) == 5
    item = dataset[2]
    assert item["input_ids"][0].item() == tokenizer.bos_token_id
    assert item["input_ids"][1 : 1 + N_IMAGE_TOKENS].tolist() == [_image_id(tokenizer)] * N_IMAGE_TOKENS
    assert _label_text(tokenizer, item["labels"]) == records[2]["conversations"][1]["value"] + "\n"  # LLaVA's end
    assert (item["labels"][1 + N_IMAGE_TOKENS :] != IGNORE_INDEX).all()  # everything after the image is caption


def test_text_only_sample_has_no_pixel_values(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("text-1", question="How many shapes are there?", image=None),
                             _sample("img-1")])
    dataset = _dataset(path, shapes.image_dir, tokenizer, transform)
    text, image = dataset[0], dataset[1]
    assert text["id"] == "text-1" and text["pixel_values"] is None
    assert _image_id(tokenizer) not in text["input_ids"].tolist()
    assert _label_text(tokenizer, text["labels"]) == "3</s>"
    assert image["pixel_values"].shape == (3, SIZE, SIZE)
    assert image["input_ids"].tolist().count(_image_id(tokenizer)) == N_IMAGE_TOKENS
    assert _label_text(tokenizer, image["labels"]) == "3</s>"


def test_missing_id_uses_the_sample_index(shapes, tokenizer, transform, tmp_path) -> None:
    record = _sample("x")
    del record["id"]
    dataset = _dataset(_write(tmp_path, [record]), shapes.image_dir, tokenizer, transform)
    assert dataset[0]["id"] == "#0"


def _raises(match_parts: list[str], build) -> DataError:
    with pytest.raises(DataError) as info:
        build()
    message = str(info.value)
    for part in match_parts:
        assert part in message, (part, message)
    return info.value


def test_missing_image_file_names_file_sample_and_image(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("ok-0"), _sample("lost-1", image="images/nope.png")])
    _raises([str(path), "sample lost-1", str(shapes.image_dir / "images/nope.png"), "not found"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform))


@pytest.mark.parametrize(
    "conversations",
    [
        [{"value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
        [{"from": "human", "value": "<image>\nq"}, {"from": "bot", "value": "a"}],
        [{"from": "human", "value": ["<image>", "q"]}, {"from": "gpt", "value": "a"}],
        [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": 3}],
        [{"from": "human", "value": "<image>\nq"}, "a"],
    ],
    ids=["missing-from", "role-bot", "value-list", "value-int", "message-not-object"],
)
def test_malformed_message_names_file_sample_and_index(shapes, tokenizer, transform, tmp_path, conversations) -> None:
    bad_index = next(i for i, m in enumerate(conversations)
                     if not isinstance(m, dict) or m.get("from") not in ("human", "gpt")
                     or not isinstance(m["value"], str))
    path = _write(tmp_path, [_sample("ok-0"), {"id": "bad-1", "image": "images/train-00000.png",
                                               "conversations": conversations}])
    _raises([str(path), "sample bad-1", f"conversations[{bad_index}] must be"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform))


@pytest.mark.parametrize("conversations", [[], None, "hello"], ids=["empty", "null", "string"])
def test_empty_or_missing_conversations_name_file_and_sample(shapes, tokenizer, transform, tmp_path,
                                                              conversations) -> None:
    path = _write(tmp_path, [{"id": "empty-0", "image": "images/train-00000.png", "conversations": conversations}])
    _raises([str(path), "sample empty-0", "'conversations' must be a non-empty list"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform))


def test_unanswered_last_turn_is_dropped_and_counted(shapes, tokenizer, transform, tmp_path, capsys) -> None:
    record = _sample("open-2")
    complete = json.loads(json.dumps(record))
    record["conversations"].append({"from": "human", "value": "And?"})
    only_question = {"id": "open-3", "image": record["image"], "conversations": record["conversations"][:1]}
    path = _write(tmp_path, [record, only_question, complete])
    dataset = _dataset(path, shapes.image_dir, tokenizer, transform)
    assert len(dataset) == 2  # open-3 has no answer at all: skipped
    assert dataset[0]["input_ids"].tolist() == dataset[1]["input_ids"].tolist()  # open-2 without "And?"
    assert dataset[0]["labels"].tolist() == dataset[1]["labels"].tolist()
    assert capsys.readouterr().err.strip() == (
        f"{path}: 2 conversation(s) end with a user turn that has no answer: that turn dropped in 1, 1 skipped (no "
        "answer left); on_unanswered=error stops at them instead")


def test_unanswered_last_turn_with_on_unanswered_error_names_file_and_sample(shapes, tokenizer, transform,
                                                                             tmp_path) -> None:
    record = _sample("open-2")
    record["conversations"].append({"from": "human", "value": "And?"})
    path = _write(tmp_path, [record])
    _raises([str(path), "sample open-2", "the last turn is the user's and has no answer"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform, on_unanswered="error"))
    with pytest.raises(ConfigError, match=r"on_unanswered='warn'; expected one of skip, error"):
        _dataset(path, shapes.image_dir, tokenizer, transform, on_unanswered="warn")


def test_json_syntax_error_names_file_and_line(shapes, tokenizer, transform, tmp_path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n {"id": "a",\n  "conversations": [}\n]\n', encoding="utf-8")
    error = _raises([f"{path}:3:", "invalid JSON"], lambda: _dataset(path, shapes.image_dir, tokenizer, transform))
    assert re.search(re.escape(str(path)) + r":3:\d+: invalid JSON", str(error))


def test_missing_json_file_and_non_list_json(shapes, tokenizer, transform, tmp_path) -> None:
    missing = tmp_path / "absent.json"
    _raises([str(missing), "dataset file not found"], lambda: _dataset(missing, shapes.image_dir, tokenizer, transform))
    obj = _write(tmp_path, {"id": "x"}, name="object.json")
    _raises([str(obj), "expected a JSON list of samples, got dict"],
            lambda: _dataset(obj, shapes.image_dir, tokenizer, transform))
    not_object = _write(tmp_path, [_sample("ok"), "text"], name="items.json")
    _raises([str(not_object), "sample #1 is not a JSON object"],
            lambda: _dataset(not_object, shapes.image_dir, tokenizer, transform))


def test_image_sample_without_marker_names_file_and_sample(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("nomark-3", question="How many shapes are there?")])
    _raises([str(path), "sample nomark-3", "found 0 image slots"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform))


def test_marker_in_text_only_sample_names_file_and_sample(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("mark-4", image=None)])
    _raises([str(path), "sample mark-4", "found 1 image slots"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform))


def test_truncation_that_cuts_the_image_is_an_error(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("long-5")])
    full = _dataset(path, shapes.image_dir, tokenizer, transform).samples[0]
    last_slot = max(i for i, t in enumerate(full.input_ids) if t == _image_id(tokenizer))
    _raises([str(path), "sample long-5", f"{len(full.input_ids)} tokens exceed max_length={last_slot}"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform, max_length=last_slot))


def test_truncation_that_cuts_every_answer_is_an_error(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("long-6")])
    full = _dataset(path, shapes.image_dir, tokenizer, transform).samples[0]
    first_label = next(i for i, x in enumerate(full.labels) if x != IGNORE_INDEX)
    _raises([str(path), "sample long-6", "truncating would cut the image or every answer"],
            lambda: _dataset(path, shapes.image_dir, tokenizer, transform, max_length=first_label))


def test_truncation_that_keeps_image_and_part_of_the_answer_is_allowed(shapes, tokenizer, transform, tmp_path) -> None:
    path = _write(tmp_path, [_sample("long-7", answer="a red circle at the top left")])
    full = _dataset(path, shapes.image_dir, tokenizer, transform).samples[0]
    first_label = next(i for i, x in enumerate(full.labels) if x != IGNORE_INDEX)
    cut = _dataset(path, shapes.image_dir, tokenizer, transform, max_length=first_label + 1).samples[0]
    assert cut.input_ids == full.input_ids[: first_label + 1]
    assert cut.labels == full.labels[: first_label + 1]
    assert cut.input_ids.count(_image_id(tokenizer)) == N_IMAGE_TOKENS


def test_corrupt_image_raises_on_getitem_naming_the_file(shapes, tokenizer, transform, tmp_path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x00garbage, not a PNG\xff" * 20)
    path = _write(tmp_path, [_sample("corrupt-8", image="bad.png")])
    dataset = _dataset(path, tmp_path, tokenizer, transform)  # images are decoded lazily
    assert len(dataset) == 1
    _raises([str(path), "sample corrupt-8", str(tmp_path / "bad.png"), "could not be decoded"], lambda: dataset[0])


def test_truncated_png_raises_data_error(shapes, tokenizer, transform, tmp_path) -> None:
    data = (shapes.image_dir / "images/train-00000.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    dataset = _dataset(_write(tmp_path, [_sample("half-9", image="half.png")]), tmp_path, tokenizer, transform)
    _raises([str(tmp_path / "half.png"), "sample half-9"], lambda: dataset[0])


@pytest.mark.parametrize(("mode", "colour"), [("L", 90), ("RGBA", (200, 40, 10, 255)), ("P", None)])
def test_grayscale_rgba_and_palette_images_load_as_rgb(shapes, tokenizer, transform, tmp_path, mode, colour) -> None:
    image = Image.new(mode, (30, 60), colour if colour is not None else 5)
    image.save(tmp_path / f"img-{mode}.png")
    dataset = _dataset(_write(tmp_path, [_sample(f"mode-{mode}", image=f"img-{mode}.png")]), tmp_path, tokenizer,
                       transform)
    pixels = dataset[0]["pixel_values"]
    assert pixels.shape == (3, SIZE, SIZE) and pixels.dtype == torch.float32
    centre = pixels[:, SIZE // 2, SIZE // 2] * torch.tensor(STD) + torch.tensor(MEAN)  # (3,) in [0, 1]
    expected = image.convert("RGB").getpixel((15, 30))
    assert torch.allclose(centre, torch.tensor(expected, dtype=torch.float32) / 255, atol=1e-3)
