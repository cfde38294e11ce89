"""The VLA learning checks, end to end on shortened schedules.

`vlx demo recipe=openvla-tiny train.stages=[scene]` records block-reach demonstrations (both cameras and the
state), writes the questions about their frames and trains the `scene` stage (the VLM stage OpenVLA starts
from); its checkpoint and offline W&B run must be there, and the demo says why it does not roll out a policy
that has seen no action. OpenVLA-OFT's L1-regression head
(`openvla-oft-tiny`) and pi0's flow-matching head (`flow-vla-tiny`), two cameras, the state token, chunks of
8, then train their `vla` stage from that scene checkpoint (`init_from` keeps its backbones and starts the
new head and state projector fresh) and must beat the same policy given an uninformative instruction in
closed loop (they read the language), with offline L1 well below the blind control's. The two heads train and
evaluate at the same time, one CPU thread each: a tiny model's steps are too small for two threads to help much,
so two one-thread processes do more on two cores (measured on llava-tiny: 2 threads 22.8 s alone, 1 thread 29.5 s
alone, two 1-thread runs at once 26.2 s and 26.6 s: 1.7× the work per second).

OpenVLA's own action-token head is not trained here: on the schedules CI affords its closed-loop result
depends on the CPU (4 `vla` epochs after this scene stage: 1.00 vs blind 0.20 on one of this project's
machines, 0.00 vs 0.00 on another; 6 epochs there 0.50 vs 0.45), so its proof is the README's full
`vlx demo recipe=openvla-tiny` (0.99-1.00 vs blind <= 0.30); its parts are tested fast in
tests/heads/test_action_head.py and against OpenVLA's own logits in tests/interop/test_openvla.py.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.subprocess_helpers import numbers, run_vlx

BATCH_16 = ["stages.vla.global_batch_size=16", "stages.vla.batch_size=16"]
# The `vla` schedules CI affords (the full recipes: 3 epochs of batch 32, README), measured from this scene
# checkpoint on the first 20 held-out episodes, on two machines: L1 after 2 epochs of batch 16 — the CPU time of 2
# epochs of 32, twice the updates — 0.95 vs blind 0.15 and 1.00 vs 0.40 (after 1 epoch of batch 32: 0.00 vs 0.00;
# 2 epochs of 32: 0.10 vs 0.00, it rarely closes the gripper yet; from openvla-oft-tiny's own scene stage, whose
# model starts from other random numbers, 2 epochs of 16 gave 0.30 vs 0.25 on the second machine: the margin is
# not guaranteed, only measured); flow matching after 1 epoch of batch 16 0.85 vs 0.20 and 0.50 vs 0.10 (exactly on
# the bar), so it trains 2 (0.90 vs 0.10 on the second machine). With every process on one thread (the scene stage
# too, so its checkpoint holds other numbers: val token accuracy 0.996), CI on the second machine gave L1 0.75 vs
# 0.35 and flow 0.40 vs 0.10 (offline L1 0.25 vs 0.50 and 0.34 vs 0.51): the closed-loop margin over 20 episodes
# moves with the numerics, so its bar is the smallest margin measured less a little; the offline L1 ratio is the
# steadier evidence that the policy reads the instruction.
CHUNKED = {"openvla-oft-tiny": ["stages.vla.epochs=2", *BATCH_16], "flow-vla-tiny": ["stages.vla.epochs=2", *BATCH_16]}
# The scene stage keeps its full schedule: shorter ones (1,000 demos × 4 epochs) never reached the point where the
# questions are learned, and then the actions ignore the instruction (measured: accuracy 0.443 vs blind 0.444).
SCENE = ["train.stages=[scene]", "run_name=ci"]
L1_RATIO = 0.8  # offline L1 at most this fraction of the language-blind control's
SUCCESS_MARGIN = 0.25  # closed-loop success over the language-blind control (measured margins 0.30 to 0.85)
EPISODES = 20


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The openvla-tiny demo's data and `scene` stage: the directory it ran in."""
    root = tmp_path_factory.mktemp("vla")
    demo = run_vlx("demo", "recipe=openvla-tiny", *SCENE, cwd=root, home=root / "home", timeout=3600,
                   check=True)  # a hang guard: about 15 minutes on this project's 2-core machines
    run = root / "runs" / "ci"
    shown = demo.stdout[-2000:]
    assert (run / "checkpoints" / "scene" / "model.safetensors").is_file(), shown
    assert "evaluation skipped: the last stage (scene) trained no actions" in " ".join(demo.stdout.split()), shown
    assert len(sorted((run / "wandb").glob("offline-run-*"))) == 1  # the scene stage's
    scene = json.loads((run / "checkpoints" / "scene" / "vlx.json").read_text())["metrics"]
    assert scene["val/token_accuracy"] >= 0.9, scene  # the questions are learned (measured 0.986)
    return root


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_and_evaluate(root: Path, recipe: str) -> tuple[str, str]:
    """`vlx train` of the recipe's `vla` stage from the scene checkpoint, then `vlx eval`: both outputs."""
    scene = root / "runs" / "ci" / "checkpoints" / "scene"
    train = run_vlx("train", f"recipe={recipe}", "train.stages=[vla]", f"stages.vla.init_from={scene}",
                    *CHUNKED[recipe], f"run_name={recipe}", "logger=none", cwd=root, home=root / "home",
                    env_extra=ONE_THREAD, timeout=3000, check=True)
    checkpoint = root / "runs" / recipe / "checkpoints" / "vla"
    evaluation = run_vlx("eval", f"checkpoint={checkpoint}", f"rollout.episodes={EPISODES}", "rollout.videos=2",
                         "eval.demos_limit=128", f"run_name={recipe}-eval", "logger=none", cwd=root, home=root / "home",
                         env_extra=ONE_THREAD, timeout=1500, check=True)
    return train.stdout, evaluation.stdout


@pytest.fixture(scope="module")
def chunked_runs(scene_run: Path) -> dict[str, tuple[str, str]]:
    """Each chunked recipe's training and evaluation output; the recipes run at once (hang guards: 75 minutes)."""
    with ThreadPoolExecutor(len(CHUNKED)) as pool:
        running = {recipe: pool.submit(train_and_evaluate, scene_run, recipe) for recipe in CHUNKED}
        return {recipe: future.result() for recipe, future in running.items()}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(CHUNKED))
def test_chunked_heads_read_the_instruction(scene_run: Path, chunked_runs: dict[str, tuple[str, str]],
                                            recipe: str) -> None:
    root = scene_run
    train, evaluation = chunked_runs[recipe]
    assert "new head and proprio (fresh weights" in train
    checkpoint = root / "runs" / recipe / "checkpoints" / "vla"
    result = numbers(evaluation)
    shown = evaluation[-2000:]
    assert result["success_rate"] >= result["blind_success_rate"] + SUCCESS_MARGIN, shown
    assert result["action_l1"] <= L1_RATIO * result["blind_action_l1"], shown
    assert result["expert_success_rate"] >= 0.95 and result["episodes"] == EPISODES, shown
    stats = json.loads((checkpoint / "action_stats.json").read_text())
    assert list(stats) == ["block-reach"] and stats["block-reach"]["mask"] == [True, True, False]
    assert list(json.loads((checkpoint / "state_stats.json").read_text())) == ["block-reach"]
    report = json.loads((root / "runs" / f"{recipe}-eval" / "rollout.json").read_text())
    assert len(report["episodes"]["policy"]) == EPISODES and len(report["videos"]) == 2
