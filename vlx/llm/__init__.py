"""LLM backbones (transformers causal LMs) and prompt formats."""

from vlx.llm import backbone, chat_formats, formats, prismatic_formats  # noqa: F401  (imports register the entries)
