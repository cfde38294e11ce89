"""transformers `LlavaForConditionalGeneration` directories ↔ vlx checkpoints.

Import reads `config.json` (a `LlavaConfig`), the safetensors weights, the tokenizer and the image
processor, and writes a vlx checkpoint: the CLIP tower becomes an `hf-clip` backbone
(same `vision_feature_layer`, CLS dropped), the projector an `mlp` (`projector_hidden_act` gelu) or a
`linear` one (act `linear`: the two layers composed into one), the language model an `hf-causal-lm`
built from `text_config`, and the image processor's mean/std/resize choose the image transform.
Parameter names of transformers 5.x (`model.vision_tower.*`, `model.language_model.*`, `lm_head`) and
the 4.x ones (`vision_tower.vision_model.*`, `language_model.model.*`, `language_model.lm_head`) are
both accepted. Export writes the 5.x layout plus a `LlavaProcessor` for vlx models of the LLaVA family
and refuses, naming the part, what the format cannot express (fused or timm backbones, the fused-mlp
projector, an action head, several feature layers). See docs/formats.md for the exact layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessor,
    LlavaProcessor,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from vlx.checkpoint import load
from vlx.errors import CheckpointError
from vlx.interop.assemble import dtype_name, write_checkpoint
from vlx.interop.tensors import check_tensors, expected_shapes, read_safetensors_dir, rename_prefixes
from vlx.llm.prompts import IMAGE_MARKER
from vlx.model import VisionLanguageModel
from vlx.projectors import LinearProjector, MLPProjector
from vlx.vision.hf_clip import HFCLIPVision

LAYOUT = "transformers LlavaForConditionalGeneration"
LEGACY_NAMES = (  # transformers 4.x → 5.x, most specific first
    ("model.vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)
IGNORED_BUFFERS = ("embeddings.position_ids", "rotary_emb.inv_freq")  # non-persistent in 5.x, saved by old 4.x


def llava_to_vlx_names(lm_prefix: str) -> tuple[tuple[str, str], ...]:
    """(LLaVA 5.x prefix, vlx prefix) pairs; `lm_prefix` is the causal LM's base-model attribute (`model`)."""
    return (
        ("model.vision_tower.", "vision.model."),
        ("model.multi_modal_projector.", "projector."),
        ("model.language_model.", f"llm.model.{lm_prefix}."),
        ("lm_head.", "llm.model.lm_head."),
    )


def modern_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors under transformers 5.x LLaVA names, whichever version wrote them."""
    current = {name: t for name, t in tensors.items() if not name.endswith(IGNORED_BUFFERS)}
    if any(name.startswith(("model.vision_tower.", "model.language_model.")) for name in current) and not any(
        name.startswith("model.vision_tower.vision_model.") for name in current
    ):
        return current
    return rename_prefixes(current, LEGACY_NAMES)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; a LLaVA directory needs config.json, the weights, the tokenizer "
                              "and the image processor (save both the model and its processor)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


def image_settings(root: Path) -> dict[str, Any]:
    """The image processor's settings (from processor_config.json or the older preprocessor_config.json)."""
    try:
        images = AutoImageProcessor.from_pretrained(root)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{root}: no readable image processor ({str(exc).splitlines()[0]}); save the "
                              "LLaVA processor next to the model (processor.save_pretrained)") from None
    settings = {key: getattr(images, key, None) for key in ("do_pad", "do_center_crop", "image_mean", "image_std")}
    settings["crop_size"] = dict(getattr(images, "crop_size", None) or {})
    settings["size"] = dict(getattr(images, "size", None) or {})
    for key in ("image_mean", "image_std"):
        if settings[key] is None:
            raise CheckpointError(f"{root}: the image processor has no {key!r}")
    return settings


def vision_node(config: LlavaConfig, images: dict[str, Any], where: Path) -> dict[str, Any]:
    """The vlx `hf-clip` node of a LLaVA config and its image processor settings."""
    if config.vision_config.model_type not in ("clip_vision_model", "clip"):
        raise CheckpointError(f"{where}: vision_config.model_type={config.vision_config.model_type!r}; vlx imports "
                              "LLaVA models with a CLIP vision tower ('clip_vision_model')")
    if not isinstance(config.vision_feature_layer, int):
        raise CheckpointError(f"{where}: vision_feature_layer={config.vision_feature_layer}; vlx's hf-clip backbone "
                              "takes one layer (an int)")
    if config.vision_feature_select_strategy != "default":
        raise CheckpointError(f"{where}: vision_feature_select_strategy={config.vision_feature_select_strategy!r}; "
                              "vlx drops the CLS token, which is the 'default' strategy")
    size = config.vision_config.image_size
    crop = images.get("crop_size") or {}
    if images.get("do_pad"):
        resize = "letterbox"
    elif images.get("do_center_crop", True):
        resize = "resize-crop"
    else:
        resize = "resize-naive"
    crop_size = crop.get("height", size) if resize != "resize-naive" else images.get("size", {}).get("height", size)
    if crop_size != size:
        raise CheckpointError(f"{where}: the image processor makes {crop_size} px images but the vision tower "
                              f"expects {size} px (vision_config.image_size)")
    return {
        "name": "hf-clip", "source": None, "config": config.vision_config.to_dict(),
        "feature_layer": int(config.vision_feature_layer), "image_resize": resize,
        "image_mean": list(images["image_mean"]), "image_std": list(images["image_std"]),
    }


def projector_tensors(
    config: LlavaConfig, tensors: dict[str, torch.Tensor], where: Path
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The vlx projector node and its tensors (vlx names), taken out of the LLaVA tensors."""
    act, bias = config.projector_hidden_act, config.multimodal_projector_bias
    vision_width, width = config.vision_config.hidden_size, config.text_config.hidden_size
    prefix = "model.multi_modal_projector."
    expected = {f"{prefix}linear_1.weight": (width, vision_width), f"{prefix}linear_2.weight": (width, width)}
    if bias:
        expected.update({f"{prefix}linear_1.bias": (width,), f"{prefix}linear_2.bias": (width,)})
    own = {name: tensors.pop(name) for name in list(tensors) if name.startswith(prefix)}
    check_tensors(own, expected, str(where), f"{LAYOUT} projector")
    if act == "gelu":
        return {"name": "mlp", "bias": bias}, {"projector." + name[len(prefix):]: t for name, t in own.items()}
    if act == "linear":  # an identity activation: linear_2 ∘ linear_1 is one Linear
        w1, w2 = own[f"{prefix}linear_1.weight"], own[f"{prefix}linear_2.weight"]  # (Dl, Dv), (Dl, Dl)
        weights = {"projector.linear_1.weight": w2 @ w1}  # (Dl, Dv)
        if bias:
            weights["projector.linear_1.bias"] = w2 @ own[f"{prefix}linear_1.bias"] + own[f"{prefix}linear_2.bias"]
        return {"name": "linear", "bias": bias}, weights
    raise CheckpointError(f"{where}/config.json: projector_hidden_act={act!r}; vlx's projectors use 'gelu' (mlp) "
                          "or 'linear' (linear)")


def import_hf_llava(src: str | Path, out: str | Path, prompt: dict[str, Any] | None = None) -> Path:
    """Convert the LLaVA directory `src` into the vlx checkpoint directory `out`; returns `out`."""
    root = Path(src).expanduser()
    raw = read_json(root / "config.json")
    if raw.get("model_type") != "llava":
        raise CheckpointError(f"{root}/config.json: model_type={raw.get('model_type')!r}; expected 'llava'")
    config = LlavaConfig.from_dict(raw)
    images = image_settings(root)
    check_image_token(root, config)
    text = config.text_config.to_dict()
    try:  # where the causal LM keeps its decoder (`model` for Llama-style LMs)
        lm_prefix = MODEL_FOR_CAUSAL_LM_MAPPING[type(config.text_config)].base_model_prefix
    except KeyError:
        raise CheckpointError(f"{root}/config.json: text_config.model_type={text.get('model_type')!r} has no "
                              "transformers causal-LM class") from None
    tensors = modern_names(read_safetensors_dir(root))
    projector, projector_weights = projector_tensors(config, tensors, root)
    embed = tensors.get("model.language_model.embed_tokens.weight")
    if "lm_head.weight" not in tensors and text.get("tie_word_embeddings") and embed is not None:
        tensors["lm_head.weight"] = embed
    renamed = {**rename_prefixes(tensors, llava_to_vlx_names(lm_prefix)), **projector_weights}
    vlx_config = {
        "vision": vision_node(config, images, root),
        "projector": projector,
        "llm": {"name": "hf-causal-lm", "source": None, "config": text, "tokenizer": str(root),
                "dtype": dtype_name(embed)},
        "head": {"name": "text"},
        "prompt": prompt or {"name": "vicuna"},
    }
    return write_checkpoint(vlx_config, renamed, out, str(root), LAYOUT)


def check_image_token(root: Path, config: LlavaConfig) -> None:
    """The tokenizer's `<image>` id must be the config's image_token_id (vlx finds the slot by the token)."""
    tokenizer = AutoTokenizer.from_pretrained(root)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    if image_id != config.image_token_id:
        raise CheckpointError(f"{root}: the tokenizer's {IMAGE_MARKER} token has id {image_id} but config.json's "
                              f"image_token_id is {config.image_token_id}")


def export_hf_llava(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the vlx LLaVA-family checkpoint `checkpoint` as a transformers LLaVA directory `out`."""
    model = load(checkpoint)
    where = str(Path(checkpoint).expanduser())
    projector_act = check_exportable(model, where)
    vision: HFCLIPVision = model.vision  # type: ignore[assignment]
    lm = model.llm.model
    bias = model.projector.linear_1.bias is not None
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision.model.config.to_dict()), text_config=lm.config,
        image_token_id=model.llm.image_token_id, image_seq_length=vision.num_patches,
        vision_feature_layer=vision.feature_layer, vision_feature_select_strategy="default",
        projector_hidden_act=projector_act, multimodal_projector_bias=bias,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    tensors = {f"projector.{n}": t for n, t in projector_as_llava(model.projector).items()}
    tensors.update({n: t for n, t in model.state_dict().items() if not n.startswith("projector.")})
    inverse = tuple((vlx, llava) for llava, vlx in llava_to_vlx_names(lm.base_model_prefix))
    tensors = rename_prefixes(tensors, inverse)
    with torch.device("meta"):
        expected = expected_shapes(LlavaForConditionalGeneration(config))
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
        expected.pop("lm_head.weight", None)
    check_tensors(tensors, expected, where, LAYOUT)
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(target)
    weights = {name: tensor.contiguous() for name, tensor in tensors.items()}
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    processor_for(model).save_pretrained(target)
    return target


def check_exportable(model: VisionLanguageModel, where: str) -> str:
    """The `projector_hidden_act` the model exports with; a CheckpointError naming what LLaVA cannot hold."""
    config = model.config
    if not isinstance(model.vision, HFCLIPVision):
        raise CheckpointError(f"{where}: vision backbone {config['vision'].get('name')!r} cannot be exported to "
                              "transformers LLaVA, which holds one transformers CLIP tower (vlx 'hf-clip'); "
                              "use `vlx export plain` for this model")
    if config.get("head", {}).get("name", "text") != "text":
        raise CheckpointError(f"{where}: head {config['head']['name']!r} has no LLaVA equivalent (LLaVA generates "
                              "text); use `vlx export plain` for this model")
    projector = model.projector
    if isinstance(projector, MLPProjector):
        if projector.linear_1.out_features != projector.linear_2.out_features:
            hidden, width = projector.linear_1.out_features, projector.linear_2.out_features
            raise CheckpointError(f"{where}: the mlp projector's hidden width {hidden} differs from the LLM width "
                                  f"{width}; LLaVA's projector needs them equal")
        return "gelu"
    if isinstance(projector, LinearProjector):
        return "linear"
    raise CheckpointError(f"{where}: projector {config['projector'].get('name')!r} cannot be exported to LLaVA, "
                          "whose projector is Linear-act-Linear (vlx 'mlp' or 'linear')")


def projector_as_llava(projector: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The projector as LLaVA's `linear_1`/`linear_2`; a linear one gets an identity `linear_2`."""
    state = dict(projector.state_dict())
    if isinstance(projector, LinearProjector):
        width = projector.linear_1.out_features
        state["linear_2.weight"] = torch.eye(width, dtype=projector.linear_1.weight.dtype)  # (Dl, Dl)
        if projector.linear_1.bias is not None:
            state["linear_2.bias"] = torch.zeros(width, dtype=projector.linear_1.weight.dtype)
    return state


def processor_for(model: VisionLanguageModel) -> LlavaProcessor:
    """A LlavaProcessor reproducing the model's image transform and image-token expansion."""
    vision: HFCLIPVision = model.vision  # type: ignore[assignment]
    size = vision.image_size
    common = {"image_mean": list(vision.image_mean), "image_std": list(vision.image_std), "resample": 3}  # bicubic
    if vision.image_resize == "resize-naive":
        images = LlavaImageProcessor(size={"height": size, "width": size}, do_center_crop=False, do_pad=False, **common)
    else:
        images = LlavaImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                     do_center_crop=True, do_pad=vision.image_resize == "letterbox", **common)
    return LlavaProcessor(
        image_processor=images, tokenizer=model.tokenizer, patch_size=vision.model.config.patch_size,
        vision_feature_select_strategy="default", image_token=IMAGE_MARKER, num_additional_image_tokens=1,
    )
