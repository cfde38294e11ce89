"""Interoperability: convert between vlx checkpoints and other published formats.

One module per format: `hf_llava` (transformers' `LlavaForConditionalGeneration`, import and export),
`openvla` (OpenVLA / Prismatic Hugging Face checkpoints, import) and `plain` (a framework-neutral
safetensors + JSON config directory of any vlx model, export and import). `tensors` holds what they
share: reading safetensors directories, renaming parameter prefixes, and checking a state dict against
the names and shapes a model expects. The layouts each converter relies on are written in
`docs/formats.md`.
"""
