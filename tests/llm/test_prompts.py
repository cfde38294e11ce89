"""Tests of prompt formats: vicuna/plain rendering, label masks from target spans, generation prefix, image slot."""

from __future__ import annotations

import pytest

from vlx.errors import ConfigError, DataError
from vlx.llm.formats import VICUNA_SYSTEM, PlainFormat, VicunaFormat
from vlx.llm.prompts import IGNORE_INDEX, Segment, Turn, expand_image_slot, label_runs, turns_from_messages

LONG = "a red circle at the top left"
SHORT = "3"
Q1 = "Where is the red circle?"
Q2 = "How many shapes are there?"


def _vicuna_turns(answer: str = LONG, marker: bool = True) -> list[Turn]:
    prompt = f"<image>\n{Q1}" if marker else Q1
    return [Turn("user", prompt), Turn("assistant", answer)]


def _multi_turns() -> list[Turn]:
    return [Turn("user", f"<image>\n{Q1}"), Turn("assistant", LONG), Turn("user", Q2), Turn("assistant", SHORT)]


def _plain_turns(answer: str = LONG) -> list[Turn]:
    return [Turn("user", "<image>"), Turn("assistant", answer)]


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def _image_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<image>")


@pytest.mark.parametrize(
    ("fmt", "turns", "answer"),
    [
        (VicunaFormat(), _vicuna_turns(LONG), LONG),
        (VicunaFormat(), _vicuna_turns(SHORT), SHORT),
        (PlainFormat(end="eos"), _plain_turns(LONG), LONG),
        (PlainFormat(end="eos"), _plain_turns(SHORT), SHORT),
    ],
    ids=["vicuna-long", "vicuna-short", "plain-long", "plain-short"],
)
def test_labelled_positions_decode_to_answer_and_eos(tokenizer, fmt, turns, answer) -> None:
    encoded = fmt.encode(turns, tokenizer, has_image=True, sample_id="s0")
    assert len(encoded.input_ids) == len(encoded.labels)
    labelled = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    assert all(encoded.labels[i] == encoded.input_ids[i] for i in labelled)
    assert len(label_runs(encoded.labels)) == 1
    assert labelled[-1] == len(encoded.input_ids) - 1  # the final </s> is trained
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    assert _decode(tokenizer, [encoded.labels[i] for i in labelled]).lstrip() == answer + "</s>"


def test_multiturn_vicuna_labels_are_exactly_the_answers_in_order(tokenizer) -> None:
    encoded = VicunaFormat().encode(_multi_turns(), tokenizer, has_image=True, sample_id="s0")
    runs = label_runs(encoded.labels)
    assert [_decode(tokenizer, encoded.labels[a:b]).lstrip() for a, b in runs] == [LONG + "</s>", SHORT + "</s>"]
    assert [encoded.labels[a:b] for a, b in runs] == [encoded.input_ids[a:b] for a, b in runs]
    # everything outside the answers (BOS, system prompt, user turns, role tags) is unlabelled
    unlabelled = [tok for tok, label in zip(encoded.input_ids, encoded.labels, strict=True) if label == IGNORE_INDEX]
    text = _decode(tokenizer, unlabelled)
    for piece in (VICUNA_SYSTEM, Q1, Q2, "USER:", "ASSISTANT:"):
        assert piece in text
    assert "circle at the top" not in text and " 3" not in text
    assert encoded.labels[0] == IGNORE_INDEX


def test_vicuna_text_matches_llava_v1_template(tokenizer) -> None:
    fmt = VicunaFormat()
    expected = (
        f"{VICUNA_SYSTEM} USER: <image>\n{Q1} ASSISTANT: {LONG}</s>USER: {Q2} ASSISTANT: {SHORT}</s>"
    )
    segments = fmt.render(_multi_turns(), tokenizer.eos_token)
    assert "".join(s.text for s in segments) == expected
    assert [s.text for s in segments if s.target] == [f" {LONG}</s>", f" {SHORT}</s>"]
    ids = fmt.encode(_multi_turns(), tokenizer, has_image=True).input_ids
    # LLaVA's tokenizer_image_token: BOS, the text before `<image>`, the slot, the text after it on its own
    before, after = expected.split("<image>")
    assert ids == [tokenizer.bos_token_id, *tokenizer(before, add_special_tokens=False).input_ids, _image_id(tokenizer),
                   *tokenizer(after, add_special_tokens=False).input_ids]


def test_plain_text_is_image_then_caption_and_newline_as_llava(tokenizer) -> None:
    # LLaVA's preprocess_plain: `<image>` + caption + the plain template's separator "\n" (no </s>)
    segments = PlainFormat().render(_plain_turns(), "</s>")
    assert segments == [Segment("<image>"), Segment(LONG + "\n", target=True)]
    encoded = PlainFormat().encode(_plain_turns(), tokenizer, has_image=True)
    assert encoded.input_ids[:2] == [tokenizer.bos_token_id, _image_id(tokenizer)]
    assert encoded.input_ids[2:] == tokenizer(LONG + "\n", add_special_tokens=False).input_ids  # its own chunk
    assert encoded.labels[2:] == encoded.input_ids[2:]


def test_plain_end_eos_closes_the_caption_with_eos(tokenizer) -> None:
    segments = PlainFormat(end="eos").render(_plain_turns(), "</s>")
    assert segments == [Segment("<image>"), Segment(LONG + "</s>", target=True)]
    with pytest.raises(ConfigError, match=r"prompt.end='tab'; expected one of newline, eos"):
        PlainFormat(end="tab")


def test_custom_vicuna_system_prompt_is_used_and_unlabelled(tokenizer) -> None:
    fmt = VicunaFormat(system="You are a robot.")
    assert "".join(s.text for s in fmt.render(_vicuna_turns(SHORT), "</s>")).startswith("You are a robot. USER: ")
    encoded = fmt.encode(_vicuna_turns(SHORT), tokenizer, has_image=True)
    assert _decode(tokenizer, [x for x in encoded.labels if x != IGNORE_INDEX]).lstrip() == "3</s>"


@pytest.mark.parametrize(
    ("fmt", "turns"),
    [(VicunaFormat(), _vicuna_turns(LONG)), (VicunaFormat(), _vicuna_turns(SHORT)),
     (PlainFormat(), _plain_turns(LONG)), (PlainFormat(end="eos"), _plain_turns(SHORT))],
    ids=["vicuna-long", "vicuna-short", "plain-long", "plain-short-eos"],
)
def test_generation_ids_are_the_training_prefix_before_the_answer(tokenizer, fmt, turns) -> None:
    train = fmt.encode(turns, tokenizer, has_image=True)
    first_answer = label_runs(train.labels)[0][0]
    generation = fmt.generation_ids(turns[:-1], tokenizer, has_image=True)
    assert generation == train.input_ids[:first_answer]
    assert 0 < len(generation) < len(train.input_ids)


def test_generation_ids_for_second_turn_are_the_prefix_before_the_second_answer(tokenizer) -> None:
    fmt = VicunaFormat()
    train = fmt.encode(_multi_turns(), tokenizer, has_image=True)
    second_answer = label_runs(train.labels)[1][0]
    generation = fmt.generation_ids(_multi_turns()[:3], tokenizer, has_image=True)
    assert generation == train.input_ids[:second_answer]
    assert _decode(tokenizer, generation).endswith(f"USER: {Q2} ASSISTANT:")


@pytest.mark.parametrize("fmt", [VicunaFormat(), PlainFormat()], ids=["vicuna", "plain"])
def test_marker_placement_puts_one_image_slot_at_the_marker(tokenizer, fmt) -> None:
    turns = _vicuna_turns() if isinstance(fmt, VicunaFormat) else _plain_turns()
    ids = fmt.encode(turns, tokenizer, has_image=True).input_ids
    assert ids.count(_image_id(tokenizer)) == 1
    at = ids.index(_image_id(tokenizer))
    before = _decode(tokenizer, ids[1:at]).strip()
    assert before == (f"{VICUNA_SYSTEM} USER:" if isinstance(fmt, VicunaFormat) else "")
    if isinstance(fmt, VicunaFormat):
        assert _decode(tokenizer, ids[at + 1 :]).startswith(f"\n{Q1} ASSISTANT:")


@pytest.mark.parametrize("marker", [True, False], ids=["marker-in-text", "no-marker"])
def test_after_bos_placement_puts_the_slot_after_bos_and_removes_the_marker(tokenizer, marker) -> None:
    fmt = VicunaFormat(image_placement="after-bos")
    encoded = fmt.encode(_vicuna_turns(marker=marker), tokenizer, has_image=True, sample_id="s0")
    ids = encoded.input_ids
    image_id = _image_id(tokenizer)
    assert ids[:2] == [tokenizer.bos_token_id, image_id]
    assert ids.count(image_id) == 1
    assert encoded.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    rest = _decode(tokenizer, ids[2:]).lstrip()
    assert rest == f"{VICUNA_SYSTEM} USER: {Q1} ASSISTANT: {LONG}</s>"  # marker and its newline removed
    assert _decode(tokenizer, [x for x in encoded.labels if x != IGNORE_INDEX]).lstrip() == LONG + "</s>"


def test_after_bos_without_image_has_no_slot(tokenizer) -> None:
    fmt = VicunaFormat(image_placement="after-bos")
    ids = fmt.encode(_vicuna_turns(marker=False), tokenizer, has_image=False).input_ids
    assert _image_id(tokenizer) not in ids
    assert ids[0] == tokenizer.bos_token_id


def test_text_only_sample_has_no_slot(tokenizer) -> None:
    encoded = VicunaFormat().encode(_vicuna_turns(marker=False), tokenizer, has_image=False)
    assert _image_id(tokenizer) not in encoded.input_ids
    assert _decode(tokenizer, encoded.input_ids[1:]).lstrip() == f"{VICUNA_SYSTEM} USER: {Q1} ASSISTANT: {LONG}</s>"


def test_image_without_marker_raises_naming_the_sample(tokenizer) -> None:
    with pytest.raises(DataError, match=r"sample sample-42: found 0 image slots; expected one '<image>' marker"):
        VicunaFormat().encode(_vicuna_turns(marker=False), tokenizer, has_image=True, sample_id="sample-42")


def test_marker_without_image_raises_naming_the_sample(tokenizer) -> None:
    with pytest.raises(DataError, match=r"sample sample-7: found 1 image slots; expected no '<image>' marker"):
        VicunaFormat().encode(_vicuna_turns(), tokenizer, has_image=False, sample_id="sample-7")


def test_two_markers_raise(tokenizer) -> None:
    turns = [Turn("user", "<image>\n<image>\nWhat?"), Turn("assistant", "3")]
    with pytest.raises(DataError, match=r"sample s9: found 2 image slots"):
        VicunaFormat().encode(turns, tokenizer, has_image=True, sample_id="s9")


@pytest.mark.parametrize("fmt", [VicunaFormat(), PlainFormat()], ids=["vicuna", "plain"])
def test_last_turn_from_user_raises_naming_the_sample(tokenizer, fmt) -> None:
    turns = [*_vicuna_turns(), Turn("user", "And now?")]
    with pytest.raises(DataError, match=r"^sample qa-3: .*no assistant \('gpt'\) answer after its last user turn"):
        fmt.encode(turns, tokenizer, has_image=True, sample_id="qa-3")


def test_non_alternating_turns_raise_naming_the_turn(tokenizer) -> None:
    turns = [Turn("assistant", "hello"), Turn("user", "<image>\nhi")]
    with pytest.raises(DataError, match=r"sample qa-4: turn 0 is from 'assistant'; expected 'user'"):
        VicunaFormat().encode(turns, tokenizer, has_image=True, sample_id="qa-4")


def test_empty_conversation_raises(tokenizer) -> None:
    with pytest.raises(DataError, match=r"sample e: .*no assistant"):
        PlainFormat().encode([], tokenizer, has_image=False, sample_id="e")


@pytest.mark.parametrize("cls", [VicunaFormat, PlainFormat])
def test_unknown_image_placement_is_a_config_error(cls) -> None:
    with pytest.raises(ConfigError, match=r"image_placement='before-eos'; expected one of marker, after-bos"):
        cls(image_placement="before-eos")


def test_expand_image_slot_repeats_the_slot_with_ignored_labels() -> None:
    ids = [1, 10, 4, 11, 12, 2]
    labels = [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 12, 2]
    new_ids, new_labels = expand_image_slot(ids, labels, image_token_id=4, num_tokens=3)
    assert new_ids == [1, 10, 4, 4, 4, 11, 12, 2]
    assert new_labels == [IGNORE_INDEX] * 6 + [12, 2]
    assert (ids, labels) == ([1, 10, 4, 11, 12, 2], [IGNORE_INDEX] * 4 + [12, 2])  # inputs not mutated


def test_expand_image_slot_without_slot_or_with_one_token_is_identity() -> None:
    ids, labels = [1, 10, 11, 2], [IGNORE_INDEX, IGNORE_INDEX, 11, 2]
    assert expand_image_slot(ids, labels, image_token_id=4, num_tokens=5) == (ids, labels)
    assert (expand_image_slot([1, 4, 2], [IGNORE_INDEX, IGNORE_INDEX, 2], 4, 1)
            == ([1, 4, 2], [IGNORE_INDEX, IGNORE_INDEX, 2]))


def test_expand_image_slot_on_an_encoded_prompt(tokenizer) -> None:
    encoded = VicunaFormat().encode(_vicuna_turns(), tokenizer, has_image=True)
    image_id = _image_id(tokenizer)
    at = encoded.input_ids.index(image_id)
    ids, labels = expand_image_slot(encoded.input_ids, encoded.labels, image_id, 36)
    assert len(ids) == len(labels) == len(encoded.input_ids) + 35
    assert ids[at : at + 36] == [image_id] * 36 and ids.count(image_id) == 36
    assert labels[at : at + 36] == [IGNORE_INDEX] * 36
    assert ids[:at] == encoded.input_ids[:at] and ids[at + 36 :] == encoded.input_ids[at + 1 :]
    assert labels[at + 36 :] == encoded.labels[at + 1 :]


def test_turns_from_messages_maps_llava_roles() -> None:
    turns = turns_from_messages([("human", "q"), ("gpt", "a"), ("user", "q2"), ("assistant", "a2")])
    assert turns == [Turn("user", "q"), Turn("assistant", "a"), Turn("user", "q2"), Turn("assistant", "a2")]


def test_generation_suffix_ids_end_the_prompt_once(tokenizer) -> None:
    from vlx.llm.prismatic_formats import PureFormat
    from vlx.llm.prompts import question_ids

    space = tokenizer.convert_tokens_to_ids("▁")  # the tiny tokenizer's word-boundary piece (Llama-2: 29871)
    plain = PureFormat(image_placement="after-bos")
    suffixed = PureFormat(image_placement="after-bos", generation_suffix_ids=[space])
    turns = [Turn("user", Q1)]
    base = plain.generation_ids(turns, tokenizer, has_image=True)
    assert base[-1] != space
    assert suffixed.generation_ids(turns, tokenizer, has_image=True) == [*base, space]
    assert question_ids(suffixed, Q1, tokenizer, tokenizer.convert_tokens_to_ids("<image>"), 4)[-1] == space
    already = PureFormat(image_placement="after-bos", generation_suffix_ids=base[-1:])  # the prompt ends with it
    assert already.generation_ids(turns, tokenizer, has_image=True) == base
