"""LLM backbones (transformers causal LMs) and prompt formats."""

from vlx.llm import backbone, formats  # noqa: F401  (imports register the entries)
