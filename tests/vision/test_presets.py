"""Named backbones (Prismatic's timm ids and fused pairs): feature shapes on the meta device, fusion."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlx.errors import ConfigError
from vlx.registry import VISION_BACKBONES
from vlx.vision.fused import FusedVisionBackbone

EXPECTED = {  # name: (patch tokens, width, parameters)
    "clip-vit-l": (256, 1024, 303_179_776),
    "clip-vit-l-336px": (576, 1024, 303_507_456),
    "siglip-vit-so400m": (256, 1152, 427_680_704),
    "siglip-vit-so400m-384px": (729, 1152, 428_225_600),
    "siglip-vit-b16-224px": (196, 768, 92_884_224),
    "dinov2-vit-l": (256, 1024, 303_230_976),
    "in1k-vit-l": (196, 1024, 303_301_632),
    "dinosiglip-224px": (256, 2176, 303_230_976 + 427_680_704),
    "dinosiglip-384px": (729, 2176, 731_940_928),
    "dinoclip-336px": (576, 2048, 607_066_112),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_backbone_feature_shape_on_meta(name):
    with torch.device("meta"):
        backbone = VISION_BACKBONES.build({"name": name}, "vision", load_weights=False)
        channels = 3 * len(getattr(backbone, "members", [None]))
        features = backbone(torch.empty(2, channels, backbone.image_size, backbone.image_size))
    tokens, width, parameters = EXPECTED[name]
    assert features.shape == (2, tokens, width)
    assert (backbone.num_patches, backbone.embed_dim) == (tokens, width)
    assert sum(p.numel() for p in backbone.parameters()) == parameters


def test_openai_clip_presets_use_quick_gelu():
    with torch.device("meta"):
        backbone = VISION_BACKBONES.build({"name": "clip-vit-l"}, "vision", load_weights=False)
    assert type(backbone.model.blocks[0].mlp.act).__name__ == "QuickGELU"


def test_fused_backbone_concatenates_members_with_their_own_transforms():
    dino = {"name": "timm-vit", "model_id": "vit_small_patch14_reg4_dinov2", "image_size": 28,
            "model_kwargs": {"embed_dim": 24, "depth": 2, "num_heads": 2}}
    siglip = {"name": "timm-vit", "model_id": "vit_so400m_patch14_siglip_224",
              "image_size": 28, "model_kwargs": {"embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2}}
    fused = FusedVisionBackbone([dino, siglip]).eval()
    assert (fused.num_patches, fused.embed_dim) == (4, 40)
    pixels = fused.image_transform(Image.new("RGB", (40, 20), (255, 0, 0)))
    assert pixels.shape == (6, 28, 28)
    dino_pixels, siglip_pixels = pixels[:3], pixels[3:]
    assert not torch.allclose(dino_pixels, siglip_pixels)  # ImageNet vs SigLIP normalisation
    batch = torch.stack([pixels, pixels])
    features = fused(batch)
    assert features.shape == (2, 4, 40)
    torch.testing.assert_close(features[..., :24], fused.members[0](batch[:, :3]))
    torch.testing.assert_close(features[..., 24:], fused.members[1](batch[:, 3:]))
    assert fused.spec()["members"][1]["model_kwargs"]["embed_dim"] == 16


def test_fused_members_must_agree_on_patches():
    a = {"name": "timm-vit", "model_id": "vit_small_patch16_224", "image_size": 32,
         "model_kwargs": {"embed_dim": 16, "depth": 2, "num_heads": 2}}
    b = {**a, "model_id": "vit_small_patch8_224"}
    with pytest.raises(ConfigError, match=r"agree on image size and patch count.*members\[0\]: 32 px → 4 patches, "
                                          r"members\[1\]: 32 px → 16 patches"):
        FusedVisionBackbone([a, b])
