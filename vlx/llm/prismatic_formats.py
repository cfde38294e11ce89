"""Prismatic's prompt builders, token-exact with its `FinetuneDataset`: `pure` (OpenVLA's too), `prismatic-vicuna`,
`prismatic-llama2-chat`, `prismatic-mistral-instruct`.

Prismatic (`prismatic/models/backbones/llm/prompting/*.py`, `prismatic/preprocessing/datasets/datasets.py`)
removes `<image>` from every message and strips it, wraps the user turn (`In: {msg}\\nOut: `,
`USER: {msg} ASSISTANT: `, `[INST] {msg} [/INST] `) and the answer (`{answer}{eos}`, a lone space for an
empty answer), and tokenises each wrapped turn on its own, right-stripped for Llama tokenizers, BOS
before the first only. So the answer starts with the SentencePiece dummy prefix (`▁Yes`) and the turn
after an `</s>` starts `▁In` whatever the tokenizer's `legacy` setting; the labels are each answer's
tokens, end marker included. The image goes right after BOS (`image_placement: after-bos`, these
formats' default; with `marker` the marker is kept where the data puts it, for other layouts). The
system prompts are Prismatic's: Vicuna-v1.5's before the first `USER:`, LLaMa-2's in a block spelled
`<<SYS>\\n...\\n<</SYS>>\\n\\n` (sic, as the checkpoints saw it; `llama2-chat` is Meta's template). Single-turn
generation prompts equal Prismatic's `get_potential_prompt`; later turns keep the training tokenisation.
"""

from __future__ import annotations

from vlx.llm.chat_formats import LLAMA2_SYSTEM, TurnFormat
from vlx.llm.formats import VICUNA_SYSTEM
from vlx.llm.prompts import IMAGE_MARKER, Segment, Turn
from vlx.registry import PROMPT_FORMATS


class PrismaticFormat(TurnFormat):
    """Prismatic's builder rules: messages cleaned as `add_turn` does, each turn its own tokenised piece."""

    tokenization = "turns"

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        cleaned = [Turn(turn.role, self.clean(turn.text)) for turn in turns]
        return [Segment(s.text.rstrip() if not s.target else s.text, s.target) for s in super().render(cleaned, eos)]

    def clean(self, text: str) -> str:
        """`add_turn`'s `message.replace("<image>", "").strip()` (the marker kept for `marker` placement)."""
        return (text.replace(IMAGE_MARKER, "") if self.image_placement == "after-bos" else text).strip()

    def answer(self, text: str, eos: str) -> str:
        return f"{text or ' '}{eos}"


class PrismaticSystemFormat(PrismaticFormat):
    """A Prismatic format with a system prompt (`None`: Prismatic's default, stripped as its builders do)."""

    DEFAULT_SYSTEM = ""

    def __init__(self, system: str | None = None, image_placement: str = "after-bos",
                 generation_suffix_ids: list[int] | None = None) -> None:
        super().__init__(image_placement, generation_suffix_ids)
        self.system = (self.DEFAULT_SYSTEM if system is None else system).strip()


@PROMPT_FORMATS.register("pure")
class PureFormat(PrismaticFormat):
    """Base (non-chat) LLMs, Prismatic's PurePromptBuilder and OpenVLA's prompt; no system prompt.

    Template: `In: {msg}\\nOut: {answer}{eos}In: {msg2}\\nOut: {answer2}{eos}`; pieces `In: {msg}\\nOut:` and
    the target `{answer}{eos}`. (Its default placement stays `marker` for data that puts the marker in
    the text; the recipes and the OpenVLA importer use `after-bos`, as Prismatic does.)
    """

    def user(self, index: int, text: str) -> str:
        return f"In: {text}\nOut: "


@PROMPT_FORMATS.register("prismatic-vicuna")
class PrismaticVicunaFormat(PrismaticSystemFormat):
    """Prismatic's VicunaV15ChatPromptBuilder: `{system} USER: {msg} ASSISTANT: {answer}{eos}USER: {msg2} ...`."""

    DEFAULT_SYSTEM = VICUNA_SYSTEM

    def user(self, index: int, text: str) -> str:
        return f"{self.system + ' ' if index == 0 else ''}USER: {text} ASSISTANT: "


@PROMPT_FORMATS.register("prismatic-llama2-chat")
class PrismaticLlama2ChatFormat(PrismaticSystemFormat):
    """Prismatic's LLaMa2ChatPromptBuilder:
    `[INST] <<SYS>\\n{system}\\n<</SYS>>\\n\\n{msg} [/INST] {answer}{eos}[INST] ...`."""

    DEFAULT_SYSTEM = LLAMA2_SYSTEM

    def user(self, index: int, text: str) -> str:
        system = f"<<SYS>\n{self.system}\n<</SYS>>\n\n" if index == 0 else ""
        return f"[INST] {system}{text} [/INST] "


@PROMPT_FORMATS.register("prismatic-mistral-instruct")
class PrismaticMistralInstructFormat(PrismaticFormat):
    """Prismatic's MistralInstructPromptBuilder (no system prompt): `[INST] {msg} [/INST] {answer}{eos}[INST] ...`."""

    def __init__(self, image_placement: str = "after-bos", generation_suffix_ids: list[int] | None = None) -> None:
        super().__init__(image_placement, generation_suffix_ids)

    def user(self, index: int, text: str) -> str:
        return f"[INST] {text} [/INST] "
