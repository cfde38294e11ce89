"""`flow-matching`: pi0's action head — an action expert denoises a K × A chunk conditioned on the VLM prefix.

The prompt (images, state token, instruction) is the prefix: one LLM pass fills its KV cache, and the action
expert (`vlx.heads.action_expert`) attends to it layer by layer; the prefix is computed once per chunk and
reused by every integration step. Kept from pi0 (openpi `pi0.py`): the time distribution
t = Beta(1.5, 1)·0.999 + 0.001 in training; the interpolation x_t = t·noise + (1 - t)·actions with t = 1 at
pure noise and the target velocity u = noise - actions (MSE on the real steps); the sin-cos time embedding
(periods 4e-3 to 4) concatenated with the projected noisy actions, then Linear → swish → Linear; inference by
`num_steps` Euler steps from t = 1 to 0 (dt = -1/num_steps, default 10). Changed: the state is a token of the
prefix (vlx's `proprio` projector, as SmolVLA does) rather than a suffix token; the prefix is the LLM's usual
causal pass (pi0's prefix attends bidirectionally); decoding starts every sample from the same noise, drawn
from a generator seeded with `sample_seed`, so a policy gives the same chunk for the same observation
whatever else is in the batch. Metrics: `flow_mse` (the loss) and, in training, `action_l1_onestep` (the
chunk read off one step, actions ≈ x_t - t·v); in evaluation `action_l1` of the fully integrated chunk
(normalised units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlx.errors import ConfigError
from vlx.heads.action_expert import ActionExpert, llm_rotary
from vlx.heads.base import ActionHead, ActionSequence, HeadOutput, masked_l1, positive_int
from vlx.heads.one_pass import mask_positions
from vlx.registry import HEADS


def prefix_cache(llm: nn.Module, embeds: torch.Tensor,
                 attention_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One causal LLM pass over the prefix; its per-layer keys and values, each (B, Hkv, Lp, hd)."""
    out = llm.decoder()(inputs_embeds=embeds, attention_mask=attention_mask,
                        position_ids=mask_positions(attention_mask), use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None:
        return []
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.56: one CacheLayer per decoder layer
        return [(layer.keys, layer.values) for layer in layers if getattr(layer, "keys", None) is not None]
    return list(zip(cache.key_cache, cache.value_cache, strict=False))


@HEADS.register("flow-matching")
class FlowMatchingHead(ActionHead):
    """Flow matching with a pi0-style action expert (`expert_width`, `expert_mlp_dim`; `num_steps` at inference)."""

    def __init__(self, action_dim: int, llm: nn.Module, chunk_size: int = 1, expert_width: int | None = None,
                 expert_mlp_dim: int | None = None, num_steps: int = 10, sample_seed: int = 0,
                 instruction: str = "openvla") -> None:
        super().__init__(action_dim, chunk_size, instruction)
        config = llm.model.config
        width = positive_int(expert_width or max(2, int(config.hidden_size) // 2), "head.expert_width")
        mlp_dim = positive_int(expert_mlp_dim or 4 * width, "head.expert_mlp_dim")
        self.num_steps = positive_int(num_steps, "head.num_steps")
        self.sample_seed = int(sample_seed)
        self.expert = ActionExpert(config, self.action_dim, width, mlp_dim)

    def sequence(self, chunk: np.ndarray | None = None, mask: np.ndarray | None = None) -> ActionSequence:
        return ActionSequence([], [], [])  # the prompt is the whole prefix; actions go through the expert

    def _prefix(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]):
        mask = batch["attention_mask"].to(embeds.device)  # (B, Lp)
        kv = prefix_cache(llm, embeds, mask)
        if not kv:
            raise ConfigError("head=flow-matching: the LLM returned no KV cache for the prefix (transformers drops it "
                              "under gradient checkpointing): set llm.gradient_checkpointing=false")
        return kv, mask, llm_rotary(llm.decoder())

    def action_forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        target, real = self.targets(batch)  # (B, K, A), (B, K)
        target, real = target.to(embeds.device), real.to(embeds.device)
        kv, mask, rotate = self._prefix(llm, embeds, batch)
        batch_size = target.shape[0]
        beta = torch.distributions.Beta(torch.full((batch_size,), 1.5), torch.ones(batch_size))
        time = (beta.sample() * 0.999 + 0.001).to(embeds.device)  # (B,): pi0's Beta(1.5, 1) on [0.001, 1]
        noise = torch.randn_like(target)  # (B, K, A)
        t = time[:, None, None]
        noisy = t * noise + (1 - t) * target  # (B, K, A)
        velocity = self.expert(noisy, time, kv, mask, rotate)  # (B, K, A)
        weights = real[..., None].expand_as(target).float()  # (B, K, A)
        loss = ((velocity - (noise - target)) ** 2 * weights).sum() / weights.sum()
        metrics = {"flow_mse": loss.detach()}
        with torch.no_grad():
            if self.training:
                metrics["action_l1_onestep"] = masked_l1(noisy - t * velocity, target, real)
            else:
                metrics["action_l1"] = masked_l1(self._integrate(kv, mask, rotate, batch_size, embeds.device),
                                                 target, real)
        return HeadOutput(loss, None, metrics)

    def _integrate(self, kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, rotate: Any, batch_size: int,
                   device: torch.device) -> torch.Tensor:
        """Euler integration of the learned velocity from noise (t = 1) to a chunk (t = 0): (B, K, A)."""
        generator = torch.Generator(device=device).manual_seed(self.sample_seed)
        noise = torch.randn(self.chunk_shape, generator=generator, device=device)  # (K, A): the same for every sample
        x = noise.expand(batch_size, -1, -1)  # (B, K, A), so a chunk does not depend on the rest of the batch
        dt = -1.0 / self.num_steps
        for step in range(self.num_steps):
            time = torch.full((batch_size,), 1.0 + step * dt, device=device)  # (B,)
            x = x + dt * self.expert(x, time, kv, mask, rotate)
        return x  # (B, K, A)

    def decode(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        kv, mask, rotate = self._prefix(llm, embeds, batch)
        return self._integrate(kv, mask, rotate, embeds.shape[0], embeds.device)  # (B, K, A)
