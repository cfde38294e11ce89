"""Quantised inference (`vlx.quantization`, torchao): which layers become int8 and which stay in full precision,
the memory it saves, actions close to full precision's, the `quantize=` keys of `vlx serve` and `vlx eval` (and
their refusal in training), and `vlx bench quantize` on a checkpoint with held-out demos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vlx.checkpoint import save_checkpoint
from vlx.cli.serve import parse_args
from vlx.envs import record_demos
from vlx.errors import ConfigError
from vlx.quantization import check_mode, quantize_model, weight_bytes

pytest.importorskip("torchao")


def is_plain(weight: torch.Tensor) -> bool:
    return type(weight) in (torch.Tensor, nn.Parameter)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_modes_are_checked() -> None:
    assert [check_mode(m) for m in (None, "", "null", "none", "INT8", "int8-dynamic")] == [
        "none", "none", "none", "none", "int8", "int8-dynamic"]
    with pytest.raises(ConfigError, match=r"quantize='int4' is not a quantisation mode; expected one of none, int8"):
        check_mode("int4")


def test_int8_quantises_the_towers_projector_and_decoder_but_not_the_output_layer(tiny_vla) -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    before = tiny_vla.predict_action(image, "move to the red block", "toy")
    output_layer = tiny_vla.llm.model.get_output_embeddings()
    output_weight = output_layer.weight.detach().clone()
    report = quantize_model(tiny_vla, "int8")
    body = [*linears(tiny_vla.vision), *linears(tiny_vla.projector),
            *(m for m in linears(tiny_vla.llm.model) if m is not output_layer)]
    assert body and all(type(m.weight).__name__ == "Int8Tensor" for m in body)
    assert is_plain(output_layer.weight) and torch.equal(output_layer.weight, output_weight)
    assert (report.quantized_layers, report.kept_layers) == (len(body), 1)
    assert report.bytes_after < report.bytes_before and report.bytes_after == weight_bytes(tiny_vla)
    after = tiny_vla.predict_action(image, "move to the red block", "toy")
    assert after.shape == before.shape == (3,) and np.isfinite(after).all()


def test_memory_of_the_quantised_layers_is_about_a_quarter(tiny_vla) -> None:
    """int8 data plus a float32 scale and an int8 zero point per output row, against float32 weights."""
    body = [m for m in linears(tiny_vla.llm.model) if m is not tiny_vla.llm.model.get_output_embeddings()]
    full = sum(m.weight.numel() * 4 for m in body)
    expected = sum(m.weight.numel() + m.out_features * 5 for m in body)
    quantize_model(tiny_vla, "int8")
    assert sum(weight_bytes(m) - (m.bias.numel() * 4 if m.bias is not None else 0) for m in body) == expected
    assert expected < 0.3 * full


def test_action_head_and_state_projector_stay_in_full_precision(tiny_chunked_vla) -> None:
    model = tiny_chunked_vla
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    proprio = {k: v.clone() for k, v in model.proprio.state_dict().items()}
    rng = np.random.default_rng(1)
    images = {camera: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for camera in model.observation.cameras}
    state = np.full(3, 0.5, dtype=np.float32)
    before = model.predict_action(images, "move to the red block", "toy", state)
    quantize_model(model, "int8-dynamic")
    for part, saved in ((model.head, head), (model.proprio, proprio)):
        assert all(is_plain(v) and torch.equal(v, saved[k]) for k, v in part.state_dict().items())
    after = model.predict_action(images, "move to the red block", "toy", state)
    assert after.shape == before.shape == (4, 3)
    assert np.abs(after - before).max() < 0.1 * np.abs(before).max() + 1e-3  # close, not equal


def test_none_changes_nothing(tiny_vla) -> None:
    weights = {k: v.clone() for k, v in tiny_vla.state_dict().items()}
    report = quantize_model(tiny_vla, "none")
    assert report.quantized_layers == 0 and report.bytes_after == report.bytes_before
    assert all(torch.equal(v, weights[k]) for k, v in tiny_vla.state_dict().items())


def test_serve_takes_quantize() -> None:
    assert parse_args(["checkpoint=x"]).quantize == "none"
    assert parse_args(["checkpoint=x", "quantize=int8"]).quantize == "int8"
    with pytest.raises(ConfigError, match="quantize='int4'"):
        parse_args(["checkpoint=x", "quantize=int4"])


def test_eval_quantises_the_checkpoint_and_training_refuses(tiny_vla, tmp_path, capsys) -> None:
    from tests.test_closed_loop import run_config
    from vlx.cli.report import evaluate_checkpoint
    from vlx.training.run import run_training

    checkpoint = save_checkpoint(tiny_vla, tmp_path / "ckpt")
    report = evaluate_checkpoint({**run_config(tmp_path), "checkpoint": str(checkpoint), "quantize": "int8"})
    printed = capsys.readouterr().out
    assert printed.startswith("quantize=int8: ") and f"success_rate={report['success_rate']:.3f}" in printed
    with pytest.raises(ConfigError, match="quantize='int3'"):
        evaluate_checkpoint({"checkpoint": str(checkpoint), "quantize": "int3", "rollout": {}})
    cfg = {"train": {"stages": ["s"]}, "stages": {"s": {}}, "trainer": {}, "quantize": "int8"}
    with pytest.raises(ConfigError, match="quantize=int8 is for inference"):
        run_training(cfg)


def test_bench_quantize_on_a_checkpoint_with_demos(tiny_vla, tmp_path, capsys) -> None:
    from vlx.bench import quantize as bench
    from vlx.bench.timing import report
    from vlx.checkpoint import load
    from vlx.data.robomimic_hdf5 import RobomimicFile
    from vlx.evaluation.actions import predict_normalized, sample_indices

    demos = record_demos(tmp_path / "d.hdf5", num_demos=4, seed=0, valid_fraction=0.5).path
    checkpoint = save_checkpoint(tiny_vla, tmp_path / "ckpt")
    result = bench.run(str(checkpoint), str(demos), "int8", limit=6, warmup=0, repeats=1, threads=1)
    report(result)
    printed = capsys.readouterr().out
    assert f"ratio={result.ratio:.3f} (fraction of action tokens equal to full precision's (int8)" in printed
    file = RobomimicFile(demos, filter_key="valid")
    full, quantized = load(checkpoint), load(checkpoint)
    quantize_model(quantized, "int8")
    tokens = [tiny_vla.action_head.codec.encode(predict_normalized(m, file, sample_indices(file, 6)))
              for m in (full, quantized)]  # the action tokens each copy chose
    assert result.ratio == float((tokens[0] == tokens[1]).mean())
    rows = dict(result.rows)
    assert "6 held-out steps" in rows["model"] and "action_accuracy=" in rows["full precision vs the demonstrations"]
    assert set(result.medians) == {"full precision predict_action", "int8 predict_action"}
    with pytest.raises(ConfigError, match="--mode none"):
        bench.run(str(checkpoint), str(demos), "none")
