"""The LightningModule that trains a VisionLanguageModel for one stage.

Logs `train/loss`, `train/lr`, `val/loss` and the head's metrics under `train/` and `val/` (text:
`token_accuracy`; actions: `action_accuracy`, `action_l1`). A non-finite
loss stops training at the step it happens, naming the step and the batch's sample ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from vlx.errors import VlxError
from vlx.model import VisionLanguageModel
from vlx.training.optim import build_optimizer, build_schedule
from vlx.training.throughput import TrainingFlops


class NonFiniteLossError(VlxError):
    """The loss became NaN or infinite."""


class VlxModule(L.LightningModule):
    """Wraps the model and one stage's optimisation settings."""

    def __init__(self, model: VisionLanguageModel, stage: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.stage = dict(stage)
        self.estimate_flops = TrainingFlops(model)
        self.flops_per_batch = 0  # read by Lightning's ThroughputMonitor after each batch

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.flops_per_batch = self.estimate_flops(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(
                f"loss is {out.loss.item()} at global step {self.global_step} (batch {batch_idx}); "
                f"samples: {', '.join(batch['ids'][:8])}"
            )
        size = len(batch["ids"])
        self.log("train/loss", out.loss, prog_bar=True, batch_size=size)
        for name, value in out.metrics.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=size)
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.model(batch)
        size = len(batch["ids"])
        self.log("val/loss", out.loss, prog_bar=True, batch_size=size, sync_dist=True)
        for name, value in out.metrics.items():
            self.log(f"val/{name}", value, prog_bar=True, batch_size=size, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.stage)
        schedule = build_schedule(optimizer, self.stage, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
