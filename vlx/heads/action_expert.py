"""The action expert of the flow-matching head: a small transformer that attends to the VLM layer by layer.

As in pi0 (openpi `gemma.py`), the expert has as many layers as the LLM, each with weights of its own (its
own width and MLP size) but the LLM's attention geometry (query heads, key/value heads, head size), so that
expert layer i and LLM layer i share one softmax: the expert's queries attend over the LLM's keys and values
of layer i for the prefix (read from its KV cache, computed once per chunk) followed by the expert's own keys
and values for the action tokens. The expert's positions continue after the prefix and go through the LLM's
own rotary embedding (`rotary_emb` and `apply_rotary_pos_emb` of its transformers module, unmodified), so
prefix and suffix keys are rotated alike. Layers are pre-norm (RMSNorm) with a gated MLP using the LLM's
activation. The action tokens see the whole (unpadded) prefix and each other; the prefix never sees them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from vlx.errors import ConfigError


def sincos_time_embedding(time: torch.Tensor, width: int, min_period: float = 4e-3,
                          max_period: float = 4.0) -> torch.Tensor:
    """pi0's `posemb_sincos`: (B,) times in [0, 1] → (B, width) = [sin, cos] at periods min..max (geometric)."""
    if width % 2:
        raise ConfigError(f"head.expert_width={width}: the sin-cos time embedding needs an even width")
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=time.device)  # (W/2,)
    period = min_period * (max_period / min_period) ** fraction  # (W/2,)
    angles = time.double()[:, None] * (2 * math.pi / period)[None]  # (B, W/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()  # (B, W)


def attention_geometry(config: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size) of a transformers decoder config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv_heads, head_dim


RotaryFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def llm_rotary(decoder: nn.Module) -> RotaryFn:
    """(q, k, positions) → RoPE-rotated (q, k) with the LLM's own rotary embedding; a ConfigError for LLMs
    whose transformers module has none (the expert must rotate its keys as the cached prefix keys were)."""
    module = importlib.import_module(type(decoder).__module__)
    rotary, apply = getattr(decoder, "rotary_emb", None), getattr(module, "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        raise ConfigError(f"head=flow-matching needs an LLM with rotary position embeddings (Llama, Qwen2, Mistral); "
                          f"{type(decoder).__name__} has no rotary_emb/apply_rotary_pos_emb")

    def rotate(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rotary(q, positions)  # (B, K, hd) each
        return apply(q, k, cos.to(q.dtype), sin.to(q.dtype))

    return rotate


class ExpertLayer(nn.Module):
    """Pre-norm attention over [LLM prefix keys/values, own keys/values] + a gated MLP."""

    def __init__(self, width: int, mlp_dim: int, heads: int, kv_heads: int, head_dim: int, eps: float,
                 activation: str) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.input_layernorm = nn.RMSNorm(width, eps=eps)
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(width, eps=eps)
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)
        self.act = ACT2FN[activation]

    def forward(self, x: torch.Tensor, prefix_kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor,
                positions: torch.Tensor, rotate: RotaryFn) -> torch.Tensor:
        batch, steps, _ = x.shape
        h = self.input_layernorm(x)  # (B, K, W)
        q = self.q_proj(h).view(batch, steps, self.heads, self.head_dim).transpose(1, 2)  # (B, H, K, hd)
        k = self.k_proj(h).view(batch, steps, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, K, hd)
        v = self.v_proj(h).view(batch, steps, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, K, hd)
        q, k = rotate(q, k, positions)
        keys = torch.cat([prefix_kv[0].to(k.dtype), k], dim=2)  # (B, Hkv, Lp + K, hd)
        values = torch.cat([prefix_kv[1].to(v.dtype), v], dim=2)  # (B, Hkv, Lp + K, hd)
        if self.heads != self.kv_heads:
            keys = keys.repeat_interleave(self.heads // self.kv_heads, dim=1)  # (B, H, Lp + K, hd)
            values = values.repeat_interleave(self.heads // self.kv_heads, dim=1)
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, K, hd)
        x = x + self.o_proj(attended.transpose(1, 2).reshape(batch, steps, -1))  # (B, K, W)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h))  # (B, K, W)


class ActionExpert(nn.Module):
    """pi0's action expert: noisy chunk + time → velocity, attending to the LLM's cached prefix layer by layer."""

    def __init__(self, llm_config: Any, action_dim: int, width: int, mlp_dim: int) -> None:
        super().__init__()
        heads, kv_heads, head_dim = attention_geometry(llm_config)
        layers = int(llm_config.num_hidden_layers)
        eps = float(getattr(llm_config, "rms_norm_eps", 1e-6))
        activation = str(getattr(llm_config, "hidden_act", "silu"))
        self.width = int(width)
        self.action_in_proj = nn.Linear(action_dim, width)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        self.layers = nn.ModuleList(ExpertLayer(width, mlp_dim, heads, kv_heads, head_dim, eps, activation)
                                    for _ in range(layers))
        self.norm = nn.RMSNorm(width, eps=eps)
        self.action_out_proj = nn.Linear(width, action_dim)

    def forward(self, noisy: torch.Tensor, time: torch.Tensor, prefix_kv: list[tuple[torch.Tensor, torch.Tensor]],
                prefix_mask: torch.Tensor, rotate: RotaryFn) -> torch.Tensor:
        """Velocity (B, K, A) of the noisy chunk `noisy` (B, K, A) at `time` (B,), given the LLM's per-layer
        prefix keys/values (B, Hkv, Lp, hd) and the prefix padding mask (B, Lp)."""
        if len(prefix_kv) != len(self.layers):
            raise ConfigError(f"the action expert has {len(self.layers)} layers but the LLM's cache holds "
                              f"{len(prefix_kv)}; flow-matching reads the LLM's KV cache, which transformers drops "
                              "under gradient checkpointing: set llm.gradient_checkpointing=false")
        batch, steps, _ = noisy.shape
        dtype = self.action_in_proj.weight.dtype
        actions = self.action_in_proj(noisy.to(dtype))  # (B, K, W)
        times = sincos_time_embedding(time, self.width).to(dtype)[:, None].expand(-1, steps, -1)  # (B, K, W)
        x = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([actions, times], dim=-1))))  # (B, K, W)
        real = prefix_mask.bool()  # (B, Lp)
        positions = real.sum(-1, keepdim=True) + torch.arange(steps, device=noisy.device)[None]  # (B, K)
        visible = torch.cat([real, real.new_ones(batch, steps)], dim=1)  # (B, Lp + K)
        mask = visible[:, None, None, :].expand(-1, 1, steps, -1)  # (B, 1, K, Lp + K): True = attend
        for layer, kv in zip(self.layers, prefix_kv, strict=True):
            x = layer(x, kv, mask, positions, rotate)
        return self.action_out_proj(self.norm(x)).float()  # (B, K, A)
