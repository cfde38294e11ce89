"""Tests of the demo recorder: exact robomimic HDF5 layout, robomimic's own loader, and `vlx data block-reach`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.envs.robomimic_reader import robomimic_sequence_dataset
from vlx.envs import BlockReach, RecordSummary, record_demos
from vlx.envs.record import SEED_STRIDE
from vlx.errors import ConfigError

OBS_SHAPES = {
    "agentview_image": ((64, 64, 3), np.uint8), "agent_pos": ((2,), np.float32), "gripper": ((1,), np.float32),
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> RecordSummary:
    return record_demos(tmp_path_factory.mktemp("demos") / "reach.hdf5", 12, seed=3)


def test_summary(recorded: RecordSummary):
    assert recorded.path.name == "reach.hdf5" and recorded.path.is_file()
    assert not recorded.path.with_name("reach.hdf5.tmp").exists()
    assert recorded.demos == 12 and recorded.discarded >= 0
    assert recorded.expert_success_rate == 12 / (12 + recorded.discarded)


def test_layout(recorded: RecordSummary):
    with h5py.File(recorded.path, "r") as f:
        data = f["data"]
        assert sorted(data.keys(), key=lambda k: int(k[5:])) == [f"demo_{i}" for i in range(12)]
        assert json.loads(data.attrs["env_args"]) == BlockReach().env_args()
        lengths = [int(data[f"demo_{i}"].attrs["num_samples"]) for i in range(12)]
        assert int(data.attrs["total"]) == sum(lengths) == recorded.samples
        assert f["mask/train"][:].tolist() == [f"demo_{i}".encode() for i in range(11)]
        assert f["mask/valid"][:].tolist() == [b"demo_11"]
        for i, length in enumerate(lengths):
            demo = data[f"demo_{i}"]
            assert demo["actions"].shape == (length, 3) and demo["actions"].dtype == np.float32
            assert demo["rewards"][:].tolist() == [0.0] * (length - 1) + [1.0]
            assert demo["dones"][:].tolist() == [0] * (length - 1) + [1]
            assert demo["states"].shape == (length, 13)
            for prefix in ("obs", "next_obs"):
                for key, (shape, dtype) in OBS_SHAPES.items():
                    assert demo[f"{prefix}/{key}"].shape == (length, *shape)
                    assert demo[f"{prefix}/{key}"].dtype == dtype
            np.testing.assert_array_equal(demo["obs/agentview_image"][1:], demo["next_obs/agentview_image"][:-1])
            seed = int(demo.attrs["seed"])
            assert seed % SEED_STRIDE < 12 + recorded.discarded and seed // SEED_STRIDE == 3
            env = BlockReach()
            obs, info = env.reset(seed)
            assert json.loads(demo.attrs["ep_meta"]) == {"lang": info["instruction"]}
            np.testing.assert_array_equal(demo["obs/agentview_image"][0], obs["agentview_image"])
            np.testing.assert_array_equal(demo["states"][0], env.state())


def test_actions_are_clean_labels(recorded: RecordSummary):
    """The stored labels are the noiseless expert's for the stored states, not the executed noisy moves."""
    with h5py.File(recorded.path, "r") as f:
        demo = f["data/demo_0"]
        states, actions = demo["states"][:], demo["actions"][:]  # (T, 13), (T, 3)
    delta = states[:, 3:9].reshape(-1, 3, 2)[np.arange(len(states)), states[:, 9].astype(int)] - states[:, :2]
    np.testing.assert_allclose(actions[:, :2], np.clip(delta / 0.1, -1, 1), atol=1e-5)
    np.testing.assert_array_equal(actions[:, 2], np.where(np.linalg.norm(delta, axis=1) <= 0.1, 1.0, -1.0))


def test_robomimic_loader_reads_it(recorded: RecordSummary):
    dataset = robomimic_sequence_dataset(recorded.path, "agent_pos", "agentview_image")
    with h5py.File(recorded.path, "r") as f:
        train_lengths = [int(f[f"data/demo_{i}"].attrs["num_samples"]) for i in range(11)]
        first = f["data/demo_0/actions"][:]  # (T, 3)
        image = f["data/demo_0/obs/agentview_image"][1]  # (64, 64, 3)
    assert len(dataset) == sum(train_lengths)
    item = dataset[1]
    np.testing.assert_array_equal(item["actions"], first[1:2])
    np.testing.assert_array_equal(item["obs"]["agentview_image"], image[None])  # raw (1, 64, 64, 3) uint8


def test_bad_arguments_raise(tmp_path: Path):
    with pytest.raises(ConfigError, match="valid_fraction=1.5"):
        record_demos(tmp_path / "x.hdf5", 2, valid_fraction=1.5)
    with pytest.raises(ConfigError, match="num_demos=0"):
        record_demos(tmp_path / "x.hdf5", 0)
    with pytest.raises(ConfigError, match="noise=-1"):
        record_demos(tmp_path / "x.hdf5", 2, noise=-1)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from vlx.cli.data import main

    out = tmp_path / "d.hdf5"
    main(["block-reach", "--demos", "5", "--out", str(out), "--seed", "1", "--valid-fraction", "0.4", "--noise", "0.2"])
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["demos"] == "5" and lines["path"] == str(out) and int(lines["discarded"]) >= 0
    with h5py.File(out, "r") as f:
        assert int(lines["samples"]) == int(f["data"].attrs["total"])
        assert len(f["data"]) == 5 and f["mask/valid"][:].tolist() == [b"demo_3", b"demo_4"]
        assert int(f["data/demo_0"].attrs["seed"]) // SEED_STRIDE == 1


def test_default_valid_fraction_can_leave_valid_empty(tmp_path: Path):
    summary = record_demos(tmp_path / "five.hdf5", 5)  # round(0.1 * 5) = 0 validation demos
    with h5py.File(summary.path, "r") as f:
        assert len(f["mask/train"]) == 5 and len(f["mask/valid"]) == 0
