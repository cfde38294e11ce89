"""The VLA learning checks, end to end on shortened schedules.

`vlx demo recipe=openvla-oft-tiny` records block-reach demonstrations (both cameras and the state), writes the
scene questions, trains both stages (scene → vla: OpenVLA-OFT's L1-regression head, chunks of 8) and evaluates
in closed loop: the policy must beat the same policy given an uninformative instruction (it reads the
language), its offline L1 must beat the blind control, the rollout must write videos and the expert control,
both stages' checkpoints and offline W&B runs. pi0's flow-matching head (`flow-vla-tiny`) then trains its
`vla` stage from that run's scene checkpoint (`init_from` keeps its backbones and starts the new head and
state projector fresh) and must beat the language-blind control in closed loop too.

OpenVLA's own action-token head (`openvla-tiny`) is not in this file: on the schedules CI affords its
closed-loop result depends on the CPU (4 `vla` epochs from the same seeds: 1.00 vs blind 0.20 on one of this
project's machines, 0.00 vs 0.00 on another; 6 epochs there 0.50 vs 0.45), so its proof is the README's full
`vlx demo recipe=openvla-tiny` command (0.99-1.00 vs blind ≤ 0.30); its parts are tested fast in
tests/heads/test_action_head.py and against OpenVLA's own logits in tests/interop/test_openvla.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.subprocess_helpers import numbers, run_vlx

BATCH_16 = ["stages.vla.global_batch_size=16", "stages.vla.batch_size=16"]
# The `vla` schedules CI affords (the full recipes: 3 epochs of batch 32, README), measured from the same scene
# checkpoint on the first 20 held-out episodes: L1 after 2 epochs of batch 16 — the CPU time of 2 epochs of 32,
# twice the updates — 0.95 vs blind 0.15 on one machine, 1.00 vs 0.40 on another (after 1 epoch of batch 32: 0.00
# vs 0.00; after 2 epochs of 32: 0.10 vs 0.00, it rarely closes the gripper yet); flow matching after 1 epoch of
# batch 16 0.85 vs 0.20 on the first machine but 0.50 vs 0.10 on the second (exactly on the bar), so it trains 2
# (after 2 epochs of batch 32: 0.80 on 30 episodes).
SHORT = ["stages.vla.epochs=2", *BATCH_16, "rollout.episodes=20", "rollout.videos=2", "eval.demos_limit=128",
         "run_name=ci"]
# The scene stage keeps its full schedule: shorter ones (1,000 demos × 4 epochs) never reached the point where the
# questions are learned, and then the actions ignore the instruction (measured: accuracy 0.443 vs blind 0.444).
L1_RATIO = 0.8  # offline L1 at most this fraction of the language-blind control's
SUCCESS_MARGIN = 0.4  # closed-loop success over the language-blind control
EPISODES = 20


@pytest.fixture(scope="module")
def openvla_oft_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """The shortened openvla-oft-tiny demo: its directory and the numbers it printed."""
    root = tmp_path_factory.mktemp("vla")
    demo = run_vlx("demo", "recipe=openvla-oft-tiny", *SHORT, cwd=root, home=root / "home", timeout=3600,
                   check=True)  # a hang guard: 25-30 min on this project's 2-core machines
    return root, {**numbers(demo.stdout), "stdout": demo.stdout}


@pytest.mark.slow
def test_openvla_oft_tiny_reads_the_instruction(openvla_oft_tiny) -> None:
    root, result = openvla_oft_tiny
    shown = result["stdout"][-2000:]
    assert result["success_rate"] >= result["blind_success_rate"] + SUCCESS_MARGIN, shown
    assert result["expert_success_rate"] >= 0.95, shown
    assert result["action_l1"] <= L1_RATIO * result["blind_action_l1"], shown
    assert result["episodes"] == EPISODES

    run = root / "runs" / "ci"
    for stage in ("scene", "vla"):
        assert (run / "checkpoints" / stage / "model.safetensors").is_file()
    stats = json.loads((run / "checkpoints" / "vla" / "action_stats.json").read_text())
    assert list(stats) == ["block-reach"] and stats["block-reach"]["mask"] == [True, True, False]
    assert list(json.loads((run / "checkpoints" / "vla" / "state_stats.json").read_text())) == ["block-reach"]
    report = json.loads((run / "rollout.json").read_text())
    assert len(report["episodes"]["policy"]) == EPISODES and len(report["videos"]) == 2
    offline_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 3  # scene, vla, rollout


@pytest.mark.slow
def test_flow_head_reads_the_instruction(openvla_oft_tiny) -> None:
    root, _ = openvla_oft_tiny
    recipe = "flow-vla-tiny"
    scene = root / "runs" / "ci" / "checkpoints" / "scene"
    train = run_vlx("train", f"recipe={recipe}", "train.stages=[vla]", f"stages.vla.init_from={scene}",
                    "stages.vla.epochs=2", *BATCH_16, f"run_name={recipe}", "logger=none", cwd=root, home=root / "home",
                    timeout=2400, check=True)
    assert ": new head (fresh weights" in train.stdout  # the flow head; the state projector is the scene stage's
    checkpoint = root / "runs" / recipe / "checkpoints" / "vla"
    evaluation = run_vlx("eval", f"checkpoint={checkpoint}", f"rollout.episodes={EPISODES}", "rollout.videos=0",
                         "eval.demos_limit=128", f"run_name={recipe}-eval", "logger=none", cwd=root, home=root / "home",
                         timeout=1200, check=True)
    result = numbers(evaluation.stdout)
    shown = evaluation.stdout[-2000:]
    assert result["success_rate"] >= result["blind_success_rate"] + SUCCESS_MARGIN, shown
    assert result["action_l1"] <= L1_RATIO * result["blind_action_l1"], shown
    assert (checkpoint / "state_stats.json").is_file()
