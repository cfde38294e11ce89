"""LeRobot datasets as a robot-data source, on a v3.0 dataset written by LeRobot's own writer: every action and
state read back exactly, every frame of the image camera exactly and of the video camera within the codec's
tolerance, tasks as instructions, episode selection, training samples and statistics, a mixture with robomimic, a
few training steps, `vlx data check`, and errors that name the directory, episode and feature."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.data.lerobot_writer import TASKS, Written, write_lerobot
from vlx.data.action_stats import ActionStats
from vlx.errors import ConfigError, DataError

pytest.importorskip("av")
pytest.importorskip("pyarrow")

from vlx.data.lerobot import LeRobotDir  # noqa: E402  (after the skips: it needs pyarrow and av)

CAMERAS = ["observation.images.front", "observation.images.wrist"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write_lerobot(tmp_path_factory.mktemp("lerobot") / "toy")


def copy_of(written: Written, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(written.root, root)
    return root


def test_every_action_state_task_and_frame_reads_back(written: Written) -> None:
    data = LeRobotDir(written.root, ["front", "wrist"], state_keys=["observation.state"])
    assert data.camera_keys == CAMERAS and data.demos == [f"episode_{i}" for i in range(4)]
    assert np.array_equal(data.actions(), np.concatenate(written.actions))  # exact
    assert np.array_equal(data.states(), np.concatenate(written.state))
    assert len(data) == sum(len(a) for a in written.actions) and data.action_dim == 3 and data.state_dim == 3
    index = 0
    for episode, actions in enumerate(written.actions):
        assert data.instruction(index) == TASKS[episode % 2]
        for step in range(len(actions)):
            frames = data.images(index)
            assert np.array_equal(frames["observation.images.wrist"], written.wrist[episode][step])  # PNG: lossless
            error = np.abs(frames["observation.images.front"].astype(int) - written.front[episode][step])
            assert error.mean() < 3 and np.percentile(error, 99) < 16, (episode, step, error.mean())  # AV1, lossy
            index += 1


def test_a_step_is_matched_to_its_own_video_frame_not_a_neighbour(written: Written) -> None:
    """Red brightens 20 levels a step: the frame read is nearer its own step than either neighbour."""
    data = LeRobotDir(written.root, "front")
    for index in range(1, len(written.front[1]) - 1):
        frame = data.image(len(written.front[0]) + index).astype(int)  # episode 1
        errors = [np.abs(frame - written.front[1][index + d]).mean() for d in (-1, 0, 1)]
        assert np.argmin(errors) == 1, errors


def test_one_frame_decodes_as_the_whole_episode_does_and_the_cache_holds_the_same(written: Written) -> None:
    import pickle

    lazy, cached = (LeRobotDir(written.root, ["front", "wrist"], cache_images=c) for c in (False, True))
    whole = lazy.episode_frames(2, 0)  # (T, H, W, 3): episode 2 of the video camera, decoded in order
    start = lazy.demo_rows(2).start
    for step in range(len(whole)):
        assert np.array_equal(lazy.image(start + step), whole[step])  # from the keyframe before it
        assert np.array_equal(cached.image(start + step), whole[step])
    assert pickle.loads(pickle.dumps(cached))._cache == {}  # a DataLoader worker decodes its own


def test_chunks_stop_at_the_episode_end(written: Written) -> None:
    data = LeRobotDir(written.root, "wrist")
    last = len(written.actions[0]) - 2  # two steps before episode 0 ends
    chunk, real = data.chunk(last, 4)
    assert real.tolist() == [True, True, False, False]
    assert np.array_equal(chunk[:2], written.actions[0][-2:]) and np.array_equal(chunk[2], written.actions[0][-1])


def test_episode_selection_by_range_list_and_split(written: Written) -> None:
    assert LeRobotDir(written.root, "wrist", episodes="1:3").demos == ["episode_1", "episode_2"]
    assert LeRobotDir(written.root, "wrist", episodes=[3, 0]).demos == ["episode_0", "episode_3"]
    assert LeRobotDir(written.root, "wrist", filter_key="train").num_demos == 4  # the writer's split "0:4"
    only = LeRobotDir(written.root, "wrist", episodes="2:")
    assert np.array_equal(only.actions(), np.concatenate(written.actions[2:]))
    with pytest.raises(ConfigError, match=r"no split 'valid' in meta/info.json \(data.filter_key\); it has train"):
        LeRobotDir(written.root, "wrist", filter_key="valid")
    with pytest.raises(ConfigError, match=r"data.episodes=\[7\]|episodes \[7\] do not exist"):
        LeRobotDir(written.root, "wrist", episodes=[7])
    with pytest.raises(ConfigError, match=r"leaves no episode"):
        LeRobotDir(written.root, "wrist", episodes="4:")


def test_unknown_features_name_what_the_dataset_has(written: Written) -> None:
    with pytest.raises(ConfigError, match=r"no feature 'top' \(data.camera_keys\); its video/image features are "
                                          r"observation.images.front, observation.images.wrist"):
        LeRobotDir(written.root, "top")
    with pytest.raises(ConfigError, match=r"feature 'observation.images.front' \(data.state_keys\) has dtype 'video'"):
        LeRobotDir(written.root, "wrist", state_keys=["observation.images.front"])
    with pytest.raises(ConfigError, match=r"has cameras \['observation.images.front', 'observation.images.wrist'\]"):
        LeRobotDir(written.root, None)


def test_broken_layouts_are_named(written: Written, tmp_path: Path) -> None:
    root = copy_of(written, tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(DataError, match=r"codebase_version 'v1.6' is not supported; vlx reads v3.0, v2.1"):
        LeRobotDir(root, "wrist")
    with pytest.raises(DataError, match=r"no meta/info.json; expected a LeRobot dataset directory"):
        LeRobotDir(tmp_path, "wrist")
    (root / "meta" / "info.json").write_text(json.dumps(info))
    next((root / "videos").rglob("*.mp4")).write_bytes(b"not a video")
    data = LeRobotDir(root, "front")  # videos are read on demand
    with pytest.raises(DataError, match=r"could not decode the video for episode 0 observation.images.front"):
        data.image(0)


def test_nonfinite_actions_are_refused_naming_the_episode(written: Written, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = copy_of(written, tmp_path)
    file = next((root / "data").rglob("*.parquet"))
    table = pq.read_table(file)
    actions = table.column("action").to_pylist()
    actions[len(written.actions[0]) + 2][1] = float("nan")  # episode 1, frame 2
    column = pa.array(actions, type=table.schema.field("action").type)
    pq.write_table(table.set_column(table.column_names.index("action"), "action", column), file)
    with pytest.raises(DataError, match=r"episode 1: the action at frame 2 is not finite"):
        LeRobotDir(root, "wrist")


@pytest.fixture()
def two_camera_vla(tiny_chunked_vla):
    return tiny_chunked_vla


def lerobot_source(written: Written, **extra) -> dict:
    return {"key": "toy", "path": str(written.root), "camera_keys": ["front", "wrist"],
            "state_keys": ["observation.state"], **extra}


def test_training_samples_and_statistics_come_from_the_selected_episodes(two_camera_vla, written: Written) -> None:
    from vlx.training.datamodule import build_dataset

    model = two_camera_vla
    train = build_dataset({"name": "robomimic-hdf5", "datasets": [lerobot_source(written, episodes="0:3")]},
                          "data.train", model, training=True)
    expected = ActionStats.from_actions(np.concatenate(written.actions[:3]), num_trajectories=3)
    assert np.array_equal(model.action_stats["toy"].q01, expected.q01)
    assert np.array_equal(model.action_stats["toy"].q99, expected.q99)
    item = train[0]
    assert item["pixel_values"].shape[0] == 2 and item["state"].shape == (3,) and item["actions"].shape == (4, 3)
    assert np.allclose(item["actions"].numpy(), expected.normalize(written.actions[0][:4]))  # episode 0's first 4
    val = build_dataset({"name": "robomimic-hdf5", "datasets": [lerobot_source(written, episodes="3:")]},
                        "data.val", model, training=False)
    assert len(val) == len(written.actions[3]) and np.array_equal(model.action_stats["toy"].q01, expected.q01)


def test_a_mixture_with_robomimic(two_camera_vla, written: Written, tmp_path: Path) -> None:
    from vlx.envs import record_demos
    from vlx.training.datamodule import build_dataset

    demos = record_demos(tmp_path / "d.hdf5", num_demos=3, seed=0).path
    mixture = build_dataset({"name": "robomimic-hdf5", "datasets": [
        lerobot_source(written, weight=3.0),
        {"key": "reach", "path": str(demos), "state_keys": ["agent_pos", "gripper"]}]}, "data.train", two_camera_vla,
        training=True)
    assert set(two_camera_vla.action_stats) >= {"toy", "reach"}
    weights = mixture.sample_weights()
    toy = sum(len(a) for a in written.actions)
    assert torch_close(weights[:toy].sum() / weights.sum(), 0.75)


def torch_close(value, target: float) -> bool:
    return abs(float(value) - target) < 1e-9


def test_vlx_data_check_finds_no_problem_then_the_broken_episode(written: Written, tmp_path: Path, capsys) -> None:
    from vlx.cli.data import main

    main(["check", str(written.root)])
    printed = capsys.readouterr().out
    assert "episodes=4" in printed and printed.strip().endswith("problems=0")
    assert "cameras=observation.images.front,observation.images.wrist" in printed
    root = copy_of(written, tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["action"]["shape"] = [4]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit) as stopped:
        main(["check", str(root)])
    assert stopped.value.code == 1
    assert "not 4 numbers per frame" in capsys.readouterr().out


def test_openvla_oft_tiny_trains_a_few_steps_on_it(written: Written, vlx_home: Path, tmp_path: Path) -> None:
    """Acceptance: a tiny VLA recipe trains on the LeRobot dataset (both cameras, the state, chunks of 8) and
    its checkpoint carries the dataset's statistics."""
    from safetensors.torch import load_file

    from vlx.builder import to_plain
    from vlx.config import compose
    from vlx.data.tiny_assets import write_tiny_assets
    from vlx.training.run import run_training

    cfg = to_plain(compose(["recipe=openvla-oft-tiny", f"paths.home={vlx_home}", "logger=none", "train.stages=[vla]",
                            "stages.vla.max_steps=2", "stages.vla.batch_size=4", "stages.vla.global_batch_size=4",
                            "stages.vla.sample_table=0", f"output_dir={tmp_path / 'run'}"]))
    write_tiny_assets(cfg["vision"], cfg["llm"], seed=0)
    data = cfg["stages"]["vla"]["data"]
    data["train"]["datasets"] = [lerobot_source(written, episodes="0:3")]
    data["val"]["datasets"] = [lerobot_source(written, episodes="3:")]
    checkpoint = run_training(cfg)["vla"]
    metadata = json.loads((checkpoint / "vlx.json").read_text())
    assert np.isfinite(metadata["metrics"]["train/loss"]) and "train/action_l1" in metadata["metrics"]
    stats = json.loads((checkpoint / "action_stats.json").read_text())
    assert list(stats) == ["toy"] and stats["toy"]["num_trajectories"] == 3
    assert list(json.loads((checkpoint / "state_stats.json").read_text())) == ["toy"]
    assert load_file(checkpoint / "model.safetensors")  # the weights were written


def test_v21_reads_as_lerobots_converter_reads_it(written: Written, tmp_path: Path) -> None:
    """The v2.1 layout (one parquet and one video per episode) reads the same actions, tasks and frames as the
    v3.0 dataset LeRobot's own v2.1 → v3.0 converter makes of it."""
    from tests.data.lerobot_writer import write_v21

    converter = pytest.importorskip("ledataset.datasets.v30.convert_dataset_v21_to_v30")
    v21 = LeRobotDir(write_v21(written, tmp_path / "v21"), ["front", "wrist"], state_keys=["observation.state"])
    shutil.copytree(tmp_path / "v21", tmp_path / "converted" / "v21")  # the converter replaces its input
    assert v21.layout.version == "v2.1" and v21.demos == [f"episode_{i}" for i in range(4)]
    assert np.array_equal(v21.actions(), np.concatenate(written.actions))
    assert np.array_equal(v21.states(), np.concatenate(written.state))
    assert [v21.instruction(v21.demo_rows(d).start) for d in range(4)] == list(written.tasks)
    converter.convert_dataset("v21", root=tmp_path / "converted", push_to_hub=False)
    v30 = LeRobotDir(tmp_path / "converted" / "v21", ["front", "wrist"], state_keys=["observation.state"])
    assert v30.layout.version == "v3.0"
    assert np.array_equal(v30.actions(), v21.actions()) and np.array_equal(v30.states(), v21.states())
    for index in range(len(v21)):
        assert v30.instruction(index) == v21.instruction(index)
        ours, theirs = v21.images(index), v30.images(index)
        assert np.array_equal(ours["observation.images.wrist"], theirs["observation.images.wrist"])
        assert np.abs(ours["observation.images.front"].astype(int) - theirs["observation.images.front"]).mean() < 2
        name, step = v21.locate(index)
        original = written.front[int(name.removeprefix("episode_"))][step]
        assert np.abs(ours["observation.images.front"].astype(int) - original).mean() < 3
