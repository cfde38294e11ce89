"""Fixtures of the serving tests: a tiny chunked VLA with two cameras and a state (the one-step `tiny_vla` is in
tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def tiny_chunked_vla(tiny_cfg: dict):
    """A fresh tiny VLA with two cameras, a 3-number state (agent_pos + gripper) and an L1 head of 4-step chunks."""
    import torch

    from vlx.builder import build_model
    from vlx.data.action_stats import ActionStats

    torch.manual_seed(0)
    cfg = {**tiny_cfg, "head": {"name": "l1-regression", "action_dim": 3, "chunk_size": 4},
           "prompt": {"name": "pure", "image_placement": "after-bos"},
           "observation": {"cameras": ["agentview_image", "wrist_image"], "state_keys": ["agent_pos", "gripper"]},
           "proprio": {"name": "mlp", "in_dim": 3}}
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    model.action_stats["toy"] = ActionStats.from_actions(rng.uniform(-1, 1, (50, 3)).astype(np.float32),
                                                         num_trajectories=5)
    model.state_stats["toy"] = ActionStats.from_actions(
        np.random.default_rng(1).uniform(0, 1, (50, 3)).astype(np.float32), num_trajectories=5, mask=[True] * 3)
    return model
