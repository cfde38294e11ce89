"""Projectors map (B, N, Dv) to (B, N, Dl) with LLaVA's layer structure."""

from __future__ import annotations

import torch
from torch import nn

from vlx.projectors import LinearProjector, MLPProjector


def test_linear_projector_shape_and_value():
    projector = LinearProjector(6, 10)
    x = torch.randn(2, 5, 6)
    out = projector(x)
    assert out.shape == (2, 5, 10)
    torch.testing.assert_close(out, x @ projector.linear_1.weight.T + projector.linear_1.bias)


def test_mlp_projector_is_linear_gelu_linear():
    projector = MLPProjector(6, 10)
    assert [type(m) for m in projector.children()] == [nn.Linear, nn.GELU, nn.Linear]
    assert projector.linear_1.weight.shape == (10, 6)  # hidden width = LLM width, as LLaVA-1.5
    x = torch.randn(2, 5, 6)
    expected = projector.linear_2(nn.functional.gelu(projector.linear_1(x)))
    torch.testing.assert_close(projector(x), expected)


def test_fused_mlp_has_prismatic_shapes_and_names():
    from vlx.projectors import FusedMLPProjector

    projector = FusedMLPProjector(12, 8)
    assert [name for name, _ in projector.named_parameters()] == [
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert projector.fc1.weight.shape == (48, 12) and projector.fc2.weight.shape == (8, 48)
    assert projector.fc3.weight.shape == (8, 8)
    x = torch.randn(2, 3, 12)
    gelu = nn.functional.gelu
    expected = projector.fc3(gelu(projector.fc2(gelu(projector.fc1(x)))))
    torch.testing.assert_close(projector(x), expected)
    with torch.device("meta"):
        big = FusedMLPProjector(2176, 4096)  # dinosiglip-224px → Llama-2-7B
    assert sum(p.numel() for p in big.parameters()) == 2176 * 8704 + 8704 + 8704 * 4096 + 4096 + 4096 * 4096 + 4096
