"""Tests of the chat prompt formats (Prismatic's pure, llama2-chat, mistral-instruct, phi, qwen): templates, labels,
prefixes. Token-for-token agreement with LLaVA's, Prismatic's and OpenVLA's own code: test_reference_prompts.py."""

from __future__ import annotations

from typing import Any

import pytest

from vlx.errors import ConfigError, DataError
from vlx.llm.chat_formats import LLAMA2_SYSTEM
from vlx.llm.prompts import IGNORE_INDEX, PromptFormat, Turn, label_runs
from vlx.registry import PROMPT_FORMATS

Q1 = "Where is the red circle?"
A1 = "a red circle at the top left"
Q2 = "How many shapes are there?"
A2 = "three shapes"
CHAT_FORMATS = ["pure", "llama2-chat", "mistral-instruct", "phi", "qwen"]

# The full rendered text of ONE_TURN and TWO_TURNS with this tokenizer (eos = "</s>"): the formats' templates.
TEMPLATES: dict[str, tuple[str, str]] = {
    "pure": (
        "In: <image>\nWhere is the red circle?\nOut: a red circle at the top left</s>",
        "In: <image>\nWhere is the red circle?\nOut: a red circle at the top left</s>"
        "In: How many shapes are there?\nOut: three shapes</s>",
    ),
    "llama2-chat": (
        f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n<image>\nWhere is the red circle? [/INST] "
        "a red circle at the top left </s>",
        f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n<image>\nWhere is the red circle? [/INST] "
        "a red circle at the top left </s><s>[INST] How many shapes are there? [/INST] three shapes </s>",
    ),
    "mistral-instruct": (
        "[INST] <image>\nWhere is the red circle? [/INST] a red circle at the top left</s>",
        "[INST] <image>\nWhere is the red circle? [/INST] a red circle at the top left</s>"
        "[INST] How many shapes are there? [/INST] three shapes</s>",
    ),
    "phi": (
        "Input: <image>\nWhere is the red circle?\nOutput: a red circle at the top left</s>",
        "Input: <image>\nWhere is the red circle?\nOutput: a red circle at the top left</s>"
        "\nInput: How many shapes are there?\nOutput: three shapes</s>",
    ),
    "qwen": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhere is the red circle?<|im_end|>\n"
        "<|im_start|>assistant\na red circle at the top left</s>",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhere is the red circle?<|im_end|>\n"
        "<|im_start|>assistant\na red circle at the top left</s>\n"
        "<|im_start|>user\nHow many shapes are there?<|im_end|>\n"
        "<|im_start|>assistant\nthree shapes</s>",
    ),
}
# What follows each answer inside its target (the end marker, with this tokenizer's eos).
END = {"pure": "</s>", "llama2-chat": " </s>", "mistral-instruct": "</s>", "phi": "</s>", "qwen": "</s>"}


def _build(name: str, **kwargs: Any) -> PromptFormat:
    return PROMPT_FORMATS.build({"name": name, **kwargs}, "prompt")


def _turns(n: int, marker: bool = True) -> list[Turn]:
    first = f"<image>\n{Q1}" if marker else Q1
    turns = [Turn("user", first), Turn("assistant", A1), Turn("user", Q2), Turn("assistant", A2)]
    return turns[: 2 * n]


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def _decoded_template(fmt: PromptFormat, name: str, n_turns: int) -> str:
    """The template as the ids decode: Prismatic tokenises each turn alone, so a later user turn starts with the
    tokenizer's word-boundary space (the LLaVA-style formats tokenise the conversation as one string)."""
    template = TEMPLATES[name][n_turns - 1]
    return template.replace("</s>In:", "</s> In:") if fmt.tokenization == "turns" else template


def _image_id(tokenizer: Any) -> int:
    return tokenizer.convert_tokens_to_ids("<image>")


@pytest.mark.parametrize("n_turns", [1, 2], ids=["one-turn", "two-turns"])
@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_labelled_runs_decode_to_each_answer_and_its_end_marker(tokenizer, name, n_turns) -> None:
    encoded = _build(name).encode(_turns(n_turns), tokenizer, has_image=True, sample_id="s0")
    assert len(encoded.input_ids) == len(encoded.labels)
    runs = label_runs(encoded.labels)
    answers = [A1, A2][:n_turns]
    assert [_decode(tokenizer, encoded.labels[a:b]).lstrip() for a, b in runs] == [a + END[name] for a in answers]
    assert [encoded.labels[a:b] for a, b in runs] == [encoded.input_ids[a:b] for a, b in runs]
    assert runs[-1][1] == len(encoded.input_ids) and encoded.input_ids[-1] == tokenizer.eos_token_id
    # BOS, system prompt, user turns and role tags carry no loss
    unlabelled = _decode(tokenizer, [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True)
                                     if label == IGNORE_INDEX])
    for piece in [Q1, Q2][:n_turns]:
        assert piece in unlabelled
    for answer in answers:
        assert answer not in unlabelled
    assert encoded.labels[0] == IGNORE_INDEX


@pytest.mark.parametrize("n_turns", [1, 2], ids=["one-turn", "two-turns"])
@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_rendered_text_is_the_exact_template(tokenizer, name, n_turns) -> None:
    fmt = _build(name)
    segments = fmt.render(_turns(n_turns), tokenizer.eos_token)
    if fmt.tokenization == "turns":  # Prismatic: each turn tokenised alone, the user's rstripped (the Llama
        # tokenizer's dummy prefix puts the space back in the ids, checked below)
        assert "".join(s.text if s.target else s.text + " " for s in segments) == TEMPLATES[name][n_turns - 1]
        lead = ""
    else:
        assert "".join(s.text for s in segments) == TEMPLATES[name][n_turns - 1]
        lead = "" if name == "qwen" else " "  # the separating space starts the target (never ends the prompt)
    assert [s.text for s in segments if s.target] == [f"{lead}{a}{END[name]}" for a in [A1, A2][:n_turns]]
    ids = fmt.encode(_turns(n_turns), tokenizer, has_image=True).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert _decode(tokenizer, ids[1:]).lstrip() == _decoded_template(fmt, name, n_turns)


@pytest.mark.parametrize("answer_index", [0, 1], ids=["first-answer", "second-answer"])
@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_generation_ids_are_the_training_prefix_before_the_answer(tokenizer, name, answer_index) -> None:
    fmt = _build(name)
    train = fmt.encode(_turns(2), tokenizer, has_image=True)
    answer_start = label_runs(train.labels)[answer_index][0]
    generation = fmt.generation_ids(_turns(2)[: 2 * answer_index + 1], tokenizer, has_image=True)
    assert generation == train.input_ids[:answer_start]
    assert train.labels[len(generation)] != IGNORE_INDEX and train.labels[len(generation) - 1] == IGNORE_INDEX


@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_marker_placement_gives_one_image_slot_in_the_first_user_turn(tokenizer, name) -> None:
    encoded = _build(name).encode(_turns(2), tokenizer, has_image=True)
    image_id = _image_id(tokenizer)
    assert encoded.input_ids.count(image_id) == 1
    at = encoded.input_ids.index(image_id)
    assert encoded.labels[at] == IGNORE_INDEX
    assert _decode(tokenizer, encoded.input_ids[at + 1 :]).startswith(f"\n{Q1}")


@pytest.mark.parametrize("marker", [True, False], ids=["marker-in-text", "no-marker"])
@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_after_bos_placement_puts_the_slot_right_after_bos(tokenizer, name, marker) -> None:
    encoded = _build(name, image_placement="after-bos").encode(_turns(2, marker), tokenizer, has_image=True)
    image_id = _image_id(tokenizer)
    assert encoded.input_ids[:2] == [tokenizer.bos_token_id, image_id]
    assert encoded.input_ids.count(image_id) == 1
    assert encoded.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    expected = _decoded_template(_build(name), name, 2).replace("<image>\n", "")
    assert _decode(tokenizer, encoded.input_ids[2:]).lstrip() == expected
    runs = label_runs(encoded.labels)
    assert [_decode(tokenizer, encoded.labels[a:b]).lstrip() for a, b in runs] == [A1 + END[name], A2 + END[name]]


@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_text_only_sample_has_no_image_slot(tokenizer, name) -> None:
    encoded = _build(name).encode(_turns(1, marker=False), tokenizer, has_image=False)
    assert _image_id(tokenizer) not in encoded.input_ids


def test_registry_has_every_prompt_format() -> None:
    assert {"plain", "vicuna", *CHAT_FORMATS} <= set(PROMPT_FORMATS.names())


def test_llama2_system_prompt_from_config_goes_in_the_first_turn_only(tokenizer) -> None:
    fmt = PROMPT_FORMATS.build({"name": "llama2-chat", "system": "S"}, "prompt")
    text = "".join(s.text for s in fmt.render(_turns(2), "</s>"))
    assert text == (
        "[INST] <<SYS>>\nS\n<</SYS>>\n\n<image>\nWhere is the red circle? [/INST] a red circle at the top left </s>"
        "<s>[INST] How many shapes are there? [/INST] three shapes </s>"
    )
    encoded = fmt.encode(_turns(2), tokenizer, has_image=True)
    assert encoded.input_ids.count(tokenizer.bos_token_id) == 2  # encode's BOS and the second turn's <s>
    assert all(encoded.labels[i] == IGNORE_INDEX for i, t in enumerate(encoded.input_ids)
               if t == tokenizer.bos_token_id)


def test_llama2_without_system_or_inter_turn_bos_is_prismatic_joining() -> None:
    fmt = _build("llama2-chat", system="", bos="")
    assert "".join(s.text for s in fmt.render(_turns(2, marker=False), "</s>")) == (
        "[INST] Where is the red circle? [/INST] a red circle at the top left </s>"
        "[INST] How many shapes are there? [/INST] three shapes </s>"
    )


def test_mistral_system_prompt_is_prepended_to_the_first_user_message() -> None:
    fmt = _build("mistral-instruct", system="Be brief.")
    assert "".join(s.text for s in fmt.render(_turns(2), "</s>")) == (
        "[INST] Be brief.\n\n<image>\nWhere is the red circle? [/INST] a red circle at the top left</s>"
        "[INST] How many shapes are there? [/INST] three shapes</s>"
    )


def test_qwen_uses_eos_as_the_end_marker_and_system_can_be_dropped() -> None:
    fmt = _build("qwen", system="")
    assert "".join(s.text for s in fmt.render(_turns(1), "<|im_end|>")) == (
        "<|im_start|>user\n<image>\nWhere is the red circle?<|im_end|>\n"
        "<|im_start|>assistant\na red circle at the top left<|im_end|>"
    )
    custom = "".join(s.text for s in _build("qwen", system="S").render(_turns(1), "<|im_end|>"))
    assert custom.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n")


@pytest.mark.parametrize("name", ["pure", "phi"])
def test_formats_without_system_prompt_reject_one(name) -> None:
    with pytest.raises(ConfigError, match=r"config key 'prompt.system' is not an argument"):
        _build(name, system="S")


@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_non_alternating_or_unanswered_turns_raise_naming_the_sample(tokenizer, name) -> None:
    fmt = _build(name)
    with pytest.raises(DataError, match=r"sample q1: turn 0 is from 'assistant'"):
        fmt.encode([Turn("assistant", "hi"), Turn("user", "<image>\nhi")], tokenizer, has_image=True, sample_id="q1")
    with pytest.raises(DataError, match=r"^sample q2: .*no assistant \('gpt'\) answer"):
        fmt.encode([*_turns(1), Turn("user", "And?")], tokenizer, has_image=True, sample_id="q2")


@pytest.mark.parametrize("name", CHAT_FORMATS)
def test_unknown_image_placement_is_a_config_error(name) -> None:
    with pytest.raises(ConfigError, match=r"image_placement='before-eos'; expected one of marker, after-bos"):
        _build(name, image_placement="before-eos")
