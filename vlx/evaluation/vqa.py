"""Exact-match evaluation of a VLM on single-turn LLaVA-JSON questions, with a blind control.

Each sample's first user turn is the question and its first assistant turn the target; answers are
compared after lower-casing and stripping whitespace and a trailing full stop. `blank_images=True`
replaces every image with a blank canvas of the same size — the control that shows how much the model
answers from the image rather than from the question alone. `chance` is the best blind answer per
question type (`question_type` key; "all" when absent), measured on the same samples.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vlx.data.llava_json import load_image, parse_turns, read_json_list
from vlx.errors import ConfigError, DataError
from vlx.model import VisionLanguageModel

BLANK_COLOUR = (255, 255, 255)


def normalise_answer(text: str) -> str:
    """Lower-case, strip whitespace and a trailing full stop."""
    return text.strip().lower().rstrip(".").strip()


@dataclass
class VQAResult:
    """Accuracy overall and per question type, plus every prediction."""

    accuracy: float
    per_type: dict[str, float]
    chance: float
    chance_per_type: dict[str, float]
    n: int
    predictions: list[dict[str, Any]] = field(default_factory=list)


def chance_accuracy(samples: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """Accuracy of always giving the most frequent answer of each question type: overall and per type."""
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for sample in samples:
        by_type[sample["question_type"]][sample["target"]] += 1
    best = {kind: counts.most_common(1)[0][1] for kind, counts in sorted(by_type.items())}
    per_type = {kind: best[kind] / sum(by_type[kind].values()) for kind in best}
    return sum(best.values()) / max(len(samples), 1), per_type


def load_questions(json_path: str | Path, image_dir: str | Path | None,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """Samples as {id, image path or None, question, target, question_type}."""
    path = Path(json_path).expanduser()
    samples = []
    for index, record in enumerate(read_json_list(path)[:limit]):
        if not isinstance(record, dict):
            raise DataError(f"{path}: sample #{index} is not a JSON object")
        where = f"{path}: sample {record.get('id', f'#{index}')}"
        turns = parse_turns(record, where)
        if len(turns) < 2 or turns[0].role != "user" or turns[1].role != "assistant":
            raise DataError(f"{where}: an evaluation sample needs a human question followed by a gpt answer")
        if record.get("image") and image_dir is None:
            raise ConfigError(f"{where} has an image but eval.image_dir is not set")
        image = Path(str(image_dir)).expanduser() / record["image"] if record.get("image") else None
        samples.append({
            "id": str(record.get("id")), "image": image, "question": turns[0].text,
            "target": normalise_answer(turns[1].text), "question_type": record.get("question_type", "all"),
        })
    return samples


def evaluate_vqa(
    model: VisionLanguageModel, samples: list[dict[str, Any]], batch_size: int = 32, blank_images: bool = False,
    max_new_tokens: int = 16, progress: Callable[[int], None] | None = None,
) -> VQAResult:
    """Greedy-decode an answer for every sample and score exact matches."""
    model.eval()
    predictions = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images: list[Image.Image | None] = []
        for sample in chunk:
            image = load_image(sample["image"], f"sample {sample['id']}") if sample["image"] else None
            if image is not None and blank_images:
                image = Image.new("RGB", image.size, BLANK_COLOUR)
            images.append(image)
        answers = model.generate(images, [s["question"] for s in chunk], max_new_tokens=max_new_tokens)
        for sample, answer in zip(chunk, answers, strict=True):
            predictions.append({**sample, "prediction": normalise_answer(answer), "image": str(sample["image"])})
        if progress is not None:
            progress(len(chunk))
    correct: dict[str, list[bool]] = defaultdict(list)
    for p in predictions:
        correct[p["question_type"]].append(p["prediction"] == p["target"])
    total = [hit for hits in correct.values() for hit in hits]
    chance, chance_per_type = chance_accuracy(samples)
    return VQAResult(
        accuracy=sum(total) / max(len(total), 1),
        per_type={kind: sum(hits) / len(hits) for kind, hits in sorted(correct.items())},
        chance=chance, chance_per_type=chance_per_type, n=len(total), predictions=predictions,
    )
