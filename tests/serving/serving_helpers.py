"""Shared pieces of the serving tests: deterministic policies whose output can be checked exactly, image
builders, and a real uvicorn server on loopback."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import msgpack
import numpy as np
from PIL import Image

from vlx.errors import ConfigError, DataError
from vlx.observation import ObservationSpec

SCALES = {"bridge": 1.0, "libero": 2.0}
CAMERAS = ["agentview_image", "wrist_image"]
# what GET /health adds for a one-image, one-step policy such as ColourPolicy
ONE_STEP_HEALTH = {"chunk_size": 1, "cameras": None, "state_dim": None, "execute_steps": 1, "ensemble": None}


def resolve_unnorm_key(unnorm_keys: list[str], unnorm_key: str | None) -> str:
    """The dataset a real VLA would un-normalise with, or its ConfigError (missing but needed, or unknown)."""
    if unnorm_key is None:
        if len(unnorm_keys) != 1:
            raise ConfigError(f"unnorm_key is required: this model carries statistics for {', '.join(unnorm_keys)}")
        unnorm_key = unnorm_keys[0]
    if unnorm_key not in unnorm_keys:
        raise ConfigError(f"unknown unnorm_key {unnorm_key!r}")
    return unnorm_key


class ColourPolicy:
    """action = [mean R, mean G, mean B, len(instruction), scale of the unnorm_key].

    The means are exact integer sums divided by the pixel count, so a test can recompute them bit for bit.
    Like a real VLA it raises ConfigError when the unnorm_key is missing but needed, or unknown; special
    instructions make it misbehave on purpose ("!sleep", "!nan", "!short", "!crash", "!data-error").
    """

    action_dim = 5

    def __init__(self, unnorm_keys: tuple[str, ...] = ("bridge", "libero"), sleep_s: float = 0.05,
                 gate: threading.Event | None = None) -> None:
        self.unnorm_keys = list(unnorm_keys)
        self.sleep_s = sleep_s
        self.gate = gate  # with a gate, "!sleep" holds the call until the test sets it (no timing to race)
        self.calls: list[tuple[tuple[int, int], str, str | None]] = []
        self.active = self.max_active = 0
        self.idle = threading.Event()  # set whenever no call is running
        self.idle.set()
        self._lock = threading.Lock()

    def predict_action(self, image: Image.Image, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.idle.clear()
        try:
            return self._predict(image, instruction, unnorm_key)
        finally:
            with self._lock:
                self.active -= 1
                if self.active == 0:
                    self.idle.set()

    def _predict(self, image: Image.Image, instruction: str, unnorm_key: str | None) -> np.ndarray:
        assert isinstance(image, Image.Image) and image.mode == "RGB", image
        self.calls.append((image.size, instruction, unnorm_key))
        unnorm_key = resolve_unnorm_key(self.unnorm_keys, unnorm_key)
        if instruction == "!sleep" and self.gate is not None:
            if not self.gate.wait(timeout=120):
                raise RuntimeError("the test never released the gate")
        elif instruction == "!sleep":
            time.sleep(self.sleep_s)
        if instruction == "!crash":
            raise RuntimeError("CUDA out of memory (secret internal detail)")
        if instruction == "!data-error":
            raise DataError("the image is unusable for this model")
        if instruction == "!short":
            return np.zeros(3)
        pixels = np.asarray(image, dtype=np.int64).reshape(-1, 3)
        n = pixels.shape[0]
        action = [int(s) / n for s in pixels.sum(axis=0)] + [float(len(instruction)), SCALES.get(unnorm_key, 3.0)]
        if instruction == "!nan":
            action[0] = float("nan")
        return np.asarray(action, dtype=np.float64)


class ChunkPolicy:
    """A chunked policy with named cameras and a state: row k of the chunk (K, 4) is
    [mean R of the first camera, mean R of the last camera, k + sum(state), len(instruction) * scale].

    The means are exact integer sums over the pixel count; states made of values exact in float32 (0.25,
    -1.5, ...) sum exactly. It checks its inputs like a real VLA (`observation.images` / `.state`), so a
    missing camera or a wrong state raises the model's ObservationError. `cameras=None` makes it see one
    bare image, `state_dim=None` takes no state. "!nan-row" puts a NaN in the last row, "!flat" returns the
    chunk as one flat vector (a wrong shape).
    """

    action_dim = 4

    def __init__(self, cameras: list[str] | None = CAMERAS, state_dim: int | None = 2, chunk_size: int = 4,
                 unnorm_keys: tuple[str, ...] = ("bridge", "libero")) -> None:
        self.observation = ObservationSpec(cameras=cameras, state_dim=state_dim)
        self.chunk_size, self.unnorm_keys = chunk_size, list(unnorm_keys)
        self.calls: list[tuple[object, str, str | None, object]] = []

    def predict_action(self, image: object, instruction: str, unnorm_key: str | None = None,
                       state: object = None) -> np.ndarray:
        self.calls.append((sorted(image) if isinstance(image, dict) else image.size, instruction, unnorm_key, state))
        images = self.observation.images(image)
        checked = self.observation.state(state)
        scale = SCALES.get(resolve_unnorm_key(self.unnorm_keys, unnorm_key), 3.0)
        assert all(isinstance(frame, Image.Image) and frame.mode == "RGB" for frame in images), images
        reds = [int(np.asarray(frame, dtype=np.int64)[..., 0].sum()) / (frame.width * frame.height) for frame in images]
        offset = 0.0 if checked is None else float(checked.astype(np.float64).sum())
        chunk = np.asarray([[reds[0], reds[-1], k + offset, len(instruction) * scale] for k in range(self.chunk_size)])
        if instruction == "!nan-row":
            chunk[-1, 2] = float("nan")
        return chunk.reshape(-1) if instruction == "!flat" else chunk


def expected_chunk(rgbs: list[np.ndarray], instruction: str, state: list[float] | None = None,
                   unnorm_key: str = "bridge", chunk_size: int = 4) -> list[list[float]]:
    """What ChunkPolicy returns for the cameras' (H, W, 3) uint8 images, computed independently with Python ints."""
    reds = [sum(p[0] for p in rgb.reshape(-1, 3).tolist()) / (rgb.shape[0] * rgb.shape[1]) for rgb in rgbs]
    offset = sum(state) if state else 0.0
    return [[reds[0], reds[-1], k + offset, len(instruction) * SCALES.get(unnorm_key, 3.0)] for k in range(chunk_size)]


def expected_action(rgb: np.ndarray, instruction: str, unnorm_key: str = "bridge") -> list[float]:
    """What ColourPolicy returns for an (H, W, 3) uint8 image, computed independently with Python ints."""
    flat = rgb.reshape(-1, 3).tolist()
    n = len(flat)
    return [sum(p[c] for p in flat) / n for c in range(3)] + [float(len(instruction)), SCALES.get(unnorm_key, 3.0)]


def encode(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def random_rgb(seed: int = 0, size: tuple[int, int] = (24, 16)) -> np.ndarray:
    """An (H, W, 3) uint8 image, size = (W, H)."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` RGB pixels (a decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bomb_jpeg(width: int, height: int) -> bytes:
    """A real small JPEG with its start-of-frame size patched to `width` x `height`."""
    data = bytearray(encode(Image.fromarray(random_rgb(1, (8, 8))), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def act_body(image_b64: str, instruction: str = "pick up the red block", unnorm_key: str | None = "bridge") -> dict:
    return {"image": image_b64, "instruction": instruction, "unnorm_key": unnorm_key}


def cameras_body(images: dict[str, str], instruction: str = "pick up the red block", state: list | None = None,
                 unnorm_key: str | None = "bridge", **fields: object) -> dict:
    """A request with named cameras (base64 each), a state unless None, and any further fields."""
    body: dict = {"images": images, "instruction": instruction, "unnorm_key": unnorm_key, **fields}
    return body if state is None else {**body, "state": state}


@contextlib.contextmanager
def serve_on_loopback(app: object, protocol: str = "vlx") -> Iterator[int]:
    """Run `app` under real uvicorn on 127.0.0.1 (a free port, a background thread) with the settings `vlx serve`
    uses for `protocol`; yields the port, stops the server on exit."""
    import uvicorn

    from vlx.cli.serve import ServeOptions, uvicorn_settings

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = uvicorn_settings(ServeOptions(checkpoint="unused", protocol=protocol, port=port))
    server = uvicorn.Server(uvicorn.Config(app, **{**settings, "log_level": "warning"}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # a start-up guard, not a timing assertion
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive()


def json_numpy_array(array: np.ndarray) -> dict:
    """json_numpy's encoding of an array, written independently of vlx (as `json_numpy.dumps` writes it)."""
    data = b64(np.ascontiguousarray(array).tobytes())
    return {"__numpy__": data, "dtype": array.dtype.str, "shape": list(array.shape)}


def from_json_numpy(payload: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(payload["__numpy__"]), np.dtype(payload["dtype"])).reshape(payload["shape"])


def _ndarray_map(value: object) -> object:
    if isinstance(value, np.ndarray):
        return {b"__ndarray__": True, b"data": value.tobytes(), b"dtype": value.dtype.str, b"shape": value.shape}
    if isinstance(value, np.generic):
        return {b"__npgeneric__": True, b"data": value.item(), b"dtype": value.dtype.str}
    raise TypeError(type(value).__name__)


def openpi_frame(observation: object) -> bytes:
    """A msgpack frame in openpi's msgpack_numpy form, written independently of vlx (and of openpi-client); lone
    surrogates in strings pass through as the invalid UTF-8 a hostile client could send."""
    return msgpack.packb(observation, default=_ndarray_map, use_bin_type=True, unicode_errors="surrogatepass")


def openpi_unframe(data: bytes) -> object:
    def hook(obj: dict) -> object:
        if b"__ndarray__" in obj:
            return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
        return obj

    return msgpack.unpackb(data, object_hook=hook)
