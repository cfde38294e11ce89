"""Temporal ensembling at the server: one `ChunkExecutor` per client session, the least recently used dropped.

With `ensemble=exp` the server predicts a chunk at every request and answers the ensembled action for the
session's current step (`vlx.execution`): every chunk the session was given that still covers the step,
weighted exp(-m·i) from the oldest. A session is a name the client picks (one per episode, e.g. a UUID);
at most `max_sessions` are kept, and a session unused while that many others were used is forgotten (it
starts again from an empty history, as a new episode would).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np

from vlx.execution import ChunkExecutor, ExecutionSettings

log = logging.getLogger("vlx.serving")


class SessionExecutors:
    """The ensembling executors of up to `max_sessions` client sessions, least recently used first."""

    def __init__(self, settings: ExecutionSettings, max_sessions: int = 256) -> None:
        self.settings, self.max_sessions = settings, max_sessions
        self._executors: OrderedDict[str, ChunkExecutor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._executors)

    def __contains__(self, session: object) -> bool:
        return session in self._executors

    def forget(self, session: str) -> None:
        """Drop `session`'s history (its client is gone, e.g. an openpi connection closed)."""
        with self._lock:
            self._executors.pop(session, None)

    def step(self, session: str, chunk: np.ndarray) -> np.ndarray:
        """Add `chunk` (K, A), predicted for `session`'s current step, and return that step's action (A,)."""
        with self._lock:
            executor = self._executors.pop(session, None) or ChunkExecutor(self.settings)
            self._executors[session] = executor  # now the most recently used
            while len(self._executors) > self.max_sessions:
                dropped, _ = self._executors.popitem(last=False)
                log.info("dropped ensembling session %r: more than %d sessions", dropped[:64], self.max_sessions)
            executor.add(chunk)
            return executor.next_action()
