"""`vlx demo`: the whole LLaVA pipeline on a CPU in minutes, from nothing.

Writes the tiny local assets (tokenizer, random CLIP vision tower and Llama), generates the synthetic
shapes dataset, trains `llava-tiny` in LLaVA's two stages (align on captions, finetune on questions),
then evaluates exact-match accuracy on held-out questions next to the blank-image control and the
best blind answer. Hydra overrides are accepted (`vlx demo stages.finetune.epochs=2`).
"""

from __future__ import annotations

import time

from rich.console import Console

from vlx.builder import to_plain
from vlx.checkpoint import load
from vlx.cli.report import evaluate_checkpoint, print_training_outputs
from vlx.config import compose, with_recipe
from vlx.data.shapes import generate_shapes
from vlx.data.tiny_assets import write_tiny_assets
from vlx.training.run import run_training


def main(argv: list[str]) -> None:
    console = Console()
    start = time.monotonic()
    cfg = to_plain(compose(with_recipe(argv)))
    with console.status("writing tiny assets (tokenizer, random vision and LLM weights)"):
        write_tiny_assets(cfg["vision"], cfg["llm"], seed=cfg["seed"])
    console.print(f"[bold]assets[/] {cfg['paths']['assets']}")
    shapes = cfg["shapes"]
    with console.status("generating the shapes dataset"):
        generate_shapes(shapes["root"], n_train=shapes["n_train"], n_val=shapes["n_val"], seed=shapes["seed"],
                        image_size=shapes["image_size"])
    console.print(f"[bold]data[/] {shapes['root']}")
    checkpoints = run_training(cfg)
    final = list(checkpoints.values())[-1]
    console.rule("evaluation on held-out questions")
    report = evaluate_checkpoint(cfg, model=load(final))
    minutes = (time.monotonic() - start) / 60
    console.rule("summary")
    console.print(f"accuracy {report['accuracy']:.3f} · blank-image control {report.get('blank_accuracy', float('nan')):.3f}"
                  f" · best blind answer {report['chance']:.3f} · {minutes:.1f} min")
    print_training_outputs(checkpoints, cfg["output_dir"])
