"""What `vlx info` and `vlx eval` compute and print (also used by `vlx demo`).

`print_info` builds the configured model on the `meta` device — no weights, no memory, no network —
and prints `params_total=N` / `params_trainable=N` (trainable as in the last stage of `train.stages`).
`evaluate_checkpoint` scores a checkpoint on held-out questions and on the same questions with blank
images, printing `accuracy=`, `blank_accuracy=` and `chance=` lines plus per-question-type numbers; a
VLA checkpoint is evaluated in closed loop instead (`vlx.evaluation.closed_loop`), and `rollout.policy=expert` rolls
out the environment's scripted expert without a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.progress import Progress

from vlx.builder import build_model, to_plain
from vlx.checkpoint import load
from vlx.errors import ConfigError
from vlx.evaluation.vqa import VQAResult, evaluate_vqa, load_questions
from vlx.model import VisionLanguageModel
from vlx.quantization import check_mode, describe, quantize_model
from vlx.training.lora import set_up_stage


def print_info(config: DictConfig | dict[str, Any]) -> dict[str, int]:
    """Print and return the parameter counts of the configured model, built on the meta device."""
    parts = ("vision", "projector", "llm", "head", "proprio", "observation", "train")
    cfg = {key: to_plain(config.get(key)) for key in parts}  # only what sizing needs: data paths may be unset
    stages = [
        (name, {key: to_plain(config["stages"][name].get(key)) for key in ("trainable", "prompt", "lora")})
        for name in cfg["train"]["stages"] if name in config["stages"]
    ]
    cfg["prompt"] = stages[-1][1]["prompt"] if stages else {"name": "plain"}
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False, load_tokenizer=False)
    if stages:
        name, stage = stages[-1]
        set_up_stage(model, stage, f"stages.{name}")
    counts = model.parameter_counts()
    print(f"params_total={counts['total']}")
    print(f"params_trainable={counts['trainable']}")
    print(f"params_frozen={counts['frozen']}")
    for part in ("vision", "projector", "proprio", "llm", "head"):
        print(f"params_{part}={counts[f'{part}_total']}")
    return counts


def print_training_outputs(checkpoints: dict[str, Path], output_dir: str | Path) -> None:
    """Print where `vlx train`/`vlx demo` left each stage's checkpoint and the W&B runs."""
    for stage, path in checkpoints.items():
        print(f"checkpoint[{stage}]={path}")
    wandb_dir = Path(output_dir) / "wandb"
    if wandb_dir.is_dir():
        print(f"wandb={wandb_dir.resolve()}  (offline runs; `wandb sync {wandb_dir}/offline-run-*` uploads them)")


def score(model: VisionLanguageModel, samples: list[dict[str, Any]], batch_size: int, blank: bool,
          label: str) -> VQAResult:
    """Evaluate with a progress bar."""
    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=len(samples))
        return evaluate_vqa(model, samples, batch_size, blank_images=blank,
                            progress=lambda n: progress.advance(task, n))


def evaluate_checkpoint(config: DictConfig | dict[str, Any],
                        model: VisionLanguageModel | None = None) -> dict[str, Any]:
    """Score `checkpoint` (or `model`) on `eval.json_path` (a VLA: in closed loop); print and return the numbers."""
    cfg = to_plain(config)
    policy = (cfg.get("rollout") or {}).get("policy") or "model"
    if policy not in ("model", "expert"):
        raise ConfigError(f"config key 'rollout.policy'={policy!r}; expected model (the checkpoint) or expert (the "
                          "environment's scripted expert, no checkpoint)")
    if policy == "expert" and model is None:
        from vlx.evaluation.closed_loop import evaluate_expert

        return evaluate_expert(cfg)
    if model is None:
        if not cfg.get("checkpoint"):
            raise ConfigError("vlx eval needs checkpoint=DIR (a directory written by vlx train)")
        model = load(cfg["checkpoint"])
        if check_mode(cfg.get("quantize")) != "none":
            print(describe(quantize_model(model, cfg["quantize"])))
    if model.is_vla:  # a VLA: evaluate it in closed loop
        from vlx.evaluation.closed_loop import evaluate_closed_loop

        return evaluate_closed_loop(cfg, model)
    eval_cfg = cfg["eval"] if cfg["eval"].get("json_path") else model.config.get("eval", {})
    if not eval_cfg.get("json_path"):
        raise ConfigError("config key 'eval.json_path' is not set (and the checkpoint's config has none)")
    samples = load_questions(eval_cfg["json_path"], eval_cfg["image_dir"], eval_cfg.get("limit"))
    batch = int(eval_cfg.get("batch_size", 64))
    result = score(model, samples, batch, blank=False, label="evaluating")
    report: dict[str, Any] = {"accuracy": result.accuracy, "chance": result.chance, "n": result.n,
                              "per_type": result.per_type, "chance_per_type": result.chance_per_type}
    print(f"accuracy={result.accuracy:.3f}")
    for kind, value in result.per_type.items():
        print(f"accuracy[{kind}]={value:.3f}")
    if eval_cfg.get("blank_control", True):
        blank = score(model, samples, batch, blank=True, label="blank-image control")
        report.update(blank_accuracy=blank.accuracy, blank_per_type=blank.per_type)
        print(f"blank_accuracy={blank.accuracy:.3f}")
        for kind, value in blank.per_type.items():
            print(f"blank_accuracy[{kind}]={value:.3f}")
    print(f"chance={result.chance:.3f}")
    for kind, value in result.chance_per_type.items():
        print(f"chance[{kind}]={value:.3f}")
    out = Path(cfg["output_dir"]) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "predictions": result.predictions}, indent=1))
    print(f"predictions={out}")
    return report
