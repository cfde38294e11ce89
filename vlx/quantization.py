"""Post-training weight quantisation of a loaded model for inference (`vlx serve|eval ... quantize=int8`).

Through torchao (`quantize_`, the maintained successor of torch's deprecated `torch.ao.quantization`):
`int8` stores the weights of the linear layers as int8 with one scale per output row and computes with the
activations in their own dtype (torchao's `Int8WeightOnlyConfig`); `int8-dynamic` also quantises the
activations per token at run time (`Int8DynamicActivationInt8WeightConfig`). Both run on CPU and CUDA.
Quantised: every `nn.Linear` of the vision towers, the projector and the LLM's decoder layers. Kept in full
precision, as transformers' 8-bit loading keeps `lm_head`: the LLM's output layer (it scores the action
tokens, and vlx's constrained decoding slices its rows), the action head and the state projector (a few small
layers whose outputs are the actions and the state token). Embeddings and convolutions (patch embeddings)
are not linear layers and stay as they are. 4-bit (torchao's int4 or bitsandbytes) is not offered: its
kernels need CUDA and neither has been checked on a GPU here. A quantised model is for inference only; it is
never saved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlx.errors import ConfigError

MODES = ("none", "int8", "int8-dynamic")
KEPT_PARTS = ("head", "proprio")  # parts of a VisionLanguageModel left in full precision (with the output layer)


@dataclass(frozen=True)
class QuantizationReport:
    """What `quantize_model` changed: the mode, the linear layers quantised and kept, weight bytes before/after."""

    mode: str
    quantized_layers: int
    kept_layers: int
    bytes_before: int
    bytes_after: int


def check_mode(mode: str | None, key: str = "quantize") -> str:
    """The mode, `none` for None/''/'null'; a ConfigError naming `key` and the modes otherwise."""
    value = "none" if mode in (None, "", "null") else str(mode).lower()
    if value not in MODES:
        raise ConfigError(f"{key}={mode!r} is not a quantisation mode; expected one of {', '.join(MODES)} "
                          "(docs/serving.md, 'Quantised inference')")
    return value


def _torchao(mode: str) -> tuple[Callable[..., Any], Any]:
    """torchao's `quantize_` and the config of `mode`."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise ConfigError(f"quantize={mode} needs torchao: pip install 'vlx[quantize]' (or torchao)") from None
    return quantize_, Int8WeightOnlyConfig() if mode == "int8" else Int8DynamicActivationInt8WeightConfig()


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (a quantised tensor counts its int8 data and scales)."""
    def size(tensor: torch.Tensor) -> int:
        if hasattr(tensor, "__tensor_flatten__"):  # a torchao tensor subclass: sum its inner tensors
            return sum(size(getattr(tensor, name)) for name in tensor.__tensor_flatten__()[0])
        return tensor.numel() * tensor.element_size()

    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:  # tied weights count once
            seen.add(id(tensor))
            total += size(tensor)
    return total


def kept_modules(model: nn.Module) -> set[int]:
    """ids of the modules left in full precision: the LLM's output layer and every module of KEPT_PARTS."""
    kept: set[int] = set()
    llm = getattr(model, "llm", None)
    lm = getattr(llm, "model", None)
    if lm is not None and hasattr(lm, "get_output_embeddings") and lm.get_output_embeddings() is not None:
        kept.add(id(lm.get_output_embeddings()))
    for part in KEPT_PARTS:
        module = getattr(model, part, None)
        if isinstance(module, nn.Module):
            kept.update(id(m) for m in module.modules())
    return kept


def layer_filter(model: nn.Module) -> Callable[[nn.Module, str], bool]:
    """torchao's `filter_fn`: the linear layers outside `kept_modules`."""
    kept = kept_modules(model)
    return lambda module, _name: isinstance(module, nn.Linear) and id(module) not in kept


@torch.no_grad()
def quantize_model(model: nn.Module, mode: str | None) -> QuantizationReport:
    """Quantise `model`'s linear layers in place (see the module docstring for which); mode `none` changes nothing."""
    mode = check_mode(mode)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    before = weight_bytes(model)
    if mode == "none":
        return QuantizationReport(mode, 0, len(linears), before, before)
    chosen = layer_filter(model)
    quantized = sum(chosen(m, "") for m in linears)
    if quantized == 0:
        raise ConfigError(f"quantize={mode}: the model has no linear layer to quantise outside its output layer, "
                          "action head and state projector")
    quantize, config = _torchao(mode)
    quantize(model, config, filter_fn=chosen)
    return QuantizationReport(mode, quantized, len(linears) - quantized, before, weight_bytes(model))


def describe(report: QuantizationReport) -> str:
    """One line for a start-up message: the mode, layers and weight memory."""
    if report.mode == "none":
        return "quantize=none"
    return (f"quantize={report.mode}: {report.quantized_layers} linear layers quantised, {report.kept_layers} kept "
            f"(output layer, action head, state projector); weights {report.bytes_before / 2**20:.1f} MiB → "
            f"{report.bytes_after / 2**20:.1f} MiB")
