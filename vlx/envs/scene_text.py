"""Text about `block-reach` scenes: captions and questions on the frames of recorded demonstrations.

OpenVLA starts from a VLM that already grounds language in images. The tiny recipe does the same on its
own task: before learning actions, the model learns to say where each coloured block is relative to
the gripper in the very frames it will act on ("Where is the red block?" → "left above"). Each frame
of a demo file gives one caption (every block, in palette order) and one question about a block drawn
with a seeded generator; images are written as PNGs beside an LLaVA-JSON file per split, so the
ordinary `llava-json` dataset trains on them. Directions use the expert's dead zone: a block within
`max_step` along an axis is neither left/right (or above/below) on that axis; "here" means both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import Progress

from vlx.envs.block_reach import PALETTE
from vlx.errors import DataError

CAPTION_PROMPT = "<image>\nWhere are the blocks?"
QUESTION_PROMPT = "<image>\nWhere is the {colour} block?"


@dataclass(frozen=True)
class SceneText:
    """Where the written files are."""

    json_path: Path
    image_dir: Path
    samples: int


def direction(delta: np.ndarray, dead_zone: float) -> str:
    """'left above', 'right', 'below', ..., or 'here' for a block offset `delta` (2,) from the gripper."""
    horizontal = "left" if delta[0] < -dead_zone else "right" if delta[0] > dead_zone else ""
    vertical = "above" if delta[1] > dead_zone else "below" if delta[1] < -dead_zone else ""
    return " ".join(word for word in (horizontal, vertical) if word) or "here"


def describe(state: np.ndarray, num_blocks: int, dead_zone: float) -> dict[str, str]:
    """Colour name → direction of each block, from a `BlockReach.state()` vector (3 + 3K + 1,)."""
    agent = state[:2]
    blocks = state[3 : 3 + 2 * num_blocks].reshape(num_blocks, 2)  # (K, 2)
    colours = state[4 + 2 * num_blocks :].astype(int)  # (K,)
    return {PALETTE[c][0]: direction(b - agent, dead_zone) for b, c in zip(blocks, colours, strict=False)}


def write_scene_text(demos: Path, out_dir: Path, filter_key: str = "train", seed: int = 0) -> SceneText:
    """Captions and questions for every frame of the `filter_key` demos of a block-reach recording."""
    out_dir, demos = Path(out_dir), Path(demos)
    image_dir = out_dir / "images" / filter_key
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples: list[dict] = []
    with h5py.File(demos, "r") as file, Progress(transient=True, console=Console(stderr=True)) as progress:
        if f"mask/{filter_key}" not in file:
            raise DataError(f"{demos}: no mask/{filter_key}; record it with `vlx data block-reach`")
        kwargs = json.loads(file["data"].attrs["env_args"])["env_kwargs"]
        names = [n.decode() for n in file[f"mask/{filter_key}"][:]]
        task = progress.add_task(f"scene text ({filter_key})", total=len(names))
        for name in names:
            demo = file[f"data/{name}"]
            for step, (state, frame) in enumerate(zip(demo["states"][:], demo["obs/agentview_image"][:], strict=False)):
                where = describe(state, kwargs["num_blocks"], kwargs["max_step"])
                image = f"images/{filter_key}/{name}_{step}.png"
                Image.fromarray(frame).save(out_dir / image)
                colour = list(where)[int(rng.integers(len(where)))]
                caption = ", ".join(f"{c} {where[c]}" for c, _ in PALETTE if c in where)
                for kind, prompt, answer in (("caption", CAPTION_PROMPT, caption),
                                             ("question", QUESTION_PROMPT.format(colour=colour), where[colour])):
                    samples.append({"id": f"{name}_{step}_{kind}", "image": image, "conversations": [
                        {"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]})
            progress.advance(task)
    json_path = out_dir / f"scene_{filter_key}.json"
    json_path.write_text(json.dumps(samples))
    return SceneText(json_path, out_dir, len(samples))


def write_scene_texts(demos: Path, out_dir: Path, splits: tuple[str, ...] = ("train", "valid")) -> dict[str, SceneText]:
    """`write_scene_text` for each split, skipped when its JSON is newer than the demo file."""
    written = {}
    for split in splits:
        json_path = Path(out_dir) / f"scene_{split}.json"
        if json_path.is_file() and json_path.stat().st_mtime >= Path(demos).stat().st_mtime:
            written[split] = SceneText(json_path, Path(out_dir), len(json.loads(json_path.read_text())))
        else:
            written[split] = write_scene_text(demos, out_dir, split)
    return written
