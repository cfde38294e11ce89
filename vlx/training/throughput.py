"""Throughput on the dashboard: samples/s, tokens/s, FLOPs/s and (on GPUs Lightning knows) MFU.

Lightning's `ThroughputMonitor` does the bookkeeping; vlx supplies the counts of a batch (samples, and the
tokens the LLM processes: text plus spliced image tokens) and an analytic estimate of the training FLOPs
of the batch — 2 FLOPs per multiply-add of every weight matrix for each token that passes it (the LLM on
the padded sequence, the projector and the vision tower on the image tokens), plus attention's
QKᵀ and AV (4·L²·d per layer and sequence), times 3 for a part that trains (forward, backward for
activations, backward for weights), 2 for a frozen part with a trained part before it (activation
gradients only) and 1 for a frozen part nothing before trains. `tests/training/test_throughput.py`
checks the estimate against torch's FlopCounterMode; `vlx bench gpu` divides the same estimate by its step
time. MFU = FLOPs/s ÷ the device's peak
(`lightning.fabric.utilities.throughput.get_available_flops`; not known for CPUs). Lightning's table lacks
GPUs that name themselves plainly ("NVIDIA H200"); for those, under bf16, vlx fills in the dense bf16 peak
from `DENSE_BF16_PEAK` (also the denominator of `vlx bench gpu`'s MFU).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from torch import nn

from vlx.model import VisionLanguageModel


def samples_in(batch: dict[str, Any]) -> int:
    return int(batch["input_ids"].shape[0])


def tokens_in(batch: dict[str, Any]) -> int:
    """Tokens the LLM attends to in this batch (text and image tokens, padding excluded)."""
    return int(batch["attention_mask"].sum())


def matmul_parameters(module: nn.Module) -> int:
    """Parameters that multiply activations: Linear/Conv weights (embedding lookups and norms cost ~nothing)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _attention_flops(config: Any, length: int) -> int:
    """QKᵀ and AV for one sequence of `length` tokens, all layers, forward."""
    width = getattr(config, "hidden_size", None) or getattr(config, "embed_dim", 0)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "depth", 0)
    return 4 * layers * width * length * length


class TrainingFlops:
    """Estimated FLOPs of one training step (forward + backward) on a batch (see the module docstring).

    Part sizes and which parts train are read once, when the stage starts; calling it on a batch is cheap.
    """

    def __init__(self, model: VisionLanguageModel) -> None:
        self.num_patches = model.vision.num_patches
        self.llm_weights, self.llm_config = matmul_parameters(model.llm), model.llm.model.config
        self.projector_weights, self.vision_weights = (matmul_parameters(model.projector),
                                                       matmul_parameters(model.vision))
        self.vision_attention = sum(_attention_flops(_vit_config(t), self.num_patches) for t in _towers(model.vision))
        vision, projector, llm = _trains(model.vision), _trains(model.projector), _trains(model.llm)
        self.vision_factor = 3 if vision else 1
        self.projector_factor = 3 if projector else (2 if vision else 1)
        self.llm_factor = 3 if llm else (2 if projector or vision else 1)

    def __call__(self, batch: dict[str, Any]) -> int:
        sequences, length = batch["input_ids"].shape  # (B, L), padded
        pixels = batch.get("pixel_values")  # (M, 3k, H, W) or (M, C, 3k, H, W): C cameras per sample
        images = 0 if pixels is None else int(pixels.shape[0]) * (int(pixels.shape[1]) if pixels.dim() == 5 else 1)
        image_tokens = images * self.num_patches
        llm = 2 * self.llm_weights * sequences * length + sequences * _attention_flops(self.llm_config, length)
        projector = 2 * self.projector_weights * image_tokens
        vision = 2 * self.vision_weights * image_tokens + images * self.vision_attention
        llm_factor = self.llm_factor if images or self.llm_factor == 3 else 1  # text-only: nothing upstream
        return int(llm_factor * llm + self.projector_factor * projector + self.vision_factor * vision)


def _towers(vision: nn.Module) -> list[nn.Module]:
    members = getattr(vision, "members", None)
    return list(members) if members is not None else [vision]


def _vit_config(tower: nn.Module) -> Any:
    """A tower's width and depth for the attention term (timm: embed_dim/blocks; transformers: its config)."""
    inner = getattr(tower, "model", tower)
    if hasattr(inner, "config"):
        return inner.config
    return type("ViTShape", (), {"embed_dim": inner.embed_dim, "depth": len(inner.blocks)})


# FLOP/s from NVIDIA's datasheets, without sparsity; the first name contained in the device's name counts
DENSE_BF16_PEAK = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def dense_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 tensor-core peak of a GPU by its name (`torch.cuda.get_device_name`), if vlx knows it."""
    return next((value for key, value in DENSE_BF16_PEAK.items() if key in device_name), None)


class VlxThroughputMonitor(ThroughputMonitor):
    """Lightning's monitor, with the peak of bf16 GPUs its table does not recognise filled in (for MFU)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        if self.available_flops is None and device.type == "cuda" and "bf16" in str(trainer.precision):
            self.available_flops = dense_bf16_peak(torch.cuda.get_device_name(device))
            for throughput in self._throughputs.values():  # created by super().setup with the unknown peak
                throughput.available_flops = self.available_flops


def throughput_monitor(window_size: int = 20) -> ThroughputMonitor:
    """Lightning's monitor over vlx batches: `train/samples_per_sec`, `train/items_per_sec` (tokens), FLOPs, MFU."""
    return VlxThroughputMonitor(batch_size_fn=samples_in, length_fn=tokens_in, window_size=window_size)

