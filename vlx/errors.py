"""Error types of vlx.

Every mistake a user can make in a config, a dataset or a checkpoint surfaces as a subclass of
`VlxError` whose message says what was wrong, where (file, sample id, config key) and what would be
right. The CLI prints these as one line instead of a stack trace. An error may carry a short `kind`
(e.g. `missing-image`, `nonfinite-actions`) so that `vlx data check` can count problems per kind; the
kinds and their messages are catalogued in docs/errors.md.
"""

from __future__ import annotations


class VlxError(Exception):
    """Base class of all errors vlx raises on purpose; `kind` names the catalogued case ("other" if none)."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(VlxError, ValueError):
    """A config value is missing, unknown or inconsistent (names the config path)."""


class DataError(VlxError):
    """A dataset file or sample is malformed (names the file and the sample id)."""


class CheckpointError(VlxError):
    """A checkpoint directory is incomplete or does not match the model (names the file)."""
