"""Chat/instruct prompt formats of common LLM families: `llama2-chat`, `mistral-instruct`, `phi`, `qwen`.

Each renders the same text as the model's own chat template (Prismatic's builders for `phi`) and marks
each assistant answer plus its end marker as the loss target; the whole text is tokenised at once, as a
chat template is applied. (Prismatic's own builders, token-exact with its training code, are in
`prismatic_formats.py`.) The exact templates are in each class's docstring; `{eos}` is the tokenizer's EOS
string (`</s>` for Llama/Mistral, `<|endoftext|>` for Phi-2, `<|im_end|>` for Qwen chat tokenizers). BOS
before the first turn is added by `PromptFormat.encode`, never rendered.

Span boundaries: where a template has a space between the role tag and the answer (`Out: {answer}`,
`[/INST] {answer}`), the space starts the *target* segment, as in `vicuna`. SentencePiece/Metaspace and
GPT-2 byte-level tokenizers attach that space to the answer's first token (`▁answer`, `Ġanswer`), so a
prompt segment ending in the space would make a token straddle the prompt/answer boundary, and a
generation prompt ending in a lone space would not match training. The rendered text is unchanged.

Answers are followed by nothing unlabelled: text that templates put after an answer's end marker (Phi's
`\\n`, ChatML's `\\n`) is rendered at the start of the next user turn instead, so the last token of a
conversation is its end marker (what `PromptFormat.generation_ids` relies on).
"""

from __future__ import annotations

from abc import abstractmethod

from vlx.llm.formats import check_alternating
from vlx.llm.prompts import PromptFormat, Segment, Turn
from vlx.registry import PROMPT_FORMATS

LLAMA2_SYSTEM = (  # Prismatic's LLaMa-2 chat system prompt
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
QWEN_SYSTEM = "You are a helpful assistant."


class TurnFormat(PromptFormat):
    """A format that renders each (user, answer) pair as one prompt segment and one target segment.

    Subclasses implement `user(index, text)`: the prompt text of the `index`-th user turn (0-based),
    ending right before the answer target. `answer` defaults to ` {answer}{eos}` (separating space first).
    """

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        check_alternating(turns)
        segments: list[Segment] = []
        for index, (user, answer) in enumerate(zip(turns[::2], turns[1::2], strict=True)):
            segments += [Segment(self.user(index, user.text)), Segment(self.answer(answer.text, eos), target=True)]
        return segments

    @abstractmethod
    def user(self, index: int, text: str) -> str:
        """Prompt text of user turn `index`, up to (not including) the answer target."""

    def answer(self, text: str, eos: str) -> str:
        """Target text of one answer: the separating space, the answer and its end marker."""
        return f" {text}{eos}"


class SystemTurnFormat(TurnFormat):
    """A `TurnFormat` with a `system` prompt; `None` selects the class's `DEFAULT_SYSTEM`, "" none."""

    DEFAULT_SYSTEM = ""

    def __init__(self, system: str | None = None, image_placement: str = "marker") -> None:
        super().__init__(image_placement)
        self.system = self.DEFAULT_SYSTEM if system is None else system


@PROMPT_FORMATS.register("llama2-chat")
class Llama2ChatFormat(SystemTurnFormat):
    """Llama-2 chat (Meta's / the HF chat template), system prompt in the first user turn only.

    Template: `[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{msg} [/INST] {answer} {eos}{bos}[INST] {msg2}
    [/INST] {answer2} {eos}` (one line; BOS before the first `[INST]` comes from `encode`). Target:
    ` {answer} {eos}`. `bos` is the tokenizer's BOS string (`<s>` for Llama-2), rendered before every
    later turn (`bos=""`: none). Prismatic's checkpoints were trained with `prismatic-llama2-chat`.
    `system=""` drops the `<<SYS>>` block. Default system prompt: Prismatic's (`LLAMA2_SYSTEM`).
    """

    DEFAULT_SYSTEM = LLAMA2_SYSTEM

    def __init__(self, system: str | None = None, bos: str = "<s>", image_placement: str = "marker") -> None:
        super().__init__(system, image_placement)
        self.bos = bos

    def user(self, index: int, text: str) -> str:
        if index > 0:
            return f"{self.bos}[INST] {text} [/INST]"
        system = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" if self.system else ""
        return f"[INST] {system}{text} [/INST]"

    def answer(self, text: str, eos: str) -> str:
        return f" {text} {eos}"


@PROMPT_FORMATS.register("mistral-instruct")
class MistralInstructFormat(SystemTurnFormat):
    """Mistral-7B-Instruct: `[INST] {msg} [/INST] {answer}{eos}[INST] {msg2} [/INST] {answer2}{eos}`.

    Target: ` {answer}{eos}`. No system prompt by default; a `system` is prepended to the first user
    message as `{system}\\n\\n{msg}`.
    """

    def user(self, index: int, text: str) -> str:
        if index == 0 and self.system:
            text = f"{self.system}\n\n{text}"
        return f"[INST] {text} [/INST]"


@PROMPT_FORMATS.register("phi")
class PhiFormat(TurnFormat):
    """Phi-2 (Prismatic's PhiPromptBuilder role tags): `Input: {msg}\\nOutput: {answer}{eos}`, turns joined by `\\n`.

    Template: `Input: {msg}\\nOutput: {answer}{eos}\\nInput: {msg2}\\nOutput: {answer2}{eos}`; eos is
    `<|endoftext|>` for Phi-2 (BOS, also `<|endoftext|>`, comes from `encode`, as in Prismatic). Target:
    ` {answer}{eos}`; the `\\n` separator starts the next user turn. (Prismatic's builder ends an answer
    with `{answer}\\n{eos}`; here the newline follows the end marker, so generation stops right after
    the answer.)
    """

    def user(self, index: int, text: str) -> str:
        separator = "" if index == 0 else "\n"
        return f"{separator}Input: {text}\nOutput:"


@PROMPT_FORMATS.register("qwen")
class QwenFormat(SystemTurnFormat):
    """Qwen chat, ChatML; the answer's end marker is the tokenizer's EOS.

    Template (one line): `<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{msg}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}{eos}\\n<|im_start|>user\\n{msg2}<|im_end|>\\n<|im_start|>assistant\\n
    {answer2}{eos}`. Target: `{answer}{eos}` (no separating space; `assistant\\n` ends the prompt).
    For Qwen chat/instruct tokenizers eos is `<|im_end|>`, so this is exactly ChatML (base Qwen
    tokenizers use `<|endoftext|>`: load the instruct tokenizer). ChatML's `\\n` after each `<|im_end|>`
    is rendered at the start of the next turn, so a conversation ends with its end marker. `system=""`
    drops the system block; default "You are a helpful assistant.".
    """

    DEFAULT_SYSTEM = QWEN_SYSTEM

    def user(self, index: int, text: str) -> str:
        if index > 0:
            head = "\n"
        else:
            head = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return f"{head}<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"

    def answer(self, text: str, eos: str) -> str:
        return f"{text}{eos}"
