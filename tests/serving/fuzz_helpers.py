"""Building blocks of the serving fuzz tests (fixed-seed `random.Random` in, hostile values out): odd text, random
JSON values, byte-level mutations, and REST headers with a right, wrong or missing API key."""

from __future__ import annotations

import random

KEY = "fuzz-key"
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml",
                 "multipart/form-data; boundary=x", "application/json; charset=utf-16", "APPLICATION/JSON", ";;;"]
ODD_TEXT = ["", " ", "\x00", "\ud800", "\udfff", "é", "🤖", "\u202e", "\x7f", "\\", '"', "x" * 150, "\n\t\r"]


def random_text(rng: random.Random, max_len: int = 40) -> str:
    pieces = []
    for _ in range(rng.randint(0, max_len)):
        pick = rng.random()
        if pick < 0.6:
            pieces.append(chr(rng.randint(32, 126)))
        elif pick < 0.8:
            pieces.append(rng.choice(ODD_TEXT))
        else:
            pieces.append(chr(rng.randint(0, 0x10FFFF)))
    return "".join(pieces)


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "bool", "null", "str", "bigint"] + (["list", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-1000, 1000)
    if kind == "bigint":
        return rng.choice([10 ** 30, -(2 ** 64), 2 ** 63])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e-300, 3.14])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "str":
        return random_text(rng)
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_text(rng, 8): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def mutate(rng: random.Random, data: bytes, keep: int = 0) -> bytes:
    """A few byte-level edits (flip, delete, insert, duplicate, truncate) after the first `keep` bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if len(out) <= keep + 1:
            break
        at = rng.randrange(keep, len(out))
        op = rng.randrange(5)
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[at:at + rng.randint(1, 16)]
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            out[at:at] = out[at:at + rng.randint(1, 64)]
        else:
            del out[at:]
    return bytes(out)


def headers(rng: random.Random, content_type: str | None = "application/json") -> dict:
    """REST headers: mostly the right X-API-Key, sometimes a wrong one or none; the given content type."""
    result: dict = {}
    roll = rng.random()
    if roll < 0.8:
        result["X-API-Key"] = KEY
    elif roll < 0.9:
        result["X-API-Key"] = bytes(rng.choice([rng.randint(32, 126), rng.randint(128, 255)])
                                    for _ in range(rng.randint(0, 20)))
    if content_type is not None:
        result["content-type"] = content_type
    return result
