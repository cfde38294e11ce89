"""Fixtures of the interop tests: a tiny transformers LLaVA built and saved by transformers itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import tiny_llava, tiny_processor


@pytest.fixture(scope="session")
def llava_tokenizer(tiny_cfg: dict):
    """The tiny Llama-style tokenizer (it already has `<pad>` and `<image>`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_cfg["llm"]["source"])


@pytest.fixture(scope="session")
def hf_llava_dir(llava_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA saved with `save_pretrained` (model + processor), transformers 5.x names."""
    directory = tmp_path_factory.mktemp("hf-llava")
    tiny_llava(llava_tokenizer).save_pretrained(directory)
    tiny_processor(llava_tokenizer).save_pretrained(directory)
    return directory
