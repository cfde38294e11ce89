"""Prompt formats: conversation turns → token ids and a label mask built from per-turn spans.

A format renders turns into text `Segment`s, each marked as a loss target or not (assistant answers and
their end-of-sequence token are targets). The text is tokenised the way the format's reference code does
it (`tokenization`): `whole` (one call, as a chat template is applied), `image-chunks` (LLaVA's
`tokenizer_image_token`: the text before and after `<image>` tokenised separately, so each starts with
the SentencePiece dummy prefix) or `turns` (Prismatic's `FinetuneDataset`: every turn on its own). Each
piece is tokenised with offsets and a token carries loss exactly when its character span overlaps a
target span — so labels come from where the assistant text really is, never from counting tokens of
re-tokenised strings (LLaVA's silent all-masked failure). The generation prompt is the same token
sequence cut before the last answer, so inference sees exactly the training prefix. The image slot is
one `image_token_id`, at the `<image>` marker (LLaVA) or right after BOS (Prismatic).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from vlx.errors import ConfigError, DataError

IGNORE_INDEX = -100
IMAGE_MARKER = "<image>"
IMAGE_PLACEMENTS = ("marker", "after-bos")
TOKENIZATIONS = ("whole", "image-chunks", "turns")
Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: Role
    text: str


@dataclass(frozen=True)
class Segment:
    """A piece of rendered prompt text; `target` pieces carry the loss."""

    text: str
    target: bool = False


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids and labels (IGNORE_INDEX where no loss) of one rendered conversation."""

    input_ids: list[int]
    labels: list[int]


class PromptFormat(ABC):
    """Base class: subclasses implement `render` and say how the text is cut for tokenisation; masking is shared."""

    tokenization = "whole"  # one of TOKENIZATIONS: how the reference code tokenises the rendered text

    def __init__(self, image_placement: str = "marker", generation_suffix_ids: list[int] | None = None) -> None:
        if image_placement not in IMAGE_PLACEMENTS:
            raise ConfigError(f"image_placement={image_placement!r}; expected one of {', '.join(IMAGE_PLACEMENTS)}")
        self.image_placement = image_placement
        self.generation_suffix_ids = [int(i) for i in generation_suffix_ids or []]

    @abstractmethod
    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        """Text segments of the conversation; assistant answers (+ `eos`) are targets."""

    def encode(self, turns: list[Turn], tokenizer: Any, has_image: bool, sample_id: str = "?") -> EncodedPrompt:
        """Token ids with one image slot (if `has_image`) and labels from the target spans."""
        try:
            segments = self.render(turns, tokenizer.eos_token)
        except DataError as exc:
            raise DataError(f"sample {sample_id}: {exc}", kind=exc.kind) from exc
        if self.image_placement == "after-bos":
            segments = [Segment(s.text.replace(IMAGE_MARKER + "\n", "").replace(IMAGE_MARKER, ""), s.target)
                        for s in segments]
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
        ids: list[int] = []
        labels: list[int] = []
        for piece in self.pieces(segments):
            piece_ids, piece_labels = (([image_id], [IGNORE_INDEX]) if piece is None
                                       else tokenize_piece(piece, tokenizer))
            ids += piece_ids
            labels += piece_labels
        prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        if has_image and self.image_placement == "after-bos":
            prefix.append(image_id)
        ids, labels = prefix + ids, [IGNORE_INDEX] * len(prefix) + labels
        n_slots = ids.count(image_id)
        if n_slots != int(has_image):
            expected = f"one '{IMAGE_MARKER}' marker" if has_image else f"no '{IMAGE_MARKER}' marker (it has no image)"
            raise DataError(f"sample {sample_id}: found {n_slots} image slots; expected {expected}",
                            kind="image-marker")
        return EncodedPrompt(ids, labels)

    def pieces(self, segments: list[Segment]) -> list[list[Segment] | None]:
        """The rendered segments cut into independently tokenised pieces; None is the image slot between two."""
        if self.tokenization == "turns":
            return [[segment] for segment in segments]
        if self.tokenization == "whole":
            return [segments]
        pieces: list[list[Segment] | None] = [[]]
        for segment in segments:
            first, *rest = segment.text.split(IMAGE_MARKER)
            pieces[-1].append(Segment(first, segment.target))  # type: ignore[union-attr]
            for text in rest:
                pieces += [None, [Segment(text, segment.target)]]
        return pieces

    def generation_ids(self, turns: list[Turn], tokenizer: Any, has_image: bool) -> list[int]:
        """Prompt ids for generating the next assistant answer: the training ids cut before that answer.

        `generation_suffix_ids` are appended unless the prompt already ends with them — OpenVLA's rule for
        its token 29871 (Llama-2's `▁`), which its training prompts end with before the action tokens.
        VLA samples are built from these ids, so training and `predict_action` see the same prompt.
        """
        probe = self.encode([*turns, Turn("assistant", "x")], tokenizer, has_image, sample_id="<generation>")
        start, _ = label_runs(probe.labels)[-1]  # where the last (probe) answer begins
        ids = probe.input_ids[:start]
        suffix = self.generation_suffix_ids
        if suffix and ids[-len(suffix):] != suffix:
            ids += suffix
        return ids


def tokenize_piece(segments: list[Segment], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Ids and labels of one piece tokenised on its own (no special tokens added, the dummy prefix as the
    tokenizer does).

    A token is labelled when its character span overlaps a target segment; a zero-width token (a lone
    dummy-prefix `▁`) when it sits at or inside a target.
    """
    text = "".join(segment.text for segment in segments)
    if not text:
        return [], []
    spans, start = [], 0
    for segment in segments:
        if segment.target:
            spans.append((start, start + len(segment.text)))
        start += len(segment.text)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    labels = [
        token if any((a < end and b > begin) or (a == b and begin <= a < end) for begin, end in spans) else IGNORE_INDEX
        for token, (a, b) in zip(ids, encoding["offset_mapping"], strict=True)
    ]
    return ids, labels


def label_runs(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of positions that carry a label (one per answer)."""
    runs, start = [], None
    for index, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = index
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, index))
            start = None
    return runs


def turns_from_messages(messages: list[tuple[str, str]]) -> list[Turn]:
    """(role, text) pairs → Turns; LLaVA's `human`/`gpt` roles are accepted as `user`/`assistant`."""
    aliases = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
    return [Turn(aliases[role], text) for role, text in messages]  # type: ignore[arg-type]


def expand_image_slot(
    input_ids: list[int], labels: list[int], image_token_id: int, num_tokens: int
) -> tuple[list[int], list[int]]:
    """Repeat the image slot token `num_tokens` times (one position per visual token; labels ignored)."""
    if image_token_id not in input_ids:
        return input_ids, labels
    at = input_ids.index(image_token_id)
    ids = input_ids[:at] + [image_token_id] * num_tokens + input_ids[at + 1 :]
    return ids, labels[:at] + [IGNORE_INDEX] * num_tokens + labels[at + 1 :]


def question_ids(
    prompt_format: PromptFormat, question: str, tokenizer: Any, image_token_id: int | None, num_image_tokens: int
) -> list[int]:
    """Generation-prompt ids of a single-turn question, with the image slot (if `image_token_id`) expanded.

    Marker-placed formats get `<image>\n` in front of the question when it has no marker of its own.
    """
    has_image = image_token_id is not None
    if has_image and prompt_format.image_placement == "marker" and IMAGE_MARKER not in question:
        question = f"{IMAGE_MARKER}\n{question}"
    ids = prompt_format.generation_ids([Turn("user", question)], tokenizer, has_image)
    if has_image:
        ids, _ = expand_image_slot(ids, ids, image_token_id, num_image_tokens)
    return ids
