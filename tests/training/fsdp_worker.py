"""One rank of the FSDP checkpoint test (`test_fsdp_checkpoint.py`), started by `torch.distributed.run` on CPUs.

Builds the tiny LLaVA model (same seed on every rank), freezes all but the projector (the `align` stage) and
stores the frozen parts in bf16, wraps it with FSDP `FULL_SHARD` as `trainer=fsdp` does (vlx's wrap policy,
activation checkpointing on the decoder layers, bf16 compute), takes one SGD step on this rank's rows of a
synthetic batch, gathers the full weights with `fsdp_full_state_dict` and has rank 0 check them
(`complete_weights`) and write a vlx checkpoint.
Lightning runs FSDP on CUDA only, so the test drives FSDP directly with gloo.

usage: python -m torch.distributed.run --nproc-per-node 2 fsdp_worker.py CONFIG.json OUT_DIR ROWS LR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from vlx.bench.gpu import synthetic_batch
from vlx.builder import build_model
from vlx.checkpoint import save_checkpoint
from vlx.training.run import complete_weights
from vlx.training.stages import apply_stage
from vlx.training.strategies import (
    cast_frozen,
    decoder_layer_classes,
    fsdp_full_state_dict,
    fsdp_wrap_classes,
    tied_aliases,
)


class Holder(nn.Module):
    """Stands for the LightningModule: the model under `.model`, the loss as output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch).loss


def main(config: Path, out: Path, rows: int, lr: float) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = build_model(json.loads(config.read_text()))
    apply_stage(model, ["projector"])
    cast_frozen(model, torch.bfloat16)
    counts = model.parameter_counts()
    names, aliases = set(model.state_dict()), tied_aliases(model)
    bf16 = torch.bfloat16
    root = FullyShardedDataParallel(
        Holder(model), auto_wrap_policy=ModuleWrapPolicy(fsdp_wrap_classes(model)), use_orig_params=True,
        device_id=torch.device("cpu"), sharding_strategy=ShardingStrategy.FULL_SHARD,
        mixed_precision=MixedPrecision(param_dtype=bf16, reduce_dtype=bf16, buffer_dtype=bf16))
    layers = tuple(decoder_layer_classes(model))
    apply_activation_checkpointing(root, check_fn=lambda module: isinstance(module, layers))
    batch = synthetic_batch(model, rows * world, "cpu")  # the same batch on every rank; each takes its rows
    mine = {key: value[rank * rows:(rank + 1) * rows] for key, value in batch.items()}
    optimizer = torch.optim.SGD([p for p in root.parameters() if p.requires_grad], lr=lr)
    root(mine).backward()
    optimizer.step()
    weights = fsdp_full_state_dict(root, prefix="model.")  # every rank takes part
    if rank == 0:
        weights = complete_weights(weights, names, aliases, "stages.align")
        save_checkpoint(model, out / "checkpoint", {"parameters": counts}, weights=weights)
    else:
        assert weights == {}, sorted(weights)[:3]
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
