"""Vision backbones: patch features from the configured layer, prefix tokens dropped, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel

from vlx.errors import ConfigError
from vlx.vision.hf_clip import HFCLIPVision
from vlx.vision.timm_vit import TimmViT

TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 8}


def test_hf_clip_returns_second_to_last_layer_without_cls():
    backbone = HFCLIPVision(config=TINY_CLIP, load_weights=False).eval()
    pixels = torch.randn(2, 3, 32, 32)
    features = backbone(pixels)
    assert features.shape == (2, 16, 32) and backbone.num_patches == 16 and backbone.embed_dim == 32
    hidden = backbone.model(pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(features, hidden[-2][:, 1:])


def test_hf_clip_loads_a_local_directory_and_checks_its_architecture(tmp_path):
    from transformers import CLIPVisionConfig

    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(tmp_path / "clip")
    backbone = HFCLIPVision(source=str(tmp_path / "clip"), config=TINY_CLIP, feature_layer=-1)
    assert backbone.model.config.num_hidden_layers == 3
    with pytest.raises(ConfigError, match=r"vision.config.patch_size=4 but the weights loaded from the source have 8"):
        HFCLIPVision(source=str(tmp_path / "clip"), config={**TINY_CLIP, "patch_size": 4})
    with pytest.raises(ConfigError, match=r"vision.source=/nonexistent/clip: no such directory.*vlx data assets"):
        HFCLIPVision(source="/nonexistent/clip")


def test_hf_clip_rebuilds_from_its_spec():
    backbone = HFCLIPVision(config=TINY_CLIP, feature_layer=-3, image_resize="resize-crop", load_weights=False)
    spec = backbone.spec()
    assert spec["name"] == "hf-clip" and spec["source"] is None and spec["feature_layer"] == -3
    rebuilt = HFCLIPVision(**{k: v for k, v in spec.items() if k != "name"}, load_weights=False)
    assert rebuilt.state_dict().keys() == backbone.state_dict().keys()
    assert rebuilt.image_resize == "resize-crop"


def test_timm_vit_drops_prefix_tokens_and_uses_the_block_before_last():
    kwargs = {"embed_dim": 24, "depth": 3, "num_heads": 2, "reg_tokens": 4}
    backbone = TimmViT("vit_small_patch16_224", image_size=32, model_kwargs=kwargs).eval()
    assert backbone.model.num_prefix_tokens == 5  # CLS + 4 registers
    pixels = torch.randn(2, 3, 32, 32)
    features = backbone(pixels)
    assert features.shape == (2, 4, 24) and backbone.num_patches == 4 and backbone.embed_dim == 24
    (expected,) = backbone.model.get_intermediate_layers(pixels, n={1})  # block index 1 of 3 = second-to-last
    torch.testing.assert_close(features, expected)
    assert backbone.spec()["model_kwargs"] == kwargs


def test_timm_vit_errors_name_the_config_key():
    with pytest.raises(ConfigError, match=r"vision.model_id='not_a_model' is not a timm model"):
        TimmViT("not_a_model")
    with pytest.raises(ConfigError, match=r"vision.model_id='resnet18'.*needs a ViT"):
        TimmViT("resnet18", image_size=32)
    with pytest.raises(ConfigError, match=r"vision.feature_layer=5 is outside the model's 2 blocks"):
        TimmViT("vit_small_patch16_224", image_size=32, feature_layer=5,
                model_kwargs={"depth": 2, "embed_dim": 24, "num_heads": 2})


def test_timm_pretrained_without_network_or_local_file_is_a_config_error_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"could not load timm model 'vit_small_patch16_224.augreg_in21k' "
                                          r"\(config key 'vision.model_id'\).*set vision.weights_file=FILE"):
        TimmViT("vit_small_patch16_224.augreg_in21k", image_size=32, pretrained=True,
                model_kwargs={"embed_dim": 24, "depth": 2, "num_heads": 2})


def test_timm_weights_file_under_home_is_expanded_and_a_missing_one_is_named(tmp_path, monkeypatch):
    """The default VLX_HOME is '~/.cache/vlx'; timm itself does not expand '~' (prismatic-tiny's demo broke)."""
    from safetensors.torch import save_file

    kwargs = {"embed_dim": 24, "depth": 2, "num_heads": 2}
    source = TimmViT("vit_small_patch16_224", image_size=32, model_kwargs=kwargs)
    save_file(source.model.state_dict(), tmp_path / "w.safetensors")
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = TimmViT("vit_small_patch16_224", image_size=32, pretrained=True, weights_file="~/w.safetensors",
                     model_kwargs=kwargs)
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    with pytest.raises(ConfigError, match=r"vision.weights_file='~/missing.safetensors': no such file"):
        TimmViT("vit_small_patch16_224", image_size=32, pretrained=True, weights_file="~/missing.safetensors",
                model_kwargs=kwargs)
