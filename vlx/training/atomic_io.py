"""Crash-safe files for resumable training: Lightning checkpoints and the `last` pointer.

`AtomicCheckpointIO` is Lightning's checkpoint-IO plugin with two guarantees that its default lacks:
a checkpoint is written to a temporary file in the same directory, flushed to disk and renamed into
place (`os.replace` is atomic on POSIX), so a kill at any moment leaves either the old state or the
complete new file under the final name; and checkpoints are read only with
`torch.load(weights_only=True)`, which unpickles tensors and plain containers and never runs code.
`write_pointer` updates a small text file (the `last` pointer) the same way.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vlx.errors import CheckpointError


def _sync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """The hidden sibling a file is written to before it is renamed to `path`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def replace_atomically(temporary: Path, path: Path) -> None:
    """Rename the fully written `temporary` to `path` and make the rename durable."""
    os.replace(temporary, path)
    _sync_directory(path.parent)


def write_pointer(path: Path, target: str) -> None:
    """Atomically set the pointer file `path` to name `target` (a file in the same directory)."""
    temporary = temporary_name(path)
    with open(temporary, "w") as f:
        f.write(target + "\n")
        f.flush()
        os.fsync(f.fileno())
    replace_atomically(temporary, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: temp file + fsync + rename on save, `weights_only=True` on load."""

    def open_temporary(self, path: Path, checkpoint: dict[str, Any]) -> IO[bytes]:
        """The file object the checkpoint is serialised into (a hook for fault-injection tests)."""
        return open(temporary_name(path), "wb")

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.open_temporary(target, checkpoint) as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        replace_atomically(temporary_name(target), target)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        target = Path(path)
        if not target.is_file():
            raise CheckpointError(f"resume checkpoint {target} does not exist")
        try:
            return torch.load(target, map_location=map_location or "cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"resume checkpoint {target} cannot be loaded safely (torch.load weights_only=True): "
                                  f"{first}") from None
