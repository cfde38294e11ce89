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
