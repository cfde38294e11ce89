"""Training callbacks: a W&B table of sample predictions at every validation, and run bookkeeping.

`SampleTable` answers a few held-out questions with the current model after each validation and logs a
`wandb.Table` (image, question, target, prediction) as `val/samples`, so a researcher sees on the
dashboard what the model says, not only its loss; for a VLA validated on robot demonstrations
(`robomimic-hdf5`) the rows are a demo step's image, its instruction, the demonstrated action and the
action the model predicts (`RobotSampleTable`, with `val/sample_action_l1`). `sample_table_for` picks the
one that fits the stage's validation data. Offline W&B runs lose the images inside tables
(wandb issue #4611), so the same samples are also logged as captioned images (`val/sample_images`).
Under FSDP and DeepSpeed the table is skipped (with a warning): generating outside the sharded root's
forward would read sharded parameters.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from vlx.errors import ConfigError
from vlx.evaluation.vqa import evaluate_vqa, load_questions


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    """The W&B loggers of a validation that may log a sample table (none under a sharded strategy)."""
    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if loggers and isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy)):
        rank_zero_warn("val/samples is not logged under a sharded strategy (FSDP, DeepSpeed): generating "
                       "would read sharded parameters; `vlx eval` the stage's checkpoint instead")
        return []
    return loggers


def log_samples(loggers: list[WandbLogger], step: int, columns: list[str], rows: list[list[Any]],
                images: list[Any], captions: list[str]) -> None:
    """`val/samples` as a table, and its images with captions (offline runs drop the images inside tables)."""
    for logger in loggers:
        logger.log_table("val/samples", columns=columns, data=rows, step=step)
        if images:
            logger.log_image("val/sample_images", images=images, step=step, caption=captions)


class SampleTable(L.Callback):
    """Log `val/samples` (image, question, target, prediction) for `samples` to W&B."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.samples:
            return
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import wandb

        was_training = pl_module.training
        result = evaluate_vqa(pl_module.model, self.samples, batch_size=len(self.samples))
        pl_module.train(was_training)
        rows = [
            [wandb.Image(p["image"]) if p["image"] != "None" else None, p["question"], p["target"], p["prediction"]]
            for p in result.predictions
        ]
        with_image = [p for p in result.predictions if p["image"] != "None"]
        log_samples(loggers, trainer.global_step, ["image", "question", "target", "prediction"], rows,
                    [p["image"] for p in with_image],
                    [f"{p['question']} → {p['prediction']} (target: {p['target']})" for p in with_image])
        pl_module.log("val/sample_accuracy", result.accuracy)


class RobotSampleTable(L.Callback):
    """Log `val/samples` (image, instruction, demonstrated action, predicted action) for `count` evenly spaced
    steps of a robomimic split, and `val/sample_action_l1` (mean |prediction - demonstration|, robot units)."""

    def __init__(self, path: str, filter_key: str | None, count: int, unnorm_key: str | None) -> None:
        self.path, self.filter_key, self.count, self.unnorm_key = path, filter_key, count, unnorm_key

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.count <= 0:
            return
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        from vlx.data.robomimic_hdf5 import RobomimicFile
        from vlx.evaluation.actions import observation_of

        model = pl_module.model
        demos = RobomimicFile(self.path, model.observation.cameras or "agentview_image", filter_key=self.filter_key,
                              where="val/samples", instruction=None, state_keys=model.observation.state_keys)
        indices = np.linspace(0, len(demos) - 1, min(self.count, len(demos))).round().astype(int)
        observations = [observation_of(model, demos, int(i)) for i in indices]
        instructions = [demos.instruction(int(i)) for i in indices]
        was_training = pl_module.training
        predicted = model.predict_actions([images for images, _ in observations], instructions, self.unnorm_key,
                                          [state for _, state in observations] if demos.state_keys else None)
        pl_module.train(was_training)
        predicted = predicted.reshape(len(indices), -1, predicted.shape[-1])[:, 0]  # (n, A): the first step
        target = np.stack([demos.chunk(int(i), 1)[0][0] for i in indices])  # (n, A)
        first = [demos.images(int(i))[demos.camera_keys[0]] for i in indices]  # (H, W, 3) uint8 each
        import wandb

        def show(action: np.ndarray) -> str:
            return "[" + ", ".join(f"{x:.3f}" for x in action) + "]"

        rows = [[wandb.Image(image), text, show(t), show(p)]
                for image, text, t, p in zip(first, instructions, target, predicted, strict=True)]
        log_samples(loggers, trainer.global_step, ["image", "instruction", "target", "prediction"], rows, first,
                    [f"{text} → {show(p)} (target: {show(t)})"
                     for text, t, p in zip(instructions, target, predicted, strict=True)])
        pl_module.log("val/sample_action_l1", float(np.abs(predicted - target).mean()))


def sample_table_for(val: dict[str, Any] | None, count: int, where: str) -> L.Callback | None:
    """The sample table that fits a stage's validation data (`count` samples; None when 0 or no validation)."""
    if not val or count <= 0:
        return None
    if val.get("name") == "llava-json":
        return SampleTable(load_questions(val["json_path"], val.get("image_dir"), limit=count))
    if val.get("name") == "robomimic-hdf5":
        first = (val.get("datasets") or [{}])[0]
        return RobotSampleTable(first["path"], first.get("filter_key"), count, first.get("key"))
    raise ConfigError(f"config key '{where}.sample_table'={count}: the sample table shows llava-json or "
                      f"robomimic-hdf5 validation data, not {val.get('name')!r}; set {where}.sample_table=0")
