"""OpenVLA's action tokenizer: continuous actions in [-1, 1] ↔ one LLM token per action dimension.

The interval [-1, 1] is cut by `n_bins` uniform edges (`linspace(-1, 1, n_bins)`); an action value is
clipped to [-1, 1], `d = digitize(value, edges)` ∈ [1, n_bins], and its token id is `top_id - d`, so the
`n_bins` ids just below `top_id` are the action tokens. With `top_id` = the base vocabulary size (32000
for Llama-2) these are OpenVLA's reused ids 31744…31999; with 256 tokens added to the vocabulary,
`top_id` is one past the last added id. Decoding maps an id back to the centre of its bin, clipped to
the `n_bins - 1` valid centres (as OpenVLA does), so the round-trip error is at most half a bin width.
"""

from __future__ import annotations

import numpy as np
import torch

from vlx.errors import ConfigError


class ActionTokenizer:
    """Maps normalised actions (..., A) to token ids (..., A) and back."""

    def __init__(self, top_id: int, n_bins: int = 256) -> None:
        if n_bins < 2:
            raise ConfigError(f"head.n_bins={n_bins}; need at least 2 bins")
        if top_id < n_bins:
            raise ConfigError(f"the vocabulary has {top_id} base ids, fewer than the {n_bins} action bins")
        self.top_id, self.n_bins = int(top_id), int(n_bins)
        self.edges = np.linspace(-1.0, 1.0, n_bins)  # (n_bins,)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2  # (n_bins - 1,)

    @property
    def first_id(self) -> int:
        """The smallest action-token id."""
        return self.top_id - self.n_bins

    @property
    def token_ids(self) -> torch.Tensor:
        """All action-token ids, ascending: (n_bins,)."""
        return torch.arange(self.first_id, self.top_id)

    @property
    def bin_width(self) -> float:
        return float(self.edges[1] - self.edges[0])

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Token ids (int64) of normalised actions; values outside [-1, 1] are clipped first."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)  # (..., A)
        return (self.top_id - np.digitize(clipped, self.edges)).astype(np.int64)  # (..., A)

    def decode(self, token_ids: np.ndarray | torch.Tensor) -> np.ndarray:
        """Bin-centre actions (float32) of action-token ids; ids outside the range raise."""
        ids = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids, dtype=np.int64)
        if ids.size and (ids.min() < self.first_id or ids.max() >= self.top_id):
            raise ValueError(f"token ids must lie in [{self.first_id}, {self.top_id}); got {ids.min()}..{ids.max()}")
        return self.decode_torch(torch.from_numpy(ids)).numpy()  # (..., A)

    def decode_torch(self, token_ids: torch.Tensor) -> torch.Tensor:
        """`decode` on a tensor, staying on its device (used by the training metrics)."""
        centres = torch.as_tensor(self.centres, dtype=torch.float32, device=token_ids.device)
        index = (self.top_id - token_ids - 1).clamp(0, self.n_bins - 2)
        return centres[index]

    def is_action(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the positions holding an action token."""
        return (token_ids >= self.first_id) & (token_ids < self.top_id)
