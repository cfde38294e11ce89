"""`vlx demo`: a whole pipeline on a CPU in minutes, from nothing (default recipe: llava-tiny).

Writes the tiny local assets (tokenizer, random vision and Llama weights), generates the recipe's data —
the synthetic shapes questions (`shapes:` in llava-tiny / prismatic-tiny) or scripted `block-reach`
demonstrations and questions about their frames (`robot:` in openvla-tiny) — trains the recipe's stages,
then evaluates: exact-match accuracy on held-out questions next to the blank-image control and the best
blind answer, or, for a VLA, closed-loop success next to the language-blind control and the scripted
expert. Hydra overrides are accepted (`vlx demo recipe=openvla-tiny stages.vla.epochs=2`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from vlx.builder import to_plain
from vlx.checkpoint import load
from vlx.cli.report import evaluate_checkpoint, print_training_outputs
from vlx.config import compose, with_recipe
from vlx.data.tiny_assets import write_tiny_assets
from vlx.errors import ConfigError
from vlx.training.run import run_training


def prepare_data(cfg: dict[str, Any], console: Console) -> None:
    """Generate the built-in data the recipe trains on."""
    if "shapes" in cfg:
        from vlx.data.shapes import generate_shapes

        shapes = cfg["shapes"]
        with console.status("generating the shapes dataset"):
            generate_shapes(shapes["root"], n_train=shapes["n_train"], n_val=shapes["n_val"], seed=shapes["seed"],
                            image_size=shapes["image_size"])
        console.print(f"[bold]data[/] {shapes['root']}")
    elif "robot" in cfg:
        from vlx.envs import ensure_demos

        robot = cfg["robot"]
        path = ensure_demos(Path(robot["path"]).expanduser(), robot["demos"], seed=robot["seed"])
        console.print(f"[bold]data[/] {path}")
        if robot.get("scene"):
            from vlx.envs.scene_text import write_scene_texts

            write_scene_texts(path, Path(robot["scene"]).expanduser())
            console.print(f"[bold]scene text[/] {robot['scene']}")
    else:
        raise ConfigError("vlx demo runs the tiny recipes (llava-tiny, prismatic-tiny, openvla-tiny), whose config "
                          "has a `shapes:` or `robot:` node describing the built-in data")


def summary_line(report: dict[str, Any]) -> str:
    if "success_rate" in report:
        return (f"closed-loop success {report['success_rate']:.3f} · language-blind "
                f"{report.get('blind_success_rate', float('nan')):.3f} · scripted expert "
                f"{report.get('expert_success_rate', float('nan')):.3f}")
    return (f"accuracy {report['accuracy']:.3f} · blank-image control {report.get('blank_accuracy', float('nan')):.3f}"
            f" · best blind answer {report['chance']:.3f}")


def main(argv: list[str]) -> None:
    console = Console()
    start = time.monotonic()
    cfg = to_plain(compose(with_recipe(argv)))
    with console.status("writing tiny assets (tokenizer, random vision and LLM weights)"):
        write_tiny_assets(cfg["vision"], cfg["llm"], seed=cfg["seed"])
    console.print(f"[bold]assets[/] {cfg['paths']['assets']}")
    prepare_data(cfg, console)
    checkpoints = run_training(cfg)
    stage, final = list(checkpoints.items())[-1]
    model = load(final)
    if model.is_vla and not model.action_stats:  # e.g. train.stages=[scene]: a VLA that has not seen an action yet
        console.print(f"[bold]evaluation skipped[/]: the last stage ({stage}) trained no actions, so the policy "
                      f"cannot act; train its vla stage (stages.vla.init_from={final}), then vlx eval the result")
        print_training_outputs(checkpoints, cfg["output_dir"])
        return
    console.rule("evaluation")
    report = evaluate_checkpoint({**cfg, "checkpoint": str(final)}, model=model)
    console.rule("summary")
    console.print(f"{summary_line(report)} · {(time.monotonic() - start) / 60:.1f} min")
    print_training_outputs(checkpoints, cfg["output_dir"])
