"""Tests of the synthetic shapes dataset: determinism, splits, and answers re-derived from the pixels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlx.data.shapes import (
    PALETTE,
    POSITIONS,
    QUESTION_TYPES,
    ShapesDataset,
    generate_shapes,
    shapes_vocabulary,
)
from vlx.evaluation.vqa import chance_accuracy

SIZE, GRID = 48, 3
N = {"train": 40, "val": 10}
WHITE = (255, 255, 255)


def _generate(out_dir: Path, seed: int = 0) -> ShapesDataset:
    return generate_shapes(out_dir, n_train=N["train"], n_val=N["val"], seed=seed, image_size=SIZE, grid=GRID)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataset:
    return _generate(tmp_path_factory.mktemp("shapes"))


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _all_samples(dataset: ShapesDataset) -> list[dict]:
    return [s for split in N for path in (dataset.captions(split), dataset.questions(split)) for s in _load(path)]


def _question(sample: dict) -> str:
    return sample["conversations"][0]["value"].removeprefix("<image>\n")


def _answer(sample: dict) -> str:
    return sample["conversations"][1]["value"]


def _classify(mask: np.ndarray) -> str:
    """Shape of the filled pixels `mask` (h, w) by how much of their bounding box they cover."""
    rows, cols = np.nonzero(mask)
    fill = mask.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))  # square 1.0, circle ~0.78, triangle ~0.53
    return "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"


def _read_cells(image_path: Path) -> list[tuple[str, str] | None]:
    """(colour, shape) of each cell in row-major order, from the pixels alone; None for an empty cell."""
    pixels = np.asarray(Image.open(image_path).convert("RGB"))  # (SIZE, SIZE, 3)
    colour_of = {rgb: name for name, rgb in PALETTE}
    cells: list[tuple[str, str] | None] = []
    for cell in range(GRID * GRID):
        row, col = divmod(cell, GRID)
        patch = pixels[row * SIZE // GRID:(row + 1) * SIZE // GRID, col * SIZE // GRID:(col + 1) * SIZE // GRID]
        centre = tuple(int(v) for v in patch[patch.shape[0] // 2, patch.shape[1] // 2])  # (3,)
        mask = (patch != WHITE).any(axis=-1)  # (cell, cell)
        if centre == WHITE:
            assert not mask.any(), f"{image_path.name}: cell {cell} has pixels off its centre"
            cells.append(None)
            continue
        assert (patch[mask] == centre).all(), f"{image_path.name}: cell {cell} is not one flat colour"
        cells.append((colour_of[centre], _classify(mask)))
    return cells


def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset: ShapesDataset, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again")
    other = _generate(tmp_path / "other", seed=1)
    json_names = [p.name for p in (dataset.meta, dataset.captions("train"), dataset.questions("val"))]
    png_names = ["images/train-00000.png", "images/train-00039.png", "images/val-00007.png"]
    for name in json_names + png_names:
        assert (again.root / name).read_bytes() == (dataset.root / name).read_bytes(), name
    assert other.captions("train").read_bytes() != dataset.captions("train").read_bytes()
    assert (other.root / png_names[0]).read_bytes() != (dataset.root / png_names[0]).read_bytes()


def test_second_call_skips_and_new_parameters_rewrite(tmp_path: Path) -> None:
    first = _generate(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (first.meta, first.questions("train"))}
    assert _generate(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    smaller = generate_shapes(tmp_path, n_train=8, n_val=4, seed=0)
    assert len(_load(smaller.questions("train"))) == 8
    assert _load(smaller.meta)["params"]["n_train"] == 8
    assert len(list((tmp_path / "images").glob("*.png"))) == 8 + 4  # stale images removed


def test_splits_have_disjoint_ids_and_share_images_between_captions_and_questions(dataset: ShapesDataset) -> None:
    ids = {}
    for split, n in N.items():
        captions, questions = _load(dataset.captions(split)), _load(dataset.questions(split))
        assert len(captions) == len(questions) == n
        assert [(s["id"], s["image"]) for s in captions] == [(s["id"], s["image"]) for s in questions]
        ids[split] = {s["id"] for s in questions}
        assert len(ids[split]) == n
    assert not ids["train"] & ids["val"]


def test_mixture_holds_every_caption_and_question_once_with_unique_ids(dataset: ShapesDataset) -> None:
    for split, n in N.items():
        captions, questions = _load(dataset.captions(split)), _load(dataset.questions(split))
        mixture = _load(dataset.mixture(split))
        assert len(mixture) == 2 * n and len({s["id"] for s in mixture}) == 2 * n
        assert mixture[0::2] == [{**c, "id": f"{c['id']}-caption"} for c in captions]
        assert mixture[1::2] == questions


def test_question_types_are_all_present_and_balanced(dataset: ShapesDataset) -> None:
    meta = _load(dataset.meta)
    for split in N:
        types = [s["question_type"] for s in _load(dataset.questions(split))]
        counts = {qtype: types.count(qtype) for qtype in QUESTION_TYPES}
        assert set(types) == set(QUESTION_TYPES)
        assert max(counts.values()) - min(counts.values()) <= 1
        assert meta["counts"][split] == counts
        assert {s["question_type"] for s in _load(dataset.captions(split))} == {"caption"}


def test_referenced_images_exist_with_requested_size(dataset: ShapesDataset) -> None:
    for sample in _all_samples(dataset):
        with Image.open(dataset.image_dir / sample["image"]) as image:
            assert image.size == (SIZE, SIZE)


def test_answers_match_the_drawn_image(dataset: ShapesDataset) -> None:
    for split in N:
        for sample in _load(dataset.questions(split)):
            cells = _read_cells(dataset.image_dir / sample["image"])
            question, answer, qtype = _question(sample), _answer(sample), sample["question_type"]
            occupied = {POSITIONS[i]: content for i, content in enumerate(cells) if content is not None}
            assert 1 <= len(occupied) <= 4
            if qtype == "count":
                assert answer == str(len(occupied))
            elif qtype == "position_of":
                colour, shape = re.fullmatch(r"Where is the (\w+) (\w+)\?", question).groups()
                assert [pos for pos, content in occupied.items() if content[0] == colour] == [answer]  # unique colour
                assert occupied[answer] == (colour, shape)
            else:
                asked = re.fullmatch(r"What (?:colour is the shape|shape is) at the ([a-z ]+)\?", question).group(1)
                assert asked in occupied, sample["id"]
                assert answer == occupied[asked][0 if qtype == "colour_at" else 1], sample["id"]


def test_captions_list_the_drawn_shapes_in_row_major_order(dataset: ShapesDataset) -> None:
    for sample in _load(dataset.captions("train")):
        cells = _read_cells(dataset.image_dir / sample["image"])
        expected = [(*content, POSITIONS[i]) for i, content in enumerate(cells) if content is not None]
        assert re.findall(r"a (\w+) (\w+) at the ([a-z ]+?)(?:,| and|\.$)", _answer(sample)) == expected


def test_chance_is_the_majority_answer_per_question_type() -> None:
    samples = [{"question_type": "count", "target": a} for a in "1223232"] + [
        {"question_type": "shape_at", "target": a} for a in ("square", "circle")]
    assert chance_accuracy(samples) == (5 / 9, {"count": 4 / 7, "shape_at": 0.5})  # 4 of 7 "2", 1 of 2
    assert chance_accuracy([]) == (0.0, {})


def test_vocabulary_covers_every_word_of_the_json_texts(dataset: ShapesDataset) -> None:
    vocabulary = set(shapes_vocabulary())
    for sample in _all_samples(dataset):
        for turn in sample["conversations"]:
            words = {word.strip("?.,") for word in turn["value"].replace("<image>", " ").split()}
            assert words <= vocabulary, (sample["id"], words - vocabulary)


@pytest.mark.parametrize("kwargs", [{"grid": 4}, {"image_size": 8}, {"n_train": -1}])
def test_invalid_parameters_raise(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_shapes(tmp_path, **kwargs)
