"""Mid-stage resume checkpoints: periodic and on pre-emption signals, with a `last` pointer.

`ResumeCheckpoints` saves Lightning's full training state (weights, optimiser, LR schedule, loop
counters, the data loader's position, and the RNG states it adds itself) to
`{output_dir}/resume/{stage}/step-NNNNNNNN.ckpt` every `every_n_steps` optimiser steps, always at an
optimiser-step boundary so no half-accumulated gradient is lost. It then points the `last` file at the
new checkpoint and keeps the newest `keep`. `Preemption` replaces the SIGTERM/SIGUSR1 handlers with one
that only records the signal; at the next optimiser-step boundary the callback saves and raises
`Preempted` (exit status 128 + signal), which the next `vlx train ... resume=true` continues from.
With several ranks, all of them agree at each step boundary on whether any saw a signal, so they save
and stop at the same step.
All writes go through `AtomicCheckpointIO`, so `last` only ever names a complete file.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from vlx.errors import CheckpointError
from vlx.training.atomic_io import AtomicCheckpointIO, write_pointer
from vlx.training.epoch_sampler import ResumableDataLoader
from vlx.training.faults import fault_from_env

LAST = "last"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Training stopped on a signal after saving a resume checkpoint; exit status 128 + signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.message = message


class Preemption:
    """Records SIGTERM/SIGUSR1 instead of dying, so training can stop at a step boundary after saving.

    Use as a context manager around the whole run: the previous handlers come back when it ends.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def install(self) -> dict[int, Any]:
        """Take over the signals (again: Lightning installs its own SIGTERM handler in every `fit`) and
        return the handlers it replaced. Python lets only the main thread set handlers; elsewhere signals
        keep their default effect.
        """
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._record)
        return previous

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        """Put back the handlers `install` returned."""
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def __enter__(self) -> Preemption:
        self._previous = self.install()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore(self._previous)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as tensors and plain types (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(), "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))


def last_checkpoint(directory: Path) -> Path | None:
    """The checkpoint `directory/last` names, or None when the stage never saved one."""
    pointer = directory / LAST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    target = directory / name
    if not name or "/" in name or not target.is_file():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint file in {directory}")
    return target


def resume_callbacks(checkpointing: dict[str, Any], directory: Path, preemption: Preemption,
                     stage: str) -> tuple[list[L.Callback], AtomicCheckpointIO]:
    """A stage's `ResumeCheckpoints` (plus any `VLX_FAULT` test fault) and the atomic checkpoint IO plugin."""
    faults, checkpoint_io = fault_from_env()
    saver = ResumeCheckpoints(directory, int(checkpointing.get("every_n_steps", 0)), int(checkpointing.get("keep", 2)),
                              preemption, stage)
    return [saver, *faults], checkpoint_io


class SignalAgreement:
    """Lets the ranks agree on whether any of them recorded a signal, so that every rank saves and stops at the
    same step (saving is collective, and a rank that ran on would wait forever for the others' gradients).

    One all-reduce (max) of one number per optimiser step over a CPU (gloo) group of its own, so a GPU run
    does not wait for its device to finish the step; a single process just reads its own signal.
    """

    def __init__(self) -> None:
        self.group: Any = None

    def setup(self, world_size: int) -> None:
        """Every rank must call it (creating the group is collective)."""
        if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            self.group = torch.distributed.new_group(backend="gloo")

    def __call__(self, signum: int | None) -> int | None:
        if self.group is None:
            return signum
        flag = torch.tensor(signum or 0)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
        return int(flag) or None

    def teardown(self) -> None:
        if self.group is not None:
            torch.distributed.destroy_process_group(self.group)
            self.group = None


class ResumeCheckpoints(L.Callback):
    """Save resumable state every `every_n_steps` optimiser steps and when `preemption` saw a signal."""

    def __init__(self, directory: Path, every_n_steps: int, keep: int, preemption: Preemption, stage: str) -> None:
        if keep < 1:
            raise CheckpointError(f"checkpointing.keep={keep}: keep at least 1 resume checkpoint")
        self.directory, self.every, self.keep = Path(directory), int(every_n_steps), int(keep)
        self.preemption, self.stage = preemption, stage
        self._step_seen = -1
        self._trainer: L.Trainer | None = None
        self._data_state: dict[str, int] | None = None
        self._replaced: dict[int, Any] = {}
        self._agreement = SignalAgreement()

    def state_dict(self) -> dict[str, Any]:
        loader = self.trainer_loader
        return {"rng": rng_state(), "data": loader.state_dict() if isinstance(loader, ResumableDataLoader) else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_state(state_dict["rng"])
        self._data_state = state_dict.get("data")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        self._agreement.setup(trainer.world_size)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._agreement.teardown()

    @property
    def trainer_loader(self) -> Any:
        return self._trainer.train_dataloader if self._trainer is not None else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning restores a stateful train loader itself only when the loader was not created before
        # the loops were restored; `estimated_stepping_batches` in configure_optimizers creates it earlier,
        # so the position is restored here, before the first batch is drawn (the loader iterates lazily).
        if self._data_state is not None and isinstance(trainer.train_dataloader, ResumableDataLoader):
            trainer.train_dataloader.load_state_dict(self._data_state)
        self._data_state = None
        self._replaced = self.preemption.install()  # after Lightning's, which would stop mid-accumulation
        for stale in self.directory.glob(".*.tmp-*"):  # left by a process killed while saving
            stale.unlink()
        self._step_seen = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before Lightning's own teardown, which then puts back the handlers from before the fit
        self.preemption.restore(self._replaced)
        self._replaced = {}

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._step_seen:
            return  # inside a gradient-accumulation window: no optimiser step yet
        self._step_seen = step
        signum = self._agreement(self.preemption.signum)
        if signum is None and not (self.every > 0 and step % self.every == 0):
            return
        path = self.save(trainer)
        if signum is not None:
            raise Preempted(signum, f"{signal.Signals(signum).name} received: stopped stage {self.stage} at step "
                                    f"{step} after saving {path}; continue with resume=true")

    def save(self, trainer: L.Trainer) -> Path:
        """Write the checkpoint of the current step, point `last` at it, drop the oldest ones."""
        path = self.directory / f"step-{trainer.global_step:08d}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # the full training state, not only the weights
        if trainer.is_global_zero:
            write_pointer(self.directory / LAST, path.name)
            for old in sorted(self.directory.glob("step-*.ckpt"))[:-self.keep]:
                old.unlink()
        return path
