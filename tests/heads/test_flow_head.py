"""The flow-matching head: pi0's time embedding, one LLM pass per chunk however many integration steps, Euler
steps from the seeded noise at t = 1 to t = 0, chunks independent of the rest of the batch, the loss only on the
real steps, and a clear error where the LLM's KV cache is unavailable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vlx.builder import build_model
from vlx.errors import ConfigError
from vlx.heads.action_expert import sincos_time_embedding

K, A = 4, 3


@pytest.fixture()
def model(tiny_cfg: dict):
    torch.manual_seed(0)
    cfg = {**tiny_cfg, "head": {"name": "flow-matching", "action_dim": A, "chunk_size": K, "expert_width": 32},
           "prompt": {"name": "pure", "image_placement": "after-bos"}}
    return build_model(cfg).eval()


def prompt_batch(model, texts: list[str]) -> tuple[torch.Tensor, dict]:
    """Left-padded text prompts: embeddings and the batch the head reads."""
    ids = [model.tokenizer(f"In: What action should the robot take to {t}?\nOut:").input_ids for t in texts]
    length = max(len(i) for i in ids)
    padded = torch.full((len(ids), length), model.tokenizer.pad_token_id)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for row, sequence in enumerate(ids):
        padded[row, length - len(sequence):] = torch.tensor(sequence)
        mask[row, length - len(sequence):] = 1
    return model.llm.embed(padded), {"attention_mask": mask}


def test_time_embedding_is_pi0s_posemb_sincos() -> None:
    times = np.array([0.001, 0.25, 0.999])
    width, low, high = 16, 4e-3, 4.0
    fraction = np.linspace(0.0, 1.0, width // 2)  # openpi: jnp.linspace(0, 1, embedding_dim // 2)
    period = low * (high / low) ** fraction
    angles = np.einsum("i,j->ij", times, 1.0 / period * 2 * np.pi)
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    np.testing.assert_allclose(sincos_time_embedding(torch.tensor(times), width).numpy(), expected, atol=1e-6)


class CountCalls:
    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def test_one_llm_pass_per_chunk_and_num_steps_expert_passes(model) -> None:
    llm_calls, expert_calls = CountCalls(model.llm.decoder()), CountCalls(model.head.expert)
    embeds, batch = prompt_batch(model, ["move to the red block"])
    with torch.no_grad():
        chunk = model.head.decode(model.llm, embeds, batch)
    assert chunk.shape == (1, K, A) and llm_calls.calls == 1 and expert_calls.calls == model.head.num_steps == 10


class ConstantVelocity(nn.Module):
    """An expert whose velocity is the same everywhere; records the times it was asked at."""

    def __init__(self, velocity: torch.Tensor) -> None:
        super().__init__()
        self.velocity, self.times = velocity, []

    def forward(self, noisy, time, prefix_kv, prefix_mask, rotate):
        self.times.append(float(time[0]))
        return self.velocity.expand_as(noisy)


def test_euler_steps_go_from_the_seeded_noise_at_t1_to_t0(model) -> None:
    velocity = torch.tensor([[0.5, -1.0, 2.0]]).expand(K, A)
    model.head.expert = ConstantVelocity(velocity)
    embeds, batch = prompt_batch(model, ["move to the red block"])
    with torch.no_grad():
        chunk = model.head.decode(model.llm, embeds, batch)[0]
    noise = torch.randn((K, A), generator=torch.Generator().manual_seed(model.head.sample_seed))
    torch.testing.assert_close(chunk, noise - velocity)  # x_0 = x_1 + Σ dt·v with dt = -1/10, ten times
    np.testing.assert_allclose(model.head.expert.times, [1.0 - 0.1 * i for i in range(10)], atol=1e-6)


def test_a_chunk_does_not_depend_on_the_rest_of_the_batch(model) -> None:
    with torch.no_grad():
        embeds, batch = prompt_batch(model, ["move to the red block", "go"])  # different lengths: left padding
        together = model.head.decode(model.llm, embeds, batch)
        alone = [model.head.decode(model.llm, *prompt_batch(model, [text]))[0]
                 for text in ["move to the red block", "go"]]
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])  # the prompt matters


class Recording(nn.Module):
    """Wraps the expert and keeps what it saw and said (noisy chunk, time, velocity)."""

    def __init__(self, expert: nn.Module) -> None:
        super().__init__()
        self.expert, self.seen = expert, []

    def forward(self, noisy, time, prefix_kv, prefix_mask, rotate):
        velocity = self.expert(noisy, time, prefix_kv, prefix_mask, rotate)
        self.seen.append((noisy.detach(), time.detach(), velocity.detach()))
        return velocity


def test_loss_is_pi0s_velocity_mse_on_the_real_steps_and_trains_the_expert(model) -> None:
    model.train()
    model.head.expert = recording = Recording(model.head.expert)
    embeds, batch = prompt_batch(model, ["move to the red block", "go"])
    actions = torch.rand(2, K, A) * 2 - 1
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = model.head(model.llm, embeds, {**batch, "actions": actions, "action_mask": mask})
    noisy, time, velocity = recording.seen[-1]
    t = time[:, None, None]
    assert bool(((time >= 0.001) & (time <= 1.0)).all())
    noise = (noisy - (1 - t) * actions) / t  # x_t = t·noise + (1 - t)·actions
    squared = (velocity - (noise - actions)) ** 2  # target velocity u = noise - actions
    expected = torch.cat([squared[0, :2].reshape(-1), squared[1].reshape(-1)]).mean()
    torch.testing.assert_close(out.loss.detach(), expected, atol=1e-5, rtol=1e-4)
    assert set(out.metrics) == {"flow_mse", "action_l1_onestep"} and out.logits is None
    out.loss.backward()
    assert recording.expert.action_out_proj.weight.grad.abs().sum() > 0
    assert model.llm.model.model.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0  # through the prefix cache
    model.eval()
    with torch.no_grad():
        evaluated = model.head(model.llm, embeds, {**batch, "actions": actions, "action_mask": mask})
    assert set(evaluated.metrics) == {"flow_mse", "action_l1"} and math.isfinite(float(evaluated.metrics["action_l1"]))


def test_gradient_checkpointing_is_a_clear_error(model) -> None:
    model.train()
    model.llm.set_gradient_checkpointing(True)
    embeds, batch = prompt_batch(model, ["go"])
    batch = {**batch, "actions": torch.zeros(1, K, A), "action_mask": torch.ones(1, K, dtype=torch.bool)}
    with pytest.raises(ConfigError, match="set llm.gradient_checkpointing=false"):
        model.head(model.llm, embeds.requires_grad_(), batch)
