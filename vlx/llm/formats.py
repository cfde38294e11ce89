"""The registered prompt formats: `plain` (LLaVA pre-training) and `vicuna` (LLaVA-1.5's v1 template).

`plain`: `<image>` followed by the caption and EOS, loss on the caption + EOS; any instruction text in
the user turn is dropped, as LLaVA does (LLaVA ends the caption with a newline; vlx ends it with EOS so
a generated caption stops). `vicuna`: the LLaVA-1.5 system prompt,
then `USER: {msg} ASSISTANT: {answer}</s>` per turn, loss on each answer and its `</s>`.
"""

from __future__ import annotations

from vlx.errors import DataError
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


@PROMPT_FORMATS.register("plain")
class PlainFormat(PromptFormat):
    """LLaVA stage-1 captioning: the user turn is only the image; the caption is the target."""

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        check_alternating(turns)
        segments: list[Segment] = []
        for user, answer in zip(turns[::2], turns[1::2], strict=True):
            image = IMAGE_MARKER if IMAGE_MARKER in user.text else ""  # LLaVA drops the instruction text
            segments += [Segment(image), Segment(answer.text + eos, target=True)]
        return segments


@PROMPT_FORMATS.register("vicuna")
class VicunaFormat(PromptFormat):
    """LLaVA-1.5 `vicuna_v1`: `{system} USER: {msg} ASSISTANT: {answer}</s>USER: ...`."""

    def __init__(self, system: str = VICUNA_SYSTEM, image_placement: str = "marker") -> None:
        super().__init__(image_placement)
        self.system = system

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        check_alternating(turns)
        segments = [Segment(self.system + " ")]
        for user, answer in zip(turns[::2], turns[1::2], strict=True):
            segments += [Segment(f"USER: {user.text} ASSISTANT:"), Segment(f" {answer.text}{eos}", target=True)]
        return segments
