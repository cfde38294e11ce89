"""Resume-checkpoint files: atomic writes, weights_only-safe loading, the `last` pointer, RNG state."""

from __future__ import annotations

import datetime
import random

import numpy as np
import pytest
import torch

from vlx.errors import CheckpointError
from vlx.training.atomic_io import AtomicCheckpointIO, write_pointer
from vlx.training.resume import last_checkpoint, rng_state, set_rng_state


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_checkpoint_round_trip_replaces_the_file_and_leaves_no_temporary(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "ckpts" / "step-00000002.ckpt"
    io.save_checkpoint({"global_step": 2, "w": torch.arange(4.0)}, path)
    io.save_checkpoint({"global_step": 3, "w": torch.ones(2)}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 3 and torch.equal(loaded["w"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["step-00000002.ckpt"]


def test_loading_refuses_arbitrary_objects_and_names_the_file(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"when": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(CheckpointError,
                       match=rf"resume checkpoint {path} cannot be loaded safely \(torch.load weights_only=True\)"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_truncated_or_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "cut.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"resume checkpoint {path} cannot be loaded safely"):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(CheckpointError, match=f"resume checkpoint {tmp_path / 'nope.ckpt'} does not exist"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


def test_last_pointer(tmp_path):
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "step-00000004.ckpt").write_bytes(b"x")
    write_pointer(tmp_path / "last", "step-00000004.ckpt")
    assert (tmp_path / "last").read_text() == "step-00000004.ckpt\n"
    assert last_checkpoint(tmp_path) == tmp_path / "step-00000004.ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "step-00000004.ckpt"]
    write_pointer(tmp_path / "last", "step-00000006.ckpt")
    with pytest.raises(CheckpointError,
                       match=rf"{tmp_path / 'last'} names 'step-00000006.ckpt', which is not a checkpoint file"):
        last_checkpoint(tmp_path)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    AtomicCheckpointIO().save_checkpoint({"rng": rng_state()}, tmp_path / "rng.ckpt")
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(AtomicCheckpointIO().load_checkpoint(tmp_path / "rng.ckpt")["rng"])
    assert draws() == expected


def test_fault_variable_is_parsed_strictly():
    from vlx.errors import ConfigError
    from vlx.training.faults import parse_fault

    assert parse_fault(None) is None and parse_fault("SIGKILL-IN-SAVE@4") == ("SIGKILL-IN-SAVE", 4, None)
    assert parse_fault("SIGTERM@12") == ("SIGTERM", 12, None) and parse_fault("SIGUSR1@3@1") == ("SIGUSR1", 3, 1)
    with pytest.raises(ConfigError, match=r"VLX_FAULT='SIGINT@3': expected SIGTERM@STEP, SIGUSR1@STEP, SIGKILL@STEP"):
        parse_fault("SIGINT@3")
    with pytest.raises(ConfigError, match=r"a signal may add @RANK"):
        parse_fault("SIGKILL-IN-SAVE@4@1")


def test_preemption_records_a_real_signal_and_restores_the_previous_handler():
    import os
    import signal

    from vlx.training.resume import Preemption

    before = signal.getsignal(signal.SIGTERM)
    with Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, not fatal
        assert preemption.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_resume_checkpoints_keep_only_trainable_weights_and_must_hold_all_of_them(tiny_model):
    from vlx.training.module import ResumeError, VlxModule
    from vlx.training.stages import apply_stage

    apply_stage(tiny_model, ["projector"], "stages.align.trainable")
    module = VlxModule(tiny_model, {}, "stages.align")
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    expected = {f"model.{n}" for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == expected and all(k.startswith("model.projector.") for k in expected)
    module.on_load_checkpoint(checkpoint)  # complete: fine
    del checkpoint["state_dict"][sorted(expected)[0]]
    with pytest.raises(ResumeError,
                       match=r"stages.align: the resume checkpoint lacks 1 trainable weights \(model\.projector\."):
        module.on_load_checkpoint(checkpoint)
