"""LLaVA's prompt formats, token-exact with its training code: `plain` (pre-training) and `vicuna` (LLaVA-1.5 v1).

Both tokenise as LLaVA's `tokenizer_image_token` does: the text before and after `<image>` separately, so
the text after the image starts with the dummy prefix (`[IMG, ▁, <0x0A>, ...]` on Llama tokenizers, with
`legacy` true or false). `vicuna` moves the marker as LLaVA's `preprocess_multimodal` does: a message that
contains `<image>` becomes `<image>\n` + the rest of the message, stripped. `plain`: `<image>` followed by
the caption and LLaVA's `\n` separator (`end`; `end: eos` ends captions with EOS instead, so that a
generated caption stops), loss on the caption and its end; the instruction text is dropped, as in LLaVA.
`vicuna`: the LLaVA-1.5 system prompt, then `USER: {msg} ASSISTANT: {answer}</s>` per turn, loss on each
answer and its `</s>` (LLaVA's own masking drops whole samples when its token counts disagree; vlx's
spans do not).
"""

from __future__ import annotations

from vlx.errors import ConfigError, DataError
from vlx.llm.prompts import IMAGE_MARKER, PromptFormat, Segment, Turn
from vlx.registry import PROMPT_FORMATS

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def check_alternating(turns: list[Turn]) -> None:
    """Turns must alternate user, assistant, user, ... and end with an assistant answer."""
    for index, turn in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if turn.role != expected:
            raise DataError(f"turn {index} is from '{turn.role}'; expected '{expected}' (turns alternate, user first)",
                            kind="turn-order")
    if not turns or turns[-1].role != "assistant":
        raise DataError("the conversation has no assistant ('gpt') answer after its last user turn", kind="no-answer")


PLAIN_ENDS = ("newline", "eos")


def llava_message(text: str) -> str:
    """LLaVA's `preprocess_multimodal`: a message with `<image>` becomes `<image>\n` + the rest, stripped.

    LLaVA would merge several markers into one; vlx reports them (one image, one slot), as `encode` does.
    """
    markers = text.count(IMAGE_MARKER)
    if markers > 1:
        raise DataError(f"found {markers} image slots in one message; expected one '<image>' marker",
                        kind="image-marker")
    if not markers:
        return text
    return f"{IMAGE_MARKER}\n{text.replace(IMAGE_MARKER, '').strip()}".strip()


@PROMPT_FORMATS.register("plain")
class PlainFormat(PromptFormat):
    """LLaVA stage-1 captioning: the user turn is only the image; the caption and its end are the target."""

    tokenization = "image-chunks"

    def __init__(self, end: str = "newline", image_placement: str = "marker") -> None:
        super().__init__(image_placement)
        if end not in PLAIN_ENDS:
            raise ConfigError(f"prompt.end={end!r}; expected one of {', '.join(PLAIN_ENDS)}")
        self.end = end

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        check_alternating(turns)
        end = eos if self.end == "eos" else "\n"
        segments: list[Segment] = []
        for user, answer in zip(turns[::2], turns[1::2], strict=True):
            image = IMAGE_MARKER if IMAGE_MARKER in user.text else ""  # LLaVA drops the instruction text
            segments += [Segment(image), Segment(answer.text + end, target=True)]
        return segments


@PROMPT_FORMATS.register("vicuna")
class VicunaFormat(PromptFormat):
    """LLaVA-1.5 `vicuna_v1`: `{system} USER: {msg} ASSISTANT: {answer}</s>USER: ...`."""

    tokenization = "image-chunks"

    def __init__(self, system: str = VICUNA_SYSTEM, image_placement: str = "marker") -> None:
        super().__init__(image_placement)
        self.system = system

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        check_alternating(turns)
        segments = [Segment(self.system + " ")]
        for user, answer in zip(turns[::2], turns[1::2], strict=True):
            segments += [Segment(f"USER: {llava_message(user.text)} ASSISTANT:"),
                         Segment(f" {llava_message(answer.text)}{eos}", target=True)]
        return segments
