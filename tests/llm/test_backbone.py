"""The LLM backbone: special tokens and vocabulary padding, architecture checks, dtype validation."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from vlx.errors import ConfigError
from vlx.llm.backbone import HFCausalLM

TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2}


@pytest.fixture()
def bare_llm_dir(tmp_path):
    """A saved Llama whose tokenizer lacks `<image>` and a pad token, with exactly len(tokenizer) rows."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vlx.data.tiny_assets import tokenizer_corpus

    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    model.train_from_iterator(tokenizer_corpus(),
                              trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    rows = len(fast)
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TINY_LLAMA.items() if k != "model_type"},
                                 vocab_size=rows)).save_pretrained(tmp_path / "llm")
    fast.save_pretrained(tmp_path / "llm")
    return tmp_path / "llm", rows


def test_missing_image_and_pad_tokens_are_added_and_vocab_padded(bare_llm_dir):
    directory, rows = bare_llm_dir
    llm = HFCausalLM(source=str(directory), pad_vocab_to_multiple_of=64)
    assert llm.tokenizer.convert_tokens_to_ids("<image>") == rows
    assert llm.tokenizer.pad_token == "<pad>" and llm.tokenizer.pad_token_id == rows + 1
    assert llm.model.get_input_embeddings().weight.shape[0] == 128  # rows + 2 rounded up to 64
    assert llm.model.get_output_embeddings().weight.shape[0] == 128
    assert llm.image_token_id == rows


def test_declared_architecture_must_match_the_weights(bare_llm_dir):
    directory, _ = bare_llm_dir
    with pytest.raises(ConfigError, match=r"llm.config.hidden_size=64 but the weights loaded from the source have 32"):
        HFCausalLM(source=str(directory), config={**TINY_LLAMA, "hidden_size": 64})


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"llm.dtype='bf16'; expected one of float32, bfloat16, float16"):
        HFCausalLM(config=TINY_LLAMA, dtype="bf16", load_weights=False)
    with pytest.raises(ConfigError, match=r"'llm.config' needs a 'model_type'"):
        HFCausalLM(config={"hidden_size": 32}, load_weights=False)
    with pytest.raises(ConfigError, match=r"needs 'llm.source'"):
        HFCausalLM(load_weights=False)
