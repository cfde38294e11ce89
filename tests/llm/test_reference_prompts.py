"""Token-exactness of the prompt formats against LLaVA's, Prismatic's and OpenVLA's own algorithms.

The expected ids are built here from the references' code as written (read in haotian-liu/LLaVA
`llava/train/train.py` `preprocess_multimodal`/`preprocess_v1`/`preprocess_plain`, `llava/mm_utils.py`
`tokenizer_image_token`, `llava/conversation.py` `vicuna_v1`/`plain`; TRI-ML/prismatic-vlms
`prompting/*_prompter.py` and `preprocessing/datasets/datasets.py` `FinetuneDataset.__getitem__`;
openvla/openvla `prismatic/vla/datasets/datasets.py` `RLDSBatchTransform` and the HF `predict_action`),
never by calling vlx's prompt code, on a SentencePiece BPE tokenizer with byte fallback and a dummy
prefix trained inside the test and loaded with `legacy: true` and `legacy: false`. The same comparison
was run once against the references' own functions (exec'd from the fetched repositories): no
difference except LLaVA's empty answer (below).
"""

from __future__ import annotations

import io
import json

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from vlx.llm.prompts import IGNORE_INDEX, Turn, question_ids
from vlx.registry import PROMPT_FORMATS

IMAGE = "<image>"
LLAVA_IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAMA2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                 "that the user provides, and assist the user with a variety of tasks using natural language.")
ACTION_SYMBOLS = [chr(0x24D0 + i) for i in range(8)]  # ⓐ..ⓗ: single, never-merged pieces, as Llama-2's last ids are
UNSEEN_TEXT = "日本語で説明してください。"  # no piece for it: the tokenizer falls back to bytes


def _conversation(*messages: str) -> list[dict[str, str]]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": m} for i, m in enumerate(messages)]


CONVERSATIONS = [
    _conversation("<image>\nWhat is in the image?", "A red circle at the top left."),
    _conversation("What is in the image?\n<image>", "Two squares."),  # marker last
    _conversation("What colour is <image> the block?", "blue"),  # marker in the middle
    _conversation("<image>Describe it.", "It is a green triangle, 3 cm wide."),
    _conversation("<image>\nHow many shapes are there?", "3"),
    _conversation("<image>\nIs the circle red?", "Yes.", "And the square?", "No, it is blue."),
    _conversation("<image>\nWhere is the block?", "left above", "Is it near the gripper?", "no", "Which colour?",
                  "red"),
    _conversation("  <image>\n  Count the cups.  ", "  4 cups  "),  # leading and trailing spaces
    _conversation("<image>\nWhat does the sign say?", "Café «Olé» — 20 €"),
    _conversation(f"<image>\n{UNSEEN_TEXT}", "赤い丸です。"),  # byte fallback: kept out of the tokenizer's corpus
    _conversation("<image>\nWhat is 12 + 30?", "42"),
    _conversation("<image>\nRead the digits: 0123456789", "0 1 2 3 4 5 6 7 8 9"),
    _conversation("<image>\nAnswer with one word!", "Yes!"),
    _conversation("<image>\nWhat's the robot holding?", "a can of soda (330 ml)"),
    _conversation("<image>\nList: a, b; c.", "a\nb\nc"),
    _conversation("<image>\nTabs\tand  double  spaces", "ok\tfine"),
    _conversation("<image>\nQuestion ending with space ", "answer ending with space "),
    _conversation("<image>\nMulti\nline\nquestion", "Multi-line\nanswer."),
    _conversation("<image>\nFirst?", "1st", "Second?", "2nd", "Third?", "3rd", "Fourth?", "4th"),
    _conversation("<image>\nIs it 3.5 or 4.0?", "3.5", "Why?", "Because the ruler says so..."),
    _conversation("<image>\nEmoji 🙂?", "🙂 yes"),
    _conversation("<image>\nUpper CASE words", "LOWER case words"),
    _conversation("Describe the scene. <image>", "A table with a cup."),
    _conversation("<image>\nEmpty answer?", ""),  # LLaVA's template drops it (see test_vicuna_matches_llava_v1)
]
INSTRUCTIONS = ["Open the drawer.", "  Pick up the RED block! ", "put 3 cups on the shelf?", "déplacer le bloc",
                "move to the red block"]


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def sp_tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A Llama tokenizer over a SentencePiece BPE model (byte fallback, dummy prefix) trained on this file's text."""
    corpus = [m["value"].replace(IMAGE, "") for conversation in CONVERSATIONS for m in conversation
              if UNSEEN_TEXT not in conversation[0]["value"]]
    corpus += [VICUNA_SYSTEM, LLAMA2_SYSTEM, "USER: ASSISTANT: In: Out: [INST] [/INST] <<SYS>> <</SYS>>",
               "What action should the robot take to open the drawer? the quick brown fox jumps over the lazy dog."]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 3), model_writer=model, vocab_size=600, model_type="bpe", byte_fallback=True,
        character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        remove_extra_whitespaces=False, user_defined_symbols=ACTION_SYMBOLS, minloglevel=2)
    directory = tmp_path_factory.mktemp(f"sp-legacy-{request.param}")
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": request.param, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    assert tokenizer.legacy is request.param
    tokenizer.add_tokens([IMAGE], special_tokens=True)  # vlx's image slot; LLaVA and Prismatic never tokenise it
    return tokenizer


def _turns(conversation: list[dict[str, str]]) -> list[Turn]:
    return [Turn("user" if m["from"] == "human" else "assistant", m["value"]) for m in conversation]


def _encode(name: str, conversation: list[dict[str, str]], tokenizer, **node) -> tuple[list[int], list[int]]:
    prompt = PROMPT_FORMATS.build({"name": name, **node}, "prompt")
    encoded = prompt.encode(_turns(conversation), tokenizer, has_image=True, sample_id="ref")
    return encoded.input_ids, encoded.labels


# --- LLaVA ---------------------------------------------------------------------------------------------------

def llava_preprocess_multimodal(value: str) -> str:
    """`preprocess_multimodal`: a message with the marker becomes `<image>\\n` + the rest, stripped."""
    if IMAGE not in value:
        return value
    return (IMAGE + "\n" + value.replace(IMAGE, "").strip()).strip()


def llava_tokenizer_image_token(text: str, tokenizer) -> list[int]:
    """`tokenizer_image_token`: each `<image>`-separated chunk tokenised with BOS; BOS kept on the first only."""
    chunks = [tokenizer(chunk).input_ids for chunk in text.split(IMAGE)]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids += [LLAVA_IMAGE_INDEX, *chunk[1:]]
    return ids


def llava_v1(conversation: list[dict[str, str]], tokenizer) -> tuple[list[int], list[int]]:
    """`vicuna_v1`'s `get_prompt` (sep " ", sep2 "</s>") tokenised as `preprocess_v1` does, and the intended targets:
    each round's tokens after `ASSISTANT:` up to its `</s>` (measured as prefix lengths, as preprocess_v1 does)."""
    text, spans = VICUNA_SYSTEM + " ", []
    for user, answer in zip(conversation[::2], conversation[1::2], strict=True):
        text += f"USER: {llava_preprocess_multimodal(user['value'])} ASSISTANT:"
        start = len(llava_tokenizer_image_token(text, tokenizer))
        text += f" {llava_preprocess_multimodal(answer['value'])}</s>"
        spans.append((start, len(llava_tokenizer_image_token(text, tokenizer))))
    ids = llava_tokenizer_image_token(text, tokenizer)
    labels = [t if any(a <= i < b for a, b in spans) else IGNORE_INDEX for i, t in enumerate(ids)]
    return ids, labels


def _as_llava(ids: list[int], tokenizer) -> list[int]:
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    return [LLAVA_IMAGE_INDEX if t == image_id else t for t in ids]


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_vicuna_matches_llava_v1(sp_tokenizer, index: int) -> None:
    conversation = CONVERSATIONS[index]
    if any(m["value"] == "" for m in conversation[1::2]):
        # LLaVA's get_prompt writes an empty message as `ASSISTANT:` with no `</s>` (then masks the sample for its
        # length mismatch); vlx trains the empty answer as ` </s>`, the one deliberate difference (docs/prompts.md)
        ids, labels = _encode("vicuna", conversation, sp_tokenizer)
        assert sp_tokenizer.convert_ids_to_tokens([x for x in labels if x != IGNORE_INDEX])[-1] == "</s>"
        return
    expected_ids, expected_labels = llava_v1(conversation, sp_tokenizer)
    ids, labels = _encode("vicuna", conversation, sp_tokenizer)
    assert _as_llava(ids, sp_tokenizer) == expected_ids
    assert _as_llava(labels, sp_tokenizer) == expected_labels


@pytest.mark.parametrize("index", [i for i, c in enumerate(CONVERSATIONS) if len(c) == 2])
def test_plain_matches_llava_preprocess_plain(sp_tokenizer, index: int) -> None:
    caption = CONVERSATIONS[index][1]["value"]
    expected = llava_tokenizer_image_token(IMAGE + caption + "\n", sp_tokenizer)  # the user turn is only the image
    masked = len(llava_tokenizer_image_token(IMAGE, sp_tokenizer))
    ids, labels = _encode("plain", CONVERSATIONS[index], sp_tokenizer)
    assert _as_llava(ids, sp_tokenizer) == expected
    assert _as_llava(labels, sp_tokenizer) == [IGNORE_INDEX] * masked + expected[masked:]


# --- Prismatic -----------------------------------------------------------------------------------------------

def prismatic_wrap(name: str, turn: int, message: str) -> str:
    """The builders' `add_turn`: `<image>` removed, stripped, wrapped (the system prompt in the first user turn)."""
    message = message.replace(IMAGE, "").strip()
    if turn % 2 == 1:
        return f"{message if message != '' else ' '}</s>"
    first = turn == 0
    if name == "pure":
        return f"In: {message}\nOut: "
    if name == "prismatic-vicuna":
        return f"{VICUNA_SYSTEM.strip() + ' ' if first else ''}USER: {message} ASSISTANT: "
    if name == "prismatic-llama2-chat":
        system = f"<<SYS>\n{LLAMA2_SYSTEM.strip()}\n<</SYS>>\n\n" if first else ""
        return f"[INST] {system}{message} [/INST] "
    return f"[INST] {message} [/INST] "  # prismatic-mistral-instruct


def prismatic_finetune(name: str, conversation: list[dict[str, str]], tokenizer) -> tuple[list[int], list[int]]:
    """`FinetuneDataset.__getitem__` for a Llama tokenizer: each wrapped turn right-stripped and tokenised on its own
    (special tokens on the first turn only); labels = the answers' ids; BOS unlabelled (the patches follow it)."""
    ids, labels = [], []
    for turn, message in enumerate(conversation):
        turn_ids = tokenizer(prismatic_wrap(name, turn, message["value"]).rstrip(),
                             add_special_tokens=turn == 0).input_ids
        ids += turn_ids
        labels += [IGNORE_INDEX] * len(turn_ids) if turn % 2 == 0 else turn_ids
    labels[0] = IGNORE_INDEX
    return ids, labels


@pytest.mark.parametrize("name", ["pure", "prismatic-vicuna", "prismatic-llama2-chat", "prismatic-mistral-instruct"])
@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_prismatic_formats_match_finetune_dataset(sp_tokenizer, name: str, index: int) -> None:
    expected_ids, expected_labels = prismatic_finetune(name, CONVERSATIONS[index], sp_tokenizer)
    ids, labels = _encode(name, CONVERSATIONS[index], sp_tokenizer, image_placement="after-bos")
    image_id = sp_tokenizer.convert_tokens_to_ids(IMAGE)
    assert ids[1] == image_id and ids.count(image_id) == 1  # Prismatic splices the patches in right after BOS
    assert ids[:1] + ids[2:] == expected_ids
    assert labels[:1] + labels[2:] == expected_labels


# --- OpenVLA -------------------------------------------------------------------------------------------------

def openvla_training_ids(instruction: str, action_ids: list[int], tokenizer) -> tuple[list[int], list[int]]:
    """`RLDSBatchTransform`: the pure builder's prompt with the decoded action string, tokenised whole with BOS;
    labels only on the last len(action) + 1 tokens."""
    question = f"What action should the robot take to {instruction.lower()}?"
    prompt = f"In: {question.strip()}\nOut: " + f"{tokenizer.decode(action_ids)}</s>"
    ids = tokenizer(prompt.removeprefix("<s>").rstrip(), add_special_tokens=True).input_ids
    return ids, [IGNORE_INDEX] * (len(ids) - len(action_ids) - 1) + ids[-len(action_ids) - 1:]


def openvla_predict_prompt(instruction: str, tokenizer) -> list[int]:
    """`predict_action`: `In: What action should the robot take to {instruction.lower()}?\\nOut:` with BOS, then the
    `▁` token (29871 on Llama-2) appended when the prompt does not end with it."""
    ids = tokenizer(f"In: What action should the robot take to {instruction.lower()}?\nOut:").input_ids
    space = tokenizer.convert_tokens_to_ids("▁")
    return ids if ids[-1] == space else [*ids, space]


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_vla_prompt_matches_openvla(sp_tokenizer, instruction: str) -> None:
    from vlx.heads.instruction import vla_question

    space = sp_tokenizer.convert_tokens_to_ids("▁")
    prompt = PROMPT_FORMATS.build({"name": "pure", "image_placement": "after-bos", "generation_suffix_ids": [space]},
                                  "prompt")
    ids = question_ids(prompt, vla_question(instruction), sp_tokenizer, None, 0)
    assert ids == openvla_predict_prompt(instruction, sp_tokenizer)
    actions = sp_tokenizer.convert_tokens_to_ids(ACTION_SYMBOLS[5:] + ACTION_SYMBOLS[:3])  # a chunk's action tokens
    sample = ids + actions + [sp_tokenizer.eos_token_id]  # what the robot dataset trains on: prompt, actions, EOS
    labels = [IGNORE_INDEX] * len(ids) + actions + [sp_tokenizer.eos_token_id]
    assert (sample, labels) == openvla_training_ids(instruction, actions, sp_tokenizer)


def test_instruction_rules() -> None:
    from vlx.errors import ConfigError
    from vlx.heads.instruction import vla_question

    assert vla_question("Open the Drawer.") == "What action should the robot take to open the drawer.?"  # OpenVLA's
    assert (vla_question(" Open the Drawer. ", "strip-punctuation")
            == "What action should the robot take to open the drawer?")
    with pytest.raises(ConfigError, match=r"head.instruction='upper'; expected one of openvla, strip-punctuation"):
        vla_question("go", "upper")


def test_the_tokenizer_exercises_what_the_references_differ_on(sp_tokenizer) -> None:
    """The cases above are only a test if the tokenizer shows the behaviours the references handle."""
    tokens = sp_tokenizer.convert_ids_to_tokens(
        sp_tokenizer(f"\nWhat {UNSEEN_TEXT}", add_special_tokens=False).input_ids)
    assert tokens[0] == "▁" and "<0xE6>" in tokens  # dummy prefix before a newline; byte fallback
    tokens = sp_tokenizer.convert_ids_to_tokens(sp_tokenizer("x</s>What", add_special_tokens=False).input_ids)
    after_eos = tokens[tokens.index("</s>") + 1]  # a space after a special token in legacy mode only: what the
    assert after_eos == ("▁What" if sp_tokenizer.legacy else "W")  # per-turn tokenisation makes the same on both


def test_reference_conversations_cover_the_cases() -> None:
    assert len(CONVERSATIONS) >= 20
    users = [c[0]["value"] for c in CONVERSATIONS]
    assert any(u.startswith(IMAGE) for u in users) and any(u.endswith(IMAGE) for u in users)
    assert any(IMAGE in u.strip(IMAGE + " \n") for u in users)  # marker in the middle
    assert any(len(c) > 2 for c in CONVERSATIONS) and any(u != u.strip() for u in users)
