"""Run the stages of a composed config: build or load the model, train each stage, save checkpoints.

For each name in `train.stages` (e.g. `[align, finetune]`), the stage's config says which parts train,
which data and prompt format it uses and how it optimises. A stage continues from the previous stage's
weights in memory, or from `init_from` (a vlx checkpoint directory) when given; the first stage builds
the model from the parts' sources. Each stage ends with a checkpoint in
`{output_dir}/checkpoints/{stage}` and is one W&B run in the group `run_name`. During a stage, resume
checkpoints go to `{output_dir}/resume/{stage}` (see `resume.py`); with `resume=true` a run continues
where it stopped: finished stages are loaded from their checkpoints, the interrupted one continues from
its `last` resume checkpoint (docs/resume.md).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from vlx.builder import build_model, to_plain
from vlx.checkpoint import META, load, save_checkpoint
from vlx.errors import CheckpointError, ConfigError
from vlx.model import VisionLanguageModel
from vlx.quantization import check_mode
from vlx.registry import PROMPT_FORMATS, check_arguments
from vlx.training.callbacks import sample_table_for
from vlx.training.compilation import compile_parts
from vlx.training.datamodule import VlxDataModule
from vlx.training.init_from import adapt_to_config
from vlx.training.lora import merge_lora, set_up_stage
from vlx.training.module import VlxModule
from vlx.training.resume import Preempted, Preemption, last_checkpoint, resume_callbacks
from vlx.training.stages import reinitialise
from vlx.training.strategies import build_strategy, gathered_weights, is_sharded, tied_aliases
from vlx.training.throughput import throughput_monitor


def prepare_model(cfg: dict[str, Any], stage: dict[str, Any], where: str,
                  previous: VisionLanguageModel | None) -> VisionLanguageModel:
    """The model a stage starts from, with this run's config, the stage's prompt format and freezing.

    Weights come from `init_from` (whose backbones must be this config's; a head or state input that differs
    starts fresh: `vlx.training.init_from`), the previous stage, or the parts' sources; everything else — the
    recorded config, prompt format, trainable parts, gradient checkpointing — comes from this run's config.
    """
    config = {**cfg, "prompt": stage["prompt"]}
    if stage.get("init_from"):
        model = load(stage["init_from"])
        rebuilt = adapt_to_config(model, config, where)
        if rebuilt:
            print(f"{where}.init_from={stage['init_from']}: new {' and '.join(rebuilt)} (fresh weights; the "
                  "checkpoint's vision, projector and LLM weights are kept)")
    elif previous is not None:
        model = previous
    else:
        model = build_model(config)
    model.prompt_format = PROMPT_FORMATS.build(stage["prompt"], f"{where}.prompt")
    model.config = config
    model.llm.set_gradient_checkpointing(bool(cfg["llm"].get("gradient_checkpointing", False)))
    set_up_stage(model, stage, where)
    if stage.get("reinit_projector"):
        reinitialise(model.projector)
    compile_parts(model, cfg.get("compile"))
    return model.train()  # Lightning keeps each module's mode; from_pretrained parts arrive in eval mode


def device_count(trainer_cfg: dict[str, Any]) -> Any:
    """`trainer.devices` as a number: a list counts its entries, -1 ("all") the visible GPUs."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, list):
        return len(devices)
    if devices == -1 and trainer_cfg.get("accelerator") in ("gpu", "cuda"):
        import torch

        return torch.cuda.device_count() or devices  # no GPU: left as -1, reported below
    return devices


def devices_and_nodes(trainer_cfg: dict[str, Any], where: str) -> tuple[int, int]:
    """(devices per node, nodes) as numbers; a device count that is not one (`auto`, a string) is an error,
    since `where`'s global batch must be split over the processes."""
    devices = device_count(trainer_cfg)
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"trainer.devices={devices!r}: give a number of devices (or a list) so that "
                          f"{where}.global_batch_size can be turned into gradient accumulation")
    return devices, int(trainer_cfg.get("num_nodes", 1))


def batch_plan(trainer_cfg: dict[str, Any], stage: dict[str, Any], where: str) -> tuple[int, int]:
    """(per-device batch, gradient-accumulation steps) that make up the stage's global batch.

    `batch_size` is the most samples one device takes per step; with more devices the per-device batch
    shrinks when the global batch leaves fewer per device (llava-tiny's 32 on 2 devices: 16 each), so a
    recipe's optimisation (`global_batch_size`) stays the same on any number of devices.
    """
    devices, nodes = devices_and_nodes(trainer_cfg, where)
    replicas = devices * nodes
    total = int(stage["global_batch_size"])
    batch = min(int(stage["batch_size"]), total // replicas)
    steps, rest = divmod(total, batch * replicas) if batch >= 1 else (0, total)
    if rest or steps < 1:
        raise ConfigError(
            f"{where}.global_batch_size={total} is not a multiple of batch_size × devices × num_nodes = "
            f"{int(stage['batch_size'])} × {devices} × {nodes}"
        )
    return batch, steps


def trainer_arguments(trainer_cfg: dict[str, Any], from_stage: dict[str, Any], where: str) -> dict[str, Any]:
    """Lightning Trainer keywords: the `trainer` config plus what the stage decides (which it may not set)."""
    clashes = sorted(set(trainer_cfg) & set(from_stage))
    if clashes:
        raise ConfigError(f"trainer.{clashes[0]} is decided by the stage (see {where}: epochs, max_steps, "
                          "global_batch_size, max_grad_norm, val_every_n_epochs); set it there instead")
    arguments = {k: v for k, v in trainer_cfg.items() if k != "limit_val_batches"}
    check_arguments(L.Trainer, {**arguments, **from_stage}, "trainer", "the Lightning Trainer")
    return {**arguments, **from_stage}


def build_logger(cfg: dict[str, Any], stage_name: str, output_dir: Path) -> Logger | bool:
    """The configured experiment logger (W&B, offline by default) or False."""
    logger_cfg = dict(cfg["logger"])
    name = logger_cfg.pop("name")
    if name == "none":
        return False
    if name != "wandb":
        raise ConfigError(f"logger.name={name!r} is unknown; use logger=wandb or logger=none")
    return WandbLogger(
        name=f"{cfg['run_name']}-{stage_name}", group=logger_cfg.get("group") or cfg["run_name"],
        project=logger_cfg["project"], offline=logger_cfg["offline"], tags=list(logger_cfg.get("tags") or []),
        save_dir=str(output_dir), job_type=stage_name,
    )


def complete_weights(weights: dict[str, Any], names: set[str], aliases: set[str], where: str) -> dict[str, Any]:
    """Gathered weights without the tied aliases (the checkpoint holds a tied tensor once), checked to be
    exactly the model's tensors, so an incomplete gather fails here and not when the checkpoint is loaded."""
    weights = {key: value for key, value in weights.items() if key not in aliases}
    missing, extra = sorted(names - aliases - set(weights)), sorted(set(weights) - names)
    if missing or extra:
        raise CheckpointError(f"{where}: the weights gathered from the sharded model lack {missing[:5]} and add "
                              f"{extra[:5]}; the stage checkpoint was not written", kind="weights-mismatch")
    return weights


def train_stage(cfg: dict[str, Any], name: str, model: VisionLanguageModel, output_dir: Path,
                preemption: Preemption | None = None, resume_from: Path | None = None) -> Path:
    """Fit one stage (continuing from the resume checkpoint `resume_from`, if given) and save its checkpoint;
    returns the checkpoint directory."""
    where = f"stages.{name}"
    batch, accumulate = batch_plan(cfg["trainer"], cfg["stages"][name], where)
    stage = {**cfg["stages"][name], "batch_size": batch}
    if resume_from is None:  # a fresh start: no stale resume state of an earlier run may be continued later
        shutil.rmtree(output_dir / "resume" / name, ignore_errors=True)
    datamodule = VlxDataModule(model, stage, where, seed=cfg["seed"])
    logger = build_logger(cfg, name, output_dir)
    resuming, checkpoint_io = resume_callbacks(cfg.get("checkpointing") or {}, output_dir / "resume" / name,
                                               preemption or Preemption(), name)
    callbacks: list[L.Callback] = [RichProgressBar(leave=True), throughput_monitor(), *resuming]
    val = stage["data"].get("val")
    table = sample_table_for(val, int(stage.get("sample_table") or 0), where)
    if table is not None:
        callbacks.append(table)
    arguments = trainer_arguments(cfg["trainer"], {
        "max_epochs": stage["epochs"], "max_steps": stage["max_steps"],
        "accumulate_grad_batches": accumulate,
        "gradient_clip_val": stage["max_grad_norm"], "check_val_every_n_epoch": stage["val_every_n_epochs"],
        "logger": logger, "callbacks": callbacks, "default_root_dir": str(output_dir), "enable_checkpointing": False,
        "plugins": [checkpoint_io], "use_distributed_sampler": False,  # the loaders shard themselves (exact resume)
    }, where)
    devices, nodes = devices_and_nodes(cfg["trainer"], where)
    arguments["strategy"] = build_strategy(cfg["trainer"].get("strategy"), model,
                                           accelerator=cfg["trainer"].get("accelerator"), world_size=devices * nodes)
    trainer = L.Trainer(**arguments, limit_val_batches=cfg["trainer"].get("limit_val_batches", 1.0) if val else 0)
    counts = model.parameter_counts()  # before FSDP wraps the model (its wrapped parameters do not count right)
    names, aliases = set(model.state_dict()), tied_aliases(model)  # what a gathered state dict must hold
    if isinstance(logger, WandbLogger):
        logger.log_hyperparams({**cfg, "stage_name": name, "parameters": counts})
    trainer.fit(VlxModule(model, stage, where), datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    merge_lora(model)  # checkpoints hold plain weights
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    checkpoint = output_dir / "checkpoints" / name
    weights = gathered_weights(trainer)  # every rank takes part in gathering sharded weights; rank 0 writes them
    if trainer.is_global_zero:
        if weights is None:
            counts = model.parameter_counts()  # whole weights; merged LoRA adapters are gone
        else:
            weights = complete_weights(weights, names, aliases, where)
        save_checkpoint(model, checkpoint, {"stage": name, "run_name": cfg["run_name"], "metrics": metrics,
                                            "parameters": counts}, weights=weights)
        shutil.rmtree(output_dir / "resume" / name, ignore_errors=True)  # done: the final checkpoint counts
    trainer.strategy.barrier("vlx-checkpoint-saved")
    if isinstance(logger, WandbLogger) and trainer.is_global_zero:
        logger.experiment.summary["checkpoint"] = str(checkpoint)
        logger.experiment.finish()
    return checkpoint


def run_training(config: DictConfig | dict[str, Any]) -> dict[str, Path]:
    """Train every stage in `train.stages` in order; returns stage name → checkpoint directory."""
    cfg = to_plain(config)
    names = list(cfg["train"]["stages"])
    if not names:
        raise ConfigError("config key 'train.stages' is empty; pick a recipe (recipe=llava-tiny) or list stages")
    for name in names:
        if name not in cfg["stages"]:
            raise ConfigError(f"train.stages names {name!r}, but stages has only "
                              f"{', '.join(cfg['stages']) or 'nothing'}")
        if cfg["stages"][name].get("lora") and is_sharded(cfg["trainer"].get("strategy")):
            raise ConfigError(f"stages.{name}.lora under a sharded trainer.strategy (FSDP, DeepSpeed): merging the "
                              "adapters into the weights needs them whole; use trainer=ddp (LoRA's optimizer state "
                              "is small)", kind="strategy")
    if check_mode(cfg.get("quantize")) != "none":
        raise ConfigError(f"quantize={cfg['quantize']} is for inference (`vlx eval checkpoint=DIR`, `vlx serve`); "
                          "training runs in full precision (LoRA over a quantised base is not built)")
    output_dir, resume = Path(cfg["output_dir"]), bool(cfg.get("resume", False))
    model, checkpoints = None, {}
    with Preemption() as preemption:
        for index, name in enumerate(names):
            final = output_dir / "checkpoints" / name
            if resume and (final / META).is_file():  # finished before the interruption (saved atomically)
                print(f"resume: stage {name} is done, loading {final}", file=sys.stderr)
                model, checkpoints[name] = load(final), final
                continue
            L.seed_everything(cfg["seed"] + index, workers=True)  # per stage: a restarted stage replays exactly
            model = prepare_model(cfg, cfg["stages"][name], f"stages.{name}", model)
            resume_from = last_checkpoint(output_dir / "resume" / name) if resume else None
            if resume:
                where = f"continues from {resume_from}" if resume_from else "starts (no resume checkpoint)"
                print(f"resume: stage {name} {where}", file=sys.stderr)
            try:
                checkpoints[name] = train_stage(cfg, name, model, output_dir, preemption, resume_from)
            except Preempted as stop:
                print(f"vlx: {stop.message}", file=sys.stderr)
                raise
            if is_sharded(cfg["trainer"].get("strategy")):
                model = load(checkpoints[name])  # the sharding wrappers stay on the trained model; start clean
    return checkpoints
