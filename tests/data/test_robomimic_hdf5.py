"""Tests of RobomimicFile: indexing, frames, actions and instructions of a small robomimic file, filter keys,
grayscale/RGBA frames, pickling and forked readers, and an error naming file, demo and key for each broken thing."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.errors import ConfigError, DataError

H, W, A = 8, 6, 7
STEPS = {"demo_0": 4, "demo_2": 3, "demo_10": 5}  # h5py lists them demo_0, demo_10, demo_2
LANG = {"demo_0": "Lift the cube", "demo_10": "Place the can"}  # demo_2 has no ep_meta
CONFIG_INSTRUCTION = "pick up the object"
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}
CAMERA = "data/{}/obs/agentview_image"  # .format(demo)


def _frames(demo: str) -> np.ndarray:
    """The demo's (T, H, W, 3) uint8 frames, whose pixels encode demo, step, row and channel."""
    t, y, c = np.ogrid[:STEPS[demo], :H, :3]
    return np.broadcast_to((int(demo[5:]) * 20 + t * 4 + y * 30 + c)[:, :, None], (len(t), H, W, 3)).astype(np.uint8)


def _actions(demo: str) -> np.ndarray:
    return np.arange(STEPS[demo] * A, dtype=np.float64).reshape(-1, A) / 8 + int(demo[5:])  # (T, A)


def _spoiled(demo: str, step: int, value: float) -> np.ndarray:
    actions = _actions(demo)  # (T, A)
    actions[step, 3] = value
    return actions


def write_file(path: Path, changes: dict[str, object] | None = None) -> Path:
    """A valid robomimic file (three demos, `train`/`valid` masks), then `changes` to break one thing:
    `key: array` replaces or adds a dataset, `group@name: value` an attribute, and a value None deletes."""
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs["total"] = sum(STEPS.values())
        data.attrs["env_args"] = json.dumps(ENV_ARGS)
        for demo, steps in STEPS.items():
            group = data.create_group(demo)
            group.attrs["num_samples"] = steps
            group.create_dataset("actions", data=_actions(demo))
            file.create_dataset(CAMERA.format(demo), data=_frames(demo))
            group.create_dataset("obs/robot0_eef_pos", data=np.zeros((steps, 3)))
            if demo in LANG:
                group.attrs["ep_meta"] = json.dumps({"lang": LANG[demo], "layout_id": 2})
        file.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_10"]))
        file.create_dataset("mask/valid", data=np.array([b"demo_2"]))
        for key, value in (changes or {}).items():
            group, _, attr = key.partition("@")
            target, name = (file[group].attrs, attr) if attr else (file, key)
            if name in target:
                del target[name]
            if value is not None:
                target[name] = value
    return path


def _open(path: Path, **kwargs) -> RobomimicFile:
    return RobomimicFile(path, **{"instruction": CONFIG_INSTRUCTION, **kwargs})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return write_file(tmp_path / "demos.hdf5")


def test_layout_in_demo_number_order_and_env_args(path: Path) -> None:
    reader = _open(path)
    assert reader.path == path and reader.demos == ["demo_0", "demo_2", "demo_10"]
    assert (len(reader), reader.num_demos, reader.action_dim, reader.image_size) == (12, 3, A, (H, W))
    assert reader.env_args() == ENV_ARGS
    reader.env_args()["env_kwargs"]["control_freq"] = 5  # a copy
    assert reader.env_args() == ENV_ARGS
    assert _open(write_file(path.with_name("bare.hdf5"), {"data@env_args": None})).env_args() == {}
    expected = {0: ("demo_0", 0), 3: ("demo_0", 3), 4: ("demo_2", 0), 6: ("demo_2", 2), 7: ("demo_10", 0),
                11: ("demo_10", 4), -1: ("demo_10", 4), -12: ("demo_0", 0)}
    assert {index: reader.locate(index) for index in expected} == expected
    for index in (12, -13):
        with pytest.raises(IndexError, match=f"demos.hdf5: sample index {index} is out of range for 12 samples"):
            reader.locate(index)


def test_frames_actions_and_instructions_in_index_order(path: Path) -> None:
    reader = _open(path)
    for index in range(len(reader)):
        demo, step = reader.locate(index)
        image, action = reader.image(index), reader.action(index)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        np.testing.assert_array_equal(image, _frames(demo)[step])
        assert action.dtype == np.float32 and action.shape == (A,)
        np.testing.assert_array_equal(action, _actions(demo)[step].astype(np.float32))
        assert reader.instruction(index) == LANG.get(demo, CONFIG_INSTRUCTION)  # ep_meta lang, else the config
    actions = reader.actions()  # (12, A): the concatenation in index order
    assert actions.dtype == np.float32
    np.testing.assert_array_equal(actions, np.concatenate([_actions(demo) for demo in reader.demos]).astype(np.float32))
    actions[:] = 0  # a copy: the reader is unchanged
    np.testing.assert_array_equal(reader.actions()[7], _actions("demo_10")[0].astype(np.float32))


@pytest.mark.parametrize("cache_images", [False, True])
def test_sample_reads_everything_of_a_step_at_once(path: Path, cache_images: bool) -> None:
    reader = _open(path, cache_images=cache_images)
    for index in [*range(len(reader)), -1]:
        sample = reader.sample(index)
        demo, step, frame, action = sample.demo, sample.step, sample.frames["agentview_image"], sample.action
        assert (demo, step) == reader.locate(index) and sample.instruction == reader.instruction(index)
        assert list(sample.frames) == ["agentview_image"] and sample.state is None
        np.testing.assert_array_equal(frame, _frames(demo)[step])
        np.testing.assert_array_equal(action, _actions(demo)[step].astype(np.float32))
    frame[:] = 0  # copies: the reader's frames and actions are unchanged
    action[:] = 0
    np.testing.assert_array_equal(reader.image(-1), _frames("demo_10")[4])
    np.testing.assert_array_equal(reader.action(-1), _actions("demo_10")[4].astype(np.float32))
    with pytest.raises(IndexError, match="demos.hdf5: sample index 12 is out of range for 12 samples"):
        reader.sample(12)


@pytest.mark.parametrize(
    ("filter_key", "demos", "located"),
    [("train", ["demo_0", "demo_10"], {3: ("demo_0", 3), 4: ("demo_10", 0), 8: ("demo_10", 4), -9: ("demo_0", 0)}),
     ("valid", ["demo_2"], {0: ("demo_2", 0), 2: ("demo_2", 2), -1: ("demo_2", 2)})],
)
def test_filter_key_restricts_demos(path: Path, filter_key: str, demos: list[str], located: dict) -> None:
    reader = _open(path, filter_key=filter_key)
    assert reader.demos == demos and len(reader) == sum(STEPS[demo] for demo in demos)
    assert {index: reader.locate(index) for index in located} == located
    np.testing.assert_array_equal(reader.image(-1), _frames(demos[-1])[-1])
    with pytest.raises(IndexError):
        reader.locate(len(reader))


def test_demos_outside_the_filter_are_not_validated(tmp_path: Path) -> None:
    broken = write_file(tmp_path / "demos.hdf5", {"data/demo_2/actions": _spoiled("demo_2", 1, np.nan)})
    assert _open(broken, filter_key="train").demos == ["demo_0", "demo_10"]
    with pytest.raises(DataError, match="demo demo_2"):
        _open(broken, filter_key="valid")


@pytest.mark.parametrize("cache_images", [False, True])
def test_grayscale_and_rgba_frames_become_rgb(tmp_path: Path, cache_images: bool) -> None:
    gray = _frames("demo_2")[..., 0]  # (T, H, W)
    rgba = np.concatenate([_frames("demo_10"), np.full((5, H, W, 1), 255, np.uint8)], axis=-1)  # (T, H, W, 4)
    reader = _open(write_file(tmp_path / "demos.hdf5", {CAMERA.format("demo_2"): gray, CAMERA.format("demo_10"): rgba}),
                   cache_images=cache_images)
    assert reader.image_size == (H, W)
    np.testing.assert_array_equal(reader.image(5), np.repeat(gray[1][..., None], 3, axis=-1))
    np.testing.assert_array_equal(reader.image(11), _frames("demo_10")[4])
    np.testing.assert_array_equal(reader.image(0), _frames("demo_0")[0])


def test_cached_frames_need_no_file_and_uncached_ones_report_it_gone(path: Path) -> None:
    cached, uncached = _open(path, cache_images=True), _open(path)
    path.unlink()
    for index in range(len(cached)):
        demo, step = cached.locate(index)
        np.testing.assert_array_equal(cached.image(index), _frames(demo)[step])
    cached.image(0)[:] = 0  # a copy: the cache is unchanged
    np.testing.assert_array_equal(cached.image(0), _frames("demo_0")[0])
    with pytest.raises(DataError, match=r"demos.hdf5: could not open the HDF5 file"):
        uncached.image(0)


@pytest.mark.parametrize("cache_images", [False, True])
def test_pickle_round_trip_reads_after_unpickling(path: Path, cache_images: bool) -> None:
    reader = _open(path, filter_key="train", cache_images=cache_images)
    reader.image(0)  # the handle is open now; it must not travel
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.demos == reader.demos and len(clone) == len(reader)
    for index in range(len(reader)):
        np.testing.assert_array_equal(clone.image(index), reader.image(index))
        np.testing.assert_array_equal(clone.action(index), reader.action(index))
        assert clone.instruction(index) == reader.instruction(index)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_process_opens_its_own_handle(path: Path) -> None:
    reader = _open(path)
    reader.image(0)  # the parent's handle is open when the child forks (as DataLoader workers do)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=lambda: queue.put((reader.image(6), reader._pid == os.getpid())))
    child.start()
    image, reopened = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and reopened
    np.testing.assert_array_equal(image, _frames("demo_2")[2])


def test_missing_file_non_hdf5_file_and_empty_config_instruction(path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.hdf5: robomimic HDF5 file not found"):
        _open(path.with_name("nowhere.hdf5"))
    path.with_name("notes.hdf5").write_text("not hdf5", encoding="utf-8")
    with pytest.raises(DataError, match=r"notes.hdf5: not an HDF5 file"):
        _open(path.with_name("notes.hdf5"))
    with pytest.raises(ConfigError, match=r"^data.instruction must be a non-empty string"):
        _open(path, instruction="  ")


def _case(name: str, changes: dict[str, object], *fragments: str, **kwargs: object) -> object:
    return pytest.param(changes, kwargs, fragments, id=name)  # `kwargs` go to the constructor


ERRORS = [
    _case("no-data-group", {"data": None}, "no 'data' group"),
    _case("no-demos", {f"data/{demo}": None for demo in STEPS}, "the 'data' group holds no demos"),
    _case("unknown-filter-key", {}, "filter key 'test' (data.filter_key)", "['train', 'valid']", filter_key="test"),
    _case("no-mask-group", {"mask": None}, "filter key 'train' (data.filter_key)", "keys are []", filter_key="train"),
    _case("empty-filter-key", {"mask/none": np.array([], "S8")}, "mask/none lists no demos", filter_key="none"),
    _case("filter-names-missing-demo", {"mask/bad": np.array([b"demo_0", b"demo_7"])},
          "mask/bad names demos that are not in data/: ['demo_7']", filter_key="bad"),
    _case("missing-actions", {"data/demo_2/actions": None}, "demo demo_2: no 'actions' dataset (data.action_key)",
          "the demo has ['obs']"),
    _case("unknown-action-key", {}, "demo demo_0: no 'abs' dataset (dataset.action_key)", "['actions', 'obs']",
          action_key="abs", where="dataset"),
    _case("missing-camera", {CAMERA.format("demo_10"): None}, "demo demo_10: no camera obs/agentview_image",
          "(data.camera_key); the demo's obs keys are ['robot0_eef_pos']"),
    _case("float-camera", {CAMERA.format("demo_2"): np.zeros((3, H, W, 3), np.float32)},
          "demo demo_2: obs/agentview_image must be uint8 (T, H, W, 3)", "got float32 (3, 8, 6, 3)"),
    _case("two-channel-camera", {CAMERA.format("demo_2"): np.zeros((3, H, W, 2), np.uint8)},
          "demo demo_2: obs/agentview_image must be uint8", "got uint8 (3, 8, 6, 2)"),
    _case("frame-count", {CAMERA.format("demo_2"): _frames("demo_2")[:2]},
          "demo demo_2: obs/agentview_image has 2 frames but 'actions' has 3 steps"),
    _case("action-dim", {"data/demo_10/actions": np.zeros((5, 6))},
          "demo demo_10 has action dim 6 but demo demo_0 has 7"),
    _case("image-size", {CAMERA.format("demo_2"): np.zeros((3, H, H, 3), np.uint8)},
          "demo demo_2 has obs/agentview_image image size (H, W) (8, 8) but demo demo_0 has (8, 6)"),
    _case("nan-action", {"data/demo_2/actions": _spoiled("demo_2", 1, np.nan)}, "demo demo_2: 'actions' at step 1 "),
    _case("inf-action", {"data/demo_10/actions": _spoiled("demo_10", 4, -np.inf)}, "demo demo_10: 'actions' at",
          "step 4 is not finite"),
    _case("one-dim-actions", {"data/demo_0/actions": np.zeros(4)},
          "demo demo_0: 'actions' must be a non-empty numeric (T, A) array, got float64 (4,)"),
    _case("empty-demo", {"data/demo_0/actions": np.zeros((0, A)), "data/demo_0@num_samples": 0,
                         CAMERA.format("demo_0"): np.zeros((0, H, W, 3), np.uint8)}, "demo demo_0", "(0, 7)"),
    _case("num-samples", {"data/demo_10@num_samples": 9}, "demo demo_10: attr num_samples=9 but 'actions' has 5"),
    _case("no-instruction", {}, "demo demo_2: no instruction", "ep_meta 'lang'", "set data.instruction in the config",
          instruction=None),
    _case("ep-meta-not-json", {"data/demo_0@ep_meta": "{lang: cube"}, "demo demo_0: attribute 'ep_meta' is not valid"),
    _case("ep-meta-not-object", {"data/demo_0@ep_meta": "[1]"}, "demo demo_0: attribute 'ep_meta' must be a JSON"),
    _case("ep-meta-lang-not-string", {"data/demo_10@ep_meta": '{"lang": 3}'},
          "demo demo_10: ep_meta 'lang' must be a non-empty string, got 3"),
    _case("env-args-not-json", {"data@env_args": "Lift"}, "data: attribute 'env_args' is not valid JSON"),
]


@pytest.mark.parametrize(("changes", "kwargs", "fragments"), ERRORS)
def test_errors_name_file_demo_and_key(tmp_path: Path, changes: dict, kwargs: dict, fragments: tuple) -> None:
    broken = write_file(tmp_path / "broken.hdf5", changes)
    with pytest.raises(DataError) as info:
        _open(broken, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{broken}: "), message
    for fragment in fragments:
        assert fragment in message, message
