"""`vlx data convert` both ways. robomimic → LeRobot v3.0 is read back by LeRobot's own `LeRobotDataset`
(metadata, tasks, episodes, every action and state exactly; its video decoders need torchcodec's FFmpeg or an
old torchvision, which this machine lacks, so frames are compared through vlx's PyAV reader within the codec's
tolerance); robomimic → LeRobot → robomimic keeps actions, states (split back into their keys), instructions and
masks exactly; a dataset written by LeRobot's writer converts to robomimic with exact actions and PNG frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.lerobot_writer import TASKS, Written, write_lerobot
from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.envs import record_demos
from vlx.errors import ConfigError

pytest.importorskip("av")
pytest.importorskip("pandas")

from vlx.cli.data import main  # noqa: E402
from vlx.data.lerobot import LeRobotDir  # noqa: E402

CAMERAS = ["agentview_image", "wrist_image"]
STATE = ["agent_pos", "gripper"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_demos(tmp_path_factory.mktemp("convert") / "demos.hdf5", num_demos=6, seed=0,
                        valid_fraction=0.34).path


@pytest.fixture(scope="module")
def converted(recorded: Path) -> Path:
    out = recorded.parent / "lerobot"
    main(["convert", str(recorded), str(out)])
    return out


def robomimic(path: Path, **extra) -> RobomimicFile:
    return RobomimicFile(path, CAMERAS, state_keys=STATE, **extra)


def test_lerobots_own_reader_reads_the_converted_dataset(recorded: Path, converted: Path) -> None:
    lerobot = pytest.importorskip("ledataset.datasets.lerobot_dataset")
    import torch

    source = robomimic(recorded)
    dataset = lerobot.LeRobotDataset("local/converted", root=converted)
    assert (dataset.meta.total_episodes, len(dataset)) == (6, len(source))
    rows = dataset.hf_dataset
    assert np.array_equal(torch.stack(list(rows["action"])).numpy(), source.actions())
    assert np.array_equal(torch.stack(list(rows["observation.state"])).numpy(), source.states())
    tasks = [dataset.meta.tasks.index[int(i)] for i in rows["task_index"]]
    assert tasks == [source.instruction(i) for i in range(len(source))]
    assert dataset.meta.info["splits"] == {"train": "0:4", "valid": "4:6"}  # record_demos: valid = the last demos
    assert dataset.meta.features["observation.state"]["names"] == ["agent_pos.0", "agent_pos.1", "gripper.0"]
    assert set(dataset.meta.stats) >= {"action", "observation.state", "observation.images.agentview_image"}


def test_converted_frames_are_within_the_codecs_tolerance(recorded: Path, converted: Path) -> None:
    source, target = robomimic(recorded), LeRobotDir(converted, CAMERAS, state_keys=["observation.state"])
    for index in range(len(source)):
        for camera in CAMERAS:
            frame = target.images(index)[f"observation.images.{camera}"].astype(int)
            error = np.abs(frame - source.images(index)[camera])
            assert error.mean() < 6, (index, camera, error.mean())  # AV1 at crf 30 on 64 px renders


def test_robomimic_to_lerobot_and_back_keeps_actions_states_instructions_and_masks(recorded: Path, converted: Path,
                                                                                    tmp_path: Path) -> None:
    back = tmp_path / "back.hdf5"
    main(["convert", str(converted), str(back)])
    for split in ("train", "valid"):
        before, after = robomimic(recorded, filter_key=split), robomimic(back, filter_key=split)
        assert before.demos == after.demos
        assert np.array_equal(before.actions(), after.actions()) and np.array_equal(before.states(), after.states())
        assert [before.instruction(i) for i in range(len(before))] == [after.instruction(i) for i in range(len(after))]


def test_lerobot_writer_dataset_to_robomimic(tmp_path: Path, capsys) -> None:
    written: Written = write_lerobot(tmp_path / "written", lengths=(3, 4))
    out = tmp_path / "written.hdf5"
    main(["convert", str(written.root), str(out)])
    assert "robomimic=" in capsys.readouterr().out
    data = RobomimicFile(out, ["front", "wrist"], state_keys=["state"], filter_key="train")
    assert np.array_equal(data.actions(), np.concatenate(written.actions))
    assert np.array_equal(data.states(), np.concatenate(written.state))  # names x, y, gripper: one obs/state
    assert np.array_equal(data.images(4)["wrist"], written.wrist[1][1])  # PNG frames stay exact
    assert [data.instruction(0), data.instruction(3)] == [TASKS[0], TASKS[1]]
    again = tmp_path / "again"  # and back to LeRobot: the acceptance round trip
    main(["convert", str(out), str(again), "--state-key", "state"])
    back = LeRobotDir(again, ["front", "wrist"], state_keys=["observation.state"])
    assert np.array_equal(back.actions(), np.concatenate(written.actions))
    assert np.array_equal(back.states(), np.concatenate(written.state))
    assert [back.instruction(0), back.instruction(3)] == [TASKS[0], TASKS[1]]


def test_a_source_that_is_neither_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"neither a LeRobot dataset directory \(with meta/info.json\) nor a "
                                          r"robomimic HDF5 file"):
        main(["convert", str(tmp_path), str(tmp_path / "out")])
