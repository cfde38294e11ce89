"""Training callbacks: a W&B table of sample predictions at every validation, and run bookkeeping.

`SampleTable` answers a few held-out questions with the current model after each validation and logs a
`wandb.Table` (image, question, target, prediction) as `val/samples`, so a researcher sees on the
dashboard what the model says, not only its loss. Offline W&B runs lose the images inside tables
(wandb issue #4611), so the same samples are also logged as captioned images (`val/sample_images`).
Under FSDP and DeepSpeed the table is skipped (with a warning): generating outside the sharded root's
forward would read sharded parameters.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from vlx.evaluation import evaluate_vqa


class SampleTable(L.Callback):
    """Log `val/samples` (image, question, target, prediction) for `samples` to W&B."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.samples:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy)):
            rank_zero_warn("val/samples is not logged under a sharded strategy (FSDP, DeepSpeed): generating "
                           "would read sharded parameters; `vlx eval` the stage's checkpoint instead")
            self.samples = []
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
        for logger in loggers:
            logger.log_table("val/samples", columns=["image", "question", "target", "prediction"], data=rows,
                             step=trainer.global_step)
            if with_image:  # offline W&B drops table images (wandb#4611); a captioned image list survives
                logger.log_image("val/sample_images", images=[p["image"] for p in with_image], step=trainer.global_step,
                                 caption=[f"{p['question']} → {p['prediction']} (target: {p['target']})"
                                          for p in with_image])
        pl_module.log("val/sample_accuracy", result.accuracy)
