"""Throughput logging: the analytic FLOPs estimate against torch's FLOP counter, and the batch counts."""

from __future__ import annotations

import pytest
from torch.utils.flop_counter import FlopCounterMode

from vlx.data.collate import Collator
from vlx.training.datamodule import build_dataset
from vlx.training.stages import apply_stage
from vlx.training.throughput import TrainingFlops, samples_in, tokens_in


def shapes_batch(model, shapes, size=6):
    dataset = build_dataset({"name": "llava-json", "json_path": str(shapes.questions("train")),
                             "image_dir": str(shapes.image_dir)}, "data.train", model, training=True)
    return Collator(model.tokenizer.pad_token_id)([dataset[i] for i in range(size)])


def measured_flops(model, batch) -> int:
    with FlopCounterMode(display=False) as counter:
        model(batch).loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("trainable", [["projector", "llm"], ["projector"], ["vision", "projector", "llm"]])
def test_training_flops_estimate_matches_the_flop_counter(tiny_model, shapes, trainable):
    apply_stage(tiny_model, trainable, "stages.x.trainable")
    batch = shapes_batch(tiny_model, shapes)
    estimate, measured = TrainingFlops(tiny_model)(batch), measured_flops(tiny_model, batch)
    # measured here: the estimate is 7.9–8.6 % above the counter (it charges backward passes a part skips,
    # e.g. the input gradient of the projector's first layer); MFU is an estimate, 10 % is the bar
    assert 0.9 * measured <= estimate <= 1.1 * measured, (estimate, measured)


def test_batch_counts_are_samples_and_unpadded_tokens(tiny_model, shapes):
    batch = shapes_batch(tiny_model, shapes, size=4)
    assert samples_in(batch) == 4
    assert tokens_in(batch) == int(batch["attention_mask"].sum()) < batch["input_ids"].numel()
    assert tokens_in(batch) > 4 * tiny_model.vision.num_patches  # image tokens are counted


def test_dense_bf16_peak_covers_gpus_lightning_does_not_name():
    """Dense (non-sparse) BF16 tensor-core peaks from NVIDIA's datasheets: H100 SXM 989.4 TFLOPS (the H200 has the
    same compute), H100 PCIe 756 TFLOPS, A100 312 TFLOPS; "NVIDIA H200" is what an H200 reports (seen 2026-11-27)."""
    from vlx.training.throughput import dense_bf16_peak

    assert dense_bf16_peak("NVIDIA H200") == 989e12 and dense_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert dense_bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12 and dense_bf16_peak("Tesla T4") is None
    assert dense_bf16_peak("NVIDIA H100 PCIe") == 756e12
