"""Shared fixtures: tiny assets, a small shapes dataset and tiny models, built once per session offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Under pytest-xdist every process computes on one thread, the training subprocesses the tests start included (they
# inherit the variables): two workers of two threads each on a 2-core machine oversubscribe it (that, and the lanes
# below being ignored, made CI miss 90 minutes once); two one-thread processes do 1.7x the work of one two-thread
# process (docs/BENCHMARKS.md, "Threads or processes for tiny models"). A thread count the user set is kept.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def pytest_configure(config: pytest.Config) -> None:
    """Apply the thread count above to this process's torch too."""
    if "OMP_NUM_THREADS" in os.environ:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The slow tests' lanes under pytest-xdist: each lane is one scheduling unit, so one worker runs its tests in order
# (the VLA learning test builds its scene checkpoint once, in its first test's setup); every other test is a unit of
# its own. The lanes are whole files, decided here from the node ids, because xdist's own grouping (`xdist_group`
# markers with --dist loadgroup) adds the group to `item._nodeid`, which pytest 9 no longer reads: the groups were
# silently ignored, and CI once built the scene checkpoint on both workers.
SLOW_LANES = {
    "tests/test_learning_vla.py": "slow-vla",  # the scene stage, then two heads at once: 40 minutes measured
    "tests/test_learning.py": "slow",  # then the rest, about 24 minutes: the VLM learning demos,
    "tests/test_resume.py": "slow",  # resume,
    "tests/training/test_ddp.py": "slow",  # DDP
    "tests/training/test_fsdp_checkpoint.py": "slow",  # and FSDP
}


def lane_of(nodeid: str) -> str:
    """The scheduling unit of a test: its file's lane, else the test itself."""
    return SLOW_LANES.get(nodeid.split("::", 1)[0], nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's load-scope scheduler with `lane_of` as the scope: the largest units (the lanes) go out first, one
    worker each, and a worker takes single tests while its lane has at most two left. Every process computes on
    one thread whatever company it keeps, so a test's numbers do not depend on the schedule, only its time."""
    from xdist.scheduler import LoadScopeScheduling

    class SlowLanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    return SlowLanes(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A `slow` test outside the lanes would run beside them on any worker: refuse it."""
    stray = [item.nodeid for item in items if item.get_closest_marker("slow") and lane_of(item.nodeid) == item.nodeid]
    if stray:
        raise pytest.UsageError(f"slow tests outside tests/conftest.py's SLOW_LANES: {stray[:3]}; add their files")


@pytest.fixture(scope="session")
def vlx_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private VLX_HOME so tests never touch the user's cache."""
    home = tmp_path_factory.mktemp("vlx-home")
    os.environ["VLX_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_cfg(vlx_home: Path) -> dict:
    """The resolved llava-tiny config (paths inside `vlx_home`), with its assets written."""
    from vlx.builder import to_plain
    from vlx.config import compose
    from vlx.data.tiny_assets import write_tiny_assets

    cfg = to_plain(compose(["recipe=llava-tiny", f"paths.home={vlx_home}", "logger=none"]))
    write_tiny_assets(cfg["vision"], cfg["llm"], seed=0)
    return cfg


@pytest.fixture(scope="session")
def shapes(vlx_home: Path):
    """A small shapes dataset (80 train / 24 val samples)."""
    from vlx.data.shapes import generate_shapes

    return generate_shapes(vlx_home / "data" / "shapes-small", n_train=80, n_val=24, seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_cfg: dict):
    """The tiny tokenizer with vlx's special tokens, as the LLM backbone prepares it."""
    from vlx.llm.backbone import HFCausalLM

    return HFCausalLM(**{k: v for k, v in tiny_cfg["llm"].items() if k != "name"}).tokenizer


@pytest.fixture()
def tiny_model(tiny_cfg: dict):
    """A fresh tiny LLaVA model (vicuna prompt) loaded from the tiny assets."""
    from vlx.builder import build_model

    return build_model({**tiny_cfg, "prompt": {"name": "vicuna"}})


@pytest.fixture()
def tiny_vla(tiny_cfg: dict):
    """A fresh tiny VLA: the llava-tiny parts, a 3-D action head on 256 new tokens, the pure prompt, and
    action statistics 'toy' from uniform actions in [-2, 2] × [0, 4] × [-1, 1]."""
    import numpy as np
    import torch

    from vlx.builder import build_model
    from vlx.data.action_stats import ActionStats

    torch.manual_seed(0)
    cfg = {**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 3, "tokens": "new"},
           "prompt": {"name": "pure", "image_placement": "after-bos"}}
    model = build_model(cfg).eval()
    actions = np.random.default_rng(0).uniform([-2, 0, -1], [2, 4, 1], size=(200, 3)).astype(np.float32)
    model.action_stats["toy"] = ActionStats.from_actions(actions, num_trajectories=10)
    return model


@pytest.fixture()
def tiny_chunked_vla(tiny_cfg: dict):
    """A fresh tiny VLA with two cameras, a 3-number state (agent_pos + gripper) and an L1 head of 4-step chunks."""
    import numpy as np
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
