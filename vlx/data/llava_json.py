"""LLaVA conversation JSON: loading, validation and tokenisation of image-text samples.

The file is a JSON list of `{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]}`;
`image` is relative to `image_dir`, and samples without it are text-only. Everything that can be
checked without decoding images is checked when the dataset is built — JSON syntax (file:line), keys,
roles, missing image files, the `<image>` marker, all-masked labels, length — so a bad sample stops the
run before training starts, with the file and sample id in the message. Those checks live in
`SampleTokeniser`, one record at a time, so `vlx data check` runs the same code and collects every
problem instead of stopping at the first. Images are decoded lazily. A conversation whose last turn is the
user's (LLaVA and Prismatic tokenise it and train nothing on it) loses that turn, or the whole sample
when no answer is left, and the dataset prints how many (`on_unanswered: skip`, the default); with
`on_unanswered: error` it is an error naming the sample.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vlx.errors import ConfigError, DataError
from vlx.llm.prompts import IGNORE_INDEX, IMAGE_MARKER, PromptFormat, Turn, expand_image_slot
from vlx.registry import DATASETS
from vlx.vision.transforms import ImageTransform

ROLES = {"human": "user", "gpt": "assistant"}
ON_UNANSWERED = ("skip", "error")


def read_json_list(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON list of objects; syntax errors name file:line:column."""
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found", kind="missing-file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text at byte {exc.start}; expected a LLaVA JSON file",
                        kind="json-syntax") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}", kind="json-syntax") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of samples, got {type(data).__name__}", kind="bad-sample")
    return data


def parse_turns(sample: dict[str, Any], where: str) -> list[Turn]:
    """The sample's `conversations` as Turns, with its structure checked."""
    conversations = sample.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise DataError(f"{where}: 'conversations' must be a non-empty list of {{'from', 'value'}} objects",
                        kind="bad-conversation")
    turns = []
    for index, message in enumerate(conversations):
        if (not isinstance(message, dict) or message.get("from") not in ROLES
                or not isinstance(message.get("value"), str)):
            raise DataError(
                f"{where}: conversations[{index}] must be {{'from': 'human'|'gpt', 'value': str}}, got {message!r:.80}",
                kind="bad-conversation",
            )
        turns.append(Turn(ROLES[message["from"]], message["value"]))  # type: ignore[arg-type]
    return turns


def load_image(path: Path, where: str) -> Image.Image:
    """Open an image file as RGB; unreadable files raise a DataError naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"{where}: image file {path} not found", kind="missing-image") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: image file {path} could not be decoded ({exc})", kind="corrupt-image") from exc


@dataclass(frozen=True)
class TokenisedSample:
    """A validated sample: token ids with the image slot expanded, labels, and its image path."""

    sample_id: str
    input_ids: list[int]
    labels: list[int]
    image: Path | None
    unanswered: bool = False  # its last, unanswered user turn was dropped


def unanswered_summary(path: Path, dropped: int, skipped: int) -> str:
    """The line saying how many conversations ended with an unanswered user turn and what became of them."""
    return (f"{path}: {dropped + skipped} conversation(s) end with a user turn that has no answer: that turn dropped "
            f"in {dropped}, {skipped} skipped (no answer left); on_unanswered=error stops at them instead")


@dataclass(frozen=True)
class SampleTokeniser:
    """Validates and tokenises one record of the file at `path`; every problem is a DataError naming the
    file and the sample. The dataset raises the first one; `vlx data check` collects them all."""

    path: Path
    image_dir: Path
    prompt_format: PromptFormat
    tokenizer: Any
    num_image_tokens: int
    max_length: int
    on_unanswered: str = "skip"

    def __post_init__(self) -> None:
        if self.on_unanswered not in ON_UNANSWERED:
            raise ConfigError(f"on_unanswered={self.on_unanswered!r}; expected one of {', '.join(ON_UNANSWERED)}")

    def __call__(self, index: int, record: Any) -> TokenisedSample | None:
        """The tokenised sample, or None when it is skipped (its only turn is an unanswered user turn)."""
        if not isinstance(record, dict):
            raise DataError(f"{self.path}: sample #{index} is not a JSON object", kind="bad-sample")
        sample_id = str(record.get("id", f"#{index}"))
        where = f"{self.path}: sample {sample_id}"
        turns = parse_turns(record, where)
        unanswered = len(turns) % 2 == 1 and turns[-1].role == "user"
        if unanswered and self.on_unanswered == "error":
            raise DataError(f"{where}: the last turn is the user's and has no answer (on_unanswered=error; `skip` "
                            "drops that turn)", kind="no-answer")
        if unanswered:
            turns = turns[:-1]
            if not turns:
                return None
        image = None
        if record.get("image") is not None:
            image = self.image_dir / str(record["image"])
            if not image.is_file():
                raise DataError(f"{where}: image file {image} not found (image_dir={self.image_dir})",
                                kind="missing-image")
        try:
            encoded = self.prompt_format.encode(turns, self.tokenizer, has_image=image is not None, sample_id=sample_id)
        except DataError as exc:  # "sample ID: ..." → "FILE: sample ID: ..."
            raise DataError(f"{self.path}: {exc}", kind=exc.kind) from None
        image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
        ids, labels = expand_image_slot(encoded.input_ids, encoded.labels, image_token_id, self.num_image_tokens)
        if all(label == IGNORE_INDEX for label in labels):
            raise DataError(f"{where}: every label is masked (no assistant answer would be trained)", kind="all-masked")
        return TokenisedSample(sample_id, *self._truncated(ids, labels, image_token_id, where), image, unanswered)

    def _truncated(self, ids: list[int], labels: list[int], image_token_id: int,
                   where: str) -> tuple[list[int], list[int]]:
        """Cut to `max_length` when that keeps the whole image and some answer token; otherwise an error."""
        if len(ids) <= self.max_length:
            return ids, labels
        kept = labels[: self.max_length]
        if ids[self.max_length :].count(image_token_id) or all(label == IGNORE_INDEX for label in kept):
            raise DataError(
                f"{where}: {len(ids)} tokens exceed max_length={self.max_length}, and truncating would cut "
                "the image or every answer; raise max_length or shorten the sample", kind="too-long",
            )
        return ids[: self.max_length], kept


@DATASETS.register("llava-json")
class LlavaJsonDataset(Dataset):
    """Samples of one LLaVA JSON file, tokenised with `prompt_format` at construction."""

    def __init__(
        self,
        json_path: str,
        image_dir: str,
        prompt_format: PromptFormat,
        tokenizer: Any,
        image_transform: ImageTransform,
        num_image_tokens: int,
        max_length: int = 2048,
        limit: int | None = None,
        on_unanswered: str = "skip",
    ) -> None:
        self.path, self.image_dir = Path(json_path).expanduser(), Path(image_dir).expanduser()
        self.transform = image_transform
        tokenise = SampleTokeniser(self.path, self.image_dir, prompt_format, tokenizer, num_image_tokens, max_length,
                                   on_unanswered)
        self.records = read_json_list(self.path)[:limit]
        tokenised = [tokenise(index, record) for index, record in enumerate(self.records)]
        self.samples = [sample for sample in tokenised if sample is not None]
        dropped = sum(sample.unanswered for sample in self.samples)
        if dropped or len(self.samples) < len(tokenised):
            print(unanswered_summary(self.path, dropped, len(tokenised) - len(self.samples)), file=sys.stderr)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item: dict[str, Any] = {
            "id": sample.sample_id,
            "input_ids": torch.tensor(sample.input_ids),
            "labels": torch.tensor(sample.labels),
            "pixel_values": None,
        }
        if sample.image is not None:
            item["pixel_values"] = self.transform(load_image(sample.image, f"{self.path}: sample {sample.sample_id}"))
        return item
