"""Robot samples with several cameras, the state and action chunks: camera order, state statistics, chunk targets
at the end of an episode (mask, repeat, drop), the observation slot in the model, checkpoints, clear errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vlx.builder import build_model
from vlx.checkpoint import load, save_checkpoint
from vlx.data.collate import Collator
from vlx.envs import record_demos
from vlx.errors import ConfigError, DataError
from vlx.observation import ObservationError
from vlx.training.datamodule import build_dataset

CAMERAS = ["agentview_image", "wrist_image"]
STATE = ["agent_pos", "gripper"]
K = 4


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_demos(tmp_path_factory.mktemp("robot") / "demos.hdf5", num_demos=12, seed=5).path


def make_vla(tiny_cfg: dict, head: str = "l1-regression", cameras: list[str] | None = CAMERAS, state: bool = True):
    torch.manual_seed(0)
    cfg = {**tiny_cfg, "head": {"name": head, "action_dim": 3, "chunk_size": K},
           "prompt": {"name": "pure", "image_placement": "after-bos"},
           "observation": {"cameras": cameras, "state_keys": STATE if state else None},
           "proprio": {"name": "mlp", "in_dim": 3} if state else None}
    return build_model(cfg)


def source(path: Path, split: str = "train", **extra) -> dict:
    return {"name": "robomimic-hdf5", "datasets": [{"key": "reach", "path": str(path), "filter_key": split, **extra}],
            **extra.pop("node", {})}


def demo_arrays(path: Path, demo: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as file:
        group = file[f"data/{demo}"]
        return {"actions": group["actions"][()], "state": np.concatenate([group["obs/agent_pos"][()],
                                                                           group["obs/gripper"][()]], axis=1),
                **{camera: group[f"obs/{camera}"][()] for camera in CAMERAS}}


def test_sample_has_both_cameras_the_state_and_a_chunk(tiny_cfg: dict, demos: Path) -> None:
    model = make_vla(tiny_cfg)
    data = build_dataset(source(demos), "data.train", model, training=True)
    file = data.files[0]
    assert file.camera_keys == CAMERAS and file.state_keys == STATE
    item = data[0]
    assert item["pixel_values"].shape == (2, 3, 48, 48)
    slots = int((item["input_ids"] == model.llm.image_token_id).sum())
    assert slots == 2 * model.vision.num_patches + 1 == model.observation_tokens
    arrays = demo_arrays(demos, file.demos[0])
    stats, state_stats = model.action_stats["reach"], model.state_stats["reach"]
    train_states = np.concatenate([demo_arrays(demos, d)["state"] for d in file.demos])  # (N, 3)
    np.testing.assert_allclose(state_stats.q99, np.quantile(train_states, 0.99, axis=0), rtol=1e-5)
    assert state_stats.mask.all()  # every state dimension is normalised (the gripper too)
    np.testing.assert_allclose(item["state"].numpy(), state_stats.normalize(arrays["state"][0]), rtol=1e-6)
    steps = min(K, len(arrays["actions"]))
    assert item["action_mask"].tolist() == [True] * steps + [False] * (K - steps)
    np.testing.assert_allclose(item["actions"].numpy()[:steps], stats.normalize(arrays["actions"][:steps]), rtol=1e-6)
    assert item["action_slots"].sum() == K * 3 and item["action_slots"][-K * 3:].all()


def test_chunks_at_the_end_of_an_episode(tiny_cfg: dict, demos: Path) -> None:
    model = make_vla(tiny_cfg)
    data = build_dataset(source(demos), "data.train", model, training=True)
    file, stats = data.files[0], model.action_stats["reach"]
    actions = demo_arrays(demos, file.demos[0])["actions"]  # (T, 3)
    assert len(actions) >= 2
    last = len(actions) - 2  # two steps left in the demo
    item = data[last]
    assert item["id"] == f"reach:{file.demos[0]}:{last}"
    assert item["action_mask"].tolist() == [True, True, False, False]
    expected = np.concatenate([actions[last:], np.repeat(actions[-1:], K - 2, axis=0)])  # the last action repeated
    np.testing.assert_allclose(item["actions"].numpy(), stats.normalize(expected), rtol=1e-6)
    repeat = build_dataset({**source(demos), "episode_end": "repeat"}, "data.train", model, training=True)
    assert repeat[last]["action_mask"].all()
    drop = build_dataset({**source(demos), "episode_end": "drop"}, "data.train", model, training=True)
    lengths = [len(demo_arrays(demos, d)["actions"]) for d in file.demos]
    assert len(drop) == sum(max(0, length - K + 1) for length in lengths)
    assert all(drop[i]["action_mask"].all() for i in range(len(drop)))
    with pytest.raises(ConfigError, match="episode_end'='clip'; expected one of mask, repeat, drop"):
        build_dataset({**source(demos), "episode_end": "clip"}, "data.train", model, training=True)


def test_masked_steps_carry_no_loss(tiny_cfg: dict, demos: Path) -> None:
    model = make_vla(tiny_cfg)
    data = build_dataset(source(demos), "data.train", model, training=True)
    lengths = [len(demo_arrays(demos, d)["actions"]) for d in data.files[0].demos]
    long = next(i for i in range(len(data)) if data[i]["action_mask"].all())
    batch = Collator(model.tokenizer.pad_token_id)([data[lengths[0] - 1], data[long]])  # 1 real step, then K
    assert batch["action_mask"].sum(1).tolist() == [1, K]
    out = model(batch)
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], batch["pixel_values"], batch["state"])
        predicted = model.head.predict(model.llm, embeds, batch)  # (2, K, 3)
    errors = (predicted - batch["actions"]).abs()  # (2, K, 3)
    expected = torch.cat([errors[0, :1].reshape(-1), errors[1].reshape(-1)]).mean()
    torch.testing.assert_close(out.loss, expected)
    batch["actions"][0, 1:] += 100.0  # what the padded steps hold does not matter
    torch.testing.assert_close(model(batch).loss, out.loss)


def test_observation_slot_holds_the_cameras_in_order_then_the_state(tiny_cfg: dict, demos: Path) -> None:
    model = make_vla(tiny_cfg).eval()
    data = build_dataset(source(demos), "data.train", model, training=True)
    batch = Collator(model.tokenizer.pad_token_id)([data[0], data[1]])
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], batch["pixel_values"], batch["state"])  # (2, L, D)
        slots = batch["input_ids"] == model.llm.image_token_id
        for row in range(2):
            cameras = [model.projector(model.vision(batch["pixel_values"][row, c : c + 1]))[0] for c in range(2)]
            expected = torch.cat([*cameras, model.proprio(batch["state"][row : row + 1])])  # (2N + 1, D)
            torch.testing.assert_close(embeds[row][slots[row]], expected, atol=1e-5, rtol=1e-5)


def test_source_errors_name_the_key(tiny_cfg: dict, demos: Path) -> None:
    model = make_vla(tiny_cfg)
    with pytest.raises(DataError, match=r"no camera obs/eye_in_hand \(data.train.datasets\[0\].camera_keys\[1\]\); "
                                        r"the demo's obs keys are "
                                        r"\['agent_pos', 'agentview_image', 'gripper', 'wrist_image'\]"):
        build_dataset(source(demos, camera_keys=["agentview_image", "eye_in_hand"]), "data.train", model, training=True)
    with pytest.raises(ConfigError, match=r"camera_keys' names 1 cameras \['agentview_image'\], but the model sees 2"):
        build_dataset(source(demos, camera_keys=["agentview_image"]), "data.train", model, training=True)
    with pytest.raises(DataError, match=r"no state obs/joint_pos \(data.train.datasets\[0\].state_keys\[1\]\)"):
        build_dataset(source(demos, state_keys=["agent_pos", "joint_pos"]), "data.train", model, training=True)
    with pytest.raises(ConfigError, match=r"the state obs/agent_pos has 2 values, but proprio.in_dim=3"):
        build_dataset(source(demos, state_keys=["agent_pos"]), "data.train", model, training=True)
    blind = make_vla(tiny_cfg, state=False)
    with pytest.raises(ConfigError, match="state_keys' is set but the model has no state input"):
        build_dataset(source(demos, state_keys=STATE), "data.train", blind, training=True)


def test_predict_errors_name_the_camera_and_the_field(tiny_cfg: dict, demos: Path) -> None:
    model = make_vla(tiny_cfg).eval()
    build_dataset(source(demos), "data.train", model, training=True)  # statistics into the model
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    both = {"agentview_image": frame, "wrist_image": frame}
    assert model.predict_action(both, "move to the red block", state=[0.5, 0.5, 0.0]).shape == (K, 3)
    with pytest.raises(ObservationError, match=r"^camera 'wrist_image' is missing: the model was trained with cameras "
                                               r"\['agentview_image', 'wrist_image'\]; got \['agentview_image'\]$"):
        model.predict_action({"agentview_image": frame}, "go", state=[0.5, 0.5, 0.0])
    with pytest.raises(ObservationError, match="camera 'top' is not one of the model's cameras"):
        model.predict_action({**both, "top": frame}, "go", state=[0.5, 0.5, 0.0])
    with pytest.raises(ObservationError, match="pass {camera: image}, not a single ndarray"):
        model.predict_action(frame, "go", state=[0.5, 0.5, 0.0])
    with pytest.raises(ObservationError, match=r"^state has 2 values; the model expects 3$"):
        model.predict_action(both, "go", state=[0.5, 0.5])
    with pytest.raises(ObservationError, match=r"^state\[1\] is nan: every state value must be a finite number$"):
        model.predict_action(both, "go", state=[0.5, float("nan"), 0.0])
    with pytest.raises(ObservationError, match=r"^states\[1\] is missing: this model needs the robot state, 3 numbers "
                                               r"\(agent_pos \+ gripper\)$"):
        model.predict_actions([both, both], ["go", "go"], states=[[0.5, 0.5, 0.0], None])
    blind = make_vla(tiny_cfg, cameras=None, state=False).eval()
    build_dataset(source(demos), "data.train", blind, training=True)
    with pytest.raises(ObservationError, match="this model has no state input"):
        blind.predict_action(frame, "go", state=[0.5, 0.5, 0.0])


@pytest.mark.parametrize("head", ["l1-regression", "flow-matching", "action-tokens-parallel"])
def test_checkpoint_round_trip_keeps_cameras_state_statistics_and_head(tiny_cfg: dict, demos: Path, tmp_path: Path,
                                                                       head: str) -> None:
    model = make_vla(tiny_cfg, head=head).eval()
    build_dataset(source(demos), "data.train", model, training=True)
    directory = save_checkpoint(model, tmp_path / "ckpt")
    assert (directory / "state_stats.json").is_file() and (directory / "action_stats.json").is_file()
    loaded = load(directory)
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    observation = {"agentview_image": frame, "wrist_image": frame[::-1].copy()}
    np.testing.assert_array_equal(loaded.predict_action(observation, "move to the red block", state=[0.2, 0.7, 1.0]),
                                  model.predict_action(observation, "move to the red block", state=[0.2, 0.7, 1.0]))
    assert loaded.observation == model.observation and loaded.chunk_size == K
