"""The modern-VLA recipes build on the meta device with the parameter counts worked out here from the published
architectures (OpenVLA-OFT's projector and MLPResNet, LoRA r 32 on Llama-2-7B, Qwen2.5-0.5B), and the tiny ones
compose with two cameras, the state and chunks."""

from __future__ import annotations

import pytest

from vlx.cli.report import print_info
from vlx.config import compose

D, A, P, K = 4096, 7, 8, 8  # Llama-2-7B width; OFT's LIBERO action dim, state dim, chunk
OPENVLA_7B = 7_541_237_184  # OpenVLA-7B / Prism-DINOSigLIP-224px-7B (tests/test_config.py)


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def fused_mlp(vision: int, llm: int) -> int:
    return linear(vision, 4 * vision) + linear(4 * vision, llm) + linear(llm, llm)


def oft_l1_head(width: int, action_dim: int, blocks: int = 2) -> int:
    """OFT's L1RegressionActionHead: MLPResNet(num_blocks=2, input_dim=width·A, hidden_dim=width, output_dim=A)."""
    layer_norm = 2  # weight and bias per feature
    return (layer_norm * width * action_dim + linear(width * action_dim, width)
            + blocks * (layer_norm * width + linear(width, width)) + layer_norm * width + linear(width, action_dim))


def llama_lora(r: int, width: int, mlp: int, layers: int) -> int:
    """LoRA A (r × in) and B (out × r) on q, k, v, o, gate, up, down of every layer."""
    attention = 4 * r * (width + width)
    return layers * (attention + 3 * r * (width + mlp))


def test_openvla_oft_7b_counts(capsys) -> None:
    cfg = compose(["recipe=openvla-oft-7b", "robot_data=/data/libero.hdf5"])
    assert (cfg.head.name, cfg.head.chunk_size, cfg.head.action_dim, cfg.proprio.in_dim) == ("l1-regression", K, A, P)
    assert list(cfg.observation.cameras) == ["agentview_rgb", "eye_in_hand_rgb"]
    assert dict(cfg.stages.vla.lora) == {"r": 32, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    counts = print_info(cfg)
    proprio = linear(P, D) + linear(D, D)  # OFT's ProprioProjector
    head = oft_l1_head(D, A)
    lora = llama_lora(32, D, 11008, 32)
    assert (proprio, head, lora) == (16_818_176, 151_117_831, 79_953_920)
    assert counts["proprio_total"] == proprio and counts["head_total"] == head
    assert counts["total"] == OPENVLA_7B + proprio + head + lora
    assert counts["trainable"] == fused_mlp(2176, D) + lora + proprio + head  # vision and LLM weights frozen
    out = capsys.readouterr().out
    assert f"params_total={counts['total']}" in out and f"params_trainable={counts['trainable']}" in out


def test_minivla_qwen25_counts() -> None:
    cfg = compose(["recipe=minivla-qwen25-0.5b", "robot_data=/data/demos.hdf5"])
    assert cfg.llm.config.model_type == "qwen2" and cfg.head.name == "action-tokens-parallel"
    counts = print_info(cfg)
    width, mlp, layers, vocab, kv = 896, 4864, 24, 151_936, 2 * 64  # kv: 2 key/value heads of 64
    attention = linear(width, width) + 2 * linear(width, kv) + linear(width, width, bias=False)  # q, k, v biased; o not
    qwen = vocab * width + layers * (attention + 3 * linear(width, mlp, bias=False) + 2 * width) + width  # tied head
    assert qwen == 494_032_768  # Qwen2.5-0.5B as published
    assert counts["llm_total"] == qwen
    assert counts["total"] == 730_911_680 + fused_mlp(2176, width) + qwen + linear(9, width) + linear(width, width)
    assert counts["head_total"] == 0  # the parallel token head reuses the LM head


@pytest.mark.parametrize(("recipe", "head"),
                         [("openvla-oft-tiny", "l1-regression"), ("flow-vla-tiny", "flow-matching")])
def test_tiny_modern_recipes(recipe: str, head: str) -> None:
    cfg = compose([f"recipe={recipe}"])
    assert cfg.head.name == head and cfg.head.chunk_size == 8 and list(cfg.train.stages) == ["scene", "vla"]
    assert list(cfg.observation.cameras) == ["agentview_image", "wrist_image"]
    assert list(cfg.observation.state_keys) == ["agent_pos", "gripper"] and cfg.proprio.in_dim == 3
    counts = print_info(cfg)
    assert counts["proprio_total"] == linear(3, 128) + linear(128, 128) and counts["head_total"] > 0
