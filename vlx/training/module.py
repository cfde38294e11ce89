"""The LightningModule that trains a VisionLanguageModel for one stage.

Logs `train/loss`, `train/lr`, `val/loss` and the head's metrics under `train/` and `val/` (text:
`token_accuracy`; actions: `action_accuracy`, `action_l1`). A non-finite
loss stops training at the step it happens with a `NonFiniteLossError` naming the stage, the step and
the batch's sample ids; with the stage's `on_nonfinite: skip` the batch is skipped instead (no backward
pass), with a warning, and `train/nonfinite_skipped` counts the skipped batches (kept across resumes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from vlx.errors import CheckpointError, ConfigError, VlxError
from vlx.model import VisionLanguageModel
from vlx.training.optim import build_optimizer, build_schedule
from vlx.training.throughput import TrainingFlops


class NonFiniteLossError(VlxError):
    """The loss became NaN or infinite."""


class ResumeError(CheckpointError):
    """A resume checkpoint does not fit the stage being resumed."""


class VlxModule(L.LightningModule):
    """Wraps the model and one stage's optimisation settings."""

    def __init__(self, model: VisionLanguageModel, stage: Mapping[str, Any], where: str = "stage") -> None:
        super().__init__()
        self.model = model
        self.stage, self.where = dict(stage), where
        self.on_nonfinite = self.stage.get("on_nonfinite", "stop")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"{where}.on_nonfinite={self.on_nonfinite!r}; expected 'stop' or 'skip'")
        self.nonfinite_skipped = 0
        self.strict_loading = False  # resume checkpoints leave out frozen weights (on_save_checkpoint)
        self.estimate_flops = TrainingFlops(model)
        self.flops_per_batch = 0  # read by Lightning's ThroughputMonitor after each batch

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.flops_per_batch = self.estimate_flops(batch)

    def trainable_keys(self) -> set[str]:
        """State-dict keys of the weights this stage trains."""
        return {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume checkpoints hold only the weights that train: frozen ones (a 7B LLM during `align`, the
        vision towers) come back from where the stage started, which a resumed run rebuilds the same way."""
        trainable = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["vlx_nonfinite_skipped"] = self.nonfinite_skipped

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every trainable weight must be in a resume checkpoint; the frozen ones are expected to be absent."""
        missing = sorted(self.trainable_keys() - set(checkpoint["state_dict"]))
        if missing:
            raise ResumeError(f"{self.where}: the resume checkpoint lacks {len(missing)} trainable weights "
                              f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); was it written "
                              "by a stage that trained other parts?")
        self.nonfinite_skipped = int(checkpoint.get("vlx_nonfinite_skipped", 0))

    def nonfinite_message(self, loss: torch.Tensor, batch: dict[str, Any], batch_idx: int) -> str:
        """Where a non-finite loss happened: stage, optimiser step, epoch, batch and sample ids."""
        ids = list(batch["ids"])
        more = f" (+{len(ids) - 8} more)" if len(ids) > 8 else ""
        return (f"{self.where}: loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); samples: {', '.join(ids[:8])}{more}")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        out = self.model(batch)
        size = len(batch["ids"])
        if not torch.isfinite(out.loss):
            message = self.nonfinite_message(out.loss, batch, batch_idx)
            if self.on_nonfinite == "stop":
                raise NonFiniteLossError(f"{message}; {self.where}.on_nonfinite=skip skips such batches")
            self.nonfinite_skipped += 1
            rank_zero_warn(f"{message}; skipped ({self.where}.on_nonfinite=skip, {self.nonfinite_skipped} so far)")
            self.log("train/nonfinite_skipped", float(self.nonfinite_skipped), batch_size=size)
            return None  # Lightning skips the backward pass of this batch
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

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip by the global gradient norm; under FSDP through the sharded root's `clip_grad_norm_`, which takes
        the norm over every rank's shards (Lightning's own clipping refuses norm clipping under FSDP)."""
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            if gradient_clip_algorithm == "value":
                raise ConfigError("trainer.gradient_clip_algorithm=value is not supported under FSDP; vlx clips by the "
                                  "global norm there (the stage's max_grad_norm)")
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.stage)
        schedule = build_schedule(optimizer, self.stage, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
