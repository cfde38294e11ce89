"""The VLA learning checks, end to end on shortened schedules.

`vlx demo recipe=openvla-tiny` records block-reach demonstrations (both cameras and the state), writes the
scene questions, trains both stages (scene → vla) and evaluates in closed loop: the policy must beat the
same policy given an uninformative instruction (it reads the language), offline token accuracy and L1 must
beat the blind control, the rollout must write videos and the expert control, both stages checkpoints and
offline W&B runs. The chunked heads of OpenVLA-OFT and pi0 (`openvla-oft-tiny`, `flow-vla-tiny`: two
cameras, the state token, chunks of 8) then train their `vla` stage from that run's scene checkpoint
(`init_from` keeps its backbones and starts the new head and state projector fresh) and must beat the
language-blind control in closed loop too. The full schedules' numbers are in the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.subprocess_helpers import numbers, run_vlx

SHORT = ["stages.vla.epochs=4", "rollout.episodes=20", "rollout.videos=2", "eval.demos_limit=256", "run_name=ci"]
# The scene stage keeps its full schedule: shorter ones (1,000 demos × 4 epochs) never reached the point where the
# questions are learned, and then the actions ignore the instruction (measured: accuracy 0.443 vs blind 0.444).
MARGIN = 0.01  # token accuracy over the language-blind control (a weak signal: the gripper and saturated moves are
# easy to guess blind; the full schedule gives 0.477 vs 0.415), so L1 must also drop clearly (full: 0.045 vs 0.451)
L1_RATIO = 0.8
SUCCESS_MARGIN = 0.4  # closed-loop success over the language-blind control (measured: 1.00 vs 0.05 here)


@pytest.fixture(scope="module")
def openvla_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """The shortened openvla-tiny demo: its directory and the numbers it printed."""
    root = tmp_path_factory.mktemp("vla")
    demo = run_vlx("demo", "recipe=openvla-tiny", *SHORT, cwd=root, home=root / "home", timeout=1200, check=True)
    return root, {**numbers(demo.stdout), "stdout": demo.stdout}


@pytest.mark.slow
def test_openvla_tiny_reads_the_instruction(openvla_tiny) -> None:
    root, result = openvla_tiny
    shown = result["stdout"][-2000:]
    assert result["success_rate"] >= result["blind_success_rate"] + SUCCESS_MARGIN, shown
    assert result["action_accuracy"] >= result["blind_action_accuracy"] + MARGIN, shown
    assert result["expert_success_rate"] >= 0.95, shown
    assert result["action_l1"] <= L1_RATIO * result["blind_action_l1"], shown
    assert result["episodes"] == 20

    run = root / "runs" / "ci"
    for stage in ("scene", "vla"):
        assert (run / "checkpoints" / stage / "model.safetensors").is_file()
    stats = json.loads((run / "checkpoints" / "vla" / "action_stats.json").read_text())
    assert list(stats) == ["block-reach"] and stats["block-reach"]["mask"] == [True, True, False]
    report = json.loads((run / "rollout.json").read_text())
    assert len(report["episodes"]["policy"]) == 20 and len(report["videos"]) == 2
    offline_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 3  # scene, vla, rollout


BATCH_16 = ["stages.vla.global_batch_size=16", "stages.vla.batch_size=16"]
CHUNKED = {  # recipe → the `vla` schedule CI affords (the full recipes: 3 epochs of batch 32, README); measured from
    # this scene checkpoint (first 20 episodes, deterministic: CI's machines gave the same numbers): L1 after 1 epoch
    # of batch 32 0.00 vs blind 0.00, after 2 epochs 0.10 vs 0.00 on 30 (it rarely closes the gripper yet;
    # `episode_end=repeat` 0.60 vs 0.33 on 30), after 2 epochs of batch 16 — the same CPU time, twice the updates —
    # 0.95 vs 0.15 (on 7,000 of the samples: 0.00); flow matching after 1 epoch of batch 32 0.65 vs 0.25 (on the
    # bar), of batch 16 0.85 vs 0.20
    "openvla-oft-tiny": ["stages.vla.epochs=2", *BATCH_16],
    "flow-vla-tiny": ["stages.vla.epochs=1", *BATCH_16],
}
EPISODES = 20


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(CHUNKED))
def test_chunked_heads_read_the_instruction(openvla_tiny, recipe: str) -> None:
    root, _ = openvla_tiny
    scene = root / "runs" / "ci" / "checkpoints" / "scene"
    train = run_vlx("train", f"recipe={recipe}", "train.stages=[vla]", f"stages.vla.init_from={scene}",
                    *CHUNKED[recipe], f"run_name={recipe}", "logger=none", cwd=root, home=root / "home", timeout=1200,
                    check=True)
    assert "new head and proprio (fresh weights" in train.stdout
    checkpoint = root / "runs" / recipe / "checkpoints" / "vla"
    evaluation = run_vlx("eval", f"checkpoint={checkpoint}", f"rollout.episodes={EPISODES}", "rollout.videos=0",
                         "eval.demos_limit=128", f"run_name={recipe}-eval", "logger=none", cwd=root, home=root / "home",
                         timeout=1200, check=True)
    result = numbers(evaluation.stdout)
    shown = evaluation.stdout[-2000:]
    assert result["success_rate"] >= result["blind_success_rate"] + SUCCESS_MARGIN, shown
    assert result["action_l1"] <= L1_RATIO * result["blind_action_l1"], shown
    assert (checkpoint / "state_stats.json").is_file()
