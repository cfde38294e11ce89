"""Closed-loop `vlx eval` of a VLA: rollouts of the policy and both controls, offline action metrics,
the report file and GIFs — checked on a tiny random VLA (the numbers themselves are the slow test's job)."""

from __future__ import annotations

import json

import pytest

from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.envs import record_demos
from vlx.errors import ConfigError
from vlx.evaluation.actions import evaluate_actions
from vlx.evaluation.closed_loop import evaluate_closed_loop


def run_config(tmp_path, **eval_cfg) -> dict:
    rollout = {"env": "block-reach", "env_kwargs": {"max_steps": 10}, "episodes": 4, "first_seed": 10**9,
               "batch_size": 3, "videos": 1, "unnorm_key": None, "blind_instruction": "move to the block",
               "expert_noise": 0.0}
    return {"rollout": rollout, "eval": {"demos": None, **eval_cfg}, "output_dir": str(tmp_path / "eval"),
            "logger": {"name": "none"}, "run_name": "t"}


def test_rollouts_controls_and_report(tiny_vla, tmp_path, capsys) -> None:
    demos = record_demos(tmp_path / "d.hdf5", num_demos=5, seed=0, valid_fraction=0.4).path
    report = evaluate_closed_loop(run_config(tmp_path, demos=str(demos), demos_filter_key="valid", demos_limit=6),
                                  tiny_vla)
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "eval" / "rollout.json").read_text())
    for key, run in (("success_rate", "policy"), ("blind_success_rate", "blind"), ("expert_success_rate", "expert")):
        episodes = saved["episodes"][run]  # each rate is the mean of its own episodes, printed as computed
        assert report[key] == sum(e["success"] for e in episodes) / len(episodes) == saved[key]
        assert f"{key}={report[key]:.3f}" in printed
    for key in ("action_accuracy", "blind_action_accuracy"):
        assert f"{key}={report[key]:.3f}" in printed
    assert report["expert_success_rate"] == 1.0  # the noiseless expert needs at most 9 steps
    assert len(saved["episodes"]["policy"]) == 4 and len(saved["videos"]) == 1
    assert (tmp_path / "eval" / "videos").is_dir()
    direct = evaluate_actions(tiny_vla, RobomimicFile(demos, filter_key="valid"), limit=6)
    assert direct.action_accuracy == report["action_accuracy"] and direct.n == 6


def test_env_must_be_named(tiny_vla, tmp_path) -> None:
    cfg = run_config(tmp_path)
    cfg["rollout"]["env"] = None
    with pytest.raises(ConfigError, match="rollout.env"):
        evaluate_closed_loop(cfg, tiny_vla)


def test_controls_can_be_switched_off_over_the_checkpoints_settings(tiny_vla, tmp_path, capsys) -> None:
    """`rollout.expert=false` skips the scripted expert; an empty blind instruction skips the blind control even when
    the checkpoint's saved rollout settings name one (null would keep the saved value)."""
    tiny_vla.config["rollout"] = {"blind_instruction": "move to the block", "expert_noise": 0.3}
    cfg = run_config(tmp_path)
    cfg["rollout"].update(blind_instruction="", expert=False)
    report = evaluate_closed_loop(cfg, tiny_vla)
    printed = capsys.readouterr().out
    assert "success_rate" in report and "blind_success_rate" not in report and "expert_success_rate" not in report
    assert "blind_success_rate=" not in printed and "expert_success_rate=" not in printed
    saved = json.loads((tmp_path / "eval" / "rollout.json").read_text())
    assert list(saved["episodes"]) == ["policy"]


def test_the_saved_expert_noise_applies_when_the_config_leaves_it_unset(tiny_vla, tmp_path) -> None:
    tiny_vla.config["rollout"] = {"expert_noise": 0.3}
    cfg = run_config(tmp_path)
    cfg["rollout"].update(expert_noise=None, blind_instruction=None)
    report = evaluate_closed_loop(cfg, tiny_vla)
    assert report["settings"]["expert_noise"] == 0.3 and "blind_success_rate" not in report
