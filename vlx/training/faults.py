"""Deterministic fault injection for the resume tests: real signals at a chosen optimiser step.

`VLX_FAULT=SIGNAL@STEP` (read only by `vlx train`; documented in docs/resume.md) makes the training
process send itself SIGNAL (SIGTERM, SIGUSR1 or SIGKILL) just before the first micro-batch after
optimiser step STEP, i.e. inside a gradient-accumulation window when there is one; `SIGNAL@STEP@RANK`
signals only the process of that global rank (the others learn of it when the ranks agree at the next
step boundary, as on a cluster where one node is told first).
`VLX_FAULT=SIGKILL-IN-SAVE@STEP` kills the process with SIGKILL while the resume checkpoint of STEP
is half written. Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import IO, Any

import lightning as L

from vlx.errors import ConfigError
from vlx.training.atomic_io import AtomicCheckpointIO

ENV = "VLX_FAULT"
IN_SAVE = "SIGKILL-IN-SAVE"
KILL_AFTER_BYTES = 4096


def parse_fault(value: str | None) -> tuple[str, int, int | None] | None:
    """`(kind, step, rank or None for every rank)` from a `VLX_FAULT` value, None when unset."""
    if not value:
        return None
    kind, _, where = value.partition("@")
    step, _, rank = where.partition("@")
    if kind not in (IN_SAVE, "SIGTERM", "SIGUSR1", "SIGKILL") or not step.isdigit() or (
            rank and (not rank.isdigit() or kind == IN_SAVE)):
        raise ConfigError(f"{ENV}={value!r}: expected SIGTERM@STEP, SIGUSR1@STEP, SIGKILL@STEP or {IN_SAVE}@STEP "
                          "(a signal may add @RANK)")
    return kind, int(step), int(rank) if rank else None


class SignalAtStep(L.Callback):
    """Send a real signal to this process before the first micro-batch after optimiser step `step` (only on
    global rank `rank`, if given)."""

    def __init__(self, signum: int, step: int, rank: int | None = None) -> None:
        self.signum, self.step, self.rank, self.fired = signum, step, rank, False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if not self.fired and trainer.global_step == self.step:
            self.fired = True
            os.kill(os.getpid(), self.signum)


class _KillingFile:
    """A file that SIGKILLs the process once `limit` bytes went to disk."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        if self.written + len(view) >= self.limit:
            self.f.write(view[: self.limit - self.written])
            self.f.flush()
            os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(view)
        return self.f.write(view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _KillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


class KillDuringSave(AtomicCheckpointIO):
    """Checkpoint IO that dies (SIGKILL) half-way through writing the checkpoint of optimiser step `step`."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def open_temporary(self, path: Path, checkpoint: dict[str, Any]) -> IO[bytes]:
        f = super().open_temporary(path, checkpoint)
        if checkpoint.get("global_step") != self.step:
            return f
        return _KillingFile(f, KILL_AFTER_BYTES)  # type: ignore[return-value]


def fault_from_env() -> tuple[list[L.Callback], AtomicCheckpointIO]:
    """The callbacks and checkpoint IO that inject the fault `VLX_FAULT` asks for (none: plain atomic IO)."""
    fault = parse_fault(os.environ.get(ENV))
    if fault is None:
        return [], AtomicCheckpointIO()
    kind, step, rank = fault
    if kind == IN_SAVE:
        return [], KillDuringSave(step)
    return [SignalAtStep(signal.Signals[kind], step, rank)], AtomicCheckpointIO()
