"""The policy behind every wire protocol: checked settings, the API key, the busy limit, decoding and prediction.

`PolicyService` is what the vlx REST, OpenVLA REST and openpi websocket adapters share, so their limits,
authentication and validation cannot drift apart. It checks the policy and the settings once (a `ConfigError`
before the server starts), compares API keys in constant time, bounds the requests in progress (`slot`, a 503
beyond `max_pending`) and the requests decoding at once (`decode`, on a worker thread), resolves the unnorm_key
(the request's, else the server's default; 422 when unknown), and runs the model one call at a time under a
timeout (`predict`): a `VlxError` is the client's 422, a timeout a 504, anything else — including a non-finite or
wrongly shaped action — a logged 500 without internals. Every failure is an `ApiError`; each adapter turns it into
its own wire form.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np

from vlx.errors import ConfigError, VlxError
from vlx.execution import ExecutionSettings
from vlx.serving.policy import call_policy, check_settings, chunk_size, finite_rows, observation_spec
from vlx.serving.schema import ApiError, Policy
from vlx.serving.sessions import SessionExecutors
from vlx.serving.worker import ModelWorker

log = logging.getLogger("vlx.serving")
T = TypeVar("T")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may cost: its bytes (body or websocket frame), each image's size, the instruction."""

    max_request_bytes: int = 8 * MiB
    max_image_pixels: int = 4096 * 4096
    max_image_side: int = 4096
    max_instruction_chars: int = 1000

    @property
    def image(self) -> dict[str, int]:
        """The keyword arguments of `vlx.serving.images` decoders."""
        return dict(max_bytes=self.max_request_bytes, max_pixels=self.max_image_pixels, max_side=self.max_image_side)


@dataclass(frozen=True)
class KeyHeader:
    """The header a protocol's clients send the API key in: `X-API-Key: KEY`, or `Authorization: Api-Key KEY`."""

    name: str
    scheme: str = ""  # what precedes the key in the value, e.g. "Api-Key "

    def read(self, headers: Mapping[str, str]) -> str | None:
        """The key in `headers` (None when the header is absent or lacks the scheme)."""
        value = headers.get(self.name)
        if value is None or not value.startswith(self.scheme):
            return None
        return value[len(self.scheme):]

    def check(self, service: PolicyService, headers: Mapping[str, str]) -> None:
        how = f"in the {self.name} header" + (f" as '{self.scheme}KEY'" if self.scheme else "")
        service.authorize(self.read(headers), self.name, how)


@dataclass(frozen=True)
class Prediction:
    """The rows to answer (one action, or the first `execute_steps` of a chunk) and the model's time."""

    rows: list[list[float]]
    infer_ms: float


class PolicyService:
    """One policy served under one set of limits; see the module docstring."""

    def __init__(self, policy: Policy, *, limits: Limits, api_key: str | None = None, predict_timeout_s: float = 30.0,
                 decode_concurrency: int = 2, max_pending: int = 8, execute_steps: int | None = None,
                 ensemble: str | None = None, ensemble_weight: float = 0.01, max_sessions: int = 256,
                 unnorm_key: str | None = None) -> None:
        numbers = dict(vars(limits), predict_timeout_s=predict_timeout_s, decode_concurrency=decode_concurrency,
                       max_pending=max_pending, max_sessions=max_sessions)
        check_settings(policy, api_key, numbers)
        if unnorm_key is not None and unnorm_key not in policy.unnorm_keys:
            known = ", ".join(policy.unnorm_keys) or "none: this model returns normalised actions"
            raise ConfigError(f"unnorm_key={unnorm_key!r} is not a dataset of this model; known: {known}")
        self.policy, self.limits, self.default_unnorm_key = policy, limits, unnorm_key
        self.predict_timeout_s, self.max_pending = predict_timeout_s, max_pending
        self.spec = observation_spec(policy)
        execution = {"execute_steps": execute_steps, "ensemble": ensemble, "ensemble_weight": ensemble_weight}
        self.settings = ExecutionSettings.from_config(chunk_size(policy), execution, where="serve")
        self.sessions = SessionExecutors(self.settings, max_sessions) if self.settings.ensemble else None
        self.worker = ModelWorker()
        self._expected_key = api_key.encode("utf-8") if api_key is not None else None
        self._decode_slots = threading.BoundedSemaphore(decode_concurrency)  # bounds the images being decoded
        self._pending = 0  # requests decoding, waiting for the model or predicting

    @property
    def single_action(self) -> bool:
        """Whether every answer is one action (a one-step model, or ensembling) rather than a chunk's rows."""
        return self.settings.chunk_size == 1 or self.sessions is not None

    def describe(self) -> dict[str, Any]:
        """What `GET /health` (and openpi's connect metadata) tell a client about the policy."""
        return {"action_dim": self.policy.action_dim, "unnorm_keys": list(self.policy.unnorm_keys),
                "chunk_size": self.settings.chunk_size, "cameras": self.spec.cameras, "state_dim": self.spec.state_dim,
                "execute_steps": None if self.settings.ensemble else self.settings.steps_per_chunk,
                "ensemble": self.settings.ensemble}

    def authorize(self, given: str | None, header: str, how: str) -> None:
        """A 401 unless no key is configured or `given` (a header value, None when absent) is the key."""
        if self._expected_key is None:
            return
        if given is None:
            raise ApiError(401, f"missing API key: send it {how}", header)
        # Starlette decodes header values as latin-1; compare the raw bytes in constant time.
        if not hmac.compare_digest(given.encode("latin-1", errors="replace"), self._expected_key):
            raise ApiError(401, "wrong API key", header)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `max_pending` request slots, or a 503 at once when all are taken."""
        if self._pending >= self.max_pending:
            raise ApiError(503, f"the policy is busy ({self._pending} requests in progress); retry later", None,
                           {"Retry-After": "1"})
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    async def decode(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a thread, at most `decode_concurrency` at once (decoding images takes memory and CPU)."""
        def bounded() -> T:
            with self._decode_slots:
                return fn(*args)

        return await anyio.to_thread.run_sync(bounded)

    def unnorm_key(self, requested: str | None) -> str | None:
        """The request's unnorm_key, else the server's default; a 422 for one the model does not carry."""
        key = requested if requested is not None else self.default_unnorm_key
        if key is not None and key not in self.policy.unnorm_keys:
            known = ", ".join(self.policy.unnorm_keys) or "none: this model returns normalised actions"
            raise ApiError(422, f"unknown unnorm_key {key!r}; known: {known}", "unnorm_key")
        return key

    async def predict(self, inputs: Any, instruction: str, unnorm_key: str | None, state: list[float] | None,
                      session: str | None = None) -> Prediction:
        """The checked answer for one observation; `session` names the ensembling history (needed when ensembling)."""
        key = self.unnorm_key(unnorm_key)
        try:
            raw, seconds = await self.worker.run(self.predict_timeout_s, _timed, call_policy, self.policy, inputs,
                                                 instruction, key, state)
        except (TimeoutError, asyncio.TimeoutError):
            raise ApiError(504, f"the policy did not answer within {self.predict_timeout_s:g} s") from None
        except VlxError as exc:
            field = "unnorm_key" if "unnorm_key" in str(exc) else None
            raise ApiError(422, str(exc) or type(exc).__name__, field) from None
        except Exception:
            log.exception("policy.predict_action failed")
            raise ApiError(500, "the policy failed on this request (see the server log)") from None
        try:
            rows = finite_rows(raw, self.settings.chunk_size, self.policy.action_dim)
            if self.sessions is not None:
                rows = finite_rows(self.sessions.step(session, np.asarray(rows)), 1, self.policy.action_dim)
        except Exception as exc:  # noqa: BLE001 — whatever it returned, it is the model's fault
            log.error("policy.predict_action returned an invalid action: %s", exc)
            raise ApiError(500, f"the policy returned an invalid action: {exc}") from None
        return Prediction(rows if self.single_action else rows[: self.settings.steps_per_chunk], seconds * 1000)


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`fn(*args)` and the seconds it took (run on the model's thread, so queueing is not counted)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start
