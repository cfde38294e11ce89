"""Datasets, collation, and the built-in synthetic data and tiny assets."""

from vlx.data import llava_json, robot  # noqa: F401  (import registers the datasets)
