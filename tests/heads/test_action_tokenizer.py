"""The action tokenizer follows OpenVLA's binning exactly: ids, round trip, clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlx.errors import ConfigError
from vlx.heads.action_tokenizer import ActionTokenizer


def test_ids_are_the_last_256_of_the_base_vocabulary() -> None:
    codec = ActionTokenizer(top_id=32000)
    values = np.linspace(-1, 1, 100_001)
    ids = codec.encode(values)
    assert set(np.unique(ids)) == set(range(31744, 32000))
    assert codec.token_ids.tolist() == list(range(31744, 32000))
    assert codec.encode(np.array([-1.0, 1.0])).tolist() == [31999, 31744]  # digitize: -1 → 1, 1 → 256


def test_round_trip_within_half_a_bin() -> None:
    codec = ActionTokenizer(top_id=32000)
    values = np.random.default_rng(0).uniform(-1, 1, size=(1000, 7))
    decoded = codec.decode(codec.encode(values))
    assert decoded.shape == (1000, 7) and decoded.dtype == np.float32
    assert np.abs(decoded - values).max() <= codec.bin_width / 2 + 1e-6


def test_out_of_range_actions_clip() -> None:
    codec = ActionTokenizer(top_id=32000)
    assert codec.encode(np.array([-7.0, 3.0])).tolist() == codec.encode(np.array([-1.0, 1.0])).tolist()
    decoded = codec.decode(codec.encode(np.array([-7.0, 3.0])))
    np.testing.assert_allclose(decoded, [codec.centres[0], codec.centres[-1]], rtol=1e-6)


def test_decode_matches_openvla_formula_and_torch_version() -> None:
    codec = ActionTokenizer(top_id=500, n_bins=256)
    ids = np.arange(244, 500)
    expected = codec.centres[np.clip(500 - ids - 1, 0, 254)]  # OpenVLA: clip(vocab - id - 1, 0, 254)
    np.testing.assert_allclose(codec.decode(ids), expected, rtol=1e-6)
    np.testing.assert_allclose(codec.decode_torch(torch.tensor(ids)).numpy(), expected, rtol=1e-6)
    assert codec.is_action(torch.tensor([243, 244, 499, 500])).tolist() == [False, True, True, False]


def test_bad_ids_and_sizes_raise() -> None:
    codec = ActionTokenizer(top_id=500)
    with pytest.raises(ValueError, match=r"\[244, 500\)"):
        codec.decode(np.array([10]))
    with pytest.raises(ConfigError, match="fewer than the 256"):
        ActionTokenizer(top_id=100)
