"""Tests of `vlx data metaworld` (the Meta-World demo recorder) and of the Meta-World evaluation in `vlx eval`:
robomimic's layout, `vlx data check`'s checks and robomimic's SequenceDataset on a tiny file, determinism by seed,
and the per-task report of the scripted expert alone and of a policy with its wrong-instruction control."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.envs.robomimic_reader import robomimic_sequence_dataset
from vlx.data.check import check_robomimic
from vlx.envs import MetaWorldEnv
from vlx.envs.metaworld_record import MetaWorldRecording, record_metaworld
from vlx.envs.record import SEED_STRIDE
from vlx.errors import ConfigError
from vlx.evaluation.closed_loop import evaluate_expert
from vlx.evaluation.task_suite import evaluate_tasks, suite_table

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                reason="the vlx[metaworld] extra (in vlx[dev])")  # imported by vlx only when used

OBS = {"corner2_image": ((32, 32, 3), np.uint8), "agentview_image": ((32, 32, 3), np.uint8),
       "agent_pos": ((4,), np.float32), "state": ((39,), np.float32)}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> MetaWorldRecording:
    return record_metaworld(tmp_path_factory.mktemp("mw") / "reach.hdf5", "reach-v3", 3, seed=2,
                            valid_fraction=0.34, image_size=32)


def test_layout(recorded: MetaWorldRecording):
    assert (recorded.tasks, recorded.demos, recorded.rejected) == (["reach-v3"], 3, {"reach-v3": 0})
    assert recorded.expert_success_rate("reach-v3") == 1.0
    assert not recorded.path.with_name("reach.hdf5.tmp").exists()
    with h5py.File(recorded.path, "r") as f:
        data = f["data"]
        assert json.loads(data.attrs["env_args"]) == {"env_name": "metaworld", "type": "vlx", "tasks": ["reach-v3"],
                                                      "env_kwargs": {"cameras": ["corner2"], "image_size": 32,
                                                                     "max_steps": 500}}
        assert sorted(f["mask"]) == ["reach-v3", "train", "valid"]
        assert f["mask/train"][:].tolist() == [b"demo_0", b"demo_1"] and f["mask/valid"][:].tolist() == [b"demo_2"]
        assert f["mask/reach-v3"][:].tolist() == [b"demo_0", b"demo_1", b"demo_2"]
        lengths = [int(data[f"demo_{i}"].attrs["num_samples"]) for i in range(3)]
        assert int(data.attrs["total"]) == sum(lengths) == recorded.samples
        for i, length in enumerate(lengths):
            demo = data[f"demo_{i}"]
            assert (int(demo.attrs["seed"]), demo.attrs["task"]) == (2 * SEED_STRIDE + i, "reach-v3")
            assert json.loads(demo.attrs["ep_meta"]) == {"lang": "Reach a goal position"}
            assert demo["actions"].shape == (length, 4) and demo["actions"].dtype == np.float32
            assert np.abs(demo["actions"][:]).max() <= 1.0
            assert demo["dones"][:].tolist() == [0] * (length - 1) + [1] and demo["rewards"].shape == (length,)
            for prefix in ("obs", "next_obs"):
                assert {key: (v.shape[1:], v.dtype) for key, v in demo[prefix].items()} == OBS
                assert demo[f"{prefix}/agentview_image"].id == demo[f"{prefix}/corner2_image"].id  # a hard link
            np.testing.assert_array_equal(demo["obs/state"][1:], demo["next_obs/state"][:-1])
        env = MetaWorldEnv("reach-v3", image_size=32)
        try:
            obs, _ = env.reset(2 * SEED_STRIDE)
            np.testing.assert_array_equal(data["demo_0/obs/corner2_image"][0], obs["corner2_image"])
            np.testing.assert_array_equal(data["demo_0/obs/state"][0], obs["state"])
            np.testing.assert_array_equal(data["demo_0/states"][0], env.sim_state())
        finally:
            env.close()


def test_vlx_data_check_finds_no_problem(recorded: MetaWorldRecording):
    for cameras, state in (("agentview_image", None), (["corner2_image"], ["agent_pos"])):  # the defaults; LeRobot's
        report = check_robomimic(recorded.path, cameras, state_keys=state)
        assert (report.checked, [str(problem) for problem in report.problems]) == (3, [])


def test_robomimic_sequence_dataset_reads_it(recorded: MetaWorldRecording):
    dataset = robomimic_sequence_dataset(recorded.path, "agent_pos", "corner2_image")
    with h5py.File(recorded.path, "r") as f:
        assert len(dataset) == sum(int(f[f"data/demo_{i}"].attrs["num_samples"]) for i in range(2))
        actions, image = f["data/demo_0/actions"][:], f["data/demo_0/obs/corner2_image"][3]  # (T, 4), (32, 32, 3)
    item = dataset[3]
    np.testing.assert_array_equal(item["actions"], actions[3:4])
    np.testing.assert_array_equal(item["obs"]["corner2_image"], image[None])


def test_cli_is_deterministic_by_seed(recorded: MetaWorldRecording, tmp_path: Path, capsys: pytest.CaptureFixture):
    from vlx.cli.data import main

    out = tmp_path / "again.hdf5"
    main(["metaworld", "--tasks", "reach", "--demos", "3", "--out", str(out), "--seed", "2", "--image-size", "32",
          "--valid-fraction", "0.34"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "rejected[reach-v3]=0 expert_success_rate[reach-v3]=1.000"
    assert printed[1:] == ["tasks=1", "demos=3", f"samples={recorded.samples}", "rejected=0", f"path={out}"]
    with h5py.File(recorded.path, "r") as first, h5py.File(out, "r") as second:
        for key in ("actions", "states", "obs/corner2_image", "obs/state"):
            np.testing.assert_array_equal(first[f"data/demo_2/{key}"][:], second[f"data/demo_2/{key}"][:])


def test_bad_arguments_leave_no_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^--demos=0; expected at least 1$"):
        record_metaworld(tmp_path / "x.hdf5", "reach-v3", 0)
    with pytest.raises(ConfigError, match=r"^--tasks='mt11' is not a Meta-World task; did you mean 'mt10'\?"):
        record_metaworld(tmp_path / "x.hdf5", "mt11", 1)
    assert list(tmp_path.iterdir()) == []


def suite_config(tmp_path: Path, **rollout) -> dict:
    settings = {"env": "metaworld", "env_kwargs": {"image_size": 16}, "episodes": 2, "first_seed": 10**9,
                "batch_size": 2, "videos": 1, "expert_noise": 0.0, "policy": "expert", "tasks": ["reach-v3"],
                "wrong_instruction": True, "blind_instruction": "move to the block", **rollout}
    return {"rollout": settings, "output_dir": str(tmp_path / "eval"), "logger": {"name": "none"}, "run_name": "t"}


def test_expert_alone_reports_each_task_and_split(tmp_path: Path, capsys: pytest.CaptureFixture):
    report = evaluate_expert(suite_config(tmp_path))
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["success_rate[reach-v3]=1.000", "success_rate[split=easy]=1.000 tasks=1", "success_rate=1.000",
                       "episodes_per_task=2", f"rollout={tmp_path / 'eval' / 'rollout.json'}"]
    saved = json.loads((tmp_path / "eval" / "rollout.json").read_text())
    assert saved["policy"] == "expert" and saved["splits"] == {"easy": {"tasks": 1, "success_rate": 1.0, "episodes": 2}}
    assert saved["tasks"]["reach-v3"] == {"split": "easy", "instruction": "Reach a goal position",
                                          "success_rate": 1.0, "episodes": 2}
    assert [e["seed"] for e in saved["episodes"]["reach-v3"]["policy"]] == [10**9, 10**9 + 1]
    assert saved["videos"] == [str(tmp_path / "eval" / "videos" / "reach-v3" / f"episode_{10**9}.gif")]
    assert Path(saved["videos"][0]).is_file() and report["success_rate"] == 1.0
    assert suite_table(report) == (["task", "split", "success", "episodes"], [["reach-v3", "easy", 1.0, 2]])


def test_policy_gets_the_wrong_instruction_control_and_the_expert(tmp_path: Path, capsys: pytest.CaptureFixture):
    seen: list[str] = []

    def still(observations: list[dict], instructions: list[str]) -> np.ndarray:  # never moves: never succeeds
        assert all(o["agentview_image"].shape == (16, 16, 3) and o["agent_pos"].shape == (4,) for o in observations)
        seen.extend(instructions)
        return np.zeros((len(observations), 4))

    cfg = suite_config(tmp_path, policy="model", tasks="reach-v3,door-open-v3", episodes=1, videos=0,
                       env_kwargs={"image_size": 16, "max_steps": 4})
    report = evaluate_tasks(cfg, cfg["rollout"], still, None)
    assert set(seen) == {"Reach a goal position", "Open a door with a revolving joint"}  # own and wrong ones
    assert report["tasks"]["reach-v3"]["wrong_instruction"] == "Open a door with a revolving joint"
    assert report["tasks"]["door-open-v3"]["wrong_instruction"] == "Reach a goal position"
    rates = ("success_rate", "wrong_instruction_success_rate", "expert_success_rate")
    assert [report[key] for key in rates] == [0.0, 0.0, 0.0]
    assert "success_rate[reach-v3]=0.000 expert_success_rate[reach-v3]=0.000 wrong_instruction_success_rate[reach-v3]" \
           "=0.000" in capsys.readouterr().out  # the expert too gets only 4 steps
    assert suite_table(report)[0] == ["task", "split", "success", "episodes", "expert_success",
                                      "wrong_instruction_success"]
    with pytest.raises(ConfigError, match=r"^rollout.tasks names Meta-World tasks; it needs rollout.env=metaworld"):
        evaluate_tasks({**cfg, "rollout": {**cfg["rollout"], "env": "block-reach"}}, {**cfg["rollout"],
                       "env": "block-reach"}, still, None)


def test_eval_keys_are_typed_and_policy_is_checked(tmp_path: Path):
    from vlx.cli.report import evaluate_checkpoint
    from vlx.config import compose, to_plain

    cfg = to_plain(compose(["rollout.env=metaworld", "rollout.policy=expert", "rollout.tasks=mt10"]))
    assert {key: cfg["rollout"][key] for key in ("policy", "tasks", "wrong_instruction")} == {
        "policy": "expert", "tasks": "mt10", "wrong_instruction": True}
    with pytest.raises(ConfigError, match=r"^config key 'rollout.taks' is not a rollout setting; did you mean 'tasks'"):
        compose(["+rollout.taks=mt10"])
    with pytest.raises(ConfigError) as info:
        evaluate_checkpoint({**cfg, "rollout": {**cfg["rollout"], "policy": "exprt"}, "output_dir": str(tmp_path)})
    assert str(info.value) == ("config key 'rollout.policy'='exprt'; expected model (the checkpoint) or expert (the "
                               "environment's scripted expert, no checkpoint)")
    with pytest.raises(ConfigError, match=r"^rollout.policy=expert: rollout.env='gymnasium' has no scripted expert"):
        evaluate_checkpoint({**cfg, "rollout": {**cfg["rollout"], "env": "gymnasium"}, "output_dir": str(tmp_path)})


def test_a_vla_checkpoint_rolls_out_on_metaworld_tasks(tiny_cfg: dict, tmp_path: Path, capsys: pytest.CaptureFixture):
    """The model path of `vlx eval ... rollout.tasks=...`: a (random) 4-D action VLA sees agentview_image and acts."""
    import torch

    from vlx.builder import build_model
    from vlx.data.action_stats import ActionStats
    from vlx.evaluation.closed_loop import evaluate_closed_loop

    torch.manual_seed(0)
    model = build_model({**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 4, "tokens": "new"},
                         "prompt": {"name": "pure", "image_placement": "after-bos"}}).eval()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(100, 4)).astype(np.float32)  # (100, 4)
    model.action_stats["mw"] = ActionStats.from_actions(actions, num_trajectories=5)
    cfg = suite_config(tmp_path, policy="model", episodes=1, videos=0, unnorm_key="mw", execute_steps=None,
                       ensemble=None, ensemble_weight=0.01, env_kwargs={"image_size": 16, "max_steps": 3})
    report = evaluate_closed_loop({**cfg, "eval": {"demos": None}}, model)
    assert report["policy"] == "model" and report["tasks"]["reach-v3"]["episodes"] == 1
    assert [e["steps"] for e in report["episodes"]["reach-v3"]["policy"]] == [3]  # 3 steps, no success
    assert set(report["episodes"]["reach-v3"]) == {"policy", "wrong_instruction", "expert"}
    assert "success_rate[split=easy]=0.000 tasks=1" in capsys.readouterr().out
