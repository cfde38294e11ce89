"""Scene captions/questions on block-reach demo frames: directions match the geometry exactly."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from vlx.envs import BlockReach, record_demos
from vlx.envs.scene_text import describe, direction, write_scene_text, write_scene_texts
from vlx.errors import DataError


@pytest.mark.parametrize("delta, words", [
    ((-0.5, 0.3), "left above"), ((0.2, -0.9), "right below"), ((0.05, 0.5), "above"),
    ((-0.3, -0.1), "left"), ((0.1, 0.1), "here"), ((0.0, 0.0), "here"),
])
def test_direction_words_use_the_dead_zone(delta, words) -> None:
    assert direction(np.array(delta), dead_zone=0.1) == words


def test_describe_reads_the_env_state() -> None:
    env = BlockReach()
    env.reset(seed=11)
    where = describe(env.state(), env.num_blocks, env.max_step)
    assert env.goal_colour in where and len(where) == 3
    goal = env.goal_position - env.agent_position
    assert where[env.goal_colour] == direction(goal, env.max_step)


def test_written_questions_match_the_frames(tmp_path) -> None:
    demos = record_demos(tmp_path / "d.hdf5", num_demos=6, seed=1, valid_fraction=0.34).path
    text = write_scene_text(demos, tmp_path / "scene", "train")
    samples = json.loads(text.json_path.read_text())
    with h5py.File(demos) as f:
        frames = sum(len(f[f"data/demo_{i}/actions"]) for i in range(4))
        state = f["data/demo_0/states"][0]
        first = f["data/demo_0/obs/agentview_image"][0]
    assert text.samples == len(samples) == 2 * frames
    caption, question = samples[0], samples[1]
    where = describe(state, 3, 0.1)
    assert all(f"{c} {d}" in caption["conversations"][1]["value"] for c, d in where.items())
    colour = question["conversations"][0]["value"].split("the ")[1].split(" block")[0]
    assert question["conversations"][1]["value"] == where[colour]
    np.testing.assert_array_equal(np.asarray(Image.open(text.image_dir / caption["image"])), first)
    again = write_scene_texts(demos, tmp_path / "scene", ("train",))  # up to date: not rewritten
    assert again["train"].samples == text.samples
    with pytest.raises(DataError, match="no mask/test"):
        write_scene_text(demos, tmp_path / "scene", "test")
