"""robomimic's own loader over a file vlx wrote: the check that a recording is robomimic's layout."""

from __future__ import annotations

from pathlib import Path


def robomimic_sequence_dataset(path: Path, low_dim: str, rgb: str):
    """robomimic's `SequenceDataset` over the `train` demos of `path`, one low-dim and one image key, single steps."""
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": [low_dim], "rgb": [rgb]}})
    return SequenceDataset(
        hdf5_path=str(path), obs_keys=(low_dim, rgb), dataset_keys=("actions",),
        load_next_obs=False, frame_stack=1, seq_length=1, pad_frame_stack=True, pad_seq_length=True,
        get_pad_mask=False, goal_mode=None, hdf5_cache_mode=None, hdf5_use_swmr=True, hdf5_normalize_obs=False,
        filter_by_attribute="train",
    )
