"""Numpy arrays on the wire, decoded strictly: json_numpy's form (OpenVLA REST) and openpi's msgpack_numpy form.

json_numpy writes an array as `{"__numpy__": base64, "dtype": descr, "shape": [...]}`; openpi's msgpack_numpy as
a map `{__ndarray__: True, data: bin, dtype: str, shape: [...]}` and a numpy scalar as `{__npgeneric__: True,
data: value, dtype: str}`. Only plain numbers are decoded — bool, (u)int8-64 and float16-64 in either byte order,
dtypes given as those exact strings (never parsed by numpy from anything else, so no object, void, complex,
string, datetime or structured dtype; no pickle anywhere) —, with at most 4 dimensions and exactly as many bytes
as the shape needs. `unpack_frame` reads a msgpack frame without ext types, with duplicate map keys refused and
encoded arrays left as `Packed` until `decode_value` decodes the ones an observation's field holds, so every
error names that field (a 400). `to_json_numpy` and `pack` encode answers the way each protocol's client reads them.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from vlx.serving.http import MAX_FIELD
from vlx.serving.images import ImageError, decode_base64
from vlx.serving.schema import ApiError

MAX_DIMS = 4
_NUMERIC = re.compile(r"[<>|=]?(?:b1|[iu][1248]|f[248])")
_TEXT = re.compile(r"[<>|=]?U[0-9]{1,6}")  # a numpy string scalar (np.str_), e.g. a prompt taken from a dataset
ALLOWED = "bool, int8-64, uint8-64, float16-64 (e.g. '|u1', '<f4', '<f8')"
JSON_NUMPY_KEYS = frozenset({"__numpy__", "dtype", "shape"})
NDARRAY_KEYS = frozenset({"__ndarray__", "data", "dtype", "shape"})
NPGENERIC_KEYS = frozenset({"__npgeneric__", "data", "dtype"})


@dataclass(frozen=True)
class Packed:
    """An encoded msgpack_numpy array or scalar (its map, keys as str), not decoded yet."""

    fields: dict[str, Any]

    @property
    def is_array(self) -> bool:
        return "__ndarray__" in self.fields


def _dtype(value: Any) -> np.dtype:
    if not isinstance(value, str) or not _NUMERIC.fullmatch(value):
        raise ValueError(f"dtype {value!r:.40} is not allowed: only plain numbers, {ALLOWED}")
    return np.dtype(value)


def make_array(data: bytes, dtype: Any, shape: Any) -> np.ndarray:
    """The (read-only) array of `shape` and `dtype` over `data`, or a ValueError saying what does not fit."""
    checked = _dtype(dtype)
    if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"shape must be a list of at most {MAX_DIMS} non-negative integers, got {shape!r:.60}")
    needed = math.prod(shape) * checked.itemsize
    if needed != len(data):
        raise ValueError(f"shape {list(shape)} of {checked} needs {needed} bytes, but the data has {len(data)}")
    return np.frombuffer(data, dtype=checked).reshape(tuple(shape))


def _from_json_numpy(value: dict[str, Any], max_bytes: int) -> np.ndarray:
    if set(value) != JSON_NUMPY_KEYS:
        raise ValueError(f"a json_numpy array has exactly the keys __numpy__, dtype and shape, got "
                         f"{sorted(value)!r:.80}")
    if not isinstance(value["__numpy__"], str):
        raise ValueError("__numpy__ must be a base64 string")
    try:
        data = decode_base64(value["__numpy__"], max_bytes, what="__numpy__")
    except ImageError as exc:
        raise ValueError(str(exc)) from None
    return make_array(data, value["dtype"], value["shape"])


def _from_packed(packed: Packed) -> Any:
    fields = packed.fields
    if packed.is_array:
        if set(fields) != NDARRAY_KEYS or fields["__ndarray__"] is not True or not isinstance(fields["data"], bytes):
            raise ValueError("a msgpack_numpy array is {__ndarray__: true, data: bin, dtype: str, shape: [...]}")
        return make_array(fields["data"], fields["dtype"], fields["shape"])
    if set(fields) != NPGENERIC_KEYS or fields["__npgeneric__"] is not True:
        raise ValueError("a msgpack_numpy scalar is {__npgeneric__: true, data: value, dtype: str}")
    data, dtype = fields["data"], fields["dtype"]
    if isinstance(dtype, str) and _TEXT.fullmatch(dtype) and isinstance(data, str):
        return data
    if not isinstance(data, (int, float)):  # bool included
        raise ValueError(f"a numpy scalar's data must be a number, got {type(data).__name__}")
    checked = _dtype(dtype)
    try:
        with np.errstate(all="ignore"):  # a float too large for float16 becomes inf, which the state check refuses
            return checked.type(data).item()  # as a Python value: a numpy bool stays a bool, refused as a number
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{data!r:.40} is not a {checked}") from None


def decode_value(value: Any, field: str, max_bytes: int) -> Any:
    """`value` with an encoded array (json_numpy dict, msgpack `Packed`) or a list of encoded scalars decoded
    (arrays as read-only numpy arrays, scalars as the Python value of their dtype), or a 400 naming `field`."""
    try:
        if isinstance(value, dict) and "__numpy__" in value:
            return _from_json_numpy(value, max_bytes)
        if isinstance(value, Packed):
            return _from_packed(value)
        if isinstance(value, list) and any(isinstance(item, Packed) and not item.is_array for item in value):
            return [_from_packed(item) if isinstance(item, Packed) and not item.is_array else item for item in value]
    except ValueError as exc:
        raise ApiError(400, f"{field}: {exc}", field) from None
    return value


def to_json_numpy(array: np.ndarray) -> dict[str, Any]:
    """json_numpy's encoding of a plain numeric array (what `json_numpy.loads` turns back into it)."""
    return {"__numpy__": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
            "dtype": array.dtype.str, "shape": list(array.shape)}


def _pairs(pairs: list[tuple[Any, Any]]) -> Any:
    """A msgpack map: duplicate keys refused; an encoded array or scalar kept as `Packed`."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ApiError(400, "frame is not valid: a map has a duplicate key", "frame")
    if b"__ndarray__" in result or b"__npgeneric__" in result or "__ndarray__" in result or "__npgeneric__" in result:
        fields = {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in pairs}
        if len(fields) != len(pairs):
            raise ApiError(400, "frame is not valid: a map has a duplicate key", "frame")
        return Packed(fields)
    return result


def _no_ext(code: int, data: bytes) -> Any:
    raise ApiError(400, f"frame is not valid: msgpack extension types are not accepted (got type {code})", "frame")


def unpack_frame(data: bytes) -> Any:
    """One msgpack frame, strictly: no ext types, str or bin map keys, no duplicate keys (400 `frame` otherwise)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_pairs,
                               ext_hook=_no_ext, timestamp=0)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 — msgpack raises many types on hostile bytes; all are the client's
        reason = str(exc).splitlines()[0][:MAX_FIELD * 2] if str(exc) else type(exc).__name__
        raise ApiError(400, f"frame is not valid msgpack: {reason}", "frame") from None


def _pack_default(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(value).tobytes(), b"dtype": value.dtype.str,
                b"shape": list(value.shape)}
    raise TypeError(f"cannot encode {type(value).__name__} in a frame")


def pack(value: Any) -> bytes:
    """`value` as an openpi msgpack frame (numpy arrays as msgpack_numpy maps, bytes as bin)."""
    return msgpack.packb(value, default=_pack_default, use_bin_type=True)
