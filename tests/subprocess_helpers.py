"""`python -m vlx ARGS` in a subprocess, as a user runs it: the one helper the CLI, learning, resume, sweep and
DDP tests share."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_vlx(*args: str, cwd: Path, home: Path | None = None, env_extra: Mapping[str, str] | None = None,
            timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m vlx ARGS` as a user runs it, offline (`home`: its VLX_HOME). `check`: the exit status must be 0,
    and the assertion shows the tail of both streams."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **({"VLX_HOME": str(home)} if home else {}),
           **(env_extra or {})}
    result = subprocess.run([sys.executable, "-m", "vlx", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def numbers(output: str) -> dict[str, float]:
    """The `key=value` (and `key[part]=value`) number lines a vlx command printed, e.g. `accuracy=0.91`."""
    return {key: float(value) for key, value in re.findall(r"^(\w+(?:\[\w+\])?)=([0-9.]+)$", output, re.MULTILINE)}
