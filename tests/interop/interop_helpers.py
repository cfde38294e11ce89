"""Builders shared by the interop tests: a tiny transformers LLaVA and its processor, made by transformers itself."""

from __future__ import annotations

import torch

IMAGE_SIZE, PATCH = 16, 4  # 4 × 4 = 16 patch tokens
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def tiny_llava(tokenizer, vocab_rows: int = 384, act: str = "gelu"):
    """A random `LlavaForConditionalGeneration`: CLIP (16 px, patch 4, width 32, 2 layers) + Llama (width 48)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                       image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32),
        text_config=LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=vocab_rows, max_position_embeddings=256,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act=act,
    )
    model = LlavaForConditionalGeneration(config).eval()
    # transformers initialises with std 0.02; larger weights make logits and greedy paths distinct
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(std=0.2)
    return model


def tiny_processor(tokenizer):
    """LLaVA-1.5's processor at 16 px: pad to square with the mean colour, resize, centre crop, CLIP normalisation."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    images = LlavaImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                 crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                 do_pad=True, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
