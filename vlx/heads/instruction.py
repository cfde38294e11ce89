"""The question a VLA is asked: OpenVLA's template around the robot's instruction, and the instruction rules.

OpenVLA's `RLDSBatchTransform` and `predict_action` both ask `What action should the robot take to
{instruction.lower()}?` — the instruction lower-cased and nothing else, so `Open the drawer.` becomes
`...take to open the drawer.?` — and its prompt builder then strips the message. That is rule `openvla`,
the default of every action head, so imported OpenVLA checkpoints see what they were trained on. Rule
`strip-punctuation` (opt-in, `head.instruction=strip-punctuation`) also drops surrounding spaces and
trailing `.!?`, for data whose instructions end inconsistently.
"""

from __future__ import annotations

from vlx.errors import ConfigError

VLA_QUESTION = "What action should the robot take to {instruction}?"
INSTRUCTION_RULES = ("openvla", "strip-punctuation")


def check_instruction_rule(rule: str) -> str:
    """`rule` if it is one of INSTRUCTION_RULES; otherwise a ConfigError naming `head.instruction`."""
    if rule not in INSTRUCTION_RULES:
        raise ConfigError(f"head.instruction={rule!r}; expected one of {', '.join(INSTRUCTION_RULES)}")
    return rule


def vla_question(instruction: str, rule: str = "openvla") -> str:
    """The question for `instruction` under `rule` (`openvla`: lower-cased only, as OpenVLA does)."""
    text = instruction.lower()
    if check_instruction_rule(rule) == "strip-punctuation":
        text = text.strip().rstrip(".!?").strip()
    return VLA_QUESTION.format(instruction=text)
