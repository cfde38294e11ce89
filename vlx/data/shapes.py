"""Deterministic synthetic image-QA dataset ("shapes") for checking that a model uses the image.

Each image is a small square canvas divided into a 3x3 grid; one to four coloured shapes (circle,
square, triangle in red, green, blue or yellow) sit in distinct cells. Every image yields one
caption sample (stage-1 "plain" pre-training: the caption lists the shapes in row-major cell order)
and one single-turn question sample (stage 2: the colour or shape at a position, the position of the
shape of a colour that occurs once, or the number of shapes), both in the LLaVA conversation JSON format
(`mix_{split}.json` holds both, for single-stage training). Question types are
balanced exactly, so the answer a model could give without looking at the image is weak
(`vlx.evaluation.vqa.chance_accuracy` measures it). Generation is fully deterministic: the same parameters give
byte-identical JSON and PNG files, and the "train" and "val" splits come from disjoint random
streams seeded by a SHA-512 of the seed and split name (`random.Random` with a string seed; never
Python's salted `hash()`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from vlx.errors import ConfigError

SHAPES = ("circle", "square", "triangle")
PALETTE = (
    ("red", (220, 30, 30)),
    ("green", (30, 170, 60)),
    ("blue", (30, 70, 230)),
    ("yellow", (240, 200, 20)),
)
COLOURS = tuple(name for name, _ in PALETTE)
BACKGROUND = (255, 255, 255)
GRID = 3  # the only grid size with position names
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # row-major over the 3x3 grid
MAX_SHAPES = 4
SPLITS = ("train", "val")
QUESTION_TYPES = ("colour_at", "count", "position_of", "shape_at")
QUESTION_TEMPLATES = (
    ("colour_at", "What colour is the shape at the {position}?"),
    ("count", "How many shapes are there?"),
    ("position_of", "Where is the {colour} {shape}?"),
    ("shape_at", "What shape is at the {position}?"),
)
CAPTION_ITEM = "a {colour} {shape} at the {position}"
IMAGE_TOKEN = "<image>"
_FORMAT_VERSION = 3  # bump when the generated files change for the same parameters


@dataclass(frozen=True)
class ShapesDataset:
    """Paths of a generated shapes dataset; sample `image` paths are relative to `image_dir`."""

    root: Path

    def captions(self, split: str) -> Path:
        return self.root / f"captions_{split}.json"

    def questions(self, split: str) -> Path:
        return self.root / f"qa_{split}.json"

    def mixture(self, split: str) -> Path:
        """Captions and questions of the split in one file (single-stage training, as Prismatic's)."""
        return self.root / f"mix_{split}.json"

    @property
    def image_dir(self) -> Path:
        return self.root

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"


@dataclass(frozen=True)
class _Shape:
    kind: str  # one of SHAPES
    colour: str  # one of COLOURS
    cell: int  # row-major index into POSITIONS


_Scene = tuple[_Shape, ...]  # sorted by cell


def generate_shapes(
    out_dir: Path | str,
    *,
    n_train: int = 4000,
    n_val: int = 400,
    seed: int = 0,
    image_size: int = 48,
    grid: int = 3,
) -> ShapesDataset:
    """Write the dataset under `out_dir` (skipped when meta.json records the same parameters)."""
    if grid != GRID:
        raise ConfigError(f"shapes: grid={grid} is not supported, only grid={GRID} has position names")
    if image_size < 6 * grid:
        raise ConfigError(f"shapes: image_size={image_size} is too small, need at least {6 * grid}")
    if n_train < 0 or n_val < 0:
        raise ConfigError(f"shapes: n_train={n_train} and n_val={n_val} must be >= 0")
    dataset = ShapesDataset(Path(out_dir).expanduser())
    params = {"format": _FORMAT_VERSION, "seed": seed, "image_size": image_size, "grid": grid,
              "n_train": n_train, "n_val": n_val}
    if _is_complete(dataset, params):
        return dataset

    dataset.meta.unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    image_dir = dataset.root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in zip(SPLITS, (n_train, n_val), strict=True):
        for stale in image_dir.glob(f"{split}-*.png"):
            stale.unlink()
        captions, questions = _generate_split(dataset, split, n, seed, image_size, grid)
        _write_json(dataset.captions(split), captions)
        _write_json(dataset.questions(split), questions)
        _write_json(dataset.mixture(split), _mixture(captions, questions))
        per_type = Counter(sample["question_type"] for sample in questions)
        counts[split] = {qtype: per_type[qtype] for qtype in QUESTION_TYPES}
    _write_json(dataset.meta, {"params": params, "counts": counts})
    return dataset


def shapes_vocabulary() -> list[str]:
    """Every word (case kept, punctuation and the image marker stripped) of any question, answer or caption."""
    texts = [template for _, template in QUESTION_TEMPLATES] + [CAPTION_ITEM, "and", *POSITIONS]
    words = {word.strip("?.,") for text in texts for word in text.split() if not word.startswith("{")}
    words |= set(SHAPES) | set(COLOURS) | {str(n) for n in range(1, MAX_SHAPES + 1)}
    return sorted(words)


def _is_complete(dataset: ShapesDataset, params: dict) -> bool:
    if not dataset.meta.is_file():
        return False
    try:
        recorded = json.loads(dataset.meta.read_text(encoding="utf-8")).get("params")
    except (json.JSONDecodeError, AttributeError):
        return False
    files = [path(split) for split in SPLITS for path in (dataset.captions, dataset.questions)]
    return recorded == params and all(file.is_file() for file in files)


def _generate_split(
    dataset: ShapesDataset, split: str, n: int, seed: int, image_size: int, grid: int
) -> tuple[list[dict], list[dict]]:
    """Draw and save `n` images of one split; return its caption samples and question samples."""
    rng = random.Random(f"vlx.data.shapes/{seed}/{split}")  # str seed -> SHA-512, stable across runs
    captions, questions = [], []
    for index in range(n):
        sample_id = f"{split}-{index:05d}"
        image = f"images/{sample_id}.png"
        question_type = QUESTION_TYPES[index % len(QUESTION_TYPES)]  # exact balance
        scene, (question, answer) = _scene_with_question(rng, question_type, grid)
        _render(scene, image_size, grid).save(dataset.image_dir / image, format="PNG")
        captions.append(_sample(sample_id, image, IMAGE_TOKEN, _caption(scene), "caption"))
        questions.append(_sample(sample_id, image, f"{IMAGE_TOKEN}\n{question}", answer, question_type))
    return captions, questions


def _scene_with_question(rng: random.Random, question_type: str, grid: int) -> tuple[_Scene, tuple[str, str]]:
    """Draw scenes until one admits `question_type` (position_of needs a shape of unique colour)."""
    while True:
        scene = _sample_scene(rng, grid)
        qa = _ask(rng, scene, question_type)
        if qa is not None:
            return scene, qa


def _sample_scene(rng: random.Random, grid: int) -> _Scene:
    count = rng.randint(1, MAX_SHAPES)
    cells = sorted(rng.sample(range(grid * grid), count))
    return tuple(_Shape(rng.choice(SHAPES), rng.choice(COLOURS), cell) for cell in cells)


def _ask(rng: random.Random, scene: _Scene, question_type: str) -> tuple[str, str] | None:
    """A (question, answer) pair about `scene`, or None when the type cannot be asked of it."""
    template = dict(QUESTION_TEMPLATES)[question_type]
    if question_type == "count":
        return template, str(len(scene))
    if question_type == "position_of":
        colours = Counter(shape.colour for shape in scene)  # a unique colour: answerable from colour alone
        unique = [shape for shape in scene if colours[shape.colour] == 1]
        if not unique:
            return None
        shape = rng.choice(unique)
        return template.format(colour=shape.colour, shape=shape.kind), POSITIONS[shape.cell]
    shape = rng.choice(scene)
    answer = shape.colour if question_type == "colour_at" else shape.kind
    return template.format(position=POSITIONS[shape.cell]), answer


def _caption(scene: _Scene) -> str:
    items = [CAPTION_ITEM.format(colour=s.colour, shape=s.kind, position=POSITIONS[s.cell]) for s in scene]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return listed + "."


def _render(scene: _Scene, image_size: int, grid: int) -> Image.Image:
    """Draw `scene` without anti-aliasing, so every shape pixel has its palette RGB exactly."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    rgb = dict(PALETTE)
    for shape in scene:
        left, top, right, bottom = box = _shape_box(shape.cell, image_size, grid)
        if shape.kind == "circle":
            draw.ellipse(box, fill=rgb[shape.colour])
        elif shape.kind == "square":
            draw.rectangle(box, fill=rgb[shape.colour])
        else:
            draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=rgb[shape.colour])
    return image


def _shape_box(cell: int, image_size: int, grid: int) -> tuple[int, int, int, int]:
    """Inclusive (left, top, right, bottom) pixel box of the shape in `cell`: the cell less a margin."""
    row, col = divmod(cell, grid)
    x0, x1 = col * image_size // grid, (col + 1) * image_size // grid  # cell spans [x0, x1)
    y0, y1 = row * image_size // grid, (row + 1) * image_size // grid
    margin = max(1, round(min(x1 - x0, y1 - y0) / 8))  # 2 px at 16-px cells
    return x0 + margin, y0 + margin, x1 - 1 - margin, y1 - 1 - margin


def _sample(sample_id: str, image: str, prompt: str, answer: str, question_type: str) -> dict:
    conversations = [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    return {"id": sample_id, "image": image, "conversations": conversations, "question_type": question_type}


def _mixture(captions: list[dict], questions: list[dict]) -> list[dict]:
    """Each image's caption (id suffixed `-caption`) followed by its question; the loader shuffles."""
    mixed = []
    for caption, question in zip(captions, questions, strict=True):
        mixed += [{**caption, "id": f"{caption['id']}-caption"}, question]
    return mixed


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
