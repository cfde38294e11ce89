"""Error types of vlx.

Every mistake a user can make in a config, a dataset or a checkpoint surfaces as a subclass of
`VlxError` whose message says what was wrong, where (file, sample id, config key) and what would be
right. The CLI prints these as one line instead of a stack trace.
"""

from __future__ import annotations


class VlxError(Exception):
    """Base class of all errors vlx raises on purpose."""


class ConfigError(VlxError, ValueError):
    """A config value is missing, unknown or inconsistent (names the config path)."""


class DataError(VlxError):
    """A dataset file or sample is malformed (names the file and the sample id)."""


class CheckpointError(VlxError):
    """A checkpoint directory is incomplete or does not match the model (names the file)."""
